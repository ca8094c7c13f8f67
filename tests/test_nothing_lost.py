"""Hostile use, one case per class of failure: nothing lost, nothing hung, nothing silently wrong, no traceback.

Each case runs the real CLI (or the API) and checks the exit code, that the message is one line naming the problem,
and that no input or unrelated file was touched."""

from __future__ import annotations

import json
import os
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from nst_engine import images
from nst_engine.api import stylize_file
from nst_engine.cache import MARKER, CachedTargets, TargetCache
from nst_engine.cli import app
from nst_engine.errors import ConfigError, ImageError, ModelError
from nst_engine.export.runtime import OnnxEncoder
from tests.conftest import ROOT, gradient_image
from tests.images_corpus import photo

SIZE = ["--size", "32", "--steps", "2", "--quiet"]


def cli(*args: str | Path, env: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    return CliRunner(env=env).invoke(app, [str(a) for a in args])


def one_line_error(result, needle: str) -> None:  # type: ignore[no-untyped-def]
    assert result.exit_code == 1, result.output
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.output, result.output
    assert needle in " ".join(result.stderr.split()), result.stderr


# -- data loss --------------------------------------------------------------------------------------------------


def test_cache_clear_refuses_a_folder_that_is_not_a_cache(tmp_path: Path) -> None:
    folder = tmp_path / "work"
    (folder / "models").mkdir(parents=True)
    (folder / "models" / "notes.txt").write_text("my weights")
    (folder / "models" / "mine.onnx").write_bytes(b"someone's model")
    one_line_error(cli("cache", "clear", "--cache-dir", folder), "is not an nst-engine cache")
    assert (folder / "models" / "notes.txt").read_text() == "my weights" and (folder / "models" / "mine.onnx").exists()


def test_cache_clear_deletes_only_its_own_entries(tmp_path: Path) -> None:
    cache = TargetCache(tmp_path / "cache")
    cache.save("ab" + "0" * 62, {"t": torch.ones(2)}, "style")
    (cache.root / "targets" / "ab" / "README.txt").write_text("not an entry")
    (cache.root / "keep.txt").write_text("mine")
    result = cli("cache", "clear", "--cache-dir", cache.root)
    assert result.exit_code == 0 and "removed 1 targets" in result.stdout
    assert (cache.root / "keep.txt").exists() and (cache.root / "targets" / "ab" / "README.txt").exists()
    assert (cache.root / MARKER).exists() and not list(cache.root.glob("targets/*/*.safetensors"))


def test_resume_does_not_replace_an_unrelated_output(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    interrupted = tmp_path / "a.png"
    images.save(gradient_image(8, 8), interrupted)
    ckpt = tmp_path / "a.png.ckpt"
    ckpt.write_bytes(b"")  # any checkpoint: the output check comes first
    other = tmp_path / "precious.png"
    other.write_bytes(b"my picture")
    one_line_error(cli("stylize", *pair, "-o", other, "--model", model_path, "--resume", ckpt, *SIZE), "exists")
    assert other.read_bytes() == b"my picture"


def test_the_api_does_not_replace_an_existing_output(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out.png"
    out.write_bytes(b"keep me")
    with pytest.raises(ConfigError, match="exists; pass overwrite=True"):
        stylize_file(*pair, out, model=model_path, size=32, steps=1)
    assert out.read_bytes() == b"keep me"
    assert stylize_file(*pair, out, model=model_path, size=32, steps=1, overwrite=True).status == "done"
    assert out.read_bytes() != b"keep me"


def test_stale_temporaries_of_dead_writers_are_removed_live_ones_kept(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = tmp_path / f".out.png.{dead.pid}.abc123.tmp"
    live = tmp_path / ".out.png.1.def456.tmp"  # pid 1 is alive
    stale.write_bytes(b"half"), live.write_bytes(b"busy")
    assert cli("stylize", *pair, "-o", tmp_path / "out.png", "--model", model_path, *SIZE).exit_code == 0
    assert not stale.exists() and live.exists()


def test_sigterm_during_export_leaves_no_temporary(tmp_path: Path) -> None:
    out = tmp_path / "m.onnx"
    proc = subprocess.Popen(
        [sys.executable, "-m", "nst_engine", "export", "--weights", "random", "-o", str(out)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.time() + 120
    while not list(tmp_path.glob(".m.onnx.*.tmp")) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert list(tmp_path.glob(".m.onnx.*.tmp")), "the export finished before a temporary was seen"
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in err, err
    assert list(tmp_path.iterdir()) == []


# -- integrity ----------------------------------------------------------------------------------------------------


def test_a_cache_entry_copied_over_another_is_not_used(model_path: Path, model_info, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    warnings: list[str] = []
    cache = TargetCache(tmp_path / "cache", warnings.append)
    targets = CachedTargets(OnnxEncoder(model_path, "cpu"), cache, model_info.sha256, "cpu", "fp32", "max")
    wave, dark = gradient_image(32, 32, 1), gradient_image(32, 32, 2) * 0.2
    targets.style(wave, ("relu1_1",))
    first = sorted((cache.root / "targets").glob("*/*.safetensors"))
    targets.style(dark, ("relu1_1",))
    second = [p for p in (cache.root / "targets").glob("*/*.safetensors") if p not in first]
    second[0].write_bytes(first[0].read_bytes())  # the wave's entry under the dark image's key
    again = CachedTargets(OnnxEncoder(model_path, "cpu"), cache, model_info.sha256, "cpu", "fp32", "max")
    stats = again.style(dark, ("relu1_1",))["relu1_1"]
    assert "stored under another key" in warnings[-1] and again.records[-1].cache == "miss"
    assert torch.allclose(stats.moment, targets.style(dark, ("relu1_1",))["relu1_1"].moment)


def _tiff_claiming(width: int, height: int) -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(photo(8, 8)).save(buffer, "TIFF")
    data = bytearray(buffer.getvalue())
    first_ifd = struct.unpack("<I", data[4:8])[0]
    for i in range(struct.unpack("<H", data[first_ifd : first_ifd + 2])[0]):
        entry = first_ifd + 2 + 12 * i
        tag, kind = struct.unpack("<HH", data[entry : entry + 4])
        if tag in (256, 257):  # ImageWidth, ImageLength
            value = width if tag == 256 else height
            data[entry + 8 : entry + 12] = struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value)
    return bytes(data)


def _jpeg_cut(width: int, height: int) -> bytes:
    """A JPEG that declares width x height and stops a little after its first scan begins (2 KB)."""
    _, encoded = __import__("cv2").imencode(".jpg", photo(64, 64))
    data = bytearray(encoded.tobytes())
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data[: data.index(b"\xff\xda") + 200])


@pytest.mark.parametrize(
    ("name", "data", "needle"),
    [
        ("huge.tif", _tiff_claiming(30000, 30000), "30000x30000 pixels, over the limit"),
        ("cut.jpg", _jpeg_cut(8000, 8000), "is truncated"),
    ],
)
def test_declared_sizes_and_truncation_are_caught_before_decoding(
    name: str, data: bytes, needle: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / name
    path.write_bytes(data)
    monkeypatch.setattr(images.cv2, "imdecode", lambda *a: pytest.fail("decoded"))
    with pytest.raises(ImageError, match=needle):
        images.read_image(path)


def test_metadata_that_lies_about_pooling_is_refused(model_path: Path, tmp_path: Path) -> None:
    import onnx

    from nst_engine.export.model_file import inspect

    model = onnx.load(str(model_path))
    for prop in model.metadata_props:
        if prop.key == "nst_engine.pooling":
            prop.value = "avg"
    lying = tmp_path / "lying.onnx"
    onnx.save(model, str(lying))
    with pytest.raises(ModelError, match="says avg pooling but the graph pools with MaxPool"):
        inspect(lying)


# -- hangs and unbounded reads --------------------------------------------------------------------------------


def _run_cli(*args: str | Path, timeout: float = 120, env: dict[str, str] | None = None) -> tuple[int, str]:
    done = subprocess.run(
        [sys.executable, "-m", "nst_engine", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        check=False,
    )
    return done.returncode, done.stderr


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_a_fifo_or_a_device_as_an_input_is_refused_at_once(
    kind: str, pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    if kind == "fifo":
        source = tmp_path / "pipe.jpg"
        os.mkfifo(source)
    else:
        source = Path("/dev/zero")
    code, err = _run_cli("stylize", source, pair[1], "-o", tmp_path / "o.png", "--model", model_path, *SIZE, timeout=60)
    assert code == 1 and ("FIFO" if kind == "fifo" else "a device") in err and "Traceback" not in err, err
    code, err = _run_cli("stylize", *pair, "-o", tmp_path / "o.png", "--model", source, *SIZE, timeout=60)
    assert code == 1 and "not a regular file" in err, err


def test_an_oversized_cache_entry_is_not_read(model_path: Path, model_info, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    warnings: list[str] = []
    cache = TargetCache(tmp_path / "cache", warnings.append)
    targets = CachedTargets(OnnxEncoder(model_path, "cpu"), cache, model_info.sha256, "cpu", "fp32", "max")
    image = gradient_image(32, 32)
    targets.content(image, ("relu1_1",))
    (entry,) = (cache.root / "targets").glob("*/*.safetensors")
    with entry.open("r+b") as handle:
        handle.truncate(2 << 30)  # sparse: 2 GiB on paper, nothing on disk
    again = CachedTargets(OnnxEncoder(model_path, "cpu"), cache, model_info.sha256, "cpu", "fp32", "max")
    again.content(image, ("relu1_1",))
    assert "larger than any entry" in warnings[-1] and again.records[-1].cache == "miss"
    assert entry.stat().st_size < 1 << 20  # replaced by a real entry


# -- silently wrong ---------------------------------------------------------------------------------------------


def test_an_opset_the_exporter_cannot_write_is_refused(tmp_path: Path) -> None:
    one_line_error(cli("export", "--weights", "random", "-o", tmp_path / "m.onnx", "--opset", "99"), "--opset 99")
    assert not list(tmp_path.iterdir())


def test_a_checkpoint_continues_only_its_own_photo(
    pair: tuple[Path, Path], model_path: Path, tmp_path: Path, shared_images: Path
) -> None:
    from nst_engine.api import ModelSpec, Session, StyleConfig
    from nst_engine.events import StepDone

    config = StyleConfig(size=32, steps=6)
    session = Session(config, [pair[1]], model=ModelSpec(model=model_path))
    session.subscribe(lambda e: session.stop() if isinstance(e, StepDone) else None)
    first = session.stylize(pair[0], tmp_path / "a.png")
    assert first.checkpoint is not None
    other = tmp_path / "other.png"
    images.save(images.load(shared_images / "content_tubingen.jpg", 48).flip(-1)[..., :36, :], other)
    result = cli("stylize", other, pair[1], "-o", tmp_path / "b.png", "--model", model_path, "--size", "32",
                 "--steps", "6", "--resume", first.checkpoint)  # fmt: skip
    one_line_error(result, "made from another content image")


@pytest.mark.parametrize(
    ("damage", "needle"),
    [("keys", "is damaged"), ("json", "is damaged"), ("garbage", "not a readable nst-engine checkpoint")],
)
def test_a_damaged_checkpoint_is_one_line(
    damage: str, needle: str, pair: tuple[Path, Path], model_path: Path, tmp_path: Path
) -> None:
    ckpt = tmp_path / "out.png.ckpt"
    if damage == "garbage":
        ckpt.write_bytes(b"\x00" * 100)
    else:
        data = {"format": 2, "settings": "{not json" if damage == "json" else "{}", "scale": 0}
        torch.save(data, ckpt)
    result = cli("stylize", *pair, "-o", tmp_path / "out.png", "--model", model_path, *SIZE, "--resume", ckpt)
    one_line_error(result, needle)


# -- would have crashed ---------------------------------------------------------------------------------------

BAD: dict[str, tuple[Callable[[Path], list[str]], str]] = {
    "-o under a file": (lambda t: ["-o", str(t / "photo.png" / "out.png")], "is a file, not a folder"),
    "-o name of 300 characters": (lambda t: ["-o", str(t / ("x" * 296 + ".png"))], "over the 255 a file name"),
    "--trace onto a folder": (lambda t: ["-o", str(t / "o.png"), "--trace", str(t)], "is a folder"),
    "--name with an attribute": (lambda t: ["-o", str(t / "out"), "--name", "{stem.nope}.png"], "bad --name"),
    "--size 100000": (lambda t: ["-o", str(t / "o.png"), "--size", "100000"], "over the limit"),
    "--style-scale 100": (lambda t: ["-o", str(t / "o.png"), "--style-scale", "100", "--size", "1024"], "over the"),
    "--seed 2**70": (lambda t: ["-o", str(t / "o.png"), "--seed", str(2**70)], "--seed must be"),
    "--weights random:2**70": (lambda t: ["-o", str(t / "o.png"), "--weights", f"random:{2**70}"], "bad seed"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_values_are_one_line_before_the_run(case: str, pair: tuple[Path, Path], model_path: Path) -> None:
    make, needle = BAD[case]
    folder = pair[0].parent
    if case == "--name with an attribute":
        (folder / "out").mkdir()
    args = make(folder)
    model = [] if "--weights" in args else ["--model", str(model_path)]
    before = {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}
    one_line_error(cli("stylize", *pair, *args, *model, "--steps", "1", "--quiet"), needle)
    assert {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()} == before


def test_bad_ort_threads_variable_is_one_line(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    result = cli("stylize", *pair, "-o", tmp_path / "o.png", "--model", model_path, *SIZE,
                 env={"NST_ENGINE_ORT_THREADS": "abc"})  # fmt: skip
    one_line_error(result, "NST_ENGINE_ORT_THREADS='abc'")


def test_an_unusable_cache_warns_and_runs_without_it(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    blocker = tmp_path / "cachefile"
    blocker.write_text("a file where the cache folder should be")
    result = cli("stylize", *pair, "-o", tmp_path / "o.png", "--model", model_path, *SIZE, "--cache-dir", blocker)
    assert result.exit_code == 0 and "running without it" in result.stderr and (tmp_path / "o.png").is_file()
    assert blocker.read_text().startswith("a file")


# -- signals -----------------------------------------------------------------------------------------------------


def test_ctrl_c_while_starting_up_is_one_line(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nst_engine",
            "stylize",
            *map(str, pair),
            "-o",
            str(tmp_path / "o.png"),
            "--model",
            str(model_path),
        ],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    time.sleep(0.3)  # torch and ONNX Runtime take seconds to import
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "Traceback" not in err and err.strip().count("\n") <= 3, err


# -- what a new user sees ----------------------------------------------------------------------------------------


def test_a_preset_says_what_it_set(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    result = cli("stylize", *pair, "-o", tmp_path / "o.png", "--model", model_path, "--preset", "jcjohnson",
                 "--size", "32", "--steps", "1", "--quiet")  # fmt: skip
    text = " ".join(result.stderr.split())
    assert result.exit_code == 0 and "preset jcjohnson:" in text and "content-weight 5.0" in text
    assert "steps 1000 (overridden)" in text and "size 512 (overridden)" in text


def test_bench_ratios_read_the_right_way() -> None:
    from nst_engine.bench.report import relative_speed

    assert relative_speed(0.89) == "1.12x slower" and relative_speed(1.34) == "1.34x faster"


def test_the_trace_is_valid_json_with_every_step(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    trace = tmp_path / "t.json"
    assert (
        cli("stylize", *pair, "-o", tmp_path / "o.png", "--model", model_path, *SIZE, "--trace", trace).exit_code == 0
    )
    assert json.loads(trace.read_text())["steps"][-1]["step"] == 2


def test_resume_alone_continues_run_and_trace(pair: tuple[Path, Path], model_path: Path, tmp_path: Path) -> None:
    """`stylize --resume X.ckpt` needs nothing else; the trace goes on numbering and says where it resumed."""
    out, trace = tmp_path / "out.png", tmp_path / "t.json"
    args = ["stylize", *map(str, pair), "-o", str(out), "--model", str(model_path), "--size", "32"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "nst_engine", *args, "--steps", "100000", "--save-every", "1", "--trace", str(trace)],
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    deadline = time.time() + 90
    while len(list(tmp_path.glob("out.step*.png"))) < 3 and time.time() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    before = json.loads(trace.read_text())["steps"]
    code, err = _run_cli("stylize", "--resume", tmp_path / "out.png.ckpt", "--steps", str(len(before) + 2),
                         "--trace", trace, "--quiet")  # fmt: skip
    assert code == 0, err
    after = json.loads(trace.read_text())
    assert [s["step"] for s in after["steps"]] == list(range(1, len(before) + 3))
    assert after["resumed_from"]["steps_before"] == len(before) and after["steps"][: len(before)] == before


def test_bars_end_at_the_last_step_with_its_loss_and_eta_before_the_wrote_line() -> None:
    import io

    from rich.console import Console

    from nst_engine.cli.render import Renderer
    from nst_engine.events import ImageDone, ImageStarted, ScaleStarted, StepDone
    from nst_engine.optim.loop import Step

    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, width=80, color_system=None)
    targets = {"hits": 0, "memory_hits": 0, "misses": 2, "style_forward_passes": 1, "content_forward_passes": 1}
    with Renderer(console, "bars") as render:
        render(ImageStarted(0, 1, "photo.jpg", Path("out.png")))
        render(ScaleStarted(0, 0, 1, (48, 64), 100))
        for n in range(1, 101):
            losses = {"content": 1.0, "style": 2.0, "tv": 0.1, "total": 1.0 / n}
            render(StepDone(0, Step(n, 100, losses, n * 0.1, size=(48, 64))))
        render(
            ImageDone(0, "photo.jpg", Path("out.png"), "done", 10.0, {"total": 0.01}, 100, targets | {"seconds": 0.1})
        )
        console.print("wrote out.png")
    text = buffer.getvalue()
    final = text.rfind("100/100")
    line = text[text.rfind("\n", 0, final) + 1 : text.find("\n", final)]
    assert "total 0.01" in line and "ETA" in line and "…" not in line, line
    assert text.rfind("wrote") > final
