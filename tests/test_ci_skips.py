"""Under CI=true a skip fails the run unless it is on the allow-list: no suite goes green unrun."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parent


def _run(tmp_path: Path, body: str, ci: str, *options: str) -> subprocess.CompletedProcess[str]:
    (tmp_path / "test_sample.py").write_text(body)
    env = dict(os.environ, CI=ci, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "conftest",
                           "--rootdir", str(tmp_path), *options, str(tmp_path)], capture_output=True, text=True,
                          env=env, cwd=tmp_path)


def test_a_skipped_test_fails_in_ci_and_skips_elsewhere(tmp_path: Path) -> None:
    body = "import pytest\n\ndef test_needs_a_tool():\n    pytest.skip('frobnicate is not installed')\n"
    ci = _run(tmp_path, body, "true")
    assert ci.returncode == 1 and "not on the allow-list" in ci.stdout and "frobnicate" in ci.stdout
    local = _run(tmp_path, body, "")
    assert local.returncode == 0 and "1 skipped" in local.stdout


def test_a_module_level_skip_fails_in_ci(tmp_path: Path) -> None:
    body = "import pytest\npytest.importorskip('no_such_module_anywhere')\n\ndef test_x():\n    pass\n"
    ci = _run(tmp_path, body, "true")
    assert ci.returncode != 0 and "module skipped under CI=true" in ci.stdout


def test_the_rule_holds_on_xdist_workers(tmp_path: Path) -> None:
    """scripts/test.sh runs the suite with pytest-xdist: a skip on a worker still fails the run."""
    body = ("import pytest\n\ndef test_needs_a_tool():\n    pytest.skip('frobnicate is not installed')\n\n"
            "def test_fine():\n    pass\n")
    ci = _run(tmp_path, body, "true", "-n", "2")
    assert ci.returncode == 1 and "not on the allow-list" in ci.stdout and "frobnicate" in ci.stdout, ci.stdout
    assert "1 failed, 1 passed" in ci.stdout, ci.stdout
    local = _run(tmp_path, body, "", "-n", "2")
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout
    module_body = "import pytest\npytest.importorskip('no_such_module_anywhere')\n\ndef test_x():\n    pass\n"
    module = _run(tmp_path, module_body, "true", "-n", "2")
    assert module.returncode != 0 and "module skipped under CI=true" in module.stdout, module.stdout
