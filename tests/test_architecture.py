"""The house rules of docs/architecture.md, checked on the source: imports point down the layer
table only, and no two modules import each other (directly or round a loop), lazy imports
inside functions included - a cycle hidden in a function is still a cycle."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "bayes", "jobs", "hpc")
# layer -> the top-level packages it must never import (ARCHITECTURE: imports point down only)
FORBIDDEN = {
    "kernels": {"jobs", "bayes", "hpc"},
    "bayes": {"kernels", "jobs", "hpc"},
    "jobs": {"bayes", "hpc"},
    "hpc": set(),
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in (ROOT / package).rglob("*.py"):
            found[_module_name(path)] = path
    return found


def _imports(path: Path, modules: dict[str, Path]) -> set[str]:
    """The project modules `path` imports (resolved to the longest existing module name)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # `from pkg import sub` imports the module pkg.sub; `from mod import name` imports mod
            for alias in node.names:
                sub = f"{node.module}.{alias.name}"
                names.add(sub if sub in modules else node.module)
    resolved = set()
    for name in names:
        if name.split(".")[0] not in PACKAGES:
            continue
        while name and name not in modules:
            name = name.rpartition(".")[0]
        if name and name not in PACKAGES:  # a package's empty __init__ is no dependency
            resolved.add(name)
    return resolved


def test_layers_import_downwards_only():
    modules = _modules()
    wrong = []
    for name, path in sorted(modules.items()):
        layer = name.split(".")[0]
        for target in _imports(path, modules):
            if target.split(".")[0] in FORBIDDEN[layer]:
                wrong.append(f"{name} imports {target}")
    assert not wrong, "layer rule broken:\n" + "\n".join(wrong)


def test_no_import_cycles_between_modules():
    modules = _modules()
    graph = {name: _imports(path, modules) - {name} for name, path in modules.items()}
    cycles = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if state.get(target) == 1:
                cycles.append(" -> ".join(stack[stack.index(target):] + [target]))
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [])
    assert not cycles, "import cycles:\n" + "\n".join(cycles)


def test_the_checker_sees_a_planted_cycle(tmp_path):
    """The cycle finder is not vacuous: two modules importing each other are reported."""
    (tmp_path / "a.py").write_text("def f():\n    from kernels.cell import b\n")
    modules = {"kernels.cell.a": tmp_path / "a.py", "kernels.cell.b": tmp_path / "a.py"}
    assert _imports(tmp_path / "a.py", modules) == {"kernels.cell.b"}
