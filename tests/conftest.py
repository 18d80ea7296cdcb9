"""Hypothesis profiles, and what CI must have.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) draws the same examples on every run, so that whether a change
lands never depends on the draw; elsewhere each run explores new examples and keeps any failure in
``.hypothesis/`` to replay it. ``SYMBACKPROP_REQUIRE_TOOLS=1`` (also set by ``.ci/run``, where ``make test``
installs TeX Live, PyTorch, JAX and the notebook packages) turns a test skipped for want of one of them into a
failure: there, a missing tool is a broken set-up, not a reason to test less.
"""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, database=None)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

# Words in the skip reasons of tests that need what make test installs.
REQUIRED = ("pdflatex", "TeX Live", "'torch'", "'jax'", "'pymupdf'", "'nbclient'", "'ipykernel'", "'nbformat'")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("SYMBACKPROP_REQUIRE_TOOLS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if any(word in reason for word in REQUIRED):
            report.outcome = "failed"
            report.longrepr = f"skipped, but CI installs what it needs: {reason}"
