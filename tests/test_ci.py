"""The CI script .ci/run, run with a stand-in `make` (and `apt-get`) on a PATH of their own."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BASH = shutil.which("bash")

pytestmark = pytest.mark.skipif(BASH is None or shutil.which("dirname") is None, reason="needs bash and dirname")


def run_ci(tmp_path: Path, *, ci: bool, apt_get: bool, data_status: int, test_status: int = 0):
    """.ci/run where `make data` exits with data_status and `make test` (the suite) with test_status;
    returns (the process, the make targets it ran in order)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(parents=True)
    os.symlink(shutil.which("dirname"), bin_dir / "dirname")
    log = tmp_path / "make.log"
    make = bin_dir / "make"
    make.write_text(
        f'#!{BASH}\necho "$1" >> "{log}"\n'
        f'[ "$1" = data ] && exit {data_status}\n[ "$1" = test ] && exit {test_status}\nexit 0\n'
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
    assert targets == ["data", "lint", "test"]
    assert "the real-data test will be skipped" in proc.stdout


def test_ci_runs_the_tests_and_reports_their_failure(tmp_path):
    proc, targets = run_ci(tmp_path, ci=True, apt_get=True, data_status=0)
    assert proc.returncode == 0 and targets == ["data", "lint", "test"] and "skipped" not in proc.stdout
    proc, _ = run_ci(tmp_path / "failing", ci=True, apt_get=True, data_status=0, test_status=1)
    assert proc.returncode == 1
