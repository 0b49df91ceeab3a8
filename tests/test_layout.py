"""The house rules, checked from the source: imports point one way, with no circle; the library
knows nothing of Prefect, DVC, YAML or files; every module stays readable (<= 600 lines)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
PACKAGES = ("deepcompression", "models", "tasks", "flows", "runtime", "cli", "benchmarks")
MAX_LINES = 600
LIBRARY_FORBIDDEN = ("prefect", "dvc", "yaml", "tasks", "flows", "runtime", "cli")
"""What the pure library (deepcompression/, models/) may not import."""
LAYERS = {
    "deepcompression": {"deepcompression", "models"},
    "models": {"models"},
    "tasks": {"deepcompression", "models", "tasks", "runtime"},
    "runtime": {"deepcompression", "runtime", "tasks"},
    "flows": {"deepcompression", "models", "tasks", "flows", "runtime"},
}
"""Which project packages each layer may import: library -> tasks -> flows, the runtime apart
(stages use its decorators and monitors; it never imports a stage)."""


def modules() -> dict[str, Path]:
    """Every project module by dotted name."""
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            found[name.removesuffix(".__init__")] = path
    return found


def imports(path: Path) -> set[str]:
    """Absolute module names imported anywhere in the file (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names |= {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    """Project module -> the project modules it imports."""
    found = modules()
    return {name: {m for m in imports(path) if m in found} - {name} for name, path in found.items()}


def test_no_import_circle(graph):
    """Depth-first search over the import graph finds no back edge."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                circle = stack[stack.index(nxt) :] + [nxt]
                pytest.fail("import circle: " + " -> ".join(circle))
            if nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


@pytest.mark.parametrize("layer", sorted(LAYERS))
def test_imports_point_one_way(layer, graph):
    """A layer imports only the layers below it (and the runtime never imports a stage)."""
    wrong = {
        f"{name} -> {target}"
        for name, targets in graph.items()
        if name.split(".")[0] == layer
        for target in targets
        if target.split(".")[0] not in LAYERS[layer]
    }
    assert not wrong, sorted(wrong)


def test_the_library_imports_no_orchestration():
    """deepcompression/ and models/ import no Prefect, DVC or YAML, and no project layer above."""
    wrong = {
        f"{name} imports {module}"
        for name, path in modules().items()
        if name.split(".")[0] in ("deepcompression", "models")
        for module in imports(path)
        if module.split(".")[0] in LIBRARY_FORBIDDEN
    }
    assert not wrong, sorted(wrong)


def test_every_module_is_at_most_600_lines():
    """One concept per module: none outside tests/ is longer than MAX_LINES."""
    long = {
        str(path.relative_to(ROOT)): n
        for path in modules().values()
        if (n := len(path.read_text().splitlines())) > MAX_LINES
    }
    assert not long, f"split these modules: {long}"
