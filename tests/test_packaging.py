"""Two installs: the base one (`normjax.transforms` and `normjax.analysis`: jax, optax, numpy) and
the `train` extra (the training stack). With the base install only, every training-side import,
the `normjax` command and the public names that need the stack say in one line which extra to
install. Fast here by hiding the stack in a subprocess (`sys.modules[name] = None`); the slow test
builds the sdist and wheel (`python -m build`) and installs the wheel into a fresh venv with its
base dependencies only (from PyPI)."""

import json
import os
import re
import subprocess
import sys
import textwrap
import tomllib
from importlib import metadata
from pathlib import Path

import pytest

from normjax.errors import TRAIN_INSTALL, TRAIN_STACK

ROOT = Path(__file__).parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ENV = dict(os.environ, JAX_PLATFORMS="cpu")
# What a base install holds: importable without the training stack.
BASE_MODULES = (
    "normjax",
    "normjax.errors",
    "normjax.config",
    "normjax.cli",
    "normjax.parallel",
    "normjax.transforms",
    "normjax.analysis",
)
HIDE_STACK = "import sys\nfrom normjax.errors import TRAIN_STACK\nfor m in TRAIN_STACK:\n    sys.modules[m] = None\n"
ONE_LINE = re.compile(r"[^\n]* needs the training stack \((\w+) is not installed\): " + re.escape(TRAIN_INSTALL))


def without_stack(code: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", HIDE_STACK + textwrap.dedent(code), *args],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )


def requirement_name(req: str) -> str:
    return re.split(r"[\[<>=!~ ;]", req, maxsplit=1)[0].lower().replace("_", "-")


def test_train_stack_is_the_train_extra():
    """TRAIN_STACK names the import names of exactly the `train` extra's distributions."""
    extra = {requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["train"]}
    provides: dict[str, set[str]] = {}
    for module, dists in metadata.packages_distributions().items():
        for d in dists:
            provides.setdefault(d.lower().replace("_", "-"), set()).add(module)
    assert {d for d in extra if not provides.get(d, set()) & set(TRAIN_STACK)} == set()
    assert {m for m in TRAIN_STACK if not any(m in provides.get(d, ()) for d in extra)} == set()
    base = {requirement_name(r) for r in PYPROJECT["project"]["dependencies"]}
    assert base == {"jax", "optax", "numpy"}
    assert "normjax[train]" in PYPROJECT["project"]["optional-dependencies"]["test"]


def test_every_training_side_import_without_the_stack_is_one_line():
    out = without_stack("""
        import importlib, json
        from pathlib import Path
        from normjax.errors import MissingExtraError
        seen = {}
        for f in sorted(Path("normjax").rglob("*.py")):
            name = ".".join(f.with_suffix("").parts).removesuffix(".__init__")
            if name == "normjax.__main__":
                continue
            try:
                importlib.import_module(name)
                seen[name] = "ok"
            except MissingExtraError as e:
                seen[name] = str(e)
            except BaseException as e:
                seen[name] = f"{type(e).__name__}: {e}"
        print(json.dumps(seen))
    """)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    assert len(seen) > 40
    for name in seen:
        if name in BASE_MODULES or name.startswith(("normjax.transforms.", "normjax.analysis.")):
            assert seen[name] == "ok", name
        else:  # imports (its stack imports are lazy) or says which extra, never a ModuleNotFoundError
            assert seen[name] == "ok" or ONE_LINE.fullmatch(seen[name]), (name, seen[name])
    assert sum(v != "ok" for v in seen.values()) > 20  # models, training, sweep, studies, figures, paths


def test_public_names_that_need_the_stack_say_which_extra():
    out = without_stack("""
        import json, normjax
        from normjax.errors import MissingExtraError
        seen = {}
        for name in normjax.__all__:
            try:
                getattr(normjax, name)
                seen[name] = "ok"
            except MissingExtraError as e:
                seen[name] = str(e)
        print(json.dumps(seen))
    """)
    assert out.returncode == 0, out.stderr
    seen = json.loads(out.stdout)
    import normjax

    for name, module in normjax._EXPORTS.items():
        if module in ("normjax.transforms", "normjax.errors", "normjax.config", "normjax.training.optim"):
            assert seen[name] == "ok", name
        else:
            assert ONE_LINE.fullmatch(seen[name]) and seen[name].startswith(f"normjax.{name} needs"), seen[name]


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "experiments/mlp_digits.py"],
        ["sweep", "experiments/sweep_lr.py"],
        ["eval", "RUN"],
        ["results", "RUN"],
        ["plot", "RUN", "--x", "model.depth"],
        ["prepare", "fashion_mnist"],
        ["explode", "experiments/explode_depth.py"],
        *[[name, "RUN"] for name in ("apl", "apl-plot", "elr-plot", "fold", "ode")],
    ],
)
def test_the_command_without_the_stack_is_one_line_and_exit_2(tmp_path, argv):
    argv = [str(tmp_path) if a == "RUN" else a for a in argv]
    out = without_stack("from normjax.cli import main\nmain()\n", *argv)
    assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stderr)
    line = out.stderr.rstrip("\n")
    assert "\n" not in line and line.startswith(f"error: normjax {argv[0]} needs the training stack"), out.stderr
    assert ONE_LINE.fullmatch(line.removeprefix("error: ")), line


