"""The error types users see: one line naming the bad value and what is allowed, or the extra to install."""

from __future__ import annotations

import signal


class UserError(Exception):
    """Bad input from a user (config, CLI, data dir). The CLI prints `error: <msg>` and exits 2.

    Example:
      >>> raise UserError("model 'foo' is unknown; allowed: mlp, plain_cnn, resnet")
      Traceback (most recent call last):
      ...
      normjax.errors.UserError: model 'foo' is unknown; allowed: mlp, plain_cnn, resnet
    """

    exit_code = 2


class Interrupted(KeyboardInterrupt):
    """Training stopped by a signal: SIGINT (Ctrl-C) or SIGTERM (what schedulers and `kill` send).

    A `KeyboardInterrupt`, so code that handles Ctrl-C handles both. The CLI prints
    `interrupted: <msg>` and exits 128 + the signal's number, as a shell does: 130 for SIGINT,
    143 for SIGTERM.

    Args:
      signum: the signal's number.
      message: one line on what was saved and where the run resumes.

    Example:
      >>> e = Interrupted(signal.SIGTERM, "SIGTERM at step 500 of 1872: saved; resumes from step 500")
      >>> e.exit_code, e.signame
      (143, 'SIGTERM')
    """

    def __init__(self, signum: int, message: str = ""):
        self.signum = int(signum)
        super().__init__(message or f"{self.signame}: the run resumes from its last checkpoint when started again")

    @property
    def signame(self) -> str:
        try:
            return signal.Signals(self.signum).name
        except ValueError:
            return f"signal {self.signum}"

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# The import names of the `train` extra's packages (pyproject.toml): the training stack. A base
# install (`normjax.transforms` and `normjax.analysis`: jax, optax, numpy) has none of them.
TRAIN_STACK = (
    "chex",
    "etils",
    "flax",
    "grain",
    "matplotlib",
    "mnist1d",
    "orbax",
    "sklearn",
    "tensorflow_datasets",
    "tqdm",
)
TRAIN_INSTALL = "pip install 'normjax[train]'"


class MissingExtraError(UserError, ImportError):
    """A part of normjax that needs the training stack, imported or run with the base install only.

    An `ImportError` (`except ImportError` still catches it) and a `UserError` (the CLI prints
    `error: <msg>` and exits 2): one line naming the missing package and the extra that brings it.

    Example:
      >>> raise MissingExtraError("flax", "normjax.models")
      Traceback (most recent call last):
      ...
      normjax.errors.MissingExtraError: normjax.models needs the training stack (flax is not installed): pip install 'normjax[train]'
    """

    def __init__(self, module: str, needed_by: str):
        super().__init__(
            f"{needed_by} needs the training stack ({module} is not installed): {TRAIN_INSTALL}", name=module
        )


def missing_extra(error: ImportError, needed_by: str) -> ImportError:
    """`error` as a `MissingExtraError` of `needed_by` where the module it failed to import is the
    training stack's (or it is one already), else `error` itself. The training-side modules import
    the stack as

        try:
            from flax import nnx
        except ModuleNotFoundError as e:
            raise missing_extra(e, __name__) from None

    Example:
      >>> e = ModuleNotFoundError("No module named 'orbax.checkpoint'", name="orbax.checkpoint")
      >>> print(missing_extra(e, "normjax.training.checkpoint"))
      normjax.training.checkpoint needs the training stack (orbax is not installed): pip install 'normjax[train]'
      >>> missing_extra(ModuleNotFoundError("No module named 'yaml'", name="yaml"), "normjax.models").name
      'yaml'
    """
    root = (error.name or "").partition(".")[0]
    if isinstance(error, MissingExtraError) or (isinstance(error, ModuleNotFoundError) and root in TRAIN_STACK):
        return MissingExtraError(root, needed_by)
    return error
