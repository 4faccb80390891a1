"""Training on real Fashion-MNIST, where Debian's dataset-fashion-mnist package is installed."""

import io
from pathlib import Path

import pytest
from rich.console import Console

from dlcli.config import load_config
from dlcli.data.vision import DEBIAN_FASHION, find_idx_files
from dlcli.training import train

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.skipif(
    find_idx_files(Path("/nonexistent"), "fashion_mnist") is None,
    reason=f"real Fashion-MNIST is absent ({DEBIAN_FASHION}; `apt-get install dataset-fashion-mnist` provides it)",
)
def test_fashion_mnist_mlp_one_epoch_reaches_80_percent(tmp_path):
    config = load_config(
        ROOT / "configs/fashion_mnist_mlp.yaml",
        ["training.epochs=1", f"data.root={tmp_path}", "data.download=false", "device=cpu"],
    )
    outcome = train(config, runs_dir=tmp_path / "runs", console=Console(file=io.StringIO()), draw_plots=False)
    assert outcome.results["test_samples"] == 10_000
    assert outcome.results["test_accuracy"] >= 0.80
