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


def inputs_npz(path: Path) -> Path:
    import numpy as np

    np.savez(path, x=np.zeros((3, 8), dtype=np.float32))
    return path


def test_predict_never_writes_over_its_input_by_any_path(run, tmp_path):
    table = inputs_npz(tmp_path / "inputs.npz")
    before = table.read_bytes()
    for out in (table, tmp_path / "." / "inputs.npz"):
        result = invoke("predict", run, table, "--out", out, "--force")
        assert result.exit_code == 2 and "writing there would replace it" in result.output
    folder = tmp_path / "batch"
    folder.mkdir()
    inside = inputs_npz(folder / "more.npz")
    result = invoke("predict", run, folder, "--out", inside)  # a file found inside an input folder
    assert result.exit_code == 2 and "is the input" in result.output
    assert table.read_bytes() == before and inside.stat().st_size > 0


def test_predict_out_refuses_a_users_file_rewrites_its_own_and_makes_folders(run, tmp_path):
    table = inputs_npz(tmp_path / "inputs.npz")
    users = tmp_path / "report.csv"
    users.write_text("quarter,revenue\nq1,10\n")
    result = invoke("predict", run, table, "--out", users)
    assert result.exit_code == 2 and "exists and was not written by dlcli" in result.output
    assert users.read_text() == "quarter,revenue\nq1,10\n"
    assert invoke("predict", run, table, "--out", users, "--force").exit_code == 0
    assert users.read_text().startswith("input,")
    assert invoke("predict", run, table, "--out", users).exit_code == 0  # dlcli's own predictions now
    deep = tmp_path / "new" / "folder" / "p.csv"
    assert invoke("predict", run, table, "--out", deep).exit_code == 0 and deep.read_text().startswith("input,")
    result = invoke("predict", run, table, "--out", run / "run.json")
    assert result.exit_code == 2 and "is inside the run folder" in result.output
    assert invoke("predict", run, table, "--out", run / "predictions" / "p.csv").exit_code == 0


def test_plot_out_keeps_a_users_png_and_redraws_its_own(run, tmp_path):
    out = tmp_path / "figures"
    out.mkdir()
    (out / "loss.png").write_bytes(b"\x89PNG\r\n\x1a\nsomeone's chart")
    result = invoke("plot", run, "--out", out)
    assert result.exit_code == 2 and "loss.png exists and was not written by dlcli" in result.output
    assert (out / "loss.png").read_bytes().endswith(b"someone's chart")
    assert invoke("plot", run, "--out", out, "--force").exit_code == 0
    assert invoke("plot", run, "--out", out).exit_code == 0  # its own PNGs are redrawn
    assert invoke("plot", run, "--out", tmp_path / "made" / "here").exit_code == 0
    assert (tmp_path / "made" / "here" / "loss.png").is_file()
    result = invoke("plot", run, "--out", run / "config.yaml")
    assert result.exit_code == 2 and "is a file" in result.output


def test_export_force_is_a_cli_option(run, tmp_path):
    users = tmp_path / "model.pt2"
    users.write_text("someone's model")
    result = invoke("export", run, "--format", "pt2", "--out", users)
    assert result.exit_code == 2 and "Pass --force to replace it" in result.output
    assert invoke("export", run, "--format", "pt2", "--out", users, "--force").exit_code == 0
