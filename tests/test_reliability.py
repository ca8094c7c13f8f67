"""The reliability report: every hostile input and injected fault, how each ended.

Runs in CI with the rest of the suite. The README's reliability table must equal what this run observed;
after a deliberate change, regenerate it with
    NST_ENGINE_WRITE_RELIABILITY=1 python -m pytest tests/test_reliability.py
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from typer.testing import CliRunner

from engine import images
from engine.cache import CachedTargets, TargetCache
from engine.cli import app
from engine.config import StyleConfig
from engine.errors import NumericalError
from engine.optim.loop import optimize
from engine.stylize import stylize
from export.runtime import OnnxEncoder
from tests.conftest import ROOT, gradient_image, poisoned_quadratic
from tests.images_corpus import corpus

START, END = "<!-- reliability:start -->", "<!-- reliability:end -->"
Outcome = tuple[str, str, str]  # (case, expected ending, observed ending)


def _stylize_file(path: Path, style: Path, model: Path, out: Path) -> str:
    result = CliRunner().invoke(
        app,
        [
            "stylize",
            str(path),
            str(style),
            "-o",
            str(out),
            "--model",
            str(model),
            "--size",
            "32",
            "--steps",
            "1",
            "--quiet",
        ],
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    if result.exit_code == 0 and out.is_file():
        out.unlink()
        return "converted, image written"
    one_line = len([line for line in lines if line.startswith("error:")]) == 1 and "Traceback" not in result.output
    if result.exit_code == 1 and one_line and not out.exists():
        message = lines[-1].removeprefix("error:").strip()
        return "refused: " + re.sub(r"'[^']*/", "'", message).split(";")[0]
    return f"BROKEN (exit {result.exit_code}): {result.output[-200:]}"


EXPECTED_FILES = {
    "truncated.jpg": "refused",
    "truncated.png": "refused",
    "empty.png": "refused",
    "one_pixel.png": "converted",
    "bomb.png": "refused",
    "random_bytes.jpg": "refused",
    "png_named.jpg": "converted",
    "deep16.png": "converted",
    "gray.png": "converted",
    "rgba.png": "converted",
    "palette.png": "converted",
    "exif_rotated.jpg": "converted",
    "long_thin.png": "refused",
    "cmyk.jpg": "converted",
    "text.png": "refused",
    "animated.gif": "converted",
}


def _faults(model_info, model_path: Path, tmp: Path) -> list[Outcome]:  # type: ignore[no-untyped-def]
    results: list[Outcome] = []

    def record(case: str, expected: str, check: Callable[[], str]) -> None:
        try:
            results.append((case, expected, check()))
        except Exception as exc:  # noqa: BLE001 - a crash is an outcome to report, then fail on
            results.append((case, expected, f"BROKEN: {type(exc).__name__}: {exc}"))

    target = torch.full((1, 3, 8, 8), 0.3)

    def nan_once() -> str:
        r = optimize(poisoned_quadratic(target, {3}), torch.rand(1, 3, 8, 8), steps=10, optimizer="adam")
        return "recovered" if r.recoveries == 1 and bool(torch.isfinite(r.image).all()) else "BROKEN"

    def nan_always() -> str:
        try:
            optimize(poisoned_quadratic(target, set(range(3, 99))), torch.rand(1, 3, 8, 8), steps=30, optimizer="adam")
        except NumericalError as exc:
            good = isinstance(exc.image, torch.Tensor) and bool(torch.isfinite(exc.image).all())
            return "stopped with a message, last good image kept" if good else "BROKEN"
        return "BROKEN: no error"

    def extreme_weight() -> str:
        config = StyleConfig(size=48, steps=5, style_weight=1e12)
        r = stylize(
            gradient_image(36, 48),
            [gradient_image(48, 48, 1)],
            config=config,
            net=model_info.torch_module(config.layers),
            targets=_direct(model_path),
        )
        ok = all(all(v == v and abs(v) != float("inf") for v in s.losses.values()) for s in r.steps)
        return "finished, finite losses" if ok and bool(torch.isfinite(r.image).all()) else "BROKEN"

    def damaged_cache(kind: str) -> Callable[[], str]:
        def check() -> str:
            warnings: list[str] = []
            cache = TargetCache(tmp / f"cache-{kind}", warnings.append)
            encoder = OnnxEncoder(model_path, "cpu")
            image = gradient_image(32, 32)
            CachedTargets(encoder, cache, model_info.sha256, "cpu", "fp32", "max").content(image, ("relu1_1",))
            (entry,) = (cache.root / "targets").glob("*/*.safetensors")
            data = entry.read_bytes()
            flipped = data[:-16] + bytes(b ^ 0xFF for b in data[-16:])  # zeros would be no change for ReLU zeros
            entry.write_bytes(data[: len(data) // 2] if kind == "truncated" else flipped)
            again = CachedTargets(encoder, cache, model_info.sha256, "cpu", "fp32", "max")
            again.content(image, ("relu1_1",))
            ok = len(warnings) == 1 and again.records[-1].cache == "miss" and cache.load(entry.stem) is not None
            return "warned, recomputed, replaced" if ok else "BROKEN"

        return check

    def killed_writer() -> str:
        root = tmp / "cache-kill"
        writer = (
            "import sys, torch\nfrom pathlib import Path\nfrom engine.cache import TargetCache\n"
            "c = TargetCache(Path(sys.argv[1]))\nfor i in range(10**6):\n"
            "    c.save(f'{i % 5:02d}' + '0' * 62, {'t': torch.rand(512, 512)}, 'style')\n"
        )
        proc = subprocess.Popen([sys.executable, "-c", writer, str(root)])
        deadline = time.time() + 60
        while len(list(root.glob("targets/*/*.safetensors"))) < 3 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        warnings: list[str] = []
        cache = TargetCache(root, warnings.append)
        entries = list(root.glob("targets/*/*.safetensors"))
        ok = entries and all(cache.load(p.stem) is not None for p in entries) and not warnings
        return "cache usable, no damaged entry" if ok else "BROKEN"

    def tampered_model() -> str:
        import onnx

        model = onnx.load(str(model_path))
        model.graph.node[2].input[1] = model.graph.node[0].output[0]  # a conv weight from a computed value
        bad = tmp / "tampered.onnx"
        onnx.save(model, str(bad))
        out = tmp / "never.png"
        result = CliRunner().invoke(
            app,
            ["stylize", str(tmp / "c.png"), str(tmp / "c.png"), "-o", str(out), "--model", str(bad), "--size", "32"],
        )
        ok = result.exit_code == 1 and "not an nst-engine feature model" in result.stderr and not out.exists()
        return "refused before use" if ok else f"BROKEN: {result.stderr[-200:]}"

    def disk_full() -> str:
        from unittest import mock

        out = tmp / "full.png"
        with mock.patch("os.replace", side_effect=OSError(28, "No space left on device")), contextlib.suppress(OSError):
            images.save(torch.rand(1, 3, 8, 8), out)
        return "error raised, nothing half-written" if not list(tmp.glob("*full.png*")) else "BROKEN"

    images.save(gradient_image(32, 32), tmp / "c.png")
    record("non-finite loss once", "recovered", nan_once)
    record("non-finite loss every step", "stopped with a message, last good image kept", nan_always)
    record("style weight 1e12", "finished, finite losses", extreme_weight)
    record("cache entry with flipped bytes", "warned, recomputed, replaced", damaged_cache("corrupt"))
    record("cache entry truncated", "warned, recomputed, replaced", damaged_cache("truncated"))
    record("kill -9 during cache writes", "cache usable, no damaged entry", killed_writer)
    record("ONNX model with a rewired graph", "refused before use", tampered_model)
    record("disk full while writing the output", "error raised, nothing half-written", disk_full)
    return results


def _direct(model_path: Path):  # type: ignore[no-untyped-def]
    from engine.targets import DirectTargets

    return DirectTargets(OnnxEncoder(model_path, "cpu"))


def _table(files: list[Outcome], faults: list[Outcome]) -> str:
    lines = [
        START,
        "",
        f"{len(files)} hostile or odd input files and {len(faults)} injected faults, generated and "
        "run by `tests/test_reliability.py` in CI.",
        "",
        "| input file | ended |",
        "| --- | --- |",
    ]
    lines += [f"| `{name}` | {observed} |" for name, _, observed in files]
    lines += ["", "| fault injected | ended |", "| --- | --- |"]
    lines += [f"| {name} | {observed} |" for name, _, observed in faults]
    lines += [
        "",
        "Also tested elsewhere: SIGINT and SIGTERM mid-run save the image and a checkpoint that `--resume` "
        "continues (tests/test_cli.py); `--resume` reaches the same image as an uninterrupted run "
        "(tests/test_optimize.py); out-of-memory before and during a run (tests/test_memory.py).",
        "",
        END,
    ]
    return "\n".join(lines)


def test_reliability_report(model_info, model_path: Path, shared_images: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    files_dir = corpus(tmp_path / "corpus")
    style = shared_images / "style_great_wave.jpg"
    files: list[Outcome] = []
    for name, expected in EXPECTED_FILES.items():
        files.append((name, expected, _stylize_file(files_dir[name], style, model_path, tmp_path / "out.png")))
    faults = _faults(model_info, model_path, tmp_path)
    table = _table(files, faults)
    readme = ROOT / "README.md"
    text = readme.read_text()
    if os.environ.get("NST_ENGINE_WRITE_RELIABILITY"):
        text = re.sub(re.escape(START) + ".*" + re.escape(END), lambda m: table, text, flags=re.S)
        readme.write_text(text)
    broken = [c for c in files + faults if not c[2].startswith(c[1])]
    assert not broken, broken
    assert table in text, (
        "README reliability section is stale: NST_ENGINE_WRITE_RELIABILITY=1 pytest tests/test_reliability.py"
    )
