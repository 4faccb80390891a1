"""`dlcli lr-find`: fastai's range test, its suggestions, and that it leaves everything as it was."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import pytest

from conftest import invoke, synthetic_config, trained_run, write_config
from dlcli.lr_find import steep, suggestions, valley


def tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "lr-find" not in p.parts
    }


def test_valley_and_steep_are_fastais_rules():
    lrs = [10 ** (-4 + i / 10) for i in range(40)]
    # flat, a long descent from i=10 to i=30, then a blow-up
    losses = [2.0] * 10 + [2.0 - 0.08 * k for k in range(1, 21)] + [0.4 + 0.5 * k for k in range(10)]
    # longest decreasing run: i = 9..29, 21 points; fastai: max_start = 29 - 21 = 8, sections = 7, idx = 8 + 7 + 3
    assert valley(lrs, losses) == lrs[18]
    steeper = losses[:20] + [losses[20] - 1.0] + losses[21:]
    assert steep(lrs, steeper) == lrs[19]  # the largest drop per log-lr starts there


def test_suggestions_skip_the_first_tenth_and_last_five_and_stop_at_nan():
    lrs = [10 ** (-5 + i / 20) for i in range(100)]
    smoothed = [3.0 - 0.02 * i for i in range(60)] + [math.nan] * 40
    v, s = suggestions(lrs, smoothed, 100)
    assert lrs[10] <= v <= lrs[59] and lrs[10] <= s <= lrs[59]


@pytest.fixture
def project(tmp_path: Path) -> Path:
    raw = synthetic_config(epochs=1, batch_size=8)
    raw["data"]["synthetic"].update(samples=1000)
    write_config(tmp_path / "exp.yaml", raw)
    return tmp_path


def test_lr_find_suggests_a_rate_is_deterministic_and_touches_nothing(project):
    config = project / "exp.yaml"
    trained_run(config, project / "runs")  # a run folder that must stay byte-identical
    before = tree_digest(project)
    first = invoke("lr-find", config, "--runs-dir", project / "runs")
    assert first.exit_code == 0, first.output
    assert "Suggested (valley):" in first.output and "steepest slope:" in first.output
    line = next(w for w in first.output.split() if w.startswith("optimizer.lr="))
    suggested = float(line.split("=")[1])
    assert 1e-7 < suggested < 10
    second = invoke("lr-find", config, "--runs-dir", project / "runs")
    assert second.exit_code == 0, second.output
    assert tree_digest(project) == before  # config and run folders untouched
    folders = sorted((project / "runs" / "lr-find").iterdir())
    assert len(folders) == 2
    for folder in folders:
        assert {p.name for p in folder.iterdir()} == {"lr_find.csv", "lr_find.png"}
    csvs = [(f / "lr_find.csv").read_text() for f in folders]
    assert csvs[0] == csvs[1]  # deterministic per seed
    rows = csvs[0].strip().splitlines()
    assert rows[0] == "step,lr,loss,smoothed_loss" and len(rows) - 1 <= 100
    first_lr = float(rows[1].split(",")[1])
    assert first_lr == pytest.approx(1e-7)
    # the exponential schedule: step i at 1e-7 * (10 / 1e-7) ** (i / 100)
    lr_5 = float(rows[6].split(",")[1])
    assert lr_5 == pytest.approx(1e-7 * (1e8) ** (5 / 100), rel=1e-12)


def test_lr_find_stops_when_the_loss_blows_up(project):
    result = invoke(
        "lr-find",
        project / "exp.yaml",
        "--runs-dir",
        project / "runs",
        "--end-lr",
        "1e4",
        "--set",
        "optimizer.name=sgd",
    )
    assert result.exit_code == 0, result.output
    assert "stopped after" in result.output and "4x its minimum" in result.output
    (folder,) = (project / "runs" / "lr-find").iterdir()
    assert len((folder / "lr_find.csv").read_text().strip().splitlines()) - 1 < 100


def test_num_it_beyond_the_data_needs_allow_repeat(project):
    raw = synthetic_config(batch_size=32)  # 160 training samples: 5 batches
    config = write_config(project / "small.yaml", raw)
    refused = invoke("lr-find", config, "--runs-dir", project / "runs", "--num-it", "20")
    assert refused.exit_code == 2
    assert "--allow-repeat" in refused.output and "5 batches" in refused.output
    assert "\n\n" not in refused.output.strip()
    assert not (project / "runs").exists()
    cycled = invoke("lr-find", config, "--runs-dir", project / "runs", "--num-it", "20", "--allow-repeat")
    assert cycled.exit_code == 0, cycled.output
    assert "went over it again" in cycled.output


@pytest.mark.parametrize(
    "args,words",
    [
        (["--start-lr", "1e-2", "--end-lr", "1e-3"], ["--end-lr", "above --start-lr"]),
        (["--num-it", "5"], ["--num-it", "at least 10"]),
    ],
)
def test_bad_ranges_are_one_paragraph_and_exit_2(project, args, words):
    result = invoke("lr-find", project / "exp.yaml", "--runs-dir", project / "runs", *args)
    assert result.exit_code == 2, result.output
    assert "\n\n" not in result.output.strip()
    for word in words:
        assert word in result.output
    assert not (project / "runs").exists()
