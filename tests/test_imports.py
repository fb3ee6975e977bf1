"""The package's import graph: no circles (lazy and TYPE_CHECKING imports included) and model/ at the bottom."""

from __future__ import annotations

import ast
from pathlib import Path

import multiscale_transformer

ROOT = Path(next(iter(multiscale_transformer.__path__)))  # a namespace package: no __file__
# model.generate is the AXL card's public API; it delegates to generation/ (a lazy import), the one
# place model/ reaches up. Nothing in generation/ imports model.model at run time, so it is no circle.
ALLOWED_UPWARD = {("multiscale_transformer.model.model", "multiscale_transformer.generation.generate")}


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(typing: bool = True) -> dict[str, set[str]]:
    """Module -> package modules it imports anywhere in the file (lazy imports too), and also under
    `if TYPE_CHECKING:` unless typing=False: a circle of type imports is a circle a reader follows,
    and types can live where both sides import them."""
    modules = {module_name(p): p for p in ROOT.rglob("*.py")}
    graph: dict[str, set[str]] = {m: set() for m in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        typing_only = {
            id(sub)
            for node in ast.walk(tree)
            if not typing and isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING"
            for sub in ast.walk(node)
        }
        for node in ast.walk(tree):
            if id(node) in typing_only:
                continue
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            else:
                continue
            graph[name].update(t for t in targets if t in modules and t != name)
    return graph


def test_the_graph_is_read() -> None:
    graph = import_graph()
    assert "multiscale_transformer.model.model" in graph["multiscale_transformer.serving.engine"] or any(
        "multiscale_transformer.generation" in t for t in graph["multiscale_transformer.serving.engine"]
    )
    assert "multiscale_transformer.model.config" in graph["multiscale_transformer.model.model"]


def test_no_import_circles() -> None:
    graph = import_graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*path[path.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert cycles == [], "\n".join(" -> ".join(c) for c in cycles)


def test_model_imports_nothing_above_it() -> None:
    above = ("training", "generation", "serving", "export", "evaluation", "commands", "cli", "pretrained")
    graph = import_graph()
    upward = {
        (m, t)
        for m, targets in graph.items()
        if m.startswith("multiscale_transformer.model")
        for t in targets
        if t.split(".")[1] in above
    }
    assert upward <= ALLOWED_UPWARD, sorted(upward - ALLOWED_UPWARD)
