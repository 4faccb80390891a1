"""K-fold cross-validation (`dlcli cv`): one sweep whose trials are the folds.

The training data (what a run trains on with no validation hold-out: the "pool"; the test
split stays held out) is cut into k folds by scikit-learn's own splitters, saved in
`folds.csv`; fold i is an ordinary run of the config with `data.folds_file` and
`data.fold: i`, whose validation data is that fold (data/splits.py applies it). The folds run
through the sweep machinery (a grid over `data.fold`): worker processes, Ctrl-C and resume,
the MLflow parent run. `summary.json` holds every fold's metrics with their mean and standard
deviation.

CV folder: `runs/cv/<id>/` with `sweep.yaml` (kind: cv), `cv.json` (how the folds were made),
`folds.csv`, `trials/<NNNN>-<name>/` (one run folder per fold), `summary.csv`, `summary.json`.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import Config, config_to_dict, load_config
from ..errors import ConfigError, DlcliError
from ..metrics import infer_mode
from ..rundir import METRICS_FILE, RESULTS_FILE, read_json, read_metrics, write_json
from .space import Param
from .spec import JOURNAL_FILE, SWEEP_FILE, TRIALS_DIR, SweepError, SweepSpec, trial_dir_name

CV_DIR = "cv"
CV_FILE = "cv.json"
SUMMARY_JSON = "summary.json"
FOLD_KEY = "data.fold"
# Columns of metrics.csv that describe the run's pace, not the model.
NOT_METRICS = ("epoch", "lr", "seconds")


def cv_root(runs_dir: Path) -> Path:
    return Path(runs_dir) / CV_DIR


def require_sklearn() -> Any:
    """scikit-learn's model_selection, or an error naming the extra that installs it."""
    try:
        from sklearn import model_selection
    except ImportError:
        raise DlcliError(
            "dlcli cv makes its folds with scikit-learn, which is not installed.",
            hint="Install the cv extra: pip install 'dlcli[cv]' (or pip install scikit-learn).",
        ) from None
    return model_selection


@dataclass
class CvRequest:
    config: Path
    overrides: list[str]
    folds: int
    repeats: int = 1
    seed: Optional[int] = None
    cv_id: Optional[str] = None


@dataclass
class Pool:
    """The samples the folds share out: their count, labels (classification) and the kind's
    task; `splitter` names the scikit-learn class that cuts them."""

    n: int
    labels: Any  # np.ndarray of class numbers, or None
    task: str
    class_names: Optional[tuple[str, ...]]
    splitter: str


def check_counts(folds: int, repeats: int) -> None:
    if folds < 2:
        raise ConfigError(
            f"--folds {folds}: cross-validation needs at least 2 folds (each fold is validated by a model "
            "trained on the others).",
            hint="Use --folds 5 (the usual choice) or --folds 10.",
        )
    if repeats < 1:
        raise ConfigError(f"--repeats {repeats}: expected 1 or more.", hint="Use --repeats 1 (the default).")


def pool_config(request: CvRequest) -> Config:
    """The config a fold starts from, before folds.csv exists: no validation hold-out."""
    return load_config(request.config, [*request.overrides, *_no_holdout()])


def _no_holdout() -> list[str]:
    return ["data.validation_split=0", "data.validation_size=null"]


def load_pool(config: Config) -> Pool:
    """The pool of a config without validation hold-out: loaded once, as a fold's run would."""
    import numpy as np

    from ..data import load_dataset

    data = load_dataset(config.data, config.seed)
    info = data.info
    if config.data.dataset == "timeseries":
        rows = (data.preprocessing or {}).get("split", {}).get("rows", {})
        return Pool(int(rows.get("train", len(data.x_train))), None, info.task, None, "TimeSeriesSplit")
    labels = None
    if info.task in ("multiclass", "binary"):
        y = np.asarray(data.y_train)
        if y.ndim == 2 and y.shape[1] > 1:
            y = y.argmax(axis=1)  # one-hot targets
        labels = np.rint(y.reshape(len(y))).astype(np.int64)
    splitter = "StratifiedKFold" if labels is not None else "KFold"
    return Pool(len(data.x_train), labels, info.task, info.class_names, splitter)


def _check_classes(pool: Pool, folds: int) -> None:
    import numpy as np

    counts = np.bincount(pool.labels, minlength=len(pool.class_names or ()))
    smallest = int(np.argmin(counts))
    if counts[smallest] < folds:
        name = pool.class_names[smallest] if pool.class_names and smallest < len(pool.class_names) else smallest
        raise ConfigError(
            f"--folds {folds}: the class {str(name)!r} has only {int(counts[smallest])} sample(s) in the training "
            f"data, and stratified folds need at least one of each class in every fold.",
            hint=f"Use --folds {max(2, int(counts[smallest]))} or fewer, or gather more samples of that class.",
        )


