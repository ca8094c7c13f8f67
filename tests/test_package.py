"""The installed shape: one import package, ``nst_engine``, and its console script. A wheel is built from the
repository and its top-level names read; then it is installed (not editable) into a fresh virtual environment,
which borrows this one's dependencies, and ``nst-engine stylize`` runs from there."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (found,) = out.glob("nst_engine-*.whl")
    return found


@pytest.mark.slow
def test_the_wheel_holds_one_top_level_package_and_the_console_script(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        tops = {name.split("/", 1)[0] for name in names}
        dist_info = next(t for t in tops if t.endswith(".dist-info"))
        entry_points = archive.read(f"{dist_info}/entry_points.txt").decode()
    assert tops == {"nst_engine", dist_info}, tops
    assert "nst-engine = nst_engine.launch:main" in entry_points
    for needed in ("nst_engine/export/runtime.py", "nst_engine/bench/cases.py", "nst_engine/web/static/app.js",
                   "nst_engine/__main__.py", "nst_engine/py.typed"):  # fmt: skip
        assert needed in names, needed


@pytest.mark.slow
def test_installed_from_the_wheel_it_stylizes_with_nothing_else_at_the_top(
    wheel: Path, tmp_path: Path, shared_images: Path
) -> None:
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    ask = "import sysconfig; print(sysconfig.get_path('purelib'))"
    purelib = Path(subprocess.check_output([str(python), "-c", ask], text=True).strip())
    before = {p.name for p in purelib.iterdir()}
    # This environment's dependencies (torch, ONNX Runtime, ...) without its editable nst_engine: a path line in
    # a .pth file adds the folder, not the .pth files inside it.
    (purelib / "borrowed.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
        check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    added = {p.name for p in purelib.iterdir()} - before - {"borrowed.pth"}
    assert {n for n in added if not n.endswith(".dist-info")} == {"nst_engine"}, added
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH",)}
    where = subprocess.check_output([str(python), "-c", "import nst_engine; print(nst_engine.__file__)"],
                                    text=True, env=env, cwd=tmp_path)  # fmt: skip
    assert where.startswith(str(purelib)), where
    assert subprocess.run([str(python), "-c", "import engine"], env=env, cwd=tmp_path,
                          capture_output=True).returncode != 0  # fmt: skip
    out = tmp_path / "out.png"
    run = subprocess.run(
        [str(venv / "bin" / "nst-engine"), "stylize", str(shared_images / "content_turtle.jpg"),
         str(shared_images / "style_great_wave.jpg"), "-o", str(out), "--weights", "random", "--size", "32",
         "--steps", "2", "--quiet"],
        env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert out.is_file()
    version = subprocess.run([str(python), "-m", "nst_engine", "--version"], env=env, cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert version.stdout.startswith("nst-engine ")
