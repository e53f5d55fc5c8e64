"""The tests' fixtures. Helpers imported by name live in tests/helpers.py."""

import pytest

from normjax.config import DEFAULTS, merge


@pytest.fixture
def model_cfg():
    def make(**kw):
        return merge(DEFAULTS["model"], kw)

    return make


@pytest.fixture
def sigint_default():
    """Ctrl-C as in a terminal: pytest-xdist's workers ignore SIGINT, and normjax keeps an ignored
    SIGINT ignored (as under nohup), so a test of the interrupt sets Python's default handler."""
    import signal

    prev = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, prev)
