"""The tests' fixtures. Helpers imported by name live in tests/helpers.py."""

import pytest

from normjax.config import DEFAULTS, merge


@pytest.fixture
def model_cfg():
    def make(**kw):
        return merge(DEFAULTS["model"], kw)

    return make
