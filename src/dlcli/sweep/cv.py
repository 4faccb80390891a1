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

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from ..config import Config, config_to_dict, load_config
from ..errors import ConfigError, DlcliError
from ..metrics import infer_mode
from ..rundir import write_json
from .cv_results import CV_FILE, cv_root
from .space import Param
from .spec import JOURNAL_FILE, SWEEP_FILE, SweepError, SweepSpec

FOLD_KEY = "data.fold"


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
