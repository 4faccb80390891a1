"""TensorBoard and MLflow tracking: every logged number read back with the tools' own readers
(TensorBoard's EventAccumulator, MlflowClient) against a real SQLite store and a real
`mlflow server` on localhost, and a tracking failure never costing the run."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import dlcli
import dlcli.engine
from conftest import RUN_FOLDER_FILES, import_or_skip_unless_ci, skip_unless_ci, synthetic_config, write_config
from dlcli.cli import app
from dlcli.config import MlflowConfig, TrackingConfig, load_config
from dlcli.rundir import read_metrics
from dlcli.tracking import (
    PARENT_RUN_ENV,
    finish_parent_run,
    flatten_config,
    param_text,
    start_parent_run,
    tracking_callbacks,
)


@pytest.fixture(scope="session", autouse=True)
def tracking_extra() -> None:
    """Every test here needs the tracking extra. Session-scoped, so that it comes before the
    session's MLflow store, which imports mlflow."""
    for package in ("tensorboard", "mlflow"):
        import_or_skip_unless_ci(package, f"{package} is not installed: pip install -e '.[tracking]'")


runner = CliRunner()
STEPS_PER_EPOCH = 10  # synthetic_config: 200 samples, 20% held out, batch 16


def train(*args):
    result = runner.invoke(app, ["train", *map(str, args)])
    assert "Traceback" not in result.output, result.output
    return result


def config_file(tmp_path: Path, name: str = "tiny.yaml", **tracking) -> Path:
    raw = synthetic_config(epochs=3)
    raw["tracking"] = tracking
    return write_config(tmp_path / name, raw)


def the_run(runs: Path) -> Path:
    (run,) = sorted(p for p in runs.iterdir() if p.is_dir())
    return run


def warnings_in(output: str) -> list[str]:
    return [line for line in output.splitlines() if "Warning" in line]


def dlcli_env() -> dict:
    """The environment for a `python -m dlcli` subprocess that runs this checkout's sources."""
    source = str(Path(dlcli.__file__).resolve().parents[1])
    return {**os.environ, "PYTHONPATH": os.pathsep.join([source, *filter(None, [os.environ.get("PYTHONPATH")])])}


def check_folder_complete(run: Path, epochs: int) -> None:
    assert RUN_FOLDER_FILES <= {p.name for p in run.iterdir()}
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")[1]] == list(range(1, epochs + 1))


@pytest.fixture
def report_every_step(monkeypatch):
    """Progress callbacks after every step instead of every 0.25 s, so the per-step curve is exact."""
    monkeypatch.setattr(dlcli.engine, "REPORT_INTERVAL_S", 0.0)


# ----------------------------------------------------------------------------- config and wiring


def test_tracking_section_defaults_overrides_and_errors(tmp_path):
    path = config_file(tmp_path)
    config = load_config(path)
    assert config.tracking == TrackingConfig(tensorboard=False, mlflow=None)
    config = load_config(path, ["tracking.tensorboard=true", "tracking.mlflow.uri=sqlite:///x.db"])
    assert config.tracking == TrackingConfig(
        tensorboard=True,
        mlflow=MlflowConfig(uri="sqlite:///x.db", experiment=None, log_checkpoints=False, timeout=10, retries=2),
    )
    with pytest.raises(dlcli.errors.ConfigError, match=r"unknown key 'tensorbord' in tracking.*'tensorboard'"):
        load_config(path, ["tracking.tensorbord=true"])
    with pytest.raises(dlcli.errors.ConfigError, match=r"tracking.mlflow.timeout: must be at least 1, found 0"):
        load_config(path, ["tracking.mlflow.timeout=0"])


def test_config_flattens_to_params_without_the_tracking_section(tmp_path):
    raw = synthetic_config()
    raw["model"] = {"layers": [{"dense": {"units": 8, "activation": "relu"}}, {"flatten": {}}]}
    raw["tracking"] = {"mlflow": {"uri": "http://user:secret@host:5000"}}
    flat = flatten_config(load_config(write_config(tmp_path / "c.yaml", raw)))
    assert not any(key.startswith("tracking") for key in flat)
    assert flat["model.layers.0.dense.units"] == 8
    assert flat["model.layers.0.dense.activation"] == "relu"
    assert flat["model.layers.1.flatten"] == {}
    assert flat["data.synthetic.input_shape"] == [8]
    assert flat["optimizer.lr"] == 0.01
    assert [
        param_text(flat[k])
        for k in ("model.layers.1.flatten", "data.synthetic.input_shape", "optimizer.momentum", "training.shuffle")
    ] == ["{}", "[8]", "null", "true"]


