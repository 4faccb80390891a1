"""Transfer learning: model.weights from a run, a file or torchvision's names (downloaded from a
local server, or refused offline), training.fine_tune's freezing, unfreezing and resume."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from rich.console import Console

from conftest import invoke, make_idx_dataset, skip_unless_ci, trained_run, write_config
from dlcli.checkpoint import load_checkpoint, model_weights
from dlcli.config import load_config
from dlcli.engine import Callback, RunControl
from dlcli.errors import ConfigError, TrainingInterrupted
from dlcli.rundir import read_json
from dlcli.training import train

SMALL_CNN = [
    {"conv2d": {"filters": 4, "kernel_size": 3, "activation": "relu"}},
    {"batchnorm": {}},
    {"maxpool2d": {"pool_size": 2}},
    {"flatten": {}},
    {"dense": {"units": 10, "activation": "softmax"}},
]


def idx_config(root: Path, layers=None, **training) -> dict:
    return {
        "name": "small",
        "seed": 0,
        "device": "cpu",
        "data": {"dataset": "mnist", "root": str(root), "validation_split": 0.2},
        "model": {"layers": layers or SMALL_CNN},
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 2, "batch_size": 32, **training},
    }


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("data")
    make_idx_dataset(root / "mnist", n_train=160, n_test=40)
    return root


@pytest.fixture(scope="module")
def pretrained(digits, tmp_path_factory) -> Path:
    """A run of the small CNN: what the fine-tuning tests start from."""
    folder = tmp_path_factory.mktemp("pretrain")
    return trained_run(write_config(folder / "pre.yaml", idx_config(digits)), folder / "runs")


def quiet_console() -> Console:
    return Console(file=io.StringIO())


def fine_tune_config(tmp_path: Path, digits: Path, pretrained: Path, layers=None, fine_tune=None, **training):
    raw = idx_config(digits, layers, **training)
    raw["model"]["weights"] = str(pretrained)
    if fine_tune is not None:
        raw["training"]["fine_tune"] = fine_tune
    return write_config(tmp_path / "ft.yaml", raw)


# ----------------------------------------------------------------------------- weights from a run


def test_a_run_gives_every_matching_layer_and_the_rest_starts_fresh(tmp_path, digits, pretrained):
    wider_head = [*SMALL_CNN[:4], {"dense": {"units": 16, "activation": "relu"}}, SMALL_CNN[4]]
    config = fine_tune_config(tmp_path, digits, pretrained, wider_head, epochs=1)
    result = invoke("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert "transferred: conv2d, batchnorm" in result.output
    assert "starting fresh: dense, dense_1" in result.output  # dense's input is 16 wide now, not 676

    (run,) = (tmp_path / "runs").iterdir()
    best = pretrained / "checkpoints" / "best.pt"
    recorded = read_json(run / "run.json")["weights"]
    assert recorded["source"] == "run" and recorded["file"] == str(best)
    assert recorded["sha256"] == hashlib.sha256(best.read_bytes()).hexdigest()
    assert read_json(run / "results.json")["weights"] == recorded
    assert (recorded["transferred"], recorded["fresh"]) == (["conv2d", "batchnorm"], ["dense", "dense_1"])


def test_transferred_tensors_are_the_runs_best_weights(tmp_path, digits, pretrained):
    from dlcli.plan import build_network, plan_experiment

    config = load_config(fine_tune_config(tmp_path, digits, pretrained))
    model = build_network(plan_experiment(config), torch.device("cpu"), False)
    source = load_checkpoint(pretrained / "checkpoints" / "best.pt")["model"]
    own = model_weights(model)
    assert own.keys() == source.keys() and all(torch.equal(own[k], source[k]) for k in own)
    assert model.weights_report.fresh == []


# ----------------------------------------------------------------------------- freezing


class Snapshots(Callback):
    """The model's tensors and the optimizer's parameters before training and after each epoch."""

    def __init__(self) -> None:
        self.states: dict[int, dict] = {}
        self.optimizer_params: dict[int, list] = {}

    def on_train_begin(self, trainer):
        self.states[0] = model_weights(trainer.model)
        self.model = trainer.model
        self.optimizer = trainer.optimizer

    def on_epoch_end(self, epoch, logs, trainer):
        self.states[epoch] = model_weights(trainer.model)
        self.optimizer_params[epoch] = [p for g in trainer.optimizer.param_groups for p in g["params"]]


def frozen_names(state: dict) -> list[str]:
    """Everything but the head's tensors (dense is the last module of SMALL_CNN's network)."""
    last = max(int(k.split(".")[0]) for k in state)
    return [k for k in state if int(k.split(".")[0]) != last]


def test_frozen_means_frozen_parameters_and_batch_norm_statistics(tmp_path, digits, pretrained):
    config = load_config(fine_tune_config(tmp_path, digits, pretrained, fine_tune={"freeze": "backbone"}, epochs=2))
    snaps = Snapshots()
    train(config, runs_dir=tmp_path / "runs", console=quiet_console(), extra_callbacks=[snaps])
    frozen = frozen_names(snaps.states[0])
    assert any("running_mean" in k for k in frozen) and any(k.endswith("num_batches_tracked") for k in frozen)
    for epoch in (1, 2):
        assert all(torch.equal(snaps.states[epoch][k], snaps.states[0][k]) for k in frozen), epoch
        head = [k for k in snaps.states[0] if k not in frozen]
        assert not any(torch.equal(snaps.states[epoch][k], snaps.states[epoch - 1][k]) for k in head)
    # The optimizer holds exactly the trainable parameters: the head's.
    trainable = [p for p in snaps.model.parameters() if p.requires_grad]
    assert [id(p) for p in snaps.optimizer_params[2]] == [id(p) for p in trainable]
    assert len(trainable) == 2 and all(p.dim() in (1, 2) and p.shape[0] == 10 for p in trainable)


def test_unfreezing_adds_a_group_at_the_multiplied_rate_and_the_backbone_trains(tmp_path, digits, pretrained):
    tune = {"freeze": "backbone", "freeze_epochs": 1, "backbone_lr_mult": 0.1}
    config = load_config(fine_tune_config(tmp_path, digits, pretrained, fine_tune=tune, epochs=2))
    snaps = Snapshots()
    outcome = train(config, runs_dir=tmp_path / "runs", console=quiet_console(), extra_callbacks=[snaps])
    frozen = frozen_names(snaps.states[0])
    assert all(torch.equal(snaps.states[1][k], snaps.states[0][k]) for k in frozen)  # epoch 1: frozen
    moved = [k for k in frozen if not torch.equal(snaps.states[2][k], snaps.states[1][k])]
    assert "0.weight" in moved and any("running_mean" in k for k in moved)  # epoch 2: trained, BN in train mode
    groups = snaps.optimizer.param_groups
    assert len(groups) == 2 and groups[1]["lr"] == pytest.approx(groups[0]["lr"] * 0.1)
    assert len(snaps.optimizer_params[2]) == len(list(snaps.model.parameters()))
    phases = read_json(outcome.run_dir / "run.json")["fine_tune"]
    assert [p["epochs"] for p in phases] == ["1", "2"] and phases[1]["frozen"] == 0


class InterruptAt(Callback):
    def __init__(self, epoch: int, control: RunControl) -> None:
        self.epoch, self.control = epoch, control

    def on_epoch_begin(self, epoch, trainer):
        if epoch == self.epoch:  # stops after this epoch's first step, as Ctrl-C does
            self.control.signal = "SIGINT"


@pytest.mark.parametrize(
    ("stop_in_epoch", "schedule"),
    [
        (2, {"name": "one_cycle"}),  # killed in the frozen phase
        (3, {"name": "cosine", "warmup_epochs": 1}),  # last.pt from the last frozen epoch
        (4, {"name": "one_cycle"}),  # killed after unfreezing: last.pt holds both groups
        (4, {"name": "reduce_on_plateau", "patience": 0, "warmup_steps": 3}),
    ],
)
def test_resume_is_exact_across_the_phase_change(tmp_path, digits, pretrained, stop_in_epoch, schedule):
    tune = {"freeze": "backbone", "freeze_epochs": 2, "backbone_lr_mult": 0.1}
    path = fine_tune_config(tmp_path, digits, pretrained, fine_tune=tune, epochs=5, schedule=schedule)
    config = load_config(path)
    control = RunControl()
    with pytest.raises(TrainingInterrupted):
        train(
            config,
            runs_dir=tmp_path / "runs",
            console=quiet_console(),
            control=control,
            extra_callbacks=[InterruptAt(stop_in_epoch, control)],
        )
    (run,) = (tmp_path / "runs").iterdir()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["epoch"] == stop_in_epoch - 1
    resumed = train(
        load_config(run / "config.yaml"), runs_dir=tmp_path / "runs", console=quiet_console(), resume_dir=run
    )
    reference = train(config, runs_dir=tmp_path / "reference", console=quiet_console())
    strip = lambda history: [{k: v for k, v in r.items() if k != "seconds"} for r in history]  # noqa: E731
    assert strip(resumed.history) == strip(reference.history)
    assert (run / "metrics.csv").read_text().count("\n") == (reference.run_dir / "metrics.csv").read_text().count("\n")
    ours = load_checkpoint(run / "checkpoints" / "last.pt")
    theirs = load_checkpoint(reference.run_dir / "checkpoints" / "last.pt")
    assert all(torch.equal(ours["model"][k], theirs["model"][k]) for k in theirs["model"])
    assert len(ours["optimizer"]["param_groups"]) == 2


def test_summary_shows_each_phase_and_the_frozen_layers(tmp_path, digits, pretrained):
    tune = {"freeze": ["conv2d"], "freeze_epochs": 1}
    result = invoke("summary", fine_tune_config(tmp_path, digits, pretrained, fine_tune=tune, epochs=3))
    assert result.exit_code == 0, result.output
    total = 4 * 9 + 4 + 4 * 2 + 10 * 676 + 10
    assert f"phase 1 (epochs 1): trainable {total - 40:,}, frozen 40; frozen: conv2d" in result.output
    assert f"phase 2 (epochs 2-3): trainable {total:,}, frozen 0" in result.output


# ----------------------------------------------------------------------------- bad input


def one_paragraph_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    text = result.output.strip()
    if text.startswith("Downloading "):  # the download's progress line (standard error) came first
        text = text.split("\n", 1)[1]
    assert text.startswith("Error") and "\n\n" not in text, text
    for needle in needles:
        assert needle in text, text


def test_weights_of_another_network_name_the_mismatching_tensors(tmp_path, digits, pretrained):
    mlp = [{"flatten": {}}, {"dense": {"units": 10, "activation": "softmax"}}]
    result = invoke("train", fine_tune_config(tmp_path, digits, pretrained, mlp), "--runs-dir", tmp_path / "runs")
    one_paragraph_error(result, "different network", "1.weight [10, 784]", "0.weight [4, 1, 3, 3]")
    assert not (tmp_path / "runs").exists()  # refused before any run folder


def test_a_run_without_a_checkpoint_is_refused(tmp_path, digits):
    empty = tmp_path / "runs" / "20260101-000000-empty"
    empty.mkdir(parents=True)
    (empty / "run.json").write_text("{}")
    result = invoke("train", fine_tune_config(tmp_path, digits, empty), "--runs-dir", tmp_path / "new")
    one_paragraph_error(result, "has no checkpoint", str(empty / "checkpoints" / "best.pt"))


@pytest.mark.parametrize(
    ("fine_tune", "layers", "needles"),
    [
        ({"freeze": ["conv3d"]}, None, ("no layer is named 'conv3d'", "conv2d")),
        ({"freeze": ["conv2d", "batchnorm", "dense"]}, None, ("freezes every parameter",)),
        ({"freeze": "backbone", "backbone_lr_mult": 0}, None, ("backbone_lr_mult", "greater than 0")),
        ({"freeze": "backbone", "backbone_lr_mult": -1}, None, ("backbone_lr_mult", "greater than 0")),
        (
            {"freeze": "backbone"},
            [*SMALL_CNN[:4], {"dense": {"units": 10}}, {"activation": {"activation": "softmax"}}],
            ("no recognisable head", "activation"),
        ),
        ({"freeze": "backbone", "unfreeze": ["dense"], "freeze_epochs": 1}, None, ("'dense' names no frozen layer",)),
        ({"freeze": "backbone", "unfreeze": ["conv9"], "freeze_epochs": 1}, None, ("unfreeze", "'conv9'")),
    ],
)
def test_bad_fine_tune_settings_are_one_paragraph(tmp_path, digits, pretrained, fine_tune, layers, needles):
    config = fine_tune_config(tmp_path, digits, pretrained, layers, fine_tune=fine_tune)
    result = invoke("train", config, "--runs-dir", tmp_path / "runs")
    one_paragraph_error(result, *needles)
    assert not (tmp_path / "runs").exists()


# ----------------------------------------------------------------------------- torchvision's weights


def resnet_config(root: Path, weights: str, **training) -> dict:
    raw = idx_config(root, **training)
    raw["model"] = {"torchvision": "resnet18", "weights": weights}
    raw["data"]["max_train_samples"] = 32
    raw["training"].update(epochs=1, batch_size=16)
    return raw


def test_an_unknown_weight_name_lists_the_valid_ones(tmp_path, digits):
    config = write_config(tmp_path / "c.yaml", resnet_config(digits, "IMAGENET1K_V9"))
    result = invoke("summary", config)
    one_paragraph_error(result, "'IMAGENET1K_V9'", "IMAGENET1K_V1, DEFAULT", "Did you mean")


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the folder; /cut/NAME announces NAME's whole length and sends half of it, as a
    connection that drops mid-download does."""

    def do_GET(self) -> None:
        if not self.path.startswith("/cut/"):
            return super().do_GET()
        data = (Path(self.directory) / self.path[5:]).read_bytes()
        self.send_response(200)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data[: len(data) // 2])
        self.close_connection = True

    def log_message(self, *args) -> None:  # no request lines in the test's output
        pass


@pytest.fixture
def weights_server(tmp_path, monkeypatch):
    """A local HTTP server serving a folder, torchvision's cache in an empty TORCH_HOME, and
    resnet18's IMAGENET1K_V1 pointed at the server: (folder, cache, url of a name)."""
    import torchvision.models as tvm

    served = tmp_path / "served"
    served.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    weights = tvm.ResNet18_Weights.IMAGENET1K_V1.value

    def point_at(name: str) -> str:
        monkeypatch.setattr(weights, "url", f"http://127.0.0.1:{server.server_port}/{name}")
        return name

    yield served, tmp_path / "torch" / "hub" / "checkpoints", point_at
    server.shutdown()


def imagenet_like_file(folder: Path) -> tuple[Path, dict]:
    """resnet18's weights as torchvision defines it (random, seeded), named as torch.hub names files."""
    import torchvision.models as tvm

    torch.manual_seed(0)
    state = tvm.resnet18().state_dict()
    buffer = io.BytesIO()
    torch.save(state, buffer)
    data = buffer.getvalue()
    path = folder / f"resnet18-{hashlib.sha256(data).hexdigest()[:8]}.pth"
    path.write_bytes(data)
    return path, state


def test_weights_by_name_are_downloaded_into_the_cache_checked_and_normalised(tmp_path, digits, weights_server):
    served, cache, point_at = weights_server
    file, state = imagenet_like_file(served)
    point_at(file.name)
    config = write_config(tmp_path / "c.yaml", resnet_config(digits, "IMAGENET1K_V1"))
    result = invoke("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert (cache / file.name).read_bytes() == file.read_bytes()
    assert not [p for p in cache.iterdir() if p.name.endswith(".part")]
    assert "trained on 224x224 images and the data's are 28 wide" in result.output
    (run,) = (tmp_path / "runs").iterdir()
    recorded = read_json(run / "run.json")["weights"]
    assert recorded["weights"] == "IMAGENET1K_V1" and recorded["sha256"].startswith(file.name[9:17])
    assert recorded["fresh"] == ["fc"] and "layer4" in recorded["transferred"]
    # Grayscale on an RGB stem: the mean of the three channels' means and stds.
    assert recorded["mean"] == [pytest.approx((0.485 + 0.456 + 0.406) / 3)]
    assert recorded["std"] == [pytest.approx((0.229 + 0.224 + 0.225) / 3)]

    # The model built from the plan starts from the summed stem and normalises inside.
    from dlcli.plan import build_network, plan_experiment

    model = build_network(plan_experiment(load_config(config)), torch.device("cpu"), False)
    assert torch.equal(model.conv1.weight, state["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.layer4[1].bn2.running_var, state["layer4.1.bn2.running_var"])
    x = torch.rand(2, 1, 28, 28)
    model.eval()
    without_hook = type(model).forward(model, (x - model.input_mean) / model.input_std)
    assert torch.equal(model(x), without_hook)

    # Cached: a second run needs no server (the URL now points nowhere).
    point_at(file.name.replace("resnet18", "gone/resnet18"))
    assert invoke("train", config, "--runs-dir", tmp_path / "runs").exit_code == 0


def test_a_truncated_download_is_refused_and_nothing_is_kept(tmp_path, digits, weights_server):
    served, cache, point_at = weights_server
    file, _ = imagenet_like_file(served)
    config = write_config(tmp_path / "c.yaml", resnet_config(digits, "DEFAULT"))
    point_at("cut/" + file.name)  # the connection drops halfway
    one_paragraph_error(invoke("train", config, "--runs-dir", tmp_path / "runs"), "failed midway", "nothing was kept")
    assert list(cache.iterdir()) == []

    file.write_bytes(file.read_bytes()[: 1 << 20])  # a complete response of a truncated file
    point_at(file.name)
    one_paragraph_error(
        invoke("train", config, "--runs-dir", tmp_path / "runs"), "damaged or incomplete", file.name[9:17]
    )
    assert list(cache.iterdir()) == []  # no half file, no temporary file
    assert not (tmp_path / "runs").exists()


def test_a_damaged_cached_file_is_refused(tmp_path, digits, weights_server):
    served, cache, point_at = weights_server
    file, _ = imagenet_like_file(served)
    point_at(file.name)
    cache.mkdir(parents=True)
    (cache / file.name).write_bytes(b"not the weights")
    config = write_config(tmp_path / "c.yaml", resnet_config(digits, "IMAGENET1K_V1"))
    one_paragraph_error(invoke("train", config, "--runs-dir", tmp_path / "runs"), f"Delete {cache / file.name}")


def test_export_carries_the_normalisation(tmp_path, digits, weights_server):
    pytest.importorskip("onnxruntime")
    served, _, point_at = weights_server
    file, _ = imagenet_like_file(served)
    point_at(file.name)
    run = trained_run(write_config(tmp_path / "c.yaml", resnet_config(digits, "IMAGENET1K_V1")), tmp_path / "runs")
    out = tmp_path / "model.onnx"
    result = invoke("export", run, "--format", "onnx", "--out", out)
    assert result.exit_code == 0, result.output  # export checks onnxruntime against torch to 1e-5
    import onnx
    from onnx import numpy_helper

    # The graph holds the normalisation's constants: ImageNet's mean and std averaged for grayscale.
    values = [numpy_helper.to_array(t) for t in onnx.load(str(out)).graph.initializer]
    small = [float(v.reshape(-1)[0]) for v in values if v.size == 1 and v.dtype.kind == "f"]
    assert any(abs(v - (0.485 + 0.456 + 0.406) / 3) < 1e-6 for v in small), small
    assert any(abs(v - (0.229 + 0.224 + 0.225) / 3) < 1e-6 for v in small), small


def _unshare_works() -> bool:
    if not shutil.which("unshare"):
        return False
    return subprocess.run(["unshare", "-rn", "true"], capture_output=True).returncode == 0


def test_offline_the_error_names_the_url_and_destination_fast(tmp_path, digits):
    if not _unshare_works():
        skip_unless_ci("unshare -rn (a network namespace without routes) is not available here")
    torch_home = tmp_path / "torch"
    torch_home.mkdir()
    config = write_config(tmp_path / "c.yaml", resnet_config(digits, "IMAGENET1K_V1"))
    env = {**os.environ, "TORCH_HOME": str(torch_home), "PYTHONPATH": os.pathsep.join(sys.path)}
    env.pop("DLCLI_WEIGHTS_URL_BASE", None)  # torchvision's own URL
    started = time.perf_counter()
    done = subprocess.run(
        ["unshare", "-rn", sys.executable, "-m", "dlcli", "train", str(config), "--runs-dir", str(tmp_path / "runs")],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    seconds = time.perf_counter() - started
    output = done.stdout + done.stderr
    dest = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert done.returncode == 2, output
    assert "https://download.pytorch.org/models/resnet18-f37072fd.pth" in output and str(dest) in output
    assert "Traceback" not in output and not (tmp_path / "runs").exists()
    # The attempt itself, without Python's and torch's start-up: well within the 5 s target.
    probe = subprocess.run(
        [
            "unshare",
            "-rn",
            sys.executable,
            "-c",
            "import time, dlcli.models.weights as w\n"
            "from dlcli.errors import ConfigError\n"
            "d = w.declared_weights('resnet18', 'IMAGENET1K_V1'); t = time.perf_counter()\n"
            "try: w.fetch_weights(d)\n"
            "except ConfigError: print(time.perf_counter() - t)",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert float(probe.stdout) < 5.0, (probe.stdout, probe.stderr, seconds)


def test_config_keys_for_every_model_kind():
    for model in ({"preset": "mlp"}, {"preset": "cnn"}, {"layers": SMALL_CNN}, {"torchvision": "resnet18"}):
        raw = {"data": {"dataset": "synthetic"}, "model": {**model, "weights": "runs/x"}}
        assert load_config(None, raw=raw).model.weights == "runs/x"
    with pytest.raises(ConfigError, match="compiled step"):
        load_config(
            None,
            raw={
                "data": {"dataset": "synthetic"},
                "model": {"preset": "mlp"},
                "training": {"compile": True, "fine_tune": {"freeze_epochs": 1}},
            },
        )


def test_a_mirror_serves_the_same_file_names(monkeypatch):
    from dlcli.models.weights import URL_BASE_ENV, cache_path, download_url

    url = "https://download.pytorch.org/models/resnet18-f37072fd.pth"
    assert download_url(url) == url
    monkeypatch.setenv(URL_BASE_ENV, "http://mirror.local/models/")
    assert download_url(url) == "http://mirror.local/models/resnet18-f37072fd.pth"
    monkeypatch.setenv("TORCH_HOME", "/somewhere")
    assert cache_path(url) == Path("/somewhere/hub/checkpoints/resnet18-f37072fd.pth")


@pytest.mark.e2e
@pytest.mark.parametrize("freeze_epochs", [3, 2], ids=["killed_while_frozen", "killed_after_unfreezing"])
def test_a_run_sigkilled_in_either_phase_resumes_bit_identically(tmp_path, freeze_epochs):
    """SIGKILL in the third epoch (frozen, or the first after unfreezing), then `--resume`: the
    same metrics.csv and bit-identical weights as an uninterrupted run."""
    from conftest import synthetic_config
    from test_training_tools import assert_resumed_as_uninterrupted, killed_and_resumed

    raw = synthetic_config(epochs=5, batch_size=8, schedule={"name": "one_cycle", "max_lr": 0.02})
    raw["data"]["synthetic"].update(samples=3000, input_shape=[32])
    raw["model"] = {"preset": "mlp", "hidden": [64, 64], "dropout": 0.2}
    raw["training"]["fine_tune"] = {"freeze": "backbone", "freeze_epochs": freeze_epochs, "backbone_lr_mult": 0.1}
    ref_run, run = killed_and_resumed(tmp_path, raw)
    assert_resumed_as_uninterrupted(ref_run, run, epochs=5)
