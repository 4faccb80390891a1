"""TensorBoard and MLflow tracking, as callbacks beside the CSV logger.

A tracker sends the numbers that metrics.csv holds to a dashboard people already use. It never
costs a run: its first error (a server that is down or goes away, a full disk) becomes one
warning line through the `warn` callable the trainer passes, and that tracker stays silent for
the rest of the run; the run folder is written as always. Only the process of rank 0 tracks.
TensorBoard and MLflow are imported only by runs that ask for them.

The trainer wires three calls: `require_tracking_packages` before creating the run folder,
`tracking_callbacks` for the callbacks (appended after the checkpointer, so that a dashboard
never holds an epoch that last.pt does not), and each tracker's `finish(status)` once the run
folder is final. A sweep makes its parent run with `start_parent_run` and hands its id to each
trial through the environment variable DLCLI_MLFLOW_PARENT_RUN_ID.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from ..config import Config, TrackingConfig, config_to_dict
from ..errors import ConfigError
from .base import PARENT_RUN_ENV, Tracker

__all__ = [
    "PARENT_RUN_ENV",
    "Tracker",
    "finish_parent_run",
    "flatten_config",
    "require_tracking_packages",
    "start_parent_run",
    "tracking_callbacks",
]


def require_tracking_packages(tracking: TrackingConfig) -> None:
    """A ConfigError naming the pip install line when a requested tracker's package is missing.

    Checked before the run folder is created, without importing the (slow) packages.
    """
    wanted = []
    if tracking.tensorboard:
        wanted.append(("tracking.tensorboard", "tensorboard", "TensorBoard"))
    if tracking.mlflow is not None:
        wanted.append(("tracking.mlflow", "mlflow", "MLflow"))
    for key, module, label in wanted:
        if _missing(module):
            raise ConfigError(
                f"{key} asks for {label} logging, but the {module} package is not installed in this "
                f"Python ({sys.executable}).",
                hint=f"Install dlcli's tracking extra: pip install 'dlcli[tracking]' (in a checkout: "
                f"pip install -e '.[tracking]'), or pip install {module}; or remove {key} from the config.",
                key=key,
            )


def _missing(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is None
    except (ImportError, ValueError):  # a broken or half-removed installation
        return True


def tracking_callbacks(
    config: Config,
    run_dir: Path,
    *,
    resumed: bool,
    world_rank: int = 0,
    world_size: int = 1,
    device: Any = "cpu",
    warn: Callable[[str], None],
) -> list[Tracker]:
    """The trackers the config asks for (none on ranks other than 0).

    Each is an engine Callback with `finish(status)`, status being completed, failed or
    interrupted; `warn` receives the one line a failing tracker reports.
    """
    if world_rank != 0:
        return []
    run_dir = Path(run_dir)
    trackers: list[Tracker] = []
    if config.tracking.tensorboard:
        from .tensorboard_tracker import TensorBoardTracker

        trackers.append(TensorBoardTracker(run_dir, hparams(config), resumed=resumed, warn=warn))
    if config.tracking.mlflow is not None:
        from .. import __version__
        from .mlflow_tracker import MlflowTracker

        tags = {
            "dlcli.version": __version__,
            "dlcli.run_id": run_dir.name,
            "dlcli.run_dir": str(run_dir.resolve()),
            "dlcli.dataset": config.data.dataset,
            "dlcli.device": str(device),
            "dlcli.world_size": str(world_size),
        }
        trackers.append(
            MlflowTracker(
                config.tracking.mlflow,
                run_dir,
                experiment=config.tracking.mlflow.experiment or config.name,
                params={key: param_text(value) for key, value in flatten_config(config).items()},
                tags=tags,
                resumed=resumed,
                warn=warn,
            )
        )
    return trackers


def start_parent_run(tracking: TrackingConfig, name: str, *, warn: Callable[[str], None]) -> Optional[str]:
    """A sweep's MLflow parent run: its id, or None when MLflow is off or cannot be reached
    (then `warn` got one line and the trials run without a parent)."""
    if tracking.mlflow is None:
        return None
    require_tracking_packages(tracking)
    from .mlflow_tracker import start_parent

    return start_parent(tracking.mlflow, tracking.mlflow.experiment or name, name, warn)


def finish_parent_run(
    tracking: TrackingConfig,
    run_id: Optional[str],
    status: str = "completed",
    *,
    artifacts: Sequence[Path] = (),
    metrics: Optional[Mapping[str, float]] = None,
    warn: Callable[[str], None],
) -> None:
    """Upload the sweep's own files (summary.csv, best.yaml, plots) and metrics (a CV's means and
    standard deviations) to the parent run and set its status from completed, failed or interrupted."""
    if tracking.mlflow is None or run_id is None:
        return
    from .mlflow_tracker import finish_parent

    finish_parent(tracking.mlflow, run_id, status, [Path(p) for p in artifacts], dict(metrics or {}), warn)


# ----------------------------------------------------------------------------- the config as params


def flatten_config(config: Config) -> dict[str, Any]:
    """The resolved config as dotted keys (`optimizer.lr`, `model.layers.0.conv2d.filters`).

    The tracking section is left out: it says where the run is logged, not what was trained,
    and a tracking URI may carry credentials. Lists of plain values stay one value.
    """
    data = config_to_dict(config)
    data.pop("tracking", None)
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), item)
        elif isinstance(value, list) and any(isinstance(item, (dict, list)) for item in value):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        else:
            flat[prefix] = value

    walk("", data)
    return flat


def param_text(value: Any) -> str:
    """A config value as YAML writes it: true, null, [64, 64]."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(param_text(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{}"
    return str(value)


def hparams(config: Config) -> dict[str, Any]:
    """TensorBoard's hparams: numbers stay numbers (so its dashboard can plot them), the rest text."""
    return {
        key: value if isinstance(value, (int, float)) and not isinstance(value, bool) else param_text(value)
        for key, value in flatten_config(config).items()
    }
