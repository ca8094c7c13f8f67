"""The import graph, read from the source (every import, including those inside functions): no cycles, and no
arrow that runs back up the layers.

Layers, bottom to top: the engine's core (numerics, images, files, settings, the optimisers) < ``export`` (the
ONNX side) < ``engine.model`` and ``engine.session`` (which join the two) < ``engine.api``,
``engine.video``, ``engine.cluster`` and ``engine.web`` (runners on a session) < ``bench`` < ``engine.cli``. A
module may import its own layer or lower ones.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("engine", "export", "bench")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


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
    if module.startswith("engine.cli") or module in ("engine.__main__", "engine.launch"):
        return 5
    if module.startswith("bench"):
        return 4
    if module in ("engine.api", "engine.video", "engine.cluster") or module.startswith("engine.web"):  # runners
        return 3
    if module in ("engine.model", "engine.session"):
        return 2
    if module.startswith("export"):
        return 1
    return 0


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
        a for a, targets in _graph().items() for b in targets if b.startswith("bench") and not a.startswith("bench")
    )
    assert users and all(u.startswith("engine.cli") for u in users), users


def test_the_core_never_imports_onnx_runtime_or_the_exporter() -> None:
    graph = _graph()
    core = [m for m in graph if layer(m) == 0]
    assert all(not any(t.startswith("export") for t in graph[m]) for m in core)
    for module in core:
        path = ROOT / (module.replace(".", "/") + ".py")
        if not path.exists():
            path = ROOT / module.replace(".", "/") / "__init__.py"
        assert "onnxruntime" not in path.read_text(), module
