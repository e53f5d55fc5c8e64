"""Every experiment's config hash and every sweep's run names, stored in `tests/run_names.json` and
checked by `tests/test_config.py`: a refactoring that renamed a run would orphan the run
directories users already have (a sweep would train them again under the new name). A deliberate
change (or a new file or size) regenerates the file:

    .venv/bin/python tests/run_names.py > tests/run_names.json
"""

import ast
import json
import sys
from pathlib import Path

from normjax.config import FILE_SIZES, load_config
from normjax.sweep.spec import config_hash, expand

ROOT = Path(__file__).parents[1]


def _sizes(path: Path) -> tuple:
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "SIZES" for t in node.targets):
            return tuple(ast.literal_eval(node.value))
    return FILE_SIZES


def names() -> dict:
    """`{"file:size": config hash (experiments) or sorted run and base-run names (sweeps)}`."""
    out = {}
    for path in sorted((ROOT / "experiments").glob("*.py")):
        for size in _sizes(path):
            if path.stem.startswith("sweep_"):
                out[f"{path.stem}:{size}"] = sweep_names(expand(path, size)[0])
            else:
                out[f"{path.stem}:{size}"] = config_hash(load_config(path, size=size))
    return out


def stored() -> dict:
    """The names `tests/run_names.json` holds."""
    return json.loads((ROOT / "tests" / "run_names.json").read_text())


def sweep_names(runs) -> list[str]:
    """A sweep's run and base-run names, sorted (the stored form)."""
    return sorted([r.name for r in runs] + [r.base.name for r in runs if r.base])


if __name__ == "__main__":
    json.dump(names(), sys.stdout, indent=0, sort_keys=True)
    print()