def assign_folds(pool: Pool, folds: int, repeats: int, seed: int) -> Any:
    """(n, repeats): the fold (numbered across repeats, as data.fold) holding each sample out;
    -1 where no fold does (a time series' first rows). Made by scikit-learn's splitters:
    StratifiedKFold(shuffle=True, random_state=seed) for classes, KFold for the rest,
    RepeatedStratifiedKFold / RepeatedKFold for repeats, TimeSeriesSplit for a series."""
    import numpy as np

    ms = require_sklearn()
    if folds > pool.n:
        raise ConfigError(f"--folds {folds}: the training data has only {pool.n} samples.")
    if pool.splitter == "TimeSeriesSplit":
        if repeats > 1:
            raise ConfigError(
                "--repeats: a time series' expanding-window folds are the same every time.",
                hint="Leave --repeats out for timeseries data.",
            )
        splitter: Any = ms.TimeSeriesSplit(n_splits=folds)
    elif pool.labels is not None:
        _check_classes(pool, folds)
        splitter = (
            ms.StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
            if repeats == 1
            else ms.RepeatedStratifiedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
        )
    else:
        splitter = (
            ms.KFold(n_splits=folds, shuffle=True, random_state=seed)
            if repeats == 1
            else ms.RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
        )
    assignment = np.full((pool.n, repeats), -1, dtype=np.int64)
    x = np.zeros((pool.n, 1))
    for number, (_, held) in enumerate(splitter.split(x, pool.labels)):
        assignment[held, number // folds] = number
    return assignment


def plan_cv(request: CvRequest) -> tuple[SweepSpec, Pool, Any]:
    """Everything checked before a fold runs: the counts, scikit-learn, the config, the data
    (loaded once) and the folds. (spec without its folds file yet, pool, assignment)."""
    check_counts(request.folds, request.repeats)
    require_sklearn()
    config = pool_config(request)
    seed = config.seed if request.seed is None else request.seed
    pool = load_pool(config)
    assignment = assign_folds(pool, request.folds, request.repeats, seed)
    runs = request.folds * request.repeats
    # The folds' table ranks nothing; its value column is the run's monitor on its fold (which
    # dlcli train itself checks is a logged column).
    monitor = config.training.monitor
    metric = "val_loss" if monitor == "auto" else monitor
    direction = infer_mode(metric, "auto")
    spec = SweepSpec(
        id=request.cv_id or "",
        name=config.name,
        method="grid",
        trials=runs,
        seed=seed,
        metric=metric,
        direction=direction,
        prune="none",
        prune_startup_trials=0,
        prune_warmup_epochs=0,
        storage=JOURNAL_FILE,
        space=[Param(FOLD_KEY, "grid", tuple(range(runs)))],
        base=config_to_dict(config),
        source=str(request.config),
        overrides=list(request.overrides),
        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        kind="cv",
    )
    return spec, pool, assignment


def create_cv(request: CvRequest, runs_dir: Path):
    """A new CV folder with folds.csv and cv.json, its study and sweep.yaml:
    (folder, spec, study, storage URL)."""
    from ..data.splits import FOLDS_FILE, write_folds
    from .session import create_sweep

    spec, pool, assignment = plan_cv(request)

    def prepare(folder: Path, spec: SweepSpec) -> None:
        folds_path = (folder / FOLDS_FILE).resolve()
        write_folds(folds_path, pool.labels, assignment)
        keys = [f"data.folds_file={folds_path}", "data.fold=0"]  # each fold's run sets its own data.fold
        spec.base = config_to_dict(load_config(None, keys, raw=spec.base))
        write_json(
            folder / CV_FILE,
            {
                "id": folder.name,
                "folds": request.folds,
                "repeats": request.repeats,
                "seed": spec.seed,
                "splitter": pool.splitter,
                "task": pool.task,
                "samples": pool.n,
                "class_names": list(pool.class_names) if pool.class_names else None,
                "metric": spec.metric,
                "source": str(request.config),
            },
        )

    folder, study, url = create_sweep(spec, runs_dir, None, request.cv_id, root=cv_root(runs_dir), prepare=prepare)
    return folder, spec, study, url


def resolve_cv(ref: str, runs_dir: Path) -> Path:
    """A CV folder from its path or its id under runs/cv."""
    path = Path(ref)
    candidates = [path] if "/" in ref or ref in (".", "..") else [path, cv_root(runs_dir) / ref]
    for candidate in candidates:
        if (candidate / CV_FILE).is_file() and (candidate / SWEEP_FILE).is_file():
            return candidate
    raise SweepError(
        f"{ref!r} is not a cross-validation folder (no {CV_FILE} there, nor in {cv_root(runs_dir)}/{ref}).",
        hint="Give a folder that dlcli cv made, such as runs/cv/<id>; `dlcli runs` lists them.",
    )


# -- results ---------------------------------------------------------------------------------


def _number_leaves(node: Any, prefix: str = "") -> dict[str, float]:
    """Numeric leaves of results.json as dotted names (test_accuracy, test_report.macro avg.f1-score)."""
    out: dict[str, float] = {}
    if isinstance(node, dict):
        for key, value in node.items():
            out.update(_number_leaves(value, f"{prefix}{key}."))
    elif isinstance(node, (int, float)) and not isinstance(node, bool) and math.isfinite(node):
        out[prefix[:-1]] = float(node)
    return out


def fold_metrics(folder: Path) -> dict[str, float]:
    """A finished fold's metrics: metrics.csv's row of the weights the run kept (the restored
    best epoch, else the last), and every number results.json holds (its `best` record and
    sample counts aside)."""
    try:
        results = read_json(folder / RESULTS_FILE)
    except DlcliError:
        results = {}
    try:
        _, rows = read_metrics(folder / METRICS_FILE)
    except DlcliError:
        rows = []
    metrics: dict[str, float] = {}
    if rows:
        early = (results.get("best") or {}).get("early_stopping") or {}
        epoch = early.get("best_epoch") if early.get("restored_best_weights") else None
        row = next((r for r in rows if r["epoch"] == epoch), rows[-1])
        metrics.update({k: float(v) for k, v in row.items() if k not in NOT_METRICS and v is not None})
    leaves = _number_leaves({k: v for k, v in results.items() if k not in ("best", "checkpoint")})
    metrics.update({k: v for k, v in leaves.items() if not k.endswith("_samples")})
    return {k: v for k, v in metrics.items() if math.isfinite(v)}


def mean_std(values: list[float]) -> dict[str, Any]:
    """Mean and standard deviation (numpy's default, ddof=0, as scikit-learn's scores.std())."""
    import numpy as np

    array = np.asarray(values, dtype=np.float64)
    return {"mean": float(array.mean()), "std": float(array.std()), "n": len(values)}


def cv_summary(folder: Path) -> dict[str, Any]:
    """summary.json's content: each fold's status and metrics, and each metric's mean and
    standard deviation over the completed folds. No times or paths outside the folder, so an
    interrupted and resumed CV gives the same numbers as an uninterrupted one."""
    from ..runs import read_run
    from .spec import read_spec

    info = read_json(folder / CV_FILE)
    spec = read_spec(folder)
    folds = []
    for number in range(spec.trials):
        run = folder / TRIALS_DIR / trial_dir_name(number, spec.name)
        record = read_run(run) if run.is_dir() else None
        status = "waiting" if record is None else record.status
        repeat, within = divmod(number, int(info["folds"]))
        entry: dict[str, Any] = {"fold": number, "repeat": repeat, "fold_in_repeat": within, "status": status}
        entry["run"] = str(Path(TRIALS_DIR) / run.name)
        entry["metrics"] = fold_metrics(run) if status == "completed" else {}
        folds.append(entry)
    done = [f for f in folds if f["status"] == "completed"]
    names = sorted({k for f in done for k in f["metrics"]})
    metrics = {n: mean_std([f["metrics"][n] for f in done if n in f["metrics"]]) for n in names}
    return {
        "cv": {k: info.get(k) for k in ("id", "folds", "repeats", "seed", "splitter", "task", "samples", "metric")},
        "completed": len(done),
        "planned": spec.trials,
        "metrics": metrics,
        "folds": folds,
    }


def write_cv_summary(folder: Path) -> dict[str, Any]:
    data = cv_summary(folder)
    write_json(folder / SUMMARY_JSON, data)
    return data


def list_cvs(runs_dir: Path) -> list[dict[str, Any]]:
    """`dlcli runs`: every CV folder's summary (read from its folders), newest first."""
    root = cv_root(runs_dir)
    if not root.is_dir():
        return []
    out = []
    for folder in sorted((p for p in root.iterdir() if (p / CV_FILE).is_file()), key=lambda p: p.name, reverse=True):
        try:
            out.append({"path": str(folder), **cv_summary(folder)})
        except DlcliError as exc:
            out.append({"path": str(folder), "problem": exc.message})
    return out
