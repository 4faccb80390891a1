"""A sweep's definition (`sweep.yaml`), its folder, and the checks made before any trial runs.

The definition holds the resolved base config itself (not a path to it), so every worker,
on any machine and at any later time, builds the same trial configs; the study in Optuna's
storage keeps a copy, which is how a worker on a machine without the sweep folder joins.
"""

from __future__ import annotations

import math
import os
import re
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Optional, Union

from ..config import Config, config_to_dict, dump_config, load_config
from ..errors import ConfigError, DlcliError, RunDirError
from ..layer_specs import option
from .space import Param, grid_points, grid_size, is_grid, override_text, params_label, space_from_data, space_to_data

SWEEPS_DIR = "sweeps"
SWEEP_FILE = "sweep.yaml"
TRIALS_DIR = "trials"
JOURNAL_FILE = "study.journal"
SUMMARY_CSV = "summary.csv"
BEST_FILE = "best.yaml"
TRIAL_FILE = "trial.json"  # in a trial's run folder: which sweep and trial it belongs to

METHODS = ("grid", "random", "tpe")
PRUNERS = ("median", "hyperband", "none")


@dataclass(frozen=True)
class SweepSection:
    """The `sweep:` section of a config file: what `dlcli sweep CONFIG` searches and how (options
    given on the command line win). `dlcli train` and the other commands ignore the section.
    Read by `read_sweep_section` and `plan_sweep`; `dlcli schema` describes it from this class.
    A key left out takes the default named in its help (None here: decided when planning)."""

    method: Literal["grid", "random", "tpe"] = option(
        None, help="grid (the default when every param is a list), random or tpe (the default otherwise)"
    )
    trials: int = option(None, help="trials to run (default: the whole grid; required for random and tpe)", ge=1)
    metric: Optional[str] = option(None, help="the objective, a metrics.csv column (default: the run's monitor)")
    direction: Literal["auto", "max", "min"] = option("auto", help="max or min the metric (auto: from its name)")
    prune: Literal["auto", "median", "hyperband", "none"] = option(
        "auto", help="stop hopeless trials early (auto: none for a grid, median otherwise)"
    )
    prune_startup_trials: int = option(5, help="trials run in full before any is pruned", ge=0)
    prune_warmup_epochs: int = option(0, help="epochs of each trial before it may be pruned", ge=0)
    seed: int = option(None, help="the sampler's seed (default: the config's seed)")
    params: Optional[dict[str, Union[str, tuple[Any, ...]]]] = option(
        None,
        help="KEY: SPEC, the searched keys: a list of values (a grid) or choice(...), uniform(low, high), "
        "loguniform(low, high), int(low, high)",
    )


SECTION_KEYS = tuple(f.name for f in fields(SweepSection))
# Every point of a grid this small is validated as a whole config before the first trial.
FULL_CHECK_LIMIT = 1000


class SweepError(DlcliError):
    """A sweep cannot be started, joined or read."""