def test_only_rank_zero_tracks(tmp_path):
    config = load_config(config_file(tmp_path, tensorboard=True, mlflow={"uri": "sqlite:///unused.db"}))
    kwargs = dict(resumed=False, world_size=2, device="cpu", warn=print)
    assert tracking_callbacks(config, tmp_path, world_rank=1, **kwargs) == []
    names = [type(t).__name__ for t in tracking_callbacks(config, tmp_path, world_rank=0, **kwargs)]
    assert names == ["TensorBoardTracker", "MlflowTracker"]
    assert not list(tmp_path.glob("*.db"))  # nothing touches a store before training begins


def _python_without(tmp_path: Path, package: str) -> tuple[list[str], dict]:
    """A Python whose import path is this one's site-packages minus one package: the package
    is really absent (not faked), everything else is there."""
    import torch

    site = Path(torch.__file__).resolve().parents[1]
    farm = tmp_path / "site-packages"
    farm.mkdir()
    for entry in site.iterdir():
        name = entry.name.lower().replace("-", "_")
        if name == package or name.startswith((package + "_", package + ".")):
            continue
        (farm / entry.name).symlink_to(entry)
    source = Path(dlcli.__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": f"{source}{os.pathsep}{farm}"}
    return [sys.executable, "-S"], env


@pytest.mark.parametrize(
    "section,package", [({"tensorboard": True}, "tensorboard"), ({"mlflow": {"uri": "sqlite:///m.db"}}, "mlflow")]
)
def test_tracking_without_its_package_is_a_clear_error(tmp_path, section, package):
    python, env = _python_without(tmp_path, package)
    probe = subprocess.run([*python, "-c", f"import {package}"], env=env, capture_output=True, text=True)
    assert probe.returncode == 1 and "ModuleNotFoundError" in probe.stderr
    config = config_file(tmp_path, **section)
    result = subprocess.run(
        [*python, "-m", "dlcli", "train", str(config), "--runs-dir", str(tmp_path / "runs")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    assert f"the {package} package is not installed" in result.stderr
    assert "pip install 'dlcli[tracking]'" in result.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no half-made run


# ----------------------------------------------------------------------------- TensorBoard


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(folder))
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _f32(value: float) -> float:
    return float(np.float32(value))  # TensorBoard keeps scalars as float32


def _check_epoch_scalars(tb: Path, rows: list[dict]) -> None:
    train, val = _scalars(tb / "train"), _scalars(tb / "validation")
    epochs = [r["epoch"] for r in rows]
    assert sorted(k for k in train if k.startswith("epoch_")) == ["epoch_accuracy", "epoch_learning_rate", "epoch_loss"]
    assert sorted(val) == ["epoch_accuracy", "epoch_loss"]
    for scalars, tag, column in (
        (train, "epoch_loss", "loss"),
        (train, "epoch_accuracy", "accuracy"),
        (train, "epoch_learning_rate", "lr"),
        (val, "epoch_loss", "val_loss"),
        (val, "epoch_accuracy", "val_accuracy"),
    ):
        assert scalars[tag] == [(e, _f32(r[column])) for e, r in zip(epochs, rows)], tag


def test_tensorboard_scalars_equal_metrics_csv(tmp_path, report_every_step):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

    result = train(config_file(tmp_path, tensorboard=True), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    run = the_run(tmp_path / "runs")
    check_folder_complete(run, 3)
    assert warnings_in(result.output) == []
    _, rows = read_metrics(run / "metrics.csv")
    tb = run / "tensorboard"
    _check_epoch_scalars(tb, rows)

    # Per-step: the running means the display shows, at every report, the optimisation step as step.
    train_scalars = _scalars(tb / "train")
    assert sorted(k for k in train_scalars if k.startswith("batch_")) == ["batch_accuracy", "batch_loss"]
    batch_loss = train_scalars["batch_loss"]
    assert [step for step, _ in batch_loss] == list(range(1, 3 * STEPS_PER_EPOCH + 1))
    for row in rows:  # the last report of an epoch is the mean over all its steps
        end_of_epoch = dict(batch_loss)[row["epoch"] * STEPS_PER_EPOCH]
        assert end_of_epoch == pytest.approx(row["loss"], rel=1e-5)

    # hparams of the completed run: the flattened config and the final metrics.
    root = EventAccumulator(str(tb))
    root.Reload()
    content = root.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    start = HParamsPluginData.FromString(content).session_start_info
    assert start.hparams["optimizer.lr"].number_value == 0.01
    assert start.hparams["training.batch_size"].number_value == 16
    assert start.hparams["model.hidden"].string_value == "[16]"
    assert start.hparams["training.shuffle"].string_value == "true"
    assert start.hparams["data.dataset"].string_value == "synthetic"
    assert len(start.hparams) == len(flatten_config(load_config(run / "config.yaml")))
    final = _scalars(tb)
    results = json.loads((run / "results.json").read_text())
    assert final == {
        "hparams/loss": [(3, _f32(rows[-1]["loss"]))],
        "hparams/accuracy": [(3, _f32(rows[-1]["accuracy"]))],
        "hparams/val_loss": [(3, _f32(rows[-1]["val_loss"]))],
        "hparams/val_accuracy": [(3, _f32(rows[-1]["val_accuracy"]))],
        "hparams/test_loss": [(3, _f32(results["test_loss"]))],
        "hparams/test_accuracy": [(3, _f32(results["test_accuracy"]))],
    }


# ----------------------------------------------------------------------------- MLflow: stores


@pytest.fixture(scope="session")
def mlflow_template_db(tmp_path_factory) -> Path:
    """An empty MLflow SQLite store, made once: creating its tables takes MLflow seconds."""
    from dlcli.tracking.mlflow_tracker import bounded_calls

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    with bounded_calls(MlflowConfig()):
        from mlflow import MlflowClient

        MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture
def sqlite_uri(tmp_path, mlflow_template_db, monkeypatch) -> str:
    """A fresh SQLite store in tmp_path; artifacts land in tmp_path/mlruns (MLflow's default
    artifact root is relative to the working folder)."""
    monkeypatch.chdir(tmp_path)
    db = tmp_path / "mlflow.db"
    shutil.copy(mlflow_template_db, db)
    return f"sqlite:///{db}"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class MlflowServer:
    """A real `mlflow server` on a free localhost port, SQLite-backed, serving artifacts."""

    def __init__(self, folder: Path, template: Path) -> None:
        self.folder = folder
        self.db = folder / "server.db"
        shutil.copy(template, self.db)
        self.proc: subprocess.Popen | None = None
        self.uri = ""

    @property
    def backend_uri(self) -> str:
        return f"sqlite:///{self.db}"

    def start(self) -> None:
        port = _free_port()
        self.log = open(self.folder / "server.log", "ab")  # noqa: SIM115 (closed by stop())
        self.uri = f"http://127.0.0.1:{port}"
        mlflow_cli = Path(sys.executable).with_name("mlflow")
        command = [str(mlflow_cli)] if mlflow_cli.exists() else [sys.executable, "-m", "mlflow"]
        env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
        self.proc = subprocess.Popen(
            [
                *command,
                "server",
                "--backend-store-uri",
                self.backend_uri,
                "--artifacts-destination",
                str(self.folder / "artifacts"),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=self.folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=self.log,
            start_new_session=True,
        )  # its own process group: stop() ends the workers it starts too
        deadline = time.time() + 240
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited: {(self.folder / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(f"{self.uri}/health", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        self.stop()
        raise RuntimeError("mlflow server did not answer within 240 s")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 30)):
            try:
                os.killpg(proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                proc.wait(wait)
                break
            except subprocess.TimeoutExpired:
                continue
        self.log.close()


@pytest.fixture(scope="module")
def _server(tmp_path_factory, mlflow_template_db):
    if (
        shutil.which("mlflow", path=str(Path(sys.executable).parent)) is None
        and subprocess.run([sys.executable, "-m", "mlflow", "--version"], capture_output=True).returncode != 0
    ):
        skip_unless_ci("the mlflow command is not available (it comes with the tracking extra)")
    server = MlflowServer(tmp_path_factory.mktemp("mlflow-server"), mlflow_template_db)
    yield server
    server.stop()


@pytest.fixture
def mlflow_server(_server, tmp_path, monkeypatch) -> MlflowServer:
    """The module's server (started once: it takes MLflow many seconds), restarted if a test stopped it."""
    monkeypatch.chdir(tmp_path)
    if not _server.alive:
        _server.start()
    return _server


def _client(uri: str):
    from mlflow import MlflowClient

    from dlcli.tracking.mlflow_tracker import bounded_calls

    with bounded_calls(MlflowConfig()):
        return MlflowClient(uri)


def _tracked_run_id(run: Path) -> str:
    return json.loads((run / "tracking.json").read_text())["mlflow"]["run_id"]


def _check_mlflow_run(client, run: Path, *, checkpoints: bool) -> None:
    """Everything the run folder says, read back through MlflowClient."""
    mlrun = client.get_run(_tracked_run_id(run))
    config = load_config(run / "config.yaml")
    assert mlrun.info.status == "FINISHED"
    assert mlrun.info.run_name == run.name
    assert mlrun.data.params == {k: param_text(v) for k, v in flatten_config(config).items()}
    tags = mlrun.data.tags
    expected_tags = {
        "dlcli.version": dlcli.__version__,
        "dlcli.run_id": run.name,
        "dlcli.dataset": "synthetic",
        "dlcli.device": "cpu",
        "dlcli.world_size": "1",
        "dlcli.run_dir": str(run.resolve()),
    }
    assert {k: tags.get(k) for k in expected_tags} == expected_tags
    assert "mlflow.parentRunId" not in tags
    assert client.get_experiment(mlrun.info.experiment_id).name == (config.tracking.mlflow.experiment or config.name)

    columns, rows = read_metrics(run / "metrics.csv")
    for column in columns:
        if column == "epoch":
            continue
        history = sorted((m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, column))
        assert history == [(r["epoch"], r[column]) for r in rows], column  # each epoch once, exactly
    results = json.loads((run / "results.json").read_text())
    for key in ("test_loss", "test_accuracy"):
        assert [(m.step, m.value) for m in client.get_metric_history(mlrun.info.run_id, key)] == [
            (rows[-1]["epoch"], results[key])
        ]

    listed = {a.path for a in client.list_artifacts(mlrun.info.run_id)}
    expected = {"config.yaml", "run.json", "summary.txt", "metrics.csv", "results.json", "loss.png", "accuracy.png"}
    assert listed == expected | ({"checkpoints"} if checkpoints else set())
    if checkpoints:
        assert {a.path for a in client.list_artifacts(mlrun.info.run_id, "checkpoints")} == {
            "checkpoints/last.pt",
            "checkpoints/best.pt",
        }
    from mlflow.artifacts import download_artifacts

    copy = download_artifacts(
        run_id=mlrun.info.run_id,
        artifact_path="metrics.csv",
        dst_path=str(run.parent.parent / "downloaded"),
        tracking_uri=client.tracking_uri,
    )
    assert Path(copy).read_bytes() == (run / "metrics.csv").read_bytes()


def test_mlflow_sqlite_store_holds_the_whole_run(tmp_path, sqlite_uri):
    config = config_file(tmp_path, mlflow={"uri": sqlite_uri, "log_checkpoints": True})
    result = train(config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == []
    run = the_run(tmp_path / "runs")
    check_folder_complete(run, 3)
    _check_mlflow_run(_client(sqlite_uri), run, checkpoints=True)


def test_mlflow_server_holds_the_whole_run(tmp_path, mlflow_server):
    config = config_file(tmp_path, mlflow={"uri": mlflow_server.uri, "experiment": "served"})
    result = train(config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == []
    run = the_run(tmp_path / "runs")
    check_folder_complete(run, 3)
    _check_mlflow_run(_client(mlflow_server.uri), run, checkpoints=False)
    # The server wrote the artifacts into its own store, not into this folder.
    assert list((mlflow_server.folder / "artifacts").rglob("summary.txt"))
    assert not (tmp_path / "mlruns").exists()


def test_mlflow_folder_store(tmp_path, monkeypatch):
    """A plain folder as URI: MLflow's file store, which MLflow 3 only opens when told to."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLFLOW_ALLOW_FILE_STORE", raising=False)
    result = train(config_file(tmp_path, mlflow={"uri": str(tmp_path / "mlruns")}), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == []
    assert "MLFLOW_ALLOW_FILE_STORE" not in os.environ  # set for dlcli's calls only
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    _check_mlflow_run(_client(str(tmp_path / "mlruns")), the_run(tmp_path / "runs"), checkpoints=False)


def test_tracking_turned_on_at_a_resumption_gets_the_earlier_epochs(tmp_path, sqlite_uri):
    result = train(config_file(tmp_path), "--runs-dir", tmp_path / "runs", "--set", "training.epochs=2")
    assert result.exit_code == 0, result.output
    run = the_run(tmp_path / "runs")
    result = train(
        "--resume",
        run,
        "--set",
        "training.epochs=3",
        "--set",
        "tracking.tensorboard=true",
        "--set",
        f"tracking.mlflow.uri={sqlite_uri}",
    )
    assert result.exit_code == 0, result.output
    _, rows = read_metrics(run / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    _check_epoch_scalars(run / "tensorboard", rows)
    _check_mlflow_run(_client(sqlite_uri), run, checkpoints=False)


def test_failed_run_is_failed_in_mlflow(tmp_path, sqlite_uri):
    raw = synthetic_config(epochs=3)
    raw["data"]["synthetic"]["task"] = "regression"
    raw.update(loss="mse", optimizer={"name": "sgd", "lr": 1.0e6}, tracking={"mlflow": {"uri": sqlite_uri}})
    result = train(write_config(tmp_path / "diverge.yaml", raw), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1 and "diverged" in result.output
    run = the_run(tmp_path / "runs")
    mlrun = _client(sqlite_uri).get_run(_tracked_run_id(run))
    assert mlrun.info.status == "FAILED"
    assert {a.path for a in _client(sqlite_uri).list_artifacts(mlrun.info.run_id)} == {
        "config.yaml",
        "run.json",
        "summary.txt",
    }  # what the run folder had when it failed


@pytest.mark.e2e
def test_sweep_trial_is_a_child_of_the_parent_run(tmp_path, sqlite_uri, monkeypatch):
    tracking = TrackingConfig(mlflow=MlflowConfig(uri=sqlite_uri))
    said: list[str] = []
    parent_id = start_parent_run(tracking, "sweep-1", warn=said.append)
    assert parent_id is not None and said == []
    monkeypatch.setenv(PARENT_RUN_ENV, parent_id)
    # The trial's own experiment name is ignored: MLflow nests children only in the parent's experiment.
    config = config_file(tmp_path, mlflow={"uri": sqlite_uri, "experiment": "elsewhere"})
    result = train(config, "--runs-dir", tmp_path / "runs", "--set", "training.epochs=1")
    assert result.exit_code == 0, result.output
    summary = tmp_path / "summary.csv"
    summary.write_text("trial,val_loss\n0,0.5\n")
    finish_parent_run(tracking, parent_id, "completed", artifacts=[summary], warn=said.append)
    assert said == []

    client = _client(sqlite_uri)
    parent = client.get_run(parent_id)
    child = client.get_run(_tracked_run_id(the_run(tmp_path / "runs")))
    assert child.data.tags["mlflow.parentRunId"] == parent_id
    assert child.info.experiment_id == parent.info.experiment_id
    assert client.get_experiment(parent.info.experiment_id).name == "sweep-1"
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == parent.data.tags["dlcli.sweep"] == "sweep-1"
    assert [a.path for a in client.list_artifacts(parent_id)] == ["summary.csv"]


def test_a_parent_runs_metrics_named_after_classes_are_logged_under_names_mlflow_accepts(tmp_path, sqlite_uri):
    """A CV's fold metrics carry class names (`<=50K`, `a,b`), which MLflow refuses in a metric's
    name: they are logged with _ in place of each refused character, a name too long is left out,
    and the parent run is finished either way (a refused name had failed the whole batch)."""
    tracking = TrackingConfig(mlflow=MlflowConfig(uri=sqlite_uri))
    said: list[str] = []
    parent_id = start_parent_run(tracking, "cv-1", warn=said.append)
    metrics = {
        "mean_test_per_class.<=50K.precision": 0.75,
        "std_test_per_class.a,b (x).recall": 0.125,
        "mean_val_accuracy": 0.5,
        "mean_" + "x" * 300: 1.0,
    }
    finish_parent_run(tracking, parent_id, "completed", metrics=metrics, warn=said.append)
    assert said == []
    parent = _client(sqlite_uri).get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics == {
        "mean_test_per_class.__50K.precision": 0.75,
        "std_test_per_class.a_b _x_.recall": 0.125,
        "mean_val_accuracy": 0.5,
    }


def test_a_parent_run_is_finished_even_when_its_files_cannot_be_logged(tmp_path, sqlite_uri):
    """The artifact store cannot take the files (a file stands where its folder goes): the
    parent run is still finished, and one warning says what was not logged."""
    tracking = TrackingConfig(mlflow=MlflowConfig(uri=sqlite_uri))
    said: list[str] = []
    parent_id = start_parent_run(tracking, "cv-2", warn=said.append)
    artifacts = Path(_client(sqlite_uri).get_run(parent_id).info.artifact_uri.removeprefix("file://"))
    shutil.rmtree(tmp_path / "mlruns", ignore_errors=True)
    (tmp_path / "mlruns").write_text("a file where MLflow's artifact folders go")
    assert not artifacts.exists()
    summary = tmp_path / "summary.csv"
    summary.write_text("fold,val_loss\n0,0.5\n")
    finish_parent_run(tracking, parent_id, "completed", artifacts=[summary], warn=said.append)
    assert _client(sqlite_uri).get_run(parent_id).info.status == "FINISHED"
    assert len(said) == 1 and said[0].startswith("Warning: MLflow parent run's metrics or files not all logged"), said


# ----------------------------------------------------------------------------- resuming


def test_interrupted_run_resumes_into_the_same_curves_and_mlflow_run(
    tmp_path, sqlite_uri, report_every_step, monkeypatch
):
    from dlcli.tracking.tensorboard_tracker import TensorBoardTracker

    original = TensorBoardTracker.on_progress

    def interrupt_in_epoch_3(self, trainer):  # what Ctrl-C does, at a known step
        original(self, trainer)
        if trainer.epoch == 3 and trainer.running.step == 4:
            trainer.control.signal = "SIGINT"

    monkeypatch.setattr(TensorBoardTracker, "on_progress", interrupt_in_epoch_3)
    raw = synthetic_config(epochs=4)
    raw["tracking"] = {"tensorboard": True, "mlflow": {"uri": sqlite_uri}}
    result = train(write_config(tmp_path / "c.yaml", raw), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 130, result.output
    run = the_run(tmp_path / "runs")
    client = _client(sqlite_uri)
    run_id = _tracked_run_id(run)
    assert client.get_run(run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1, 2]
    stale = [s for s, _ in _scalars(run / "tensorboard" / "train")["batch_loss"]]
    assert stale == list(range(1, 2 * STEPS_PER_EPOCH + 5))  # epoch 3's first steps, to be dropped
    assert not list((run / "tensorboard").glob("events.*"))  # no hparams for an unfinished run

    monkeypatch.setattr(TensorBoardTracker, "on_progress", original)
    result = train("--resume", run)
    assert result.exit_code == 0, result.output
    assert warnings_in(result.output) == []
    check_folder_complete(run, 4)
    _, rows = read_metrics(run / "metrics.csv")

    _check_epoch_scalars(run / "tensorboard", rows)  # each epoch once
    assert [s for s, _ in _scalars(run / "tensorboard" / "train")["batch_loss"]] == list(
        range(1, 4 * STEPS_PER_EPOCH + 1)
    )  # each step once
    assert _tracked_run_id(run) == run_id
    experiment = client.get_run(run_id).info.experiment_id
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run_id]  # one MLflow run
    _check_mlflow_run(client, run, checkpoints=False)


# `dlcli train` in a process that stops itself (SIGSTOP) as epoch 2 begins: by then epoch 1 is
# in the run folder and in MLflow, and the run cannot finish before the test kills it.
_TRAIN_STOPPING_AT_EPOCH_2 = """
import os, signal
from dlcli.callbacks import RunFolderWriter
from dlcli.cli import main

begin_epoch = RunFolderWriter.on_epoch_begin

def stop_at_epoch_2(self, epoch, trainer):
    if epoch == 2:
        os.kill(os.getpid(), signal.SIGSTOP)
    begin_epoch(self, epoch, trainer)

RunFolderWriter.on_epoch_begin = stop_at_epoch_2
main()
"""


def _wait_until_stopped(proc: subprocess.Popen, log: Path, timeout: float = 240.0) -> None:
    """Wait (polling, with a deadline) until proc is stopped by a signal; fail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid, status = os.waitpid(proc.pid, os.WNOHANG | os.WUNTRACED)
        if pid:
            assert os.WIFSTOPPED(status), f"it ended (wait status {status}) before it stopped:\n{log.read_text()}"
            return
        time.sleep(0.02)
    raise AssertionError(f"it did not stop within {timeout:.0f} s:\n{log.read_text()}")


@pytest.mark.e2e
def test_killed_process_resumes_into_one_mlflow_run(tmp_path, sqlite_uri):
    config = config_file(tmp_path, mlflow={"uri": sqlite_uri})
    log = tmp_path / "killed.log"
    with open(log, "w") as output:  # a file, not a pipe, which nobody would read while waiting
        proc = subprocess.Popen(
            [sys.executable, "-c", _TRAIN_STOPPING_AT_EPOCH_2, "train", str(config), "--runs-dir", "runs", "-q"],
            cwd=tmp_path,
            env=dlcli_env(),
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_until_stopped(proc, log)
        finally:
            proc.kill()  # SIGKILL ends a stopped process too
            proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, log.read_text()
    run = the_run(tmp_path / "runs")
    assert [r["epoch"] for r in read_metrics(run / "metrics.csv")[1]] == [1]  # killed mid-run
    client = _client(sqlite_uri)
    run_id = _tracked_run_id(run)
    assert client.get_run(run_id).info.status == "RUNNING"  # what a kill leaves
    resumed = subprocess.run(
        [sys.executable, "-m", "dlcli", "train", "--resume", str(run), "-q"],
        cwd=tmp_path,
        env=dlcli_env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert "Warning" not in resumed.stdout + resumed.stderr
    experiment = client.get_run(run_id).info.experiment_id
    assert [r.info.run_id for r in client.search_runs([experiment])] == [run_id]
    _check_mlflow_run(client, run, checkpoints=False)


# ----------------------------------------------------------------------------- failures cost nothing


@pytest.fixture
def silent_server():
    """A port that accepts connections and never answers: a hung tracking server."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_unreachable_server_at_start_gives_one_warning(tmp_path, monkeypatch, silent_server, kind):
    monkeypatch.chdir(tmp_path)
    uri = silent_server if kind == "silent" else f"http://127.0.0.1:{_free_port()}"
    config = config_file(tmp_path, tensorboard=True, mlflow={"uri": uri, "timeout": 1, "retries": 0})
    started = time.time()
    result = train(config, "--runs-dir", tmp_path / "runs")
    elapsed = time.time() - started
    assert result.exit_code == 0, result.output
    expected = "connection refused" if kind == "refused" else "did not answer within 1 s"
    assert warnings_in(result.output) == [
        f"Warning: MLflow logging stopped for this run (cannot reach {uri}: {expected}). "
        "Training continues; the run folder keeps everything."
        if kind == "refused"
        else f"Warning: MLflow logging stopped for this run ({uri} {expected}). "
        "Training continues; the run folder keeps everything."
    ]
    run = the_run(tmp_path / "runs")
    check_folder_complete(run, 3)
    assert not (run / "tracking.json").exists()
    assert (run / "tensorboard" / "validation").is_dir()  # the other tracker carried on
    assert elapsed < 120  # MLflow's own defaults would wait 120 s per try, 7 retries


def test_server_stopped_mid_run_gives_one_warning(tmp_path, mlflow_server, monkeypatch):
    from dlcli.tracking.mlflow_tracker import MlflowTracker

    original = MlflowTracker.save

    def stop_server_after_epoch_1(self, rows, trainer):
        original(self, rows, trainer)
        if rows[-1]["epoch"] == 1:
            mlflow_server.stop()

    monkeypatch.setattr(MlflowTracker, "save", stop_server_after_epoch_1)
    config = config_file(tmp_path, mlflow={"uri": mlflow_server.uri, "experiment": "stopped", "retries": 0})
    result = train(config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 0, result.output
    (line,) = warnings_in(result.output)
    print(line)  # shown by pytest -rP
    assert line.startswith("Warning: MLflow logging stopped for this run (") and line.endswith(
        "Training continues; the run folder keeps everything."
    )
    run = the_run(tmp_path / "runs")
    check_folder_complete(run, 3)
    # The store itself shows what reached it before the server went away.
    client = _client(mlflow_server.backend_uri)
    run_id = _tracked_run_id(run)
    assert client.get_run(run_id).info.status == "RUNNING"
    assert [m.step for m in client.get_metric_history(run_id, "loss")] == [1]


@pytest.mark.e2e
def test_a_sweep_is_a_parent_run_and_its_trials_are_children(tmp_path, sqlite_uri, monkeypatch):
    """dlcli sweep with a config that logs to MLflow: one parent run for the sweep (FINISHED, with
    summary.csv), one child per trial, each with its own parameters."""
    monkeypatch.setenv("PYTHONPATH", dlcli_env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(PARENT_RUN_ENV, "")  # so that the sweep's own setting is undone after the test
    monkeypatch.delenv(PARENT_RUN_ENV)
    config = config_file(tmp_path, mlflow={"uri": sqlite_uri})
    result = runner.invoke(
        app,
        [
            "sweep",
            str(config),
            "-p",
            "optimizer.lr=[0.01,0.1]",
            "--set",
            "training.epochs=1",
            "--runs-dir",
            str(tmp_path / "runs"),
            "--id",
            "lr",
        ],
    )
    assert result.exit_code == 0, result.output
    parent_id = json.loads((tmp_path / "runs" / "sweeps" / "lr" / "mlflow_parent.json").read_text())["run_id"]
    client = _client(sqlite_uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert "summary.csv" in {a.path for a in client.list_artifacts(parent_id)}
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert sorted(float(c.data.params["optimizer.lr"]) for c in children) == [0.01, 0.1]
    assert {c.info.status for c in children} == {"FINISHED"}


@pytest.mark.e2e
def test_a_cross_validation_parent_run_holds_its_summary_and_the_folds_mean_and_std(tmp_path, sqlite_uri, monkeypatch):
    """dlcli cv with a config that logs to MLflow: the parent run gets summary.json and each
    metric's mean and standard deviation over the folds, as summary.json gives them."""
    monkeypatch.setenv("PYTHONPATH", dlcli_env()["PYTHONPATH"])
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv(PARENT_RUN_ENV, "")  # so that the CV's own setting is undone after the test
    monkeypatch.delenv(PARENT_RUN_ENV)
    config = config_file(tmp_path, mlflow={"uri": sqlite_uri})
    runs = tmp_path / "runs"
    args = ["cv", str(config), "--folds", "2", "--set", "training.epochs=1", "--runs-dir", str(runs), "--id", "k"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    folder = runs / "cv" / "k"
    summary = json.loads((folder / "summary.json").read_text())
    parent_id = json.loads((folder / "mlflow_parent.json").read_text())["run_id"]
    client = _client(sqlite_uri)
    parent = client.get_run(parent_id)
    assert parent.info.status == "FINISHED"
    assert {"summary.json", "summary.csv"} <= {a.path for a in client.list_artifacts(parent_id)}
    logged = parent.data.metrics
    assert summary["completed"] == 2 and summary["metrics"]
    for name, value in summary["metrics"].items():
        assert logged[f"mean_{name}"] == pytest.approx(value["mean"])
        assert logged[f"std_{name}"] == pytest.approx(value["std"])
    children = client.search_runs([parent.info.experiment_id], f"tags.mlflow.parentRunId = '{parent_id}'")
    assert len(children) == 2


def test_tracking_warnings_name_the_problem_and_go_to_standard_error(tmp_path):
    """A TensorBoard folder that is a file, and an MLflow URI MLflow cannot use: one warning each,
    in the user's terms, on standard error (standard output may be piped into a file)."""
    config = config_file(tmp_path, tensorboard=True, mlflow={"uri": "ftp://example.invalid/store", "retries": 0})
    runs = tmp_path / "runs"
    assert train(config, "--runs-dir", runs, "-q", "--set", "training.epochs=1").exit_code == 0
    run = the_run(runs)
    shutil.rmtree(run / "tensorboard")
    (run / "tensorboard").write_text("a file where the event files go")
    proc = subprocess.run(
        [sys.executable, "-m", "dlcli", "train", "--resume", str(run), "--set", "training.epochs=2", "-q"],
        capture_output=True,
        text=True,
        env=dlcli_env(),
        timeout=180,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Warning" not in proc.stdout
    tensorboard = [w for w in warnings_in(proc.stderr) if "TensorBoard" in w]
    assert tensorboard and "a file is in the way where the folder" in tensorboard[0]
    assert "NotADirectoryError" not in proc.stderr
    mlflow = [w for w in warnings_in(proc.stderr) if "MLflow" in w]
    assert mlflow and "is not a tracking URI MLflow can use" in mlflow[0], proc.stderr
    assert "UnsupportedModelRegistryStoreURI" not in proc.stderr
