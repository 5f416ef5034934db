"""The import rules of the layers (docs/design.md): `ringsp` reaches the ops through their
face (`import ringsp_kernels`) only, and no module of the ops layer imports a module that
imports it back (no cycle, however long). Read from the sources with ast."""
import ast
import os

ROOT = os.path.join(os.path.dirname(__file__), os.pardir)


def _modules(package):
    """{dotted module name: path} of every .py file of `package` (a folder under ROOT)."""
    out = {}
    for base, _, files in os.walk(os.path.join(ROOT, package)):
        for name in files:
            if name.endswith(".py"):
                path = os.path.join(base, name)
                rel = os.path.relpath(path, ROOT)[:-3].split(os.sep)
                out[".".join(rel[:-1] if rel[-1] == "__init__" else rel)] = path
    return out


def _imports(module, path, modules=None):
    """The dotted names `module` imports (anywhere in the file, lazy imports included): for
    `from pkg import name`, pkg.name where that is a module of `modules`, else pkg."""
    modules = _modules("ringsp_kernels") if modules is None else modules
    with open(path) as f:
        tree = ast.parse(f.read(), path)
    is_package = path.endswith("__init__.py")
    here = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, node.lineno
        elif isinstance(node, ast.ImportFrom):
            base = here[: len(here) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                yield (sub if sub in modules else target), node.lineno


def test_ringsp_imports_only_the_face_of_the_ops():
    bad = []
    for module, path in _modules("ringsp").items():
        for name, line in _imports(module, path):
            if name.startswith("ringsp_kernels."):
                bad.append(f"{os.path.relpath(path, ROOT)}:{line} imports {name}")
    assert not bad, "ringsp must import `ringsp_kernels` and nothing below it:\n" + "\n".join(bad)


def test_the_import_rule_sees_an_internal_import(tmp_path):
    """The rule above can fail: an internal import written like those in ringsp/ is found."""
    path = tmp_path / "m.py"
    path.write_text("from ringsp_kernels import dispatch, attn_fwd\nimport ringsp_kernels.cuda.ops\nimport ringsp_kernels\n")
    names = [n for n, _ in _imports("ringsp.parallel.m", str(path))]
    assert names == ["ringsp_kernels.dispatch", "ringsp_kernels", "ringsp_kernels.cuda.ops", "ringsp_kernels"]


def _graph():
    modules = _modules("ringsp_kernels")
    graph = {}
    for module, path in modules.items():
        graph[module] = {name for name, _ in _imports(module, path, modules) if name in modules and name != module}
    return graph


def _cycle(graph):
    """One import cycle of `graph` as a list of modules, or None."""
    state = {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt, stack)
                if found:
                    return found
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node, [])
            if found:
                return found
    return None


def test_no_module_of_the_ops_layer_imports_a_module_that_imports_it():
    cycle = _cycle(_graph())
    assert cycle is None, "import cycle in ringsp_kernels: " + " -> ".join(cycle)


def test_the_cycle_check_finds_a_cycle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None


def test_the_face_imports_no_wing_internals():
    """The face finds backends through their registration: it may import top-level modules
    only (the wings are imported by the op registration, as packages)."""
    graph = _graph()
    wings = ("ringsp_kernels.cuda", "ringsp_kernels.npu", "ringsp_kernels.cpu")
    for module in ("ringsp_kernels", "ringsp_kernels.registry"):
        inner = [m for m in graph[module] if any(m.startswith(w + ".") for w in wings)]
        assert not inner, f"{module} imports wing internals {inner}"
    assert not {m for m in graph["ringsp_kernels"] if m.startswith(wings)}
