"""Outputs never destroy inputs: a command's --out may not be one of its inputs, a file of a run
folder, or a file dlcli did not write (without --force); a missing folder is created."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from conftest import invoke, synthetic_config, trained_run, write_config
from dlcli.errors import RunDirError
from dlcli.rundir import check_output_file


def test_an_output_that_is_an_input_is_refused_by_any_path_even_with_force(tmp_path):
    table = tmp_path / "table.csv"
    table.write_text("a,b\n1,2\n")
    link = tmp_path / "link.csv"
    link.symlink_to(table)
    for given in (table, tmp_path / "." / "table.csv", link):
        with pytest.raises(RunDirError, match="is the input .*table.csv: writing there would replace it"):
            check_output_file(given, option="--out", inputs=[table], force=True)
    assert table.read_text() == "a,b\n1,2\n"


def test_an_existing_file_is_replaced_only_when_dlcli_wrote_it_or_with_force(tmp_path):
    mine = tmp_path / "notes.csv"
    mine.write_text("keep me\n")
    with pytest.raises(RunDirError, match="exists and was not written by dlcli. Pass --force to replace it"):
        check_output_file(mine, option="--out")
    assert check_output_file(mine, option="--out", force=True) == mine
    assert check_output_file(mine, option="--out", written_by_dlcli=lambda p: True) == mine
    assert mine.read_text() == "keep me\n"  # checking writes nothing


def test_a_missing_folder_is_created_and_a_folder_is_not_a_file(tmp_path):
    out = tmp_path / "new" / "deeper" / "predictions.csv"
    check_output_file(out, option="--out")
    assert out.parent.is_dir() and not out.exists()
    with pytest.raises(RunDirError, match="is a folder"):
        check_output_file(tmp_path, option="--out")


def test_a_file_inside_a_run_folder_is_refused_outside_its_allowed_folders(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    with pytest.raises(RunDirError, match="is inside the run folder"):
        check_output_file(run / "checkpoints" / "best.pt", option="--out", run_dir=run, allowed_in_run=("export",))
    with pytest.raises(RunDirError, match="is inside the run folder"):
        check_output_file(run / "export.onnx", option="--out", run_dir=run, allowed_in_run=("export",))
    allowed = run / "export" / "onnx" / "model.onnx"
    assert check_output_file(allowed, option="--out", run_dir=run, allowed_in_run=("export",)) == allowed


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("outputs")
    return trained_run(write_config(tmp / "c.yaml", synthetic_config(epochs=1)), tmp / "runs")


def test_export_into_a_checkpoint_is_refused_and_the_checkpoint_survives(run):
    from dlcli.export import export_run
    from dlcli.loading import load_run

    best = run / "checkpoints" / "best.pt"
    before = best.read_bytes()
    loaded = load_run(run)
    with pytest.raises(RunDirError, match="is inside the run folder"):
        export_run(loaded, "pt2", best)
    assert best.read_bytes() == before and not (run / "checkpoints" / "export.json").exists()


def test_export_refuses_a_users_file_replaces_its_own_and_honours_force(run, tmp_path):
    from dlcli.export import export_run
    from dlcli.loading import load_run

    loaded = load_run(run)
    export_run(loaded, "pt2")  # the default place, twice: an export replaces an export
    export_run(loaded, "pt2")
    users = tmp_path / "model.pt2"
    users.write_text("someone's model")
    with pytest.raises(RunDirError, match="exists and was not written by dlcli"):
        export_run(loaded, "pt2", users)
    assert users.read_text() == "someone's model"
    export_run(loaded, "pt2", users, force=True)
    assert users.stat().st_size > 100 and (tmp_path / "export.json").is_file()
    export_run(loaded, "pt2", users)  # now it is dlcli's own export
    fresh = tmp_path / "made" / "for" / "it" / "model.pt2"
    export_run(loaded, "pt2", fresh)
    assert fresh.is_file()


def test_export_next_to_someone_elses_export_json_is_refused(run, tmp_path):
    from dlcli.export import export_run
    from dlcli.loading import load_run

    (tmp_path / "export.json").write_text('{"mine": true}')
    with pytest.raises(RunDirError, match="export.json exists and was not written by dlcli"):
        export_run(load_run(run), "pt2", tmp_path / "model.pt2")
    assert not (tmp_path / "model.pt2").exists()


def test_the_cli_says_it_in_one_paragraph_with_exit_2(run):
    result = invoke("export", run, "--format", "pt2", "--out", run / "config.yaml")
    assert result.exit_code == 2 and "is inside the run folder" in result.output
    assert os.path.getsize(run / "config.yaml") > 0
