"""Run the peers' code blocks of docs/comparison.md (its ```text blocks that are Python).

fundl's tests run the page's ```python blocks; the Flax, Equinox, PyTorch and optax
blocks need those libraries, which fundl does not depend on, so they are ```text blocks
and this script runs them, each in a fresh namespace, with the repository on the path.
Run it in an environment that has the peers (``pip install -e ".[bench]"``):

    python docs/check_comparison.py

It prints the versions, then one line per block with its last ``loss``, and exits with
status 1 if a block failed.
"""

import importlib
import pathlib
import re
import sys
import traceback

ROOT = pathlib.Path(__file__).resolve().parent.parent
PEERS = ["jax", "flax", "equinox", "optax", "torch"]


def blocks(page: pathlib.Path) -> list[str]:
    """The page's ```text blocks that start with an import: the runnable ones."""
    found = re.findall(r"```text\n(.*?)```", page.read_text(), flags=re.DOTALL)
    return [b for b in found if b.startswith(("import ", "from "))]


def main() -> int:
    sys.path.insert(0, str(ROOT))
    versions = []
    for name in PEERS:
        try:
            versions.append(f"{name} {importlib.import_module(name).__version__}")
        except ImportError:
            versions.append(f"{name} not installed")
    print(", ".join(versions) + f"; python {sys.version.split()[0]}")
    failed = 0
    for i, code in enumerate(blocks(ROOT / "docs" / "comparison.md"), start=1):
        imports = re.findall(r"^(?:import|from) (\w+)", code, flags=re.MULTILINE)
        first = ", ".join(dict.fromkeys(imports))
        namespace = {"__name__": "__main__"}
        try:
            exec(compile(code, f"comparison.md, text block {i}", "exec"), namespace)  # noqa: S102
        except Exception:  # noqa: BLE001 (report every block, then fail)
            failed += 1
            print(f"block {i} (imports {first}): FAILED")
            traceback.print_exc()
            continue
        print(f"block {i} (imports {first}): ran, last loss {float(namespace['loss']):.4f}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
