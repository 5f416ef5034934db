"""`ringsp-bench`: lists the benchmark modules, or runs one as `python -m ringsp_bench.<name>` would."""
import ast
import os
import pkgutil
import runpy
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
_NOT_RUNNABLE = {"catalog", "__main__"}


def _summary(name):
    """The first sentence of a module's docstring, read from its source (nothing is imported)."""
    with open(os.path.join(_HERE, name + ".py"), encoding="utf-8") as f:
        doc = ast.get_docstring(ast.parse(f.read())) or ""
    first = " ".join(doc.split("\n\n")[0].split()).split(". ")[0].rstrip(".")
    return first if len(first) <= 100 else first[:99] + "…"


def names():
    """The runnable modules of the package, sorted."""
    found = {m.name for m in pkgutil.iter_modules([_HERE]) if not m.ispkg}
    return sorted(found - _NOT_RUNNABLE)


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    available = names()
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: ringsp-bench NAME [ARGS...]   (the same as python -m ringsp_bench.NAME ARGS...)\n")
        width = max(map(len, available))
        for name in available:
            print(f"  {name:<{width}}  {_summary(name)}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in available:
        print(f"ringsp-bench: unknown benchmark {name!r}; choose one of {', '.join(available)}", file=sys.stderr)
        return 2
    # exactly what `python -m` does (runpy sets argv[0]), so each module's own parsing and exit code apply
    saved = sys.argv
    sys.argv = [saved[0], *rest]
    try:
        runpy.run_module(f"{__package__}.{name}", run_name="__main__", alter_sys=True)
    finally:
        sys.argv = saved
    return 0
