"""The package's layers import downwards only: no import cycle between rnnlab's subpackages and
top-level modules, nor between any two of its modules, counting imports inside functions too."""

import ast
from collections import defaultdict
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"


def _imports() -> dict[str, set[str]]:
    """module -> the rnnlab modules it imports (anywhere in its body)."""
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {".".join(p.relative_to(SRC).with_suffix("").parts) for p in SRC.rglob("*.py")}
    for path in SRC.rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts).removesuffix(".__init__")
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("rnnlab."):
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("rnnlab.")]
            else:
                continue
            for target in targets:
                if target in modules or f"{target}.__init__" in modules:
                    graph[name].add(target)
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _unit(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def test_no_module_imports_itself_back():
    assert _cycle(_imports()) is None


def test_no_cycle_between_the_layers():
    layers: dict[str, set[str]] = defaultdict(set)
    for src, targets in _imports().items():
        for target in targets:
            if _unit(src) != _unit(target) and "rnnlab" not in (_unit(src), _unit(target)):
                layers[_unit(src)].add(_unit(target))
    assert _cycle(layers) is None
    # The trainer knows families only through the registry; families never import the trainer.
    assert "train" not in layers["families"] and "cli" not in layers["families"]
