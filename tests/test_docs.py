"""Every public name has a line in docs/api.md, docstring examples run, and the README's
commands are the CI's."""

import doctest
import importlib
import inspect
import pathlib
import pkgutil
import re
import tempfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fundl
from fundl import (
    activations,
    augment,
    checkpoint,
    data,
    gradcheck,
    initializers,
    losses,
    metrics,
    models,
    nn,
    optim,
    parallel,
    plot,
    precision,
    privacy,
    rules,
    train,
    tree,
)
from fundl.optim import schedules

ROOT = pathlib.Path(__file__).resolve().parents[1]
API = (ROOT / "docs" / "api.md").read_text()


ALL_MODULES = [
    fundl,
    initializers,
    activations,
    losses,
    nn,
    gradcheck,
    rules,
    tree,
    optim,
    schedules,
    data,
    train,
    checkpoint,
    metrics,
    plot,
    augment,
    models,
    privacy,
    parallel,
    precision,
]


@pytest.mark.parametrize("module", ALL_MODULES)
def test_every_public_name_is_documented(module):
    missing = [name for name in module.__all__ if not re.search(rf"`[^`]*\b{name}\b[^`]*`", API)]
    assert missing == []


@pytest.mark.parametrize("module", ALL_MODULES[1:])
def test_every_public_function_has_a_docstring(module):
    objects = {name: getattr(module, name) for name in module.__all__}
    ours = {
        name: obj
        for name, obj in objects.items()
        if callable(obj) and getattr(obj, "__module__", "").startswith("fundl")
    }
    assert ours
    undocumented = [name for name, obj in ours.items() if not obj.__doc__]
    assert undocumented == []


def test_every_public_module_has_a_reference_page():
    """docs/reference/ renders each public module's docstrings (``mkdocs build --strict``
    in .ci/run), and mkdocs.yml's nav lists every page."""
    config = (ROOT / "mkdocs.yml").read_text()
    for module in ALL_MODULES:
        name = module.__name__
        page = "fundl" if name == "fundl" else name.removeprefix("fundl.")
        assert f"::: {name}\n" in (ROOT / "docs" / "reference" / f"{page}.md").read_text()
        assert f": reference/{page}.md\n" in config, f"reference/{page}.md is not in the nav"
    for page in (ROOT / "docs").rglob("*.md"):
        name = page.relative_to(ROOT / "docs").as_posix()  # "concepts/notation.md"
        assert f": {name}\n" in config, f"{name} is not in mkdocs.yml's nav"


def test_readme_starts_with_the_two_set_up_commands():
    readme = (ROOT / "README.md").read_text().splitlines()
    fence = readme.index("```bash")
    assert readme[fence + 1] == 'pip install -e ".[examples]" && python examples/cnn_digits.py'
    assert readme[fence + 2] == (
        'pip install -e ".[dev]" && python -m pytest -q -n 2 --dist loadfile -m "not slow"'
    )
    assert readme[fence + 3] == "```"
    # CI runs this very line: .ci/run reads it from the README (.ci/readme_commands.sh)
    assert "readme_commands .ci/run" in (ROOT / ".ci" / "run").read_text()
    assert "README.md" in (ROOT / ".ci" / "readme_commands.sh").read_text()


@pytest.fixture(autouse=True)
def _free_compiled_programs_per_page():
    """Each page and docstring module compiles its own models: drop them after each test
    (conftest does so per module, and this module alone would otherwise hold 3 GB). A page
    that sets the matmul precision for the process has it set back after it."""
    precision = jax.config.jax_default_matmul_precision
    yield
    jax.config.update("jax_default_matmul_precision", precision)
    jax.clear_caches()


SLOW_PAGES = {  # over 10 s of CPU each: run by CI's slow step (-m slow)
    "README.md": "a full gradient check",
    "docs/training.md": "trains on the digits",
    "docs/models.md": "compiles a ResNet-20, a VGG, an Inception block and two LMs",
    "docs/layers.md": "compiles every layer family, training and evaluation",
}
PAGES = sorted(
    str(path.relative_to(ROOT))
    for path in [ROOT / "README.md", *(ROOT / "docs").rglob("*.md")]
    if "```python" in path.read_text()
)


