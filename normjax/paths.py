"""One path type for run directories, sweeps, locks and checkpoints: local paths and URLs alike.

`pathlib.Path('gs://b/run')` collapses the '//' and `.absolute()` then prefixes the working
directory, so a bucket URL turns into a local path. `etils.epath.Path` (what Orbax uses) keeps
`gs://`, `s3://`, `az://` and `hf://` URLs and has the pathlib API for both kinds.
"""

from __future__ import annotations

import os
import re

from normjax.errors import UserError, missing_extra

try:
    from etils import epath
except ModuleNotFoundError as e:  # a base install: one line naming the extra, no traceback
    raise missing_extra(e, __name__) from None

# The URL schemes epath can open; any other `scheme://` would silently become a local path.
REMOTE_SCHEMES = ("gs", "s3", "az", "hf")
_URL = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def is_remote(p: str | os.PathLike) -> bool:
    """Whether `p` is a URL (`scheme://...`) rather than a local path.

    Args:
      p: a path or URL; an `epath.Path` of a URL counts as a URL.

    Returns:
      True for `gs://b/run` and other `scheme://` strings, False for local paths.

    Example:
      >>> is_remote('gs://bucket/runs/a'), is_remote('runs/a')
      (True, False)
    """
    return _URL.match(os.fspath(p)) is not None


def as_path(p: str | os.PathLike) -> epath.Path:
    """`p` as an `epath.Path`: a local path expanded (`~`) and made absolute, a URL kept as is.

    Args:
      p: a local path (str, pathlib or epath) or a URL with a scheme epath supports.

    Returns:
      The `epath.Path`; `str()` of it gives back the URL or the absolute local path.

    Raises:
      UserError: for a URL whose scheme epath cannot open (e.g. `http://`).

    Example:
      >>> str(as_path('gs://bucket/runs/a'))
      'gs://bucket/runs/a'
      >>> as_path('runs/a').is_absolute()
      True
    """
    s = os.fspath(p)
    m = _URL.match(s)
    if m is None:
        return epath.Path(os.path.abspath(os.path.expanduser(s)))
    if m.group(1) not in REMOTE_SCHEMES:
        raise UserError(
            f"path {s!r}: URL scheme {m.group(1)!r} is not supported; "
            f"use a local path or one of {', '.join(f'{x}://' for x in REMOTE_SCHEMES)}"
        )
    return epath.Path(s)
