"""No import cycles between slim's modules (imports anywhere in a file count, including those
inside functions: a cycle there still ties two modules' reasons to change together)."""
import ast
import os

SLIM_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "slim")


def slim_modules():
    """{dotted module name: file path} of every module of the slim package."""
    modules = {}
    base = os.path.dirname(SLIM_DIR)
    for directory, _, files in os.walk(SLIM_DIR):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(directory, name)
                dotted = os.path.relpath(path, base)[:-3].replace(os.sep, ".")
                modules[dotted[:-len(".__init__")] if dotted.endswith(".__init__") else dotted] = path
    return modules


def _owning_module(name, modules):
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def import_edges(modules):
    """{module: set of slim modules it imports}."""
    edges = {}
    for module, path in modules.items():
        package = module if path.endswith("__init__.py") else module.rpartition(".")[0]
        targets = set()
        with open(path, encoding="utf-8") as handle:
            tree = ast.parse(handle.read())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parts = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                names = [base] + [f"{base}.{alias.name}" for alias in node.names]
            else:
                continue
            for name in names:
                owner = _owning_module(name, modules)
                if owner and owner != module and not module.startswith(owner + "."):
                    targets.add(owner)
        edges[module] = targets
    return edges


def find_cycles(edges):
    """Strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, cycles, counter = {}, {}, [], set(), [], [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return cycles


def test_finds_a_cycle():
    assert find_cycles({"a": {"b"}, "b": {"a"}, "c": {"a"}}) == [["a", "b"]]


def test_slim_has_no_import_cycles():
    modules = slim_modules()
    assert len(modules) > 50
    assert find_cycles(import_edges(modules)) == []


def test_the_pruning_engine_imports_nothing_of_config_model_or_strategies():
    """slim.prune works on any classic Paddle program: no slim module outside it but errors
    and the Registry."""
    edges = import_edges(slim_modules())
    outside = {(module, target) for module, targets in edges.items() if module.startswith("slim.prune")
               for target in targets if not target.startswith("slim.prune")}
    assert {target for _, target in outside} <= {"slim", "slim.errors", "slim.registry"}, outside


# The layers of the package, lowest first (docs/design.md "Layout"): a package may import only
# packages of lower layers (and the root modules every layer uses); the config registry's
# string-based imports of the modules it registers are not import statements and not counted.
PACKAGE_LAYERS = (
    {"config", "metrics", "prune"},
    {"model", "io"},
    {"data", "sourcefree"},
    {"engine"},
    {"strategies"},
    {"runs"},
    {"workflow"},  # steps of several tools' command lines: the demo, bench/accuracy.py
    {"commands", "__main__"},  # __main__: python -m slim COMMAND
)
ROOT_MODULES = {"slim", "slim.errors", "slim.registry", "slim.paddle_env"}


def package_of(module):
    """'engine' for slim.engine.runner; None for the root modules (slim.errors, ...)."""
    parts = module.split(".")
    if len(parts) > 2 and parts[-1] == "__main__":
        return "__main__"  # python -m slim.PACKAGE: an entry point, the top layer
    return parts[1] if len(parts) > 2 or module not in ROOT_MODULES and len(parts) == 2 else None


def layer_violations(edges, layers=PACKAGE_LAYERS):
    """(module, target) pairs where a package imports one of its own layer or above."""
    rank = {package: level for level, packages in enumerate(layers) for package in packages}
    bad = []
    for module, targets in sorted(edges.items()):
        source = package_of(module)
        for target in sorted(targets):
            destination = package_of(target)
            if source is None or destination is None or source == destination:
                continue
            if source not in rank or destination not in rank or rank[destination] >= rank[source]:
                bad.append((module, target))
    return bad


def test_layer_violations_are_found():
    edges = {"slim.engine.runner": {"slim.strategies.base", "slim.errors"},
             "slim.strategies.base": {"slim.engine.hooks"}}
    assert layer_violations(edges) == [("slim.engine.runner", "slim.strategies.base")]


def test_packages_import_only_lower_layers():
    modules = slim_modules()
    packages = {package_of(module) for module in modules} - {None}
    assert packages == set().union(*PACKAGE_LAYERS), "a new package needs its place in PACKAGE_LAYERS"
    assert layer_violations(import_edges(modules)) == []
