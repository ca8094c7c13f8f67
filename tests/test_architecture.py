"""The import graph, read from the source (every import, including those inside functions): no cycles, and no
arrow that runs back up the layers.

The folders are one import package, ``nst_engine`` (pyproject.toml maps ``engine/`` to it and ``export/`` and
``bench/`` into it). Layers, bottom to top: the engine's core (numerics, images, files, settings, the optimisers)
< ``nst_engine.export`` (the ONNX side) < ``nst_engine.session`` (handed an opened model) <
``nst_engine.api`` (which opens ONNX models: ``api.model``), ``.video``, ``.cluster`` and ``.web`` (runners on a
session) < ``nst_engine.bench`` < ``nst_engine.cli``. A module may import its own layer or lower ones. Only the front
doors (cli, web, api) import the exporter or ONNX Runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: Each source folder and the package it is installed as.
PACKAGES = {"engine": "nst_engine", "export": "nst_engine.export", "bench": "nst_engine.bench"}


def _module(path: Path) -> str:
    folder, *parts = list(path.relative_to(ROOT).with_suffix("").parts)
    parts = parts[:-1] if parts[-1] == "__init__" else parts
    return ".".join([PACKAGES[folder], *parts])


def _path(module: str) -> Path:
    for folder, package in sorted(PACKAGES.items(), key=lambda kv: -len(kv[1])):
        if module == package or module.startswith(package + "."):
            rest = module[len(package) :].lstrip(".").replace(".", "/")
            base = ROOT / folder / rest if rest else ROOT / folder
            return base.with_suffix(".py") if base.with_suffix(".py").exists() else base / "__init__.py"
    raise KeyError(module)


def _graph() -> dict[str, set[str]]:
    modules = {_module(p): p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for target in targets:
                if target in modules and target != name:
                    graph[name].add(target)
    return graph


def layer(module: str) -> int:
    name = module.removeprefix("nst_engine.")
    if name.startswith("cli") or module in ("nst_engine.__main__", "nst_engine.launch"):
        return 5
    if name.startswith("bench"):
        return 4
    if name == "video" or name.startswith(("cluster", "web", "api")):  # runners and front doors
        return 3
    if name == "session":
        return 2
    if name.startswith("export"):
        return 1
    return 0


def test_every_import_of_the_project_names_the_one_package() -> None:
    """No module imports ``engine``, ``export`` or ``bench`` as top-level names: installed, they do not exist."""
    stale = []
    for folder in PACKAGES:
        for path in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text())):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
                if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    names = [node.module]
                stale += [f"{path.relative_to(ROOT)}: {n}" for n in names if n.split(".")[0] in PACKAGES]
    assert stale == []


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    # A package's __init__ re-exporting its own modules is not a cycle a reader trips over; anything else is.
    real = [c for c in cycles if not all(m == c[0] or m.startswith(c[0] + ".") for m in c if "." in c[0])]
    assert real == []


def test_no_arrow_runs_back_up_the_layers() -> None:
    upward = sorted(
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in _graph().items()
        for b in targets
        if layer(b) > layer(a) and not b.startswith(a + ".")
    )
    assert upward == []


def test_bench_is_imported_only_by_the_cli() -> None:
    users = sorted(
        a
        for a, targets in _graph().items()
        for b in targets
        if b.startswith("nst_engine.bench") and not a.startswith("nst_engine.bench")
    )
    assert users and all(u.startswith("nst_engine.cli") for u in users), users


#: The front doors, which open models: everything else in the engine is handed one.
FRONT_DOORS = ("nst_engine.cli", "nst_engine.web", "nst_engine.api", "nst_engine.launch", "nst_engine.__main__")


def test_only_the_front_doors_import_onnx_runtime_or_the_exporter() -> None:
    """The session, the pipeline, video and the cluster are handed an opened model (``Session(opener=...)``)."""
    graph = _graph()
    engine = [m for m in graph if not m.startswith((*FRONT_DOORS, "nst_engine.export", "nst_engine.bench"))]
    assert "nst_engine.session" in engine and "nst_engine.cluster" in engine and "nst_engine.video" in engine
    offenders = [
        f"{m} imports {t}" for m in engine for t in graph[m] if t.startswith(("nst_engine.export", *FRONT_DOORS))
    ]
    assert offenders == []
    for module in engine:
        source = _path(module).read_text()
        assert "import onnxruntime" not in source and "from onnxruntime" not in source, module
