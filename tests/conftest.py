"""Hypothesis profiles. ``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) draws the same examples on every run, so
that whether a change lands never depends on the draw; elsewhere each run explores new examples and keeps any
failure in ``.hypothesis/`` to replay it."""

import os

from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))
