"""Doctest collection: the streaming module's examples build grain pipelines; where grain is not
installed (e.g. a GPU image with only jax), they are left out rather than failing."""

import importlib.util

collect_ignore = [] if importlib.util.find_spec("grain") else ["normjax/data/streaming.py"]
