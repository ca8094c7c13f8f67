"""How long the command line takes to answer when it runs nothing: ``--version``, ``--help``, a mistyped option and
``cache info``, each a fresh process (the console script, as a user types it), and whether each loaded torch."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

#: What a user types that should answer at once (the target: under 0.5 s on the 2-core development machine).
COMMANDS: dict[str, list[str]] = {
    "--version": ["--version"],
    "--help": ["--help"],
    "usage error": ["stylize", "--stpes", "3"],
    "cache info": ["cache", "info"],
}


def _command() -> list[str]:
    script = shutil.which("nst-engine")
    return [script] if script else [sys.executable, "-m", "nst_engine"]


def startup_case(log: Callable[[str], None], repeats: int) -> list[dict[str, Any]]:
    """One row per command: every wall time (seconds), their median, and the heavy modules it imported."""
    rows = []
    probe = (
        "import runpy, sys\nsys.argv = ['nst-engine', *sys.argv[1:]]\n"
        "try:\n    runpy.run_module('nst_engine', run_name='__main__')\nexcept SystemExit:\n    pass\n"
        "print('HEAVY:', *[m for m in ('torch', 'onnxruntime', 'ray', 'fastapi', 'av') if m in sys.modules],"
        " file=sys.stderr)\n"
    )
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"NST_ENGINE_CACHE": cache}
        for name, args in COMMANDS.items():
            subprocess.run([*_command(), *args], env=env, capture_output=True, timeout=120)  # warm the disk cache
            samples = []
            for _ in range(repeats):
                start = time.perf_counter()
                subprocess.run([*_command(), *args], env=env, capture_output=True, timeout=120)
                samples.append(time.perf_counter() - start)
            loaded = subprocess.run([sys.executable, "-c", probe, *args], env=env, capture_output=True, text=True,
                                    timeout=120).stderr.strip().splitlines()  # fmt: skip
            heavy = next((line[6:].strip() for line in reversed(loaded) if line.startswith("HEAVY:")), "?")
            median = statistics.median(samples)
            log(f"startup {name}: median {median:.3f} s over {repeats}; heavy modules: {heavy or 'none'}")
            rows.append({"command": name, "seconds": samples, "median_s": median, "heavy_modules": heavy})
    return rows


def startup_markdown(rows: list[dict[str, Any]]) -> list[str]:
    lines = [
        "",
        "## Start-up",
        "",
        "Each command a fresh process of the console script; wall time, median of the runs (target: 0.5 s).",
        "",
        "| command | median | min - max | heavy modules imported |",
        "| --- | --- | --- | --- |",
    ]
    for r in rows:
        lo, hi = min(r["seconds"]), max(r["seconds"])
        lines.append(
            f"| `{r['command']}` | {r['median_s']:.3f} s | {lo:.3f} - {hi:.3f} s | {r['heavy_modules'] or 'none'} |"
        )
    return lines
