"""Loads the bench/ scripts (not a package) as modules for their tests."""
import importlib.util
import os

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))


def path(name):
    return os.path.join(ROOT, "bench", f"{name}.py")


def load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
