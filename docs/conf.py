"""Sphinx configuration of normjax's documentation (`make docs`; warnings fail the build)."""

import inspect
import os
import re
import sys
from pathlib import Path

from sphinx.util import logging

DOCS = Path(__file__).parent
sys.path.insert(0, str(DOCS.parent))  # the package, also without an installed copy
sys.path.insert(0, str(DOCS / "_ext"))  # normjax_docs: the generated CLI and config references
os.environ.setdefault("JAX_PLATFORMS", "cpu")  # autodoc imports jax: no accelerator is needed

import normjax  # noqa: E402

project = "normjax"
author = "normjax authors"
copyright = "normjax authors"
release = version = normjax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",  # Google-style docstrings (Args:, Returns:, Example:)
    "sphinx.ext.mathjax",
    "sphinx-mathjax-offline",  # MathJax 3 copied into _static/mathjax and loaded from there: no CDN
    "myst_parser",  # the pages are Markdown
    "normjax_docs",  # cli.md and config.md, generated from the parsers and normjax/config.py
]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "_ext"]
root_doc = "index"

myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
# Docstrings write code in single backticks (as Markdown does): render it as code.
default_role = "code"

autodoc_default_options = {"members": True, "member-order": "bysource", "show-inheritance": False}
autodoc_typehints = "signature"
autodoc_typehints_format = "short"
maximum_signature_line_length = 100  # longer signatures get one parameter per line
autodoc_preserve_defaults = True
autoclass_content = "class"
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # a NamedTuple's `Attributes:` as one compact field list
napoleon_custom_sections = [("References", "notes_style")]

# Every cross-reference must resolve (nitpicky, as `sphinx-build -n`): normjax's own names; types of
# other packages are not linked (no intersphinx: the docs build offline).
nitpicky = True
nitpick_ignore_regex = [(r"py:.*", r"(jax|jaxlib|numpy|flax|optax|chex|etils|collections|os|pathlib|typing)\b.*")]

html_theme = "furo"
html_title = f"normjax {release}"
html_static_path: list[str] = []


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    """Leave out a NamedTuple's generated field accessors ("Alias for field number N"): the class
    docstring describes its fields."""
    if what == "class" and (getattr(obj, "__doc__", None) or "").startswith("Alias for field number"):
        return True
    return None


class _Name:
    """A default value shown by its name (`dtype=float32`, not `<class 'jax.numpy.float32'>`)."""

    def __init__(self, value):
        self.name = value.__name__

    def __repr__(self):
        return self.name


def _module_signature(app, what, name, obj, options, signature, return_annotation):
    """An NNX module's constructor signature (autodoc would show its metaclass's `(*args, **kwargs)`)."""
    from flax import nnx

    if what == "class" and isinstance(obj, type) and issubclass(obj, nnx.Module) and "__init__" in vars(obj):
        sig = inspect.signature(obj.__init__)
        params = [
            p.replace(
                annotation=inspect.Parameter.empty,
                default=_Name(p.default) if isinstance(p.default, type) else p.default,
            )
            for p in list(sig.parameters.values())[1:]
        ]
        return str(sig.replace(parameters=params, return_annotation=inspect.Signature.empty)), None
    return None


logger = logging.getLogger(__name__)
# A <script src> or <link href> that reaches outside the built docs (`//host/...`, `http://`, `https://`).
_REMOTE = re.compile(r"<(?:script|link)\b[^>]*\b(?:src|href)=[\"'](?P<url>(?:https?:)?//[^\"']*)", re.I)


def _check_offline(app, exc):
    """Fail the build (a warning, and -W) where a built page would load a script or stylesheet
    from the network, or the local MathJax is missing: offline, formulas would show as raw LaTeX."""
    if exc is not None or app.builder.format != "html":
        return
    out = Path(app.outdir)
    remote = [(p, m["url"]) for p in sorted(out.rglob("*.html")) for m in _REMOTE.finditer(p.read_text())]
    for i, (page, url) in enumerate(remote[:3]):
        more = f" (and {len(remote) - 3} more)" if i == 2 and len(remote) > 3 else ""
        logger.warning(f"{page.relative_to(out)} loads {url}{more}: the built docs must work offline")
    mathjax = out / "_static" / app.config.mathjax_path
    if not remote and not mathjax.is_file():
        logger.warning(f"mathjax_path {app.config.mathjax_path!r} is not in the built docs: {mathjax} is missing")


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("autodoc-process-signature", _module_signature)
    app.connect("build-finished", _check_offline, priority=900)  # after MathJax is copied (priority 500)
