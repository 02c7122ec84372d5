"""The suite's own layout: every test file is collected (slow: collecting imports every
tier's dependencies, so it is not in the fast tier)."""

from __future__ import annotations

import subprocess
import sys

from tests.support import ROOT


def test_every_test_file_is_collected():
    """A tier that pytest silently skips (it skips folders named build/ by default) fails here."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "tests"],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    collected = {line.split("::")[0] for line in out.stdout.splitlines() if "::" in line}
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").rglob("test_*.py")}
    assert on_disk - collected == set()
    assert {"tests/build/test_techniques.py", "tests/unit/test_routes.py"} <= collected
