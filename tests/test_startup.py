"""The command line answers at once when it runs nothing: ``--help``, ``--version``, a usage error and ``cache info``
load neither torch nor ONNX Runtime, Ray, FastAPI or PyAV (how long they take is a benchmark:
``nst-engine bench --case startup``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

HEAVY = ("torch", "onnxruntime", "onnx", "ray", "fastapi", "av", "cv2")
PROBE = """
import sys
from nst_engine.launch import main
sys.argv = ["nst-engine", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    code = exc.code
else:
    code = 0
print("CODE", code, "HEAVY", *[m for m in {heavy} if m in sys.modules], file=sys.stderr)
"""


@pytest.mark.parametrize(
    ("args", "code"),
    [(["--version"], 0), (["--help"], 0), (["stylize", "--help"], 0), (["video", "--help"], 0),
     (["stylize", "--stpes", "3"], 2), (["cache", "info"], 0), (["cache", "clear"], 0)],
)  # fmt: skip
def test_commands_that_run_nothing_import_nothing_heavy(args: list[str], code: int, tmp_path: Path) -> None:
    env = {"NST_ENGINE_CACHE": str(tmp_path / "cache"), "PATH": "/usr/bin:/bin", "COLUMNS": "80"}
    done = subprocess.run([sys.executable, "-c", PROBE.format(heavy=HEAVY), *args], env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"CODE {code} HEAVY"), done.stderr
    assert last == f"CODE {code} HEAVY", f"{args} imported {last.split('HEAVY')[1].split()}"