@dataclass
class SweepSpec:
    """Everything that defines a sweep; sweep.yaml is its YAML form."""

    id: str
    name: str  # the base config's name: trial folders are <NNNN>-<name>
    method: str  # grid | random | tpe
    trials: int  # the planned number of trials
    seed: int  # the sampler's seed
    metric: str  # a metrics.csv column; a trial's value is its best epoch's
    direction: str  # max | min
    prune: str  # median | hyperband | none
    prune_startup_trials: int
    prune_warmup_epochs: int
    storage: str  # an RDB URL, or a journal file (relative paths: inside the sweep folder)
    space: list[Param]
    base: dict  # the resolved base config, as config.yaml holds it
    source: Optional[str] = None  # the config file the sweep started from (for people)
    overrides: list[str] = field(default_factory=list)
    created_at: str = ""
    warning: Optional[str] = None  # what the user should know about the choice, e.g. ranked on training data
    kind: str = "sweep"  # "cv": a cross-validation (sweep/cv.py), whose trials are its folds

    def to_data(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "name": self.name,
            "created_at": self.created_at,
            "method": self.method,
            "trials": self.trials,
            "seed": self.seed,
            "metric": self.metric,
            "direction": self.direction,
            "prune": self.prune,
            "prune_startup_trials": self.prune_startup_trials,
            "prune_warmup_epochs": self.prune_warmup_epochs,
            "storage": self.storage,
            "source": self.source,
            "overrides": list(self.overrides),
            "params": space_to_data(self.space),
            **({"warning": self.warning} if self.warning else {}),
            **({"kind": self.kind} if self.kind != "sweep" else {}),
            "base": self.base,
        }

    @classmethod
    def from_data(cls, data: dict[str, Any], where: str) -> SweepSpec:
        try:
            return cls(
                id=str(data["id"]),
                name=str(data["name"]),
                method=data["method"],
                trials=int(data["trials"]),
                seed=int(data["seed"]),
                metric=data["metric"],
                direction=data["direction"],
                prune=data["prune"],
                prune_startup_trials=int(data.get("prune_startup_trials", 5)),
                prune_warmup_epochs=int(data.get("prune_warmup_epochs", 0)),
                storage=str(data["storage"]),
                space=space_from_data(data["params"]),
                base=data["base"],
                source=data.get("source"),
                overrides=list(data.get("overrides") or []),
                created_at=data.get("created_at", ""),
                warning=data.get("warning"),
                kind=str(data.get("kind", "sweep")),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise SweepError(
                f"{where} is not a readable sweep definition ({type(exc).__name__}: {exc}).",
                hint="It is written by `dlcli sweep`; restore it from the study with "
                "`dlcli sweep worker ID --storage URL`.",
            ) from None

    # -- trials -----------------------------------------------------------------------

    def trial_overrides(self, params: dict[str, Any]) -> list[str]:
        return [override_text(key, value) for key, value in params.items()]

    def trial_config(self, params: dict[str, Any]) -> Config:
        """The full config of the trial with these parameter values (a ConfigError if one does
        not fit, with the same message as --set)."""
        return load_config(None, self.trial_overrides(params), raw=self.base)

    def storage_url(self, sweep_dir: Path) -> str:
        """The storage as Optuna takes it: URLs as they are, journal files as absolute paths."""
        if "://" in self.storage:
            return self.storage
        path = Path(self.storage)
        return str(path if path.is_absolute() else (sweep_dir / path).resolve())

    def label(self, params: dict[str, Any]) -> str:
        return params_label(params)


# -- folders ------------------------------------------------------------------------------


def sweeps_root(runs_dir: Path) -> Path:
    return Path(runs_dir) / SWEEPS_DIR


def new_sweep_id(name: str) -> str:
    return time.strftime("%Y%m%d-%H%M%S", time.localtime()) + f"-{name}"


_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_sweep_id(sweep_id: str) -> None:
    if not _ID_PATTERN.match(sweep_id):
        raise ConfigError(
            f"--id {sweep_id!r} cannot be used as a folder name.",
            hint="Use letters, digits, '_', '-' and '.', starting with a letter or digit.",
        )


def create_sweep_dir(runs_dir: Path, name: str, sweep_id: Optional[str] = None, root: Optional[Path] = None) -> Path:
    """A new sweep folder (under root, by default runs/sweeps); an id asked for by name must be
    free, a generated one is made unique."""
    root = sweeps_root(runs_dir) if root is None else root
    if sweep_id is not None:
        check_sweep_id(sweep_id)
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise RunDirError(
            f"Cannot create the sweeps folder {root}: {exc.strerror or exc}.",
            hint="Choose a writable folder with --runs-dir PATH.",
        ) from None
    base = sweep_id or new_sweep_id(name)
    for attempt in range(1, 1000):
        candidate = base if attempt == 1 else f"{base}-{attempt}"
        path = root / candidate
        try:
            path.mkdir()
        except FileExistsError:
            if sweep_id is not None:
                raise SweepError(
                    f"A sweep {sweep_id!r} already exists in {root}.",
                    hint=f"Choose another --id, or continue it with: dlcli sweep resume {path}",
                ) from None
            continue
        except OSError as exc:
            raise RunDirError(
                f"Cannot create the sweep folder {path}: {exc.strerror or exc}.",
                hint="Choose a writable folder with --runs-dir PATH.",
            ) from None
        (path / TRIALS_DIR).mkdir()
        return path
    raise RunDirError(f"Could not find a free sweep folder name under {root}.")


def write_spec(sweep_dir: Path, spec: SweepSpec) -> None:
    import yaml

    from ..rundir import atomic_write_text

    header = (
        f"# Sweep {spec.id}: written by dlcli sweep. `base` is the resolved config every trial starts\n"
        f"# from; `params` the searched keys. Continue with: dlcli sweep resume {sweep_dir}\n"
    )
    atomic_write_text(sweep_dir / SWEEP_FILE, header + yaml.safe_dump(spec.to_data(), sort_keys=False, width=100))


def read_spec(sweep_dir: Path) -> SweepSpec:
    import yaml

    path = sweep_dir / SWEEP_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SweepError(
            f"{sweep_dir} is not a sweep folder (it has no {SWEEP_FILE}).",
            hint="Give a folder that `dlcli sweep` created, such as runs/sweeps/<id>.",
        ) from None
    except (OSError, yaml.YAMLError) as exc:
        raise SweepError(f"{path} cannot be read ({exc}).") from None
    if not isinstance(data, dict):
        raise SweepError(f"{path} does not hold a sweep definition.")
    return SweepSpec.from_data(data, str(path))


def resolve_sweep(ref: str | Path, runs_dir: Path) -> Optional[Path]:
    """A sweep folder from its path or its id under runs/sweeps; None when there is none."""
    path = Path(ref)
    if (path / SWEEP_FILE).is_file():
        return path
    text = str(ref)
    if "/" not in text and text not in (".", ".."):
        candidate = sweeps_root(runs_dir) / text
        if (candidate / SWEEP_FILE).is_file():
            return candidate
    return None


def require_sweep(ref: str | Path, runs_dir: Path) -> Path:
    folder = resolve_sweep(ref, runs_dir)
    if folder is None:
        raise SweepError(
            f"{str(ref)!r} is not a sweep folder (no {SWEEP_FILE} there, nor in {sweeps_root(runs_dir)}/{ref}).",
            hint="Give a folder such as runs/sweeps/<id>; `dlcli runs` lists the sweeps.",
        )
    return folder


def trial_dir_name(number: int, name: str) -> str:
    return f"{number:04d}-{name}"


# -- building a sweep from the command line and the `sweep:` section ----------------------


@dataclass
class SweepRequest:
    """What the person asked for; None means: from the `sweep:` section, else the default."""

    config: Path
    overrides: list[str]
    params: list[Param]
    method: Optional[str] = None
    trials: Optional[int] = None
    metric: Optional[str] = None
    direction: Optional[str] = None
    prune: Optional[str] = None
    prune_startup_trials: Optional[int] = None
    prune_warmup_epochs: Optional[int] = None
    seed: Optional[int] = None
    storage: Optional[str] = None
    sweep_id: Optional[str] = None


def read_sweep_section(path: Path) -> tuple[dict, dict, Optional[dict]]:
    """(raw config without `sweep:`, its line map, the `sweep:` section or None)."""
    from ..config import read_config_file

    raw, lines = read_config_file(path)
    section = raw.pop("sweep", None)
    if section is not None and not isinstance(section, dict):
        raise ConfigError(
            f"{path}, line {lines.get(('sweep',), '?')}: sweep: expected a mapping of options "
            f"({', '.join(SECTION_KEYS)})."
        )
    if section:
        from ..registry import suggest

        for key in section:
            if key not in SECTION_KEYS:
                hint = suggest(str(key), SECTION_KEYS)
                raise ConfigError(
                    f"{path}, line {lines.get(('sweep', key), '?')}: sweep.{key}: unknown key; "
                    f"valid keys are: {', '.join(SECTION_KEYS)}.",
                    hint=hint or None,
                )
    return raw, lines, section


def plan_sweep(request: SweepRequest) -> SweepSpec:
    """Resolve and check everything before a single trial runs: the base config, every key and
    every value of the space (with the same messages as --set), the method, the number of
    trials and the objective."""
    from .space import merge_space, parse_space

    _, _, found = read_sweep_section(request.config)
    section = dict(found or {})
    base_config = load_config(request.config, request.overrides)  # which leaves the `sweep:` section out
    file_params = section.get("params") or {}
    if not isinstance(file_params, dict):
        raise ConfigError(f"{request.config}: sweep.params: expected a mapping of KEY: SPEC.")
    space = merge_space(parse_space(list(file_params.items())), request.params)
    if not space:
        raise ConfigError(
            "Nothing to search: give at least one parameter.",
            hint="For example -p optimizer.lr=[0.0001,0.001,0.01], or a `sweep: {params: ...}` "
            "section in the config file.",
        )

    def pick(name: str, default: Any) -> Any:
        value = getattr(request, name)
        return value if value is not None else section.get(name, default)

    method = pick("method", "grid" if is_grid(space) else "tpe")
    if method not in METHODS:
        raise ConfigError(f"--method {method!r}: expected one of {', '.join(METHODS)}.")
    if method == "grid" and not is_grid(space):
        ranged = next(p for p in space if p.kind != "grid")
        raise ConfigError(
            f"--method grid runs the product of lists, and -p {ranged.key}={ranged.spec_text()} is not a list.",
            hint="Give it as a list [a, b, ...], or search with --method random or --method tpe --trials N.",
        )
    size = grid_size(space) if method == "grid" else None
    trials = pick("trials", size)
    if trials is None:
        raise ConfigError(
            f"--method {method} draws values at random: say how many trials with --trials N.",
            hint="For example --trials 20.",
        )
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials must be a whole number of at least 1, found {trials!r}.")
    if size is not None and trials > size:
        raise ConfigError(
            f"--trials {trials}: the grid has only {size} points.",
            hint=f"Use --trials {size} or fewer (the default is the whole grid).",
        )
    prune = pick("prune", "auto")
    if prune == "auto":
        # A grid is run to compare every point in full; a search spends its time better pruning.
        prune = "none" if method == "grid" else "median"
    if prune not in PRUNERS:
        raise ConfigError(f"--prune {prune!r}: expected one of median, hyperband, none (or auto).")

    check_space(base_config, space, method)
    metric, direction = resolve_objective(base_config, pick("metric", None), pick("direction", "auto"))
    name = base_config.name
    return SweepSpec(
        id=request.sweep_id or "",
        name=name,
        method=method,
        trials=trials,
        seed=int(pick("seed", base_config.seed)),
        metric=metric,
        direction=direction,
        prune=prune,
        prune_startup_trials=int(pick("prune_startup_trials", 5)),
        prune_warmup_epochs=int(pick("prune_warmup_epochs", 0)),
        storage=request.storage or JOURNAL_FILE,
        space=space,
        base=config_to_dict(base_config),
        source=str(request.config),
        overrides=list(request.overrides),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        warning=training_data_warning(metric),
    )


def training_data_warning(metric: str) -> Optional[str]:
    """The warning for an objective measured on the data the trials trained on (no val_ metric):
    choosing hyperparameters by it rewards the ones that overfit most."""
    if metric.startswith("val_"):
        return None
    return (
        f"Trials are ranked by {metric} on the training data (the config holds out no validation data), which "
        "rewards the settings that overfit most. Hold some out: --set data.validation_split=0.1 (or a val/ folder)."
    )


def _strip_set(message: str) -> str:
    return message[len("--set ") :] if message.startswith("--set ") else message


def _fit_message(param: Param, value: Any, exc: DlcliError) -> ConfigError:
    from .space import yaml_text

    hint = exc.hint
    if param.kind in ("uniform", "loguniform") and "expected a whole number" in exc.message:
        low, high = param.bounds()
        hint = f"Draw whole numbers with int({int(low)}, {int(high)}{', log' if param.log else ''})."
    return ConfigError(
        f"-p {param.key}={param.spec_text()} (value {yaml_text(value)}): {_strip_set(exc.message)}", hint=hint
    )


def unfit_trial_message(params: dict[str, Any], exc: DlcliError) -> str:
    """Why a trial's drawn values make no valid config (the same words as --set's)."""
    from .space import yaml_text

    values = ", ".join(f"{k}={yaml_text(v)}" for k, v in params.items())
    return f"the values {values} do not make a valid config: {_strip_set(exc.full_message())}"


def check_config(config: Config) -> None:
    """What `dlcli train` checks before loading data: the model, loss and optimizer fit."""
    from ..optim import optimizer_options
    from ..plan import plan_experiment

    plan_experiment(config)
    optimizer_options(config.optimizer)


def check_space(base: Config, space: list[Param], method: str) -> None:
    """Every value of every parameter must make a valid config; for a small grid, every point."""
    raw = config_to_dict(base)
    for param in space:
        for value in param.values_to_check():
            try:
                config = load_config(None, [override_text(param.key, value)], raw=raw)
                check_config(config)
            except ConfigError as exc:
                raise _fit_message(param, value, exc) from None
            except DlcliError as exc:  # e.g. a dataset name that does not exist
                raise _fit_message(param, value, exc) from None
    if method == "grid" and grid_size(space) <= FULL_CHECK_LIMIT and len(space) > 1:
        for point in grid_points(space):
            try:
                check_config(load_config(None, [override_text(k, v) for k, v in point.items()], raw=raw))
            except DlcliError as exc:
                from .space import yaml_text

                where = ", ".join(f"{k}={yaml_text(v)}" for k, v in point.items())
                raise ConfigError(
                    f"The grid point {where} does not make a valid config: {exc.message}", hint=exc.hint
                ) from None


def resolve_objective(config: Config, metric: Optional[str], direction: str) -> tuple[str, str]:
    """(metric, max|min): by default the run's monitor (val_loss with a validation set, else
    loss), its direction from its name."""
    from ..metrics import infer_mode
    from ..plan import logged_columns, plan_experiment
    from ..registry import suggest

    logged = logged_columns(plan_experiment(config))  # training.metrics' columns too
    if metric is None:
        monitor = config.training.monitor
        metric = monitor if monitor != "auto" else ("val_loss" if "val_loss" in logged else "loss")
    if metric not in logged:
        no_val = (
            " There is no validation set: set data.validation_split to get val_ metrics."
            if metric.startswith("val_") and "val_loss" not in logged
            else ""
        )
        raise ConfigError(
            f"--metric {metric!r} is not a logged metric; logged are: {', '.join(logged)}.{no_val}",
            hint=suggest(metric, logged) or None,
        )
    if direction not in ("auto", "max", "min"):
        raise ConfigError(f"--direction {direction!r}: expected max, min or auto.")
    return metric, infer_mode(metric, direction)


def best_value(rows: list[dict], metric: str, direction: str) -> tuple[Optional[float], Optional[int]]:
    """A trial's value: its best epoch's metric (finite values only), and that epoch."""
    best, epoch = None, None
    for row in rows:
        value = row.get(metric)
        if value is None or not math.isfinite(value):
            continue
        if best is None or (value > best if direction == "max" else value < best):
            best, epoch = value, row["epoch"]
    return best, epoch


def best_yaml_text(spec: SweepSpec, number: int, params: dict[str, Any], value: float) -> str:
    """The best trial's full config with a comment saying where it came from."""
    config = spec.trial_config(params)
    header = (
        f"# Best trial of sweep {spec.id}: trial {number} ({spec.label(params)}), "
        f"{spec.metric} {value:.6g}.\n# Run it again with: dlcli train best.yaml\n"
    )
    return header + dump_config(config)


def cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
