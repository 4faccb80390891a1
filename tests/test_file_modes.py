"""Files dlcli writes get the mode an ordinary open() would give them (the umask's), not the
-rw------- of the temporary file they are renamed from."""

import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.rundir import atomic_write_text, current_umask


@pytest.fixture
def umask():
    previous = os.umask(0o022)
    os.umask(previous)

    def set_umask(mask: int) -> None:
        os.umask(mask)

    yield set_umask
    os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.mark.parametrize("mask,expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_a_new_file_gets_what_the_umask_leaves_of_rw_rw_rw(tmp_path, umask, mask, expected):
    umask(mask)
    assert current_umask() == mask
    atomic_write_text(tmp_path / "new.txt", "x")
    assert mode(tmp_path / "new.txt") == expected
    # and as open() would: a file written the ordinary way gets the same mode
    (tmp_path / "plain.txt").write_text("x")
    assert mode(tmp_path / "plain.txt") == expected


def test_rewriting_a_file_keeps_its_own_mode(tmp_path, umask):
    umask(0o022)
    target = tmp_path / "kept.txt"
    target.write_text("old")
    target.chmod(0o640)
    atomic_write_text(target, "new")
    assert target.read_text() == "new" and mode(target) == 0o640


@pytest.mark.parametrize("mask", [0o022, 0o077])
def test_every_file_of_a_run_folder_follows_the_umask(tmp_path, tiny_config, umask, mask):
    umask(mask)
    result = CliRunner().invoke(app, ["train", str(tiny_config), "--runs-dir", str(tmp_path / "runs"), "-q"])
    assert result.exit_code == 0, result.output
    (run_dir,) = (tmp_path / "runs").iterdir()
    files = [p for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock"]
    assert {"run.json", "metrics.csv", "last.pt", "config.yaml"} <= {p.name for p in files}
    assert {p.relative_to(run_dir).as_posix(): oct(mode(p)) for p in files} == {
        p.relative_to(run_dir).as_posix(): oct(0o666 & ~mask) for p in files
    }
