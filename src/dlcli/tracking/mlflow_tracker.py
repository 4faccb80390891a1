"""One MLflow run per dlcli run, through MlflowClient (no global active run, no autologging).

Logged: the flattened config as params, tags (dlcli version, run id, dataset, device, world
size), each epoch's metrics.csv row with the epoch as step, the test metrics at the end, the
status (RUNNING, then FINISHED, FAILED or KILLED for an interrupted run) and the run folder's
files as artifacts. The MLflow run's id is kept in the run folder's tracking.json, so that
`dlcli train --resume` continues the same MLflow run, logging only the epochs it lacks.

Every call runs with bounded HTTP timeouts and retries (MLflow's own defaults wait minutes on
a dead server) and with MLflow's log output quieted: the progress display owns the terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional

from ..config import MlflowConfig
from ..engine import Trainer
from ..rundir import (
    CHECKPOINTS,
    CONFIG_FILE,
    METRICS_FILE,
    RESULTS_FILE,
    RUN_FILE,
    SUMMARY_FILE,
    read_json,
    write_json,
)
from .base import PARENT_RUN_ENV, Tracker

TRACKING_FILE = "tracking.json"
MLFLOW_STATUS = {"completed": "FINISHED", "failed": "FAILED", "interrupted": "KILLED"}
ARTIFACT_FILES = (CONFIG_FILE, RUN_FILE, SUMMARY_FILE, METRICS_FILE, RESULTS_FILE)
BATCH_LIMIT = 100  # params or metrics per log_batch call (MLflow allows 100 params, 1,000 metrics)
# What MLflow accepts as a metric's name: letters, digits, _ - . / : and spaces, 250 at most.
# A CV's metrics carry class names (test_per_class.<=50K.precision), which may hold others; every
# metric dlcli logs goes through metric_names.
_REFUSED_IN_METRIC_NAMES = re.compile(r"[^/\w.\- :]")
METRIC_NAME_LIMIT = 250
PARAM_VALUE_LIMIT = 6000  # MLflow's longest param value (older servers)
_QUIET_LOGGERS = ("mlflow", "urllib3", "alembic")


@contextlib.contextmanager
def bounded_calls(settings: MlflowConfig) -> Iterator[None]:
    """MLflow's HTTP limits for the calls inside, restored after; MLflow's logging and warnings
    (database migrations, retries, the file store's deprecation) kept off the terminal."""
    env = {
        "MLFLOW_HTTP_REQUEST_TIMEOUT": str(settings.timeout),
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": str(settings.retries),
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",  # waits 0 s, 2 s, 4 s ... between retries
        "MLFLOW_HTTP_REQUEST_BACKOFF_JITTER": "0.5",
        # MLflow 3 refuses a plain folder as store unless told; a folder is a valid choice here.
        "MLFLOW_ALLOW_FILE_STORE": "true",
        "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
    }
    saved = {key: os.environ.get(key) for key in env}
    loggers = [logging.getLogger(name) for name in _QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    os.environ.update(env)
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def describe_failure(exc: BaseException, settings: MlflowConfig) -> str:
    """A short reason: what the user can act on, not MLflow's whole retry story."""
    text = str(exc)
    where = redact(settings.uri or os.environ.get("MLFLOW_TRACKING_URI") or "MLflow's default store")
    if "Connection refused" in text or "Failed to establish a new connection" in text:
        return f"cannot reach {where}: connection refused"
    if "timed out" in text.lower() or "Timeout" in type(exc).__name__:
        return f"{where} did not answer within {settings.timeout} s"
    if "UnsupportedModelRegistryStoreURI" in type(exc).__name__ or "Unsupported URI" in text or "not a valid" in text:
        return (
            f"{where} is not a tracking URI MLflow can use: give a folder, sqlite:///file.db or http(s)://host:port "
            "in tracking.mlflow.uri"
        )
    from .base import describe_os_error

    return describe_os_error(exc) or f"{where}: {type(exc).__name__}: {text.splitlines()[0] if text else ''}"


def redact(uri: str) -> str:
    """The URI without a password (http://user:secret@host -> http://user:***@host)."""
    return re.sub(r"(://[^/:@]+):[^/@]+@", r"\1:***@", uri)


def _experiment_id(client, name: str) -> str:
    experiment = client.get_experiment_by_name(name)
    if experiment is None:
        from mlflow.exceptions import MlflowException

        try:
            return client.create_experiment(name)
        except MlflowException:
            experiment = client.get_experiment_by_name(name)  # created meanwhile, by a parallel trial
            if experiment is None:
                raise
    if experiment.lifecycle_stage == "deleted":
        raise RuntimeError(
            f"the MLflow experiment {name!r} is deleted; restore it, or set tracking.mlflow.experiment to another name"
        )
    return experiment.experiment_id


def _client(settings: MlflowConfig):
    from mlflow import MlflowClient

    return MlflowClient(settings.uri) if settings.uri else MlflowClient()


class MlflowTracker(Tracker):
    backend = "MLflow"

    def __init__(
        self,
        settings: MlflowConfig,
        run_dir: Path,
        *,
        experiment: str,
        params: dict[str, str],
        tags: dict[str, str],
        resumed: bool,
        warn: Callable[[str], None],
    ) -> None:
        super().__init__(warn)
        self.settings = settings
        self.run_dir = Path(run_dir)
        self.experiment = experiment
        self.params = params
        self.tags = tags
        self.resumed = resumed
        self.client: Any = None
        self.run_id: Optional[str] = None
        self.last_epoch = 0

    def _context(self):
        return bounded_calls(self.settings)

    def _describe_failure(self, exc: BaseException) -> str:
        return describe_failure(exc, self.settings)

    # -- hooks ---------------------------------------------------------------------

    def on_train_begin(self, trainer: Trainer) -> None:
        self._guard(self._begin, trainer.history)

    def save(self, rows: list[dict[str, float]], trainer: Trainer) -> None:
        self._guard(self._log_epochs, rows)

    # -- work ----------------------------------------------------------------------

    def _begin(self, history: list[dict]) -> None:
        self.client = client = _client(self.settings)
        run = self._continued_run() if self.resumed else None
        logged_epochs: set[int] = set()
        if run is None:
            run = self._new_run()
        else:
            client.update_run(run.info.run_id, status="RUNNING")
            logged_epochs = {int(m.step) for m in client.get_metric_history(run.info.run_id, "loss")}
        self.run_id = run_id = run.info.run_id
        write_json(
            self.run_dir / TRACKING_FILE,
            {
                "mlflow": {
                    "run_id": run_id,
                    "experiment_id": run.info.experiment_id,
                    "tracking_uri": redact(client.tracking_uri),
                }
            },
        )
        # MLflow params cannot change: a resumption with --set keeps the values first logged.
        new_params = {k: v for k, v in self.params.items() if k not in run.data.params}
        self._log_params(new_params)
        self._log_epochs([row for row in history if int(row["epoch"]) not in logged_epochs])

    def _continued_run(self):
        """The MLflow run of this run folder, if tracking.json names one the store still has."""
        from mlflow.exceptions import MlflowException

        path = self.run_dir / TRACKING_FILE
        if not path.exists():
            return None
        try:
            run_id = read_json(path).get("mlflow", {}).get("run_id")
        except Exception:
            return None
        if not run_id:
            return None
        try:
            run = self.client.get_run(run_id)
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                return None  # another store than before: start a new run, with every epoch
            raise
        return None if run.info.lifecycle_stage == "deleted" else run

    def _new_run(self):
        client = self.client
        tags = dict(self.tags)
        parent_id = os.environ.get(PARENT_RUN_ENV)
        if parent_id:
            # A sweep's trial: a child in its parent's experiment, which is where MLflow nests it.
            experiment_id = client.get_run(parent_id).info.experiment_id
            tags["mlflow.parentRunId"] = parent_id
        else:
            experiment_id = _experiment_id(client, self.experiment)
        tags.setdefault("mlflow.source.name", "dlcli train")
        with contextlib.suppress(Exception):
            import getpass

            tags.setdefault("mlflow.user", getpass.getuser())
        return client.create_run(experiment_id, run_name=self.run_dir.name, tags=tags)

    def _log_params(self, params: dict[str, str]) -> None:
        from mlflow.entities import Param

        items = [Param(k, v[:PARAM_VALUE_LIMIT]) for k, v in params.items()]
        for start in range(0, len(items), BATCH_LIMIT):
            self.client.log_batch(self.run_id, params=items[start : start + BATCH_LIMIT])

    def _log_epochs(self, rows: list[dict]) -> None:
        for row in rows:
            epoch = int(row["epoch"])
            values = {k: float(v) for k, v in row.items() if k != "epoch" and isinstance(v, (int, float))}
            log_metrics(self.client, self.run_id, values, epoch)
            self.last_epoch = max(self.last_epoch, epoch)

    def _finish(self, status: str) -> None:
        if self.run_id is None:
            return
        client, run_id = self.client, self.run_id
        artifact_error: Optional[Exception] = None
        try:
            results_path = self.run_dir / RESULTS_FILE
            if status == "completed" and results_path.exists():
                results = read_json(results_path)
                tests = {k: v for k, v in results.items() if k.startswith("test_") and isinstance(v, float)}
                log_metrics(client, run_id, tests, self.last_epoch)  # not test_samples, a count
            self._log_artifacts()
        except Exception as exc:
            artifact_error = exc  # the status is still worth setting
        client.set_terminated(run_id, MLFLOW_STATUS[status])
        if artifact_error is not None:
            raise artifact_error

    def _log_artifacts(self) -> None:
        client, run_id = self.client, self.run_id
        for name in ARTIFACT_FILES:
            path = self.run_dir / name
            if path.is_file():
                client.log_artifact(run_id, str(path))
        for plot in sorted(self.run_dir.glob("*.png")):
            client.log_artifact(run_id, str(plot))
        checkpoints = self.run_dir / CHECKPOINTS
        if self.settings.log_checkpoints and checkpoints.is_dir():
            client.log_artifacts(run_id, str(checkpoints), CHECKPOINTS)


# ----------------------------------------------------------------------------- sweeps


def start_parent(settings: MlflowConfig, experiment: str, name: str, warn: Callable[[str], None]) -> Optional[str]:
    from .. import __version__

    try:
        with bounded_calls(settings):
            client = _client(settings)
            run = client.create_run(
                _experiment_id(client, experiment),
                run_name=name,
                tags={"dlcli.version": __version__, "dlcli.sweep": name, "mlflow.source.name": "dlcli sweep"},
            )
            return run.info.run_id
    except Exception as exc:
        warn(
            f"Warning: MLflow parent run not created ({describe_failure(exc, settings)}); "
            "the trials are logged without one."
        )
        return None


def log_metrics(client: Any, run_id: Optional[str], values: dict[str, float], step: int) -> None:
    """Log values at one step and time, under names MLflow accepts (metric_names), in batches."""
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    names = metric_names(values)
    metrics = [Metric(names[key], float(values[key]), now, step) for key in names]
    for start in range(0, len(metrics), BATCH_LIMIT):
        client.log_batch(run_id, metrics=metrics[start : start + BATCH_LIMIT])


def metric_names(keys: Iterable[str]) -> dict[str, str]:
    """Each key's name as MLflow accepts it (refused characters become _), leaving out names
    too long for it and names that two keys would share."""
    names: dict[str, str] = {}
    taken: set[str] = set()
    for key in keys:
        name = _REFUSED_IN_METRIC_NAMES.sub("_", key)
        if len(name) <= METRIC_NAME_LIMIT and name not in taken:
            names[key] = name
            taken.add(name)
    return names


def finish_parent(
    settings: MlflowConfig,
    run_id: str,
    status: str,
    artifacts: list[Path],
    metrics: dict[str, float],
    warn: Callable[[str], None],
) -> None:
    try:
        with bounded_calls(settings):
            client = _client(settings)
            failure: Optional[Exception] = None
            try:
                log_metrics(client, run_id, metrics, 0)
                for path in artifacts:
                    if path.is_file():
                        client.log_artifact(run_id, str(path))
            except Exception as exc:
                failure = exc  # the status is still worth setting
            client.set_terminated(run_id, MLFLOW_STATUS[status])
        if failure is not None:
            warn(
                f"Warning: MLflow parent run's metrics or files not all logged ({describe_failure(failure, settings)})."
            )
    except Exception as exc:
        warn(f"Warning: MLflow parent run not finished ({describe_failure(exc, settings)}).")
