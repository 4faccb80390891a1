"""The shipped table configs train offline on the shipped CSV files and reach the issue's targets
(scikit-learn with standardisation and 5-fold cross-validation: iris 0.96, wine 0.98, breast
cancer 0.979, diabetes MAE 44.3 with linear regression)."""

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from dlcli.config import load_config
from dlcli.training import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.parametrize(
    "config,metric,target,test_samples",
    [
        ("iris_mlp", "test_accuracy", 0.93, 30),
        ("wine_mlp", "test_accuracy", 0.95, 36),
        ("breast_cancer_binary", "test_accuracy", 0.95, 114),
        ("diabetes_regression", "test_mae", 50.0, 89),
    ],
)
def test_example_table_reaches_its_target(tmp_path, monkeypatch, config, metric, target, test_samples):
    monkeypatch.chdir(ROOT)  # the configs name their files relative to the checkout, as a user runs them
    cfg = load_config(ROOT / "configs" / f"{config}.yaml", ["device=cpu"])
    outcome = train(cfg, runs_dir=tmp_path / "runs", console=Console(file=io.StringIO()), quiet=True, draw_plots=False)
    results = outcome.results
    assert results["test_samples"] == test_samples
    if metric == "test_mae":
        assert results[metric] <= target, results
    else:
        assert results[metric] >= target, results
    saved = json.loads((outcome.run_dir / "results.json").read_text())
    assert saved[metric] == pytest.approx(results[metric])
