"""The on-disk target cache: keys, damage recovery, no pickle, concurrency, and what users see in traces."""

from __future__ import annotations

import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nst_engine.cache import CachedTargets, TargetCache, target_key
from nst_engine.config import StyleConfig
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.stylize import stylize
from nst_engine.targets import blend
from tests.conftest import gradient_image

runner = CliRunner()
BASE = dict(
    kind="style", layers=("relu1_1", "relu2_1"), pooling="max", model_sha256="a" * 64, provider="cpu", precision="fp32"
)


def _key(**changes: object) -> str:
    args = {**BASE, "image": gradient_image(32, 32), **changes}
    return target_key(
        args["kind"],
        args["image"],
        args["layers"],
        args["pooling"],
        args["model_sha256"],  # type: ignore[arg-type]
        args["provider"],
        args["precision"],
    )  # type: ignore[arg-type]


def test_key_is_stable_and_changes_with_every_ingredient() -> None:
    base = _key()
    assert base == _key() == _key(image=gradient_image(32, 32).clone())
    changed = {
        "pixels": _key(image=gradient_image(32, 32, seed=1)),
        "size": _key(image=gradient_image(32, 48)),
        "layers": _key(layers=("relu1_1", "relu3_1")),
        "pooling": _key(pooling="avg"),
        "model": _key(model_sha256="b" * 64),
        "provider": _key(provider="cuda"),
        "precision": _key(precision="fp16"),
        "kind": _key(kind="content"),
    }
    assert all(k != base for k in changed.values()), changed
    assert len(set(changed.values())) == len(changed)


