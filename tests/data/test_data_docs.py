"""fundl.data as a package: its public API, its modules' boundaries, and docs/data.md."""

import ast
import pathlib
import re

from fundl import data
from fundl.data import batching, dataset, loaders, prefetch, transforms

ROOT = pathlib.Path(__file__).resolve().parents[2]
MODULES = [dataset, batching, prefetch, transforms, loaders]


def test_the_package_exports_each_modules_public_functions():
    shared = {"check_examples", "take"}  # dataset's building blocks for the other modules
    exported = [name for module in MODULES for name in module.__all__ if name not in shared]
    assert sorted(data.__all__) == sorted(exported)
    for module in MODULES:
        for name in module.__all__:
            assert getattr(module, name).__module__ == module.__name__, name


def test_no_module_imports_private_names():
    for module in MODULES:
        tree = ast.parse(pathlib.Path(module.__file__).read_text())
        private = [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
            if alias.name.startswith("_")
        ]
        assert private == [], module.__name__


# ----------------------------------------------------------------------------- module and docs


def test_every_public_name_has_a_docstring_and_a_docs_line():
    page = (ROOT / "docs" / "data.md").read_text()
    for name in data.__all__:
        assert getattr(data, name).__doc__, name
        assert f"`{name}" in page, name


def test_docs_code_samples_run(tmp_path, monkeypatch):
    page = (ROOT / "docs" / "data.md").read_text()
    monkeypatch.chdir(tmp_path)  # a sample that writes a file writes it here
    samples = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert samples
    namespace: dict = {}
    for sample in samples:  # the samples build on each other, as a reader runs them
        exec(compile(sample, "docs/data.md", "exec"), namespace)
