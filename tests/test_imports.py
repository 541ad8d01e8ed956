"""The package's imports point one way: no module imports itself back through others (imports inside functions
counted), and the run (`kdlora.train`) never reaches up into the orchestration around it."""

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = SRC / "kdlora"


def _module_name(path: Path) -> str:
    parts = path.relative_to(SRC).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in PACKAGE.rglob("*.py")}


def _target(name: str) -> str | None:
    """The kdlora module `name` refers to: itself, or the package holding it (a name inside a module)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports_of(module: str) -> set[str]:
    """Every kdlora module `module` imports, anywhere in its body (functions included)."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                  else []))
            names = [f"{base}.{alias.name}" for alias in node.names]  # a submodule, else a name in `base`
        else:
            continue
        found |= {t for t in map(_target, names) if t and t != module and t.startswith("kdlora")}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm), each sorted."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle_and_only_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set(), "c": {"b"}}) == []


def test_no_import_cycle_in_the_package():
    graph = {module: imports_of(module) for module in MODULES}
    assert cycles(graph) == []


def test_the_run_never_imports_the_orchestration_around_it():
    """The training loop is told when to stop (a callable); it knows nothing of sweeps, stores, experiment files,
    searches or commands (litgpt's `fit`, optimum-benchmark's launchers)."""
    graph = {module: imports_of(module) for module in MODULES}
    above = ("kdlora.sweep", "kdlora.store", "kdlora.experiment", "kdlora.commands", "kdlora.cli", "kdlora.api")
    reached, todo = set(), [m for m in MODULES if m == "kdlora.train" or m.startswith("kdlora.train.")]
    while todo:
        module = todo.pop()
        if module not in reached:
            reached.add(module)
            todo += graph[module]
    assert sorted(m for m in reached if m.startswith(above)) == []
