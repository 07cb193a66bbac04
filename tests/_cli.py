"""The ``risk`` command's ``main`` run in the test's own process, with its output captured.

For commands that launch no run and no worker (refusals, ``lineage``, ``status``): a fresh
interpreter per call costs the suite seconds of start-up and imports (about 9 s per call on a
loaded CI machine). Tests that need the command's own process (a traceback, signals, import
logs, a build with workers) run it with :mod:`subprocess` instead, and so do commands that run a
job of the code location (``maintain``, a build's runs): ``risk_assets.definitions`` reads the
project from the environment once, when it is first imported, which in a test process was
another test's project.
"""

import io
import os
import subprocess
import warnings
from collections.abc import Mapping
from contextlib import redirect_stderr, redirect_stdout

from risk_assets import cli


def risk_here(argv: list[str], env: Mapping[str, str]) -> subprocess.CompletedProcess[str]:
    """``risk <argv>`` with ``env`` added to the environment, restored afterwards.

    Returns what :func:`subprocess.run` would: the exit code and the captured stdout and stderr.
    """
    saved = dict(os.environ)
    os.environ.update(env)
    out, err = io.StringIO(), io.StringIO()
    try:
        # The command sets warning filters of its own (Dagster's beta notices): kept to this call.
        with redirect_stdout(out), redirect_stderr(err), warnings.catch_warnings():
            code = cli.main(argv)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    return subprocess.CompletedProcess(["risk", *argv], code, out.getvalue(), err.getvalue())