def test_the_command_without_the_stack_still_answers_version_and_help():
    out = without_stack("from normjax.cli import main\nmain()\n", "--version")
    assert out.returncode == 0 and out.stdout.startswith("normjax "), out.stderr
    out = without_stack("from normjax.cli import main\nmain()\n", "train", "-h")
    assert out.returncode == 0 and "usage: normjax train" in out.stdout, out.stderr


# ---- the built wheel in a fresh venv ------------------------------------------------------------
README = (ROOT / "README.md").read_text()
APL = """
from normjax.analysis import normalized_apl, unnormalized_apl
from normjax.analysis.graph import Edge, Graph, Node, Op, nonlinear
dense = lambda p: (Op("dense", (p,)),)
g = Graph((Node("in", 3, "input", ()), Node("a", 4, "relu", (Edge(0, dense("a")),)),
           Node("b", 4, "relu", (Edge(1, dense("b")), Edge(0, dense("s")))),
           Node("out", 2, "output", (Edge(2, dense("h")),))))
nl = nonlinear(g, {})
print(float(normalized_apl(g, nl)), round(float(unnormalized_apl(g, nl)), 4))
"""


def install_section_python() -> str:
    """The install section's Python block: the optax chain a base install runs."""
    start = README.index("\n## Install\n")
    section = README[start : README.index("\n## ", start + 1)]
    (block,) = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    return block


def venv_size(venv: Path) -> tuple[float, int]:
    """MB of the venv's site-packages (du) and its number of installed distributions (pip list)."""
    site = next(venv.glob("lib/python*/site-packages"))
    mb = int(subprocess.run(["du", "-sk", site], capture_output=True, text=True, check=True).stdout.split()[0]) / 1024
    listed = subprocess.run(
        [venv / "bin" / "python", "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True
    ).stdout
    return mb, len(json.loads(listed))


@pytest.mark.slow
def test_the_wheel_with_base_dependencies_only(tmp_path):
    dist = tmp_path / "dist"  # the sdist, and the wheel built from it (so the sdist holds what the wheel needs)
    subprocess.run(
        [sys.executable, "-m", "build", "--outdir", dist, ROOT], check=True, capture_output=True, timeout=600
    )
    (wheel,) = dist.glob("normjax-*.whl")
    assert len(list(dist.glob("normjax-*.tar.gz"))) == 1
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True, timeout=300)
    python, env = venv / "bin" / "python", dict(ENV, PIP_DISABLE_PIP_VERSION_CHECK="1")
    subprocess.run([python, "-m", "pip", "install", "-q", wheel], check=True, env=env, timeout=900)
    installed = subprocess.run(
        [python, "-m", "pip", "list", "--format", "json"], capture_output=True, text=True, check=True
    ).stdout
    names = {d["name"].lower().replace("_", "-") for d in json.loads(installed)}
    extra = {requirement_name(r) for r in PYPROJECT["project"]["optional-dependencies"]["train"]}
    assert names & extra == set(), names & extra
    mb, count = venv_size(venv)
    print(f"base install: {mb:.0f} MB in site-packages, {count} distributions (pip list)")

    def run(*args: str) -> subprocess.CompletedProcess:  # outside the checkout: the installed wheel
        return subprocess.run([python, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)

    out = run("-c", install_section_python() + "\nimport jax\nprint('chain ok', jax.tree.map(jnp.shape, updates))")
    assert out.returncode == 0 and "chain ok" in out.stdout, out.stderr
    out = run("-c", APL)
    assert out.returncode == 0 and out.stdout.split() == ["1.5", "1.8"], out.stderr
    out = run("-c", "import sys, normjax.analysis, normjax.transforms; print(sorted(sys.modules))")
    assert out.returncode == 0 and "normjax.training" not in out.stdout, out.stderr
    normjax_command = venv / "bin" / "normjax"
    out = subprocess.run(
        [normjax_command, "train", str(ROOT / "experiments" / "mlp_digits.py")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 2 and out.stdout == "", (out.returncode, out.stderr)
    line = out.stderr.removesuffix("\n")
    assert "\n" not in line and line.startswith("error: normjax train needs") and ONE_LINE.fullmatch(line), out.stderr
