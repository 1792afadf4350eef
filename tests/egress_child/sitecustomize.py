"""Puts a Python process that the test suite starts under the suite's egress guard (tests/egress_guard.py).

Python imports sitecustomize at start-up from any directory on its path; the suite puts this one on PYTHONPATH for
its child processes. The guard is loaded by file path so that the tests directory does not join the child's path.
"""

import importlib.util
import os
import sys
from pathlib import Path

_log = os.environ.get("ASSISTANT_TEST_EGRESS_LOG")
if _log:
    _spec = importlib.util.spec_from_file_location(
        "egress_guard", Path(__file__).resolve().parent.parent / "egress_guard.py"
    )
    _guard = importlib.util.module_from_spec(_spec)
    sys.modules["egress_guard"] = _guard  # dataclasses look their module up there
    _spec.loader.exec_module(_guard)
    _guard.install(Path(_log), child=True)
