"""The CI script .ci/run, run with a stand-in `make` (and `apt-get`) on a PATH of their own, and what
CI=true does to a test whose dependency is missing."""

import os
import re
import shutil
import subprocess
import sys
from importlib.metadata import requires
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from conftest import skip_unless_ci

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None or shutil.which("dirname") is None, reason="needs bash and dirname")


def run_ci(tmp_path: Path, *, ci: bool, apt_get: bool, data_status: int, test_status: int = 0, floor_status: int = 0):
    """.ci/run where `make data` exits with data_status, `make test` (the suite) with test_status and
    `make test-typer-floor` with floor_status; returns (the process, the make targets it ran in order)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    log = tmp_path / "make.log"
    make = bin_dir / "make"
    make.write_text(
        f'#!{BASH}\necho "$1" >> "{log}"\n'
        f'[ "$1" = data ] && exit {data_status}\n[ "$1" = test ] && exit {test_status}\n'
        f'[ "$1" = test-typer-floor ] && exit {floor_status}\nexit 0\n'
    )
    make.chmod(0o755)
    if apt_get:
        (bin_dir / "apt-get").write_text(f"#!{BASH}\nexit 0\n")
        (bin_dir / "apt-get").chmod(0o755)
    env = {"PATH": str(bin_dir), "HOME": str(tmp_path), **({"CI": "true"} if ci else {})}
    proc = subprocess.run(
        [BASH, str(ROOT / ".ci" / "run")], env=env, capture_output=True, text=True, timeout=30, check=False
    )
    return proc, log.read_text().split() if log.exists() else []


def test_ci_fails_when_the_dataset_cannot_be_installed_where_apt_get_exists(tmp_path):
    proc, targets = run_ci(tmp_path, ci=True, apt_get=True, data_status=2)
    assert proc.returncode != 0 and targets == ["data"]  # stops before the tests
    assert "dataset-fashion-mnist could not be installed" in proc.stderr


@pytest.mark.parametrize("ci,apt_get", [(True, False), (False, True), (False, False)])
def test_elsewhere_a_failed_install_only_skips_the_real_data_test(tmp_path, ci, apt_get):
    proc, targets = run_ci(tmp_path, ci=ci, apt_get=apt_get, data_status=2)
    assert proc.returncode == 0, proc.stderr
    assert targets == ["data", "lint", "test", "test-typer-floor"]
    assert "the real-data test will be skipped" in proc.stdout


def test_ci_runs_the_tests_and_reports_their_failure(tmp_path):
    proc, targets = run_ci(tmp_path, ci=True, apt_get=True, data_status=0)
    assert (
        proc.returncode == 0
        and targets == ["data", "lint", "test", "test-typer-floor"]
        and "skipped" not in proc.stdout
    )
    proc, targets = run_ci(tmp_path / "failing", ci=True, apt_get=True, data_status=0, test_status=1)
    assert proc.returncode == 1 and targets == ["data", "lint", "test"]
    proc, _ = run_ci(tmp_path / "floor", ci=True, apt_get=True, data_status=0, floor_status=1)
    assert proc.returncode == 1


# -- a dependency that CI installs: missing, it skips a test locally and fails it under CI=true --

MISSING = "dlcli_no_such_dependency"
GENERATED_TESTS = f"""
import json

from conftest import import_or_skip_unless_ci


def test_needs_a_missing_dependency():
    import_or_skip_unless_ci("{MISSING}", "{MISSING} is not installed")


def test_needs_an_installed_one():
    assert import_or_skip_unless_ci("json", "json is not installed") is json
"""


def run_generated_tests(tmp_path: Path, *, ci: bool) -> subprocess.CompletedProcess:
    """pytest, in its own process, on GENERATED_TESTS beside a copy of the suite's conftest.py."""
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # the rootdir: not this project's settings
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_generated.py").write_text(GENERATED_TESTS)
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "PYTEST_ADDOPTS")}
    env["PYTEST_DISABLE_PLUGIN_AUTOLOAD"] = "1"  # the installed plugins take seconds to load and are not needed
    if ci:
        env["CI"] = "true"
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rfs", "-p", "no:cacheprovider", "test_generated.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_missing_dependency_skips_locally(tmp_path):
    proc = run_generated_tests(tmp_path, ci=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(rf"^SKIPPED \[1\] \S+: {MISSING} is not installed$", proc.stdout, re.MULTILINE), proc.stdout
    assert "1 passed, 1 skipped" in proc.stdout


def test_a_missing_dependency_fails_under_ci(tmp_path):
    proc = run_generated_tests(tmp_path, ci=True)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    message = f"CI=true and {MISSING} is not installed: .ci/run installs it, so the install is broken"
    assert f"FAILED test_generated.py::test_needs_a_missing_dependency - Failed: {message}" in proc.stdout
    assert "1 failed, 1 passed" in proc.stdout


def test_make_test_installs_every_extra_the_suite_needs_under_ci(tmp_path):
    """`make test` (run by .ci/run) installs the test extra into a new virtual environment, and
    the test extra brings every optional package whose absence fails the suite under CI=true."""
    if shutil.which("make") is None:
        skip_unless_ci("make is not installed")
    venv = tmp_path / "venv"
    plan = subprocess.run(
        ["make", "-n", "-B", "test", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert plan.returncode == 0, plan.stderr
    commands = plan.stdout.splitlines()
    install = commands.index(f'{venv}/bin/python -m pip install --quiet --editable ".[test]"')
    assert install < next(i for i, c in enumerate(commands) if "-m pytest" in c)

    def packages(extra: str) -> set[str]:
        """What installing dlcli[extra] installs (from the installed metadata, which pyproject.toml made)."""
        found = set()
        for line in requires("dlcli") or []:
            requirement = Requirement(line)
            if requirement.marker is None or not requirement.marker.evaluate({"extra": extra}):
                continue
            if canonicalize_name(requirement.name) == "dlcli":  # the project's own extras
                found |= set().union(*(packages(name) for name in requirement.extras))
            else:
                found.add(canonicalize_name(requirement.name))
        return found

    required_under_ci = {"tensorboard", "mlflow", "pyspng", "psycopg2-binary", "onnxruntime"}
    assert required_under_ci <= packages("test")