@pytest.mark.parametrize(
    "page",
    [pytest.param(page, marks=pytest.mark.slow) if page in SLOW_PAGES else page for page in PAGES],
)
def test_code_samples_run(page, capsys, tmp_path, monkeypatch):
    """Every ``python`` block of every page runs, in order, in one namespace (a page's
    blocks build on each other, as a reader runs them), and leaves no file behind: not
    in the working directory, not in the temporary directory."""
    text = (ROOT / page).read_text()
    samples = re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)
    assert samples
    cwd, temp = tmp_path / "cwd", tmp_path / "tmp"
    cwd.mkdir()
    temp.mkdir()
    monkeypatch.chdir(cwd)
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    namespace = {"__name__": "__main__"}
    for sample in samples:
        exec(compile(sample, page, "exec"), namespace)  # noqa: S102 (the page is ours)
    if page == "README.md":
        assert "PASSED" in capsys.readouterr().out
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p not in (cwd, temp))
    assert left == [], f"{page}'s code blocks left files behind: {left}"


def test_every_docs_page_with_code_is_run():
    assert {"docs/layers.md", "docs/optim.md", "docs/data.md", "README.md"} <= set(PAGES)


LIBRARY_MODULES = sorted(
    info.name
    for info in pkgutil.walk_packages(fundl.__path__, "fundl.")
    if info.name != "fundl.init"  # the deprecated alias warns on import
)


class _DocTestFinder(doctest.DocTestFinder):
    """Python 3.13's finder: a decorated function's docstring is placed at the function it
    wraps. Python 3.11 reads the wrapper's code, which lies in the decorator's module, so an
    example under ``@fundl.optim.validated`` got another file's line number, or none (and
    was skipped) when that line is past the end of its own file."""

    def _find_lineno(self, obj, source_lines):
        if inspect.isfunction(obj):
            obj = inspect.unwrap(obj)
        return super()._find_lineno(obj, source_lines)


@pytest.mark.parametrize("name", LIBRARY_MODULES)
def test_docstring_examples_run(name):
    """Every ``>>>`` example in the library's docstrings runs and prints what it shows."""
    module = importlib.import_module(name)
    globs = {"jax": jax, "jnp": jnp, "np": np, "fundl": fundl}
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in _DocTestFinder(exclude_empty=True).find(module, name, extraglobs=globs):
        # The finder keeps only the module's own objects (re-exports are checked in their
        # own module). A primitive (a ``fundl.rules.Primitive`` instance, not a function)
        # has no line number for doctest to find, so its test's lineno is None: run it too.
        if not test.filename.startswith(str(ROOT / "fundl")):
            continue
        runner.run(test)
    assert runner.failures == 0, f"{runner.failures} docstring example(s) failed in {name}"


@pytest.mark.parametrize("module", ALL_MODULES, ids=lambda module: module.__name__)
def test_every_public_name_has_an_example(module):
    """Every public function and class shows a short example that runs: a ``>>>`` doctest
    under ``Examples:`` (test_docstring_examples_run runs it, in the module that defines
    the name)."""

    def example(doc: str) -> bool:
        return ">>>" in doc.partition("Examples:\n")[2]

    # fundl's own objects: type aliases (``Initializer``, ``MomentDtype``) belong to
    # ``typing``/``collections.abc`` and cannot hold a doctest; their docs say what they are
    public = [
        name
        for name in module.__all__
        if callable(getattr(module, name))
        and getattr(getattr(module, name), "__module__", "").startswith("fundl")
    ]
    assert [name for name in public if not example(getattr(module, name).__doc__ or "")] == []


def test_no_rest_example_blocks():
    """reST's ``Example::`` neither renders in the reference nor runs: write ``Examples:``
    with ``>>>`` lines (or prose and a fenced block where it cannot run)."""
    found = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "fundl").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if line.strip() == "Example::"
    ]
    assert found == []