@pytest.fixture()
def source(model_info, model_path: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    warnings: list[str] = []
    cache = TargetCache(tmp_path / "cache", warnings.append)
    encoder = OnnxEncoder(model_path, "cpu")
    return CachedTargets(encoder, cache, model_info.sha256, "cpu", "fp32", "max"), warnings, encoder


def test_unrelated_settings_reuse_the_targets(source, model_info) -> None:  # type: ignore[no-untyped-def]
    first, _, encoder = source
    content, style = gradient_image(48, 64, 1), gradient_image(64, 64, 2)
    configs = (
        StyleConfig(size=64, steps=2),
        StyleConfig(size=64, steps=3, style_weight=7.0, tv_weight=0.5, optimizer="adam", seed=9),
    )
    # A second source over the same folder: a later process, with other loss weights and steps.
    second = CachedTargets(encoder, first.cache, model_info.sha256, "cpu", "fp32", "max")
    for config, targets in zip(configs, (first, second), strict=True):
        stylize(content, [style], config=config, net=model_info.torch_module(config.layers), targets=targets)
    assert [r.cache for r in first.records] == ["miss", "miss"]
    assert [r.cache for r in second.records] == ["hit", "hit"]
    assert encoder.forward_count == 2


@pytest.mark.parametrize("damage", ["corrupt", "truncate"])
def test_damaged_entry_is_reported_recomputed_and_replaced(source, model_info, damage: str) -> None:  # type: ignore[no-untyped-def]
    targets, warnings, encoder = source

    def run():  # type: ignore[no-untyped-def]
        fresh = CachedTargets(encoder, targets.cache, model_info.sha256, "cpu", "fp32", "max")  # a new process
        return fresh.style(gradient_image(64, 64, 3), ("relu1_1", "relu3_1")), fresh.records[-1].cache

    first, _ = run()
    (entry,) = list((targets.cache.root / "targets").glob("*/*.safetensors"))
    data = entry.read_bytes()
    entry.write_bytes(
        data[: len(data) // 2] if damage == "truncate" else data[:-40] + bytes(b ^ 0xFF for b in data[-40:])
    )
    second, status = run()
    assert len(warnings) == 1 and "damaged" in warnings[0] and "\n" not in warnings[0]
    assert encoder.forward_count == 2 and status == "miss"
    for layer in first:
        torch.testing.assert_close(first[layer].moment, second[layer].moment)
    third, status = run()  # the replacement is whole again
    assert status == "hit" and len(warnings) == 1
    torch.testing.assert_close(third["relu3_1"].mean, first["relu3_1"].mean)


def test_entries_load_with_pickle_disabled(source, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    targets, warnings, _ = source
    image = gradient_image(32, 32, 4)
    targets.content(image, ("relu4_2",))
    targets.style(image, ("relu1_1",))

    def no_pickle(*args: object, **kwargs: object) -> None:
        raise AssertionError("pickle used")

    for name in ("load", "loads", "Unpickler"):
        monkeypatch.setattr(pickle, name, no_pickle)
    targets.content(image, ("relu4_2",))  # content targets are never memoised: this reads the disk
    assert targets.records[-1].cache == "hit" and not warnings
    for entry in (targets.cache.root / "targets").glob("*/*.safetensors"):
        header_len = int.from_bytes(entry.read_bytes()[:8], "little")
        json.loads(entry.read_bytes()[8 : 8 + header_len])  # a safetensors JSON header, not a pickle


def test_blend_one_zero_equals_the_single_style(source, model_info) -> None:  # type: ignore[no-untyped-def]
    targets, _, _ = source
    a = targets.style(gradient_image(64, 64, 5), ("relu1_1", "relu2_1"))
    b = targets.style(gradient_image(64, 64, 6), ("relu1_1", "relu2_1"))
    mixed = blend([a, b], [1.0, 0.0])
    for layer in a:
        torch.testing.assert_close(mixed[layer].moment, a[layer].moment, rtol=0, atol=0)
    content, s1, s2 = gradient_image(48, 64, 7), gradient_image(64, 64, 5), gradient_image(64, 64, 6)
    single_cfg = StyleConfig(size=64, steps=4)
    single = stylize(content, [s1], config=single_cfg, net=model_info.torch_module(single_cfg.layers), targets=targets)
    blend_cfg = single_cfg.replace(style_blend_weights=(1.0, 0.0))
    blended = stylize(
        content, [s1, s2], config=blend_cfg, net=model_info.torch_module(blend_cfg.layers), targets=targets
    )
    torch.testing.assert_close(blended.image, single.image, rtol=0, atol=0)


_WRITER = textwrap.dedent("""
    import sys, torch
    from pathlib import Path
    from nst_engine.cache import TargetCache
    cache = TargetCache(Path(sys.argv[1]))
    for i in range(int(sys.argv[2])):
        key = f"{i % 8:02d}" + "0" * 62  # both writers fight over the same eight keys
        cache.save(key, {"t": torch.full((256, 256), float(i % 8))}, "style")
        found = cache.load(key)
        assert found is not None and float(found["t"][0, 0]) == float(i % 8)
    print("ok")
""")


def test_two_processes_share_one_cache(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(root), "60"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    warnings: list[str] = []
    cache = TargetCache(root, warnings.append)
    for i in range(8):
        found = cache.load(f"{i:02d}" + "0" * 62)
        assert found is not None and float(found["t"][0, 0]) == float(i)
    assert not warnings


def test_kill_during_writes_leaves_cache_usable(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    proc = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root), "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    deadline = time.time() + 60
    while len(list(root.glob("targets/*/*.safetensors"))) < 4 and time.time() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    warnings: list[str] = []
    cache = TargetCache(root, warnings.append)
    entries = list(root.glob("targets/*/*.safetensors"))
    assert entries and all(cache.load(p.stem) is not None for p in entries) and not warnings
    assert cache.info().targets == len(entries)


def test_warm_batch_does_no_style_forward_pass(shared_images: Path, model_path: Path, tmp_path: Path) -> None:
    from nst_engine.cli import app

    contents = tmp_path / "photos"
    contents.mkdir()
    for name in ("content_turtle.jpg", "content_tubingen.jpg"):
        (contents / name).symlink_to(shared_images / name)
    (contents / "broken.jpg").write_bytes(b"not a jpeg")
    cache = tmp_path / "cache"
    traces = []
    for run in range(2):
        out, trace = tmp_path / f"out{run}", tmp_path / f"t{run}.json"
        result = runner.invoke(
            app,
            [
                "stylize",
                str(contents),
                "--style",
                str(shared_images / "style_great_wave.jpg"),
                "-o",
                str(out),
                "--model",
                str(model_path),
                "--size",
                "48",
                "--steps",
                "2",
                "--cache-dir",
                str(cache),
                "--trace",
                str(trace),
            ],
        )
        assert result.exit_code == 1, result.output  # the broken file fails, the batch goes on
        assert "2 done, 0 skipped, 1 failed" in result.stderr and "broken.jpg" in result.stderr
        assert sorted(p.name for p in out.iterdir()) == [
            "content_tubingen_style_great_wave.png",
            "content_turtle_style_great_wave.png",
        ]
        traces.append(json.loads(trace.read_text()))
    cold, warm = traces[0]["targets"], traces[1]["targets"]
    assert cold["style_forward_passes"] == 1 and cold["misses"] == 3  # one style, two contents
    assert warm["style_forward_passes"] == 0 and warm["content_forward_passes"] == 0 and warm["hits"] == 3
    assert warm["memory_hits"] == 1  # the second image took the style from memory, not even from disk
    skip = runner.invoke(
        app,
        [
            "stylize",
            str(contents / "content_turtle.jpg"),
            "--style",
            str(shared_images / "style_great_wave.jpg"),
            "-o",
            str(tmp_path / "out1"),
            "--model",
            str(model_path),
            "--cache-dir",
            str(cache),
        ],
    )
    assert skip.exit_code == 1 and "exists; pass --overwrite" in skip.stderr


def test_cache_info_and_clear(tmp_path: Path) -> None:
    from nst_engine.cli import app

    cache = TargetCache(tmp_path / "c")
    cache.save("ab" + "0" * 62, {"t": torch.zeros(4)}, "content")
    info = runner.invoke(app, ["cache", "info", "--cache-dir", str(tmp_path / "c")])
    assert info.exit_code == 0 and "targets:  1" in info.stdout and str(tmp_path / "c") in info.stdout
    cleared = runner.invoke(app, ["cache", "clear", "--cache-dir", str(tmp_path / "c")])
    assert cleared.exit_code == 0 and "removed 1 targets" in cleared.stdout
    assert TargetCache(tmp_path / "c").info().targets == 0


def test_a_write_killed_midway_leaves_only_a_tmp_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = TargetCache(tmp_path / "c")

    def die(src: str, dst: str) -> None:
        raise KeyboardInterrupt  # stands for the process dying between write and rename

    monkeypatch.setattr(os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        cache.save("ab" + "0" * 62, {"t": torch.zeros(4)}, "content")
    monkeypatch.undo()
    assert not list((tmp_path / "c").rglob("*.safetensors")) and cache.info().targets == 0
