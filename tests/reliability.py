"""The reliability cases: every hostile input file and injected fault, and how each must end.

``tests/test_reliability.py`` runs each case as its own test. ``python -m tests.reliability`` runs them all and
writes the table in docs/reliability.md; no test writes a file outside its temporary folder.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from typer.testing import CliRunner

from nst_engine import images
from nst_engine.cache import CachedTargets, TargetCache
from nst_engine.cli import app
from nst_engine.config import StyleConfig
from nst_engine.errors import NumericalError
from nst_engine.export.model_file import ModelInfo
from nst_engine.export.runtime import OnnxEncoder
from nst_engine.optim.loop import optimize
from nst_engine.stylize import stylize
from nst_engine.targets import DirectTargets
from tests.conftest import LAYERS, ROOT, SHARED_IMAGES, gradient_image, poisoned_quadratic
from tests.images_corpus import corpus

DOC = ROOT / "docs" / "reliability.md"
HOSTILE_TESTS = ("tests/test_nothing_lost.py", "tests/test_hostile_use.py", "tests/test_web_security.py")


@dataclass(frozen=True)
class Context:
    """What the fault cases run against: the random-weights model and a scratch folder."""

    model_info: ModelInfo
    model_path: Path
    tmp: Path


def file_outcome(path: Path, style: Path, model: Path, out: Path) -> str:
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


#: Each hostile or odd file of tests/images_corpus.py, and how stylizing it must end.
FILE_CASES = {
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


def nan_once(ctx: Context) -> str:
    target = torch.full((1, 3, 8, 8), 0.3)
    r = optimize(poisoned_quadratic(target, {3}), torch.rand(1, 3, 8, 8), steps=10, optimizer="adam")
    return "recovered" if r.recoveries == 1 and bool(torch.isfinite(r.image).all()) else "BROKEN"


def nan_always(ctx: Context) -> str:
    target = torch.full((1, 3, 8, 8), 0.3)
    try:
        optimize(poisoned_quadratic(target, set(range(3, 99))), torch.rand(1, 3, 8, 8), steps=30, optimizer="adam")
    except NumericalError as exc:
        good = isinstance(exc.image, torch.Tensor) and bool(torch.isfinite(exc.image).all())
        return "stopped with a message, last good image kept" if good else "BROKEN"
    return "BROKEN: no error"


def extreme_weight(ctx: Context) -> str:
    config = StyleConfig(size=48, steps=5, style_weight=1e12)
    r = stylize(
        gradient_image(36, 48),
        [gradient_image(48, 48, 1)],
        config=config,
        net=ctx.model_info.torch_module(config.layers),
        targets=DirectTargets(OnnxEncoder(ctx.model_path, "cpu")),
    )
    ok = all(all(v == v and abs(v) != float("inf") for v in s.losses.values()) for s in r.steps)
    return "finished, finite losses" if ok and bool(torch.isfinite(r.image).all()) else "BROKEN"


def damaged_cache(kind: str) -> Callable[[Context], str]:
    def check(ctx: Context) -> str:
        warnings: list[str] = []
        cache = TargetCache(ctx.tmp / f"cache-{kind}", warnings.append)
        encoder = OnnxEncoder(ctx.model_path, "cpu")
        image = gradient_image(32, 32)
        CachedTargets(encoder, cache, ctx.model_info.sha256, "cpu", "fp32", "max").content(image, ("relu1_1",))
        (entry,) = (cache.root / "targets").glob("*/*.safetensors")
        data = entry.read_bytes()
        flipped = data[:-16] + bytes(b ^ 0xFF for b in data[-16:])  # zeros would be no change for ReLU zeros
        entry.write_bytes(data[: len(data) // 2] if kind == "truncated" else flipped)
        again = CachedTargets(encoder, cache, ctx.model_info.sha256, "cpu", "fp32", "max")
        again.content(image, ("relu1_1",))
        ok = len(warnings) == 1 and again.records[-1].cache == "miss" and cache.load(entry.stem) is not None
        return "warned, recomputed, replaced" if ok else "BROKEN"

    return check


def killed_writer(ctx: Context) -> str:
    root = ctx.tmp / "cache-kill"
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


def tampered_model(ctx: Context) -> str:
    import onnx

    model = onnx.load(str(ctx.model_path))
    model.graph.node[2].input[1] = model.graph.node[0].output[0]  # a conv weight from a computed value
    bad = ctx.tmp / "tampered.onnx"
    onnx.save(model, str(bad))
    out = ctx.tmp / "never.png"
    result = CliRunner().invoke(
        app,
        [
            "stylize",
            str(ctx.tmp / "c.png"),
            str(ctx.tmp / "c.png"),
            "-o",
            str(out),
            "--model",
            str(bad),
            "--size",
            "32",
        ],
    )
    ok = result.exit_code == 1 and "not an nst-engine feature model" in result.stderr and not out.exists()
    return "refused before use" if ok else f"BROKEN: {result.stderr[-200:]}"


def disk_full(ctx: Context) -> str:
    from unittest import mock

    out = ctx.tmp / "full.png"
    with mock.patch("os.replace", side_effect=OSError(28, "No space left on device")), contextlib.suppress(OSError):
        images.save(torch.rand(1, 3, 8, 8), out)
    return "error raised, nothing half-written" if not list(ctx.tmp.glob("*full.png*")) else "BROKEN"


#: Each injected fault: (how it must end, the check that runs it and says how it ended).
FAULTS: dict[str, tuple[str, Callable[[Context], str]]] = {
    "non-finite loss once": ("recovered", nan_once),
    "non-finite loss every step": ("stopped with a message, last good image kept", nan_always),
    "style weight 1e12": ("finished, finite losses", extreme_weight),
    "cache entry with flipped bytes": ("warned, recomputed, replaced", damaged_cache("corrupt")),
    "cache entry truncated": ("warned, recomputed, replaced", damaged_cache("truncated")),
    "kill -9 during cache writes": ("cache usable, no damaged entry", killed_writer),
    "ONNX model with a rewired graph": ("refused before use", tampered_model),
    "disk full while writing the output": ("error raised, nothing half-written", disk_full),
}


def fault_outcome(name: str, ctx: Context) -> str:
    """How the fault case ended; a crash is an outcome too, reported as BROKEN."""
    images.save(gradient_image(32, 32), ctx.tmp / "c.png")
    try:
        return FAULTS[name][1](ctx)
    except Exception as exc:  # noqa: BLE001 - a crash is an outcome to report, then fail on
        return f"BROKEN: {type(exc).__name__}: {exc}"


def hostile_use() -> list[tuple[str, str]]:
    """Run the hostile-use tests (one test per class of hostile use) and say how each case ended."""
    import xml.etree.ElementTree as ET

    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "junit.xml"
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pytest",
                "-q",
                "-p",
                "no:cacheprovider",
                f"--junitxml={report}",
                *HOSTILE_TESTS,
            ],
            cwd=ROOT,
            capture_output=True,
            check=False,
        )
        rows = []
        for case in ET.parse(report).getroot().iter("testcase"):
            where = case.get("classname", "").rsplit(".", 1)[-1].removeprefix("test_").replace("_", " ")
            name = f"{where}: " + case.get("name", "").removeprefix("test_").replace("_", " ")
            failed = case.find("failure") is not None or case.find("error") is not None
            rows.append((name, "BROKEN (the test failed)" if failed else "handled as the test requires"))
        return rows


def table(files: list[tuple[str, str]], faults: list[tuple[str, str]], hostile: list[tuple[str, str]]) -> str:
    lines = [
        "# Reliability",
        "",
        f"{len(files)} hostile or odd input files and {len(faults)} injected faults, each run as its own test by "
        "`tests/test_reliability.py` in CI. This page is written by `python -m tests.reliability`.",
        "",
        "| input file | ended |",
        "| --- | --- |",
        *[f"| `{name}` | {observed} |" for name, observed in files],
        "",
        "| fault injected | ended |",
        "| --- | --- |",
        *[f"| {name} | {observed} |" for name, observed in faults],
        "",
        f"{len(hostile)} cases of hostile use, one per class ({', '.join(HOSTILE_TESTS)}; the web page's against "
        "a real `nst-engine serve` on 127.0.0.1): nothing lost, nothing hung, nothing silently wrong, no traceback.",
        "",
        "| hostile use | ended |",
        "| --- | --- |",
        *[f"| {name} | {observed} |" for name, observed in hostile],
        "",
        "Also tested elsewhere: SIGINT, SIGTERM and SIGHUP mid-run save the image and a checkpoint that `--resume` "
        "continues (tests/test_cli.py); `--resume` reaches the same image as an uninterrupted run "
        "(tests/test_optimize.py, tests/test_api.py); out-of-memory before and during a run (tests/test_memory.py).",
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    from nst_engine.export.model_file import inspect
    from nst_engine.export.onnx_export import export
    from nst_engine.weights import random_weights

    with tempfile.TemporaryDirectory() as folder:
        tmp = Path(folder)
        model = tmp / "model.onnx"
        export(random_weights(0), model, LAYERS, "max")
        files_dir = corpus(tmp / "corpus")
        style = SHARED_IMAGES / "style_great_wave.jpg"
        files = [(n, file_outcome(files_dir[n], style, model, tmp / "out.png")) for n in FILE_CASES]
        faults = []
        for name in FAULTS:
            scratch = tmp / re.sub(r"\W+", "-", name)
            scratch.mkdir()
            faults.append((name, fault_outcome(name, Context(inspect(model), model, scratch))))
    hostile = hostile_use()
    broken = [n for n, o in files + faults + hostile if o.startswith("BROKEN")]
    DOC.write_text(table(files, faults, hostile))
    print(f"wrote {DOC}" + (f"; BROKEN: {', '.join(broken)}" if broken else ""))
    sys.exit(1 if broken else 0)


if __name__ == "__main__":
    main()
