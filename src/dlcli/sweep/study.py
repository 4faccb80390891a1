"""Every call into Optuna, in one module: its API moves between major versions (pinned in
pyproject.toml to one major range), and this is the only file to change when it does.

The rest of dlcli sees plain data: a `TrialInfo` per trial, with states named as dlcli names
them (waiting, running, completed, pruned, failed).

How a sweep maps onto a study: the study is named by the sweep's id and holds the sweep's
definition as a user attribute (so a worker on another machine can join from the storage
alone). All planned trials are enqueued once when the sweep is created (grid points with
their values fixed, a search's trials with none, so its sampler draws them when they start),
and workers only ever claim enqueued trials: however many workers race on however many
machines, the study ends with exactly the planned number of trials and no grid point twice.
"""

from __future__ import annotations

import math
import os
import re
import socket
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .space import Param
from .spec import SweepError, SweepSpec

SPEC_ATTR = "dlcli_sweep"  # study user attribute: the sweep definition
READY_ATTR = "dlcli_enqueued"  # study user attribute: set once every planned trial is enqueued
STATES = {"WAITING": "waiting", "RUNNING": "running", "COMPLETE": "completed", "PRUNED": "pruned", "FAIL": "failed"}


@dataclass
class TrialInfo:
    """One trial as the storage knows it."""

    number: int
    trial_id: int
    state: str  # waiting, running, completed, pruned, failed
    value: Optional[float]
    params: dict[str, Any]
    attrs: dict[str, Any]
    started: Optional[float] = None  # seconds since the epoch
    finished: Optional[float] = None
    intermediate: dict[int, float] = field(default_factory=dict)


def _optuna():
    """Import Optuna quietly: dlcli reports trials itself, and the journal file storage's
    experimental warnings say nothing a user can act on."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
    return optuna


def is_url(storage: str) -> bool:
    return "://" in storage


_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters or more: C:\ is a Windows drive
URL_FORM = "scheme://[user[:password]@]host[:port]/database, such as postgresql://user@host:5432/optuna, or sqlite:///path/file.db"


def check_storage(storage: str) -> str:
    """--storage as given, when it is a well-formed URL or a journal file path; else a SweepError
    naming what is wrong (a URL mistyped as `postgresql:/host/db` would be a journal file in a
    folder named `postgresql:`)."""
    from urllib.parse import urlsplit

    scheme = _SCHEME.match(storage)
    if not scheme:
        return storage
    name = scheme.group(1).lower()
    if not is_url(storage):
        raise SweepError(
            f"--storage {redact(storage)} starts like a URL ({name}:) but is not one.",
            hint=f"A storage URL is {URL_FORM}; a journal file is a plain path.",
        )
    if name.split("+")[0] == "postgres":
        raise SweepError(
            f"--storage {redact(storage)}: the scheme is postgresql://, not postgres:// (SQLAlchemy dropped that name).",
            hint="Write postgresql://" + storage.split("://", 1)[1].split("@")[-1] + " with your user.",
        )
    try:
        _ = urlsplit(storage).port  # parsing the port is what checks it
    except ValueError:
        port = urlsplit(storage).netloc.rsplit("@", 1)[-1].rpartition(":")[2]
        raise SweepError(
            f"--storage {redact(storage)}: the port {port!r} is not a number.",
            hint=f"A storage URL is {URL_FORM}.",
        ) from None
    return storage


# SQLAlchemy's default driver for a plain scheme, and the other common one, tried in turn.
DRIVERS = {
    "postgresql": (("psycopg", "psycopg"), ("psycopg2", "psycopg2")),
    "mysql": (("MySQLdb", "mysqldb"), ("pymysql", "pymysql")),
}
DRIVER_PACKAGES = {"postgresql": "psycopg2-binary", "mysql": "PyMySQL"}


def with_installed_driver(url: str) -> str:
    """`postgresql://` names no driver, and SQLAlchemy picks psycopg (3), which may not be
    installed where psycopg2 is: name whichever of the two is there."""
    import importlib.util

    scheme, sep, rest = url.partition("://")
    if not sep or "+" in scheme or scheme not in DRIVERS:
        return url
    for module, driver in DRIVERS[scheme]:
        if importlib.util.find_spec(module) is not None:
            return f"{scheme}+{driver}://{rest}"
    raise SweepError(
        f"The storage {redact(url)} needs a {scheme} driver for Python, and none is installed.",
        hint=f"Install one: pip install {DRIVER_PACKAGES[scheme]}",
    )


def make_storage(url: str, must_exist: bool = False):
    """An RDB storage for a URL (postgresql://, mysql://, sqlite:///), else a journal file
    (which, when `must_exist`, must already be there: reading a sweep never creates one)."""
    if must_exist and not is_url(url) and not Path(url).is_file():
        raise SweepError(
            f"The sweep's journal file {url} does not exist.",
            hint="Give the sweep folder, or the --storage the sweep was started with.",
        )
    optuna = _optuna()
    given = url
    try:
        if is_url(url):
            url = with_installed_driver(url)
            engine_kwargs: dict[str, Any] = {"pool_pre_ping": True}
            if url.startswith("sqlite"):
                # Several workers on one SQLite file wait for its lock instead of failing at once.
                engine_kwargs = {"connect_args": {"timeout": 60}}
            return optuna.storages.RDBStorage(url, engine_kwargs=engine_kwargs)
        from optuna.storages.journal import JournalFileBackend

        Path(url).parent.mkdir(parents=True, exist_ok=True)
        return optuna.storages.JournalStorage(JournalFileBackend(url))
    except SweepError:
        raise
    except ModuleNotFoundError as exc:
        driver = {"psycopg2": "psycopg2-binary", "MySQLdb": "mysqlclient", "pymysql": "PyMySQL"}.get(
            exc.name or "", exc.name
        )
        raise SweepError(
            f"The storage {redact(url)} needs the Python package {driver!r}, which is not installed.",
            hint=f"Install it: pip install {driver}",
        ) from None
    except Exception as exc:  # SQLAlchemy and drivers raise many kinds; all mean "cannot open it"
        raise SweepError(
            f"Cannot open the sweep storage {redact(given)}: {_first_line(exc)}",
            hint="Check the URL, that the database server runs and that this machine may connect; "
            "or leave --storage out to keep the study in a journal file in the sweep folder.",
        ) from None


def redact(url: str) -> str:
    """A URL without its password, for messages."""
    if "://" not in url or "@" not in url:
        return url
    scheme, rest = url.split("://", 1)
    credentials, host = rest.rsplit("@", 1)
    user = credentials.split(":", 1)[0]
    return f"{scheme}://{user}:***@{host}" if ":" in credentials else url


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _sampler(spec: SweepSpec, seed: int):
    optuna = _optuna()
    if spec.method == "tpe":
        # constant_liar: a running trial counts as a poor one, so parallel workers spread out
        # instead of all drawing near the same optimum.
        return optuna.samplers.TPESampler(
            seed=seed, constant_liar=True, n_startup_trials=min(10, max(2, spec.trials // 4))
        )
    return optuna.samplers.RandomSampler(seed=seed)  # grid points are fixed: it draws nothing


def _pruner(prune: str, startup_trials: int, warmup_epochs: int):
    optuna = _optuna()
    if prune == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup_trials, n_warmup_steps=warmup_epochs)
    if prune == "hyperband":
        # Brackets of 1, 3, 9 ... epochs up to the longest trial's (Optuna learns it from the
        # first trial that finishes).
        return optuna.pruners.HyperbandPruner(
            min_resource=max(1, warmup_epochs), max_resource="auto", reduction_factor=3
        )
    return optuna.pruners.NopPruner()


def _spec_pruner(spec: SweepSpec):
    return _pruner(spec.prune, spec.prune_startup_trials, spec.prune_warmup_epochs)


def process_seed(spec: SweepSpec, creator: bool) -> int:
    """The sweep's seed in the process that created it (so one run is reproducible); in a
    process that joins or resumes, a different one, or it would draw the very values the
    first process drew."""
    if creator:
        return spec.seed
    return (spec.seed * 1_000_003 + hash((socket.gethostname(), os.getpid(), time.time()))) % (2**31)


class Study:
    """A sweep's study, opened in this process."""

    def __init__(self, study: Any, spec: SweepSpec) -> None:
        self._study = study
        self.spec = spec

    # Optuna's own Trial reaches the storage through these two attributes; claiming a waiting
    # trial without ever creating a new one needs them too (Study.ask creates one when none waits).
    @property
    def _storage(self):
        return self._study._storage

    @property
    def _study_id(self) -> int:
        return self._study._study_id

    # -- creating and opening -------------------------------------------------------------

    @classmethod
    def create(cls, spec: SweepSpec, url: str, points: list[dict[str, Any]]) -> Study:
        """A new study holding the definition and every planned trial, enqueued."""
        optuna = _optuna()
        storage = make_storage(url)
        try:
            study = optuna.create_study(
                study_name=spec.id,
                storage=storage,
                sampler=_sampler(spec, spec.seed),
                pruner=_spec_pruner(spec),
                direction="maximize" if spec.direction == "max" else "minimize",
            )
        except optuna.exceptions.DuplicatedStudyError:
            raise SweepError(
                f"The storage {redact(url)} already holds a study named {spec.id!r}.",
                hint=f"Choose another --id, or join it with: dlcli sweep worker {spec.id} --storage URL",
            ) from None
        study.set_user_attr(SPEC_ATTR, spec.to_data())
        for point in points:
            study.enqueue_trial(point)
        study.set_user_attr(READY_ATTR, len(points))
        return cls(study, spec)

    @classmethod
    def open(cls, spec: SweepSpec, url: str, *, creator: bool = False, wait_ready_s: float = 60.0) -> Study:
        optuna = _optuna()
        storage = make_storage(url, must_exist=True)
        try:
            study = optuna.load_study(
                study_name=spec.id,
                storage=storage,
                sampler=_sampler(spec, process_seed(spec, creator)),
                pruner=_spec_pruner(spec),
            )
        except KeyError:
            raise SweepError(
                f"The storage {redact(url)} holds no sweep {spec.id!r}.",
                hint="Check the id and --storage; the sweep's first line names both.",
            ) from None
        opened = cls(study, spec)
        deadline = time.monotonic() + wait_ready_s
        while READY_ATTR not in study.user_attrs:  # its creator is still enqueueing the plan
            if time.monotonic() > deadline:
                raise SweepError(
                    f"The sweep {spec.id!r} was never completely planned (its creator stopped while "
                    "enqueueing the trials).",
                    hint="Start a new sweep.",
                )
            time.sleep(0.5)
        return opened

    @staticmethod
    def spec_data_from_storage(url: str, sweep_id: str) -> dict:
        """The definition a sweep's creator stored: how a worker without the sweep folder joins."""
        optuna = _optuna()
        storage = make_storage(url, must_exist=True)
        try:
            study = optuna.load_study(study_name=sweep_id, storage=storage)
        except KeyError:
            names = optuna.get_all_study_names(storage)
            raise SweepError(
                f"The storage {redact(url)} holds no sweep {sweep_id!r}"
                f"{'; it holds: ' + ', '.join(names) if names else ''}.",
                hint="Give the id printed when the sweep started.",
            ) from None
        data = study.user_attrs.get(SPEC_ATTR)
        if not isinstance(data, dict):
            raise SweepError(f"The study {sweep_id!r} in {redact(url)} was not created by dlcli sweep.")
        return data

    # -- trials ---------------------------------------------------------------------------

    def planned(self) -> int:
        return int(self._study.user_attrs.get(READY_ATTR, self.spec.trials))

    def claim_waiting(self) -> Optional[int]:
        """Move one enqueued trial to running and return its id; None when none waits. The
        storage's state change is atomic (a row update, a journal entry), so two workers
        never claim the same trial."""
        optuna = _optuna()
        waiting = self._storage.get_all_trials(
            self._study_id, deepcopy=False, states=(optuna.trial.TrialState.WAITING,)
        )
        for trial in sorted(waiting, key=lambda t: t.number):
            try:
                if self._storage.set_trial_state_values(trial._trial_id, state=optuna.trial.TrialState.RUNNING):
                    return trial._trial_id
            except optuna.exceptions.UpdateFinishedTrialError:
                continue
        return None

    def trial_number(self, trial_id: int) -> int:
        return self._storage.get_trial_number_from_id(trial_id)

    def suggest(self, trial_id: int, space: list[Param]) -> dict[str, Any]:
        """The trial's values: fixed (a grid point), already drawn (a trial continued after a
        crash), or drawn now by the sampler."""
        optuna = _optuna()
        trial = optuna.Trial(self._study, trial_id)
        params: dict[str, Any] = {}
        for p in space:
            if p.is_categorical:
                params[p.key] = p.decode(trial.suggest_categorical(p.key, p.encoded_choices()))
            elif p.kind == "int":
                low, high = p.bounds()
                params[p.key] = trial.suggest_int(p.key, int(low), int(high), log=p.log)
            else:
                low, high = p.bounds()
                params[p.key] = trial.suggest_float(p.key, float(low), float(high), log=p.log)
        return params

    def set_attrs(self, trial_id: int, **attrs: Any) -> None:
        for key, value in attrs.items():
            self._storage.set_trial_user_attr(trial_id, key, value)

    def finish(self, trial_id: int, state: str, value: Optional[float] = None) -> None:
        """Record a trial's end: completed (with its value), pruned or failed."""
        optuna = _optuna()
        number = self.trial_number(trial_id)
        TS = optuna.trial.TrialState
        if state == "completed":
            self._study.tell(number, value, skip_if_finished=True)
        elif state == "pruned":
            self._study.tell(number, state=TS.PRUNED, skip_if_finished=True)
        else:
            self._study.tell(number, state=TS.FAIL, skip_if_finished=True)

    def trials(self) -> list[TrialInfo]:
        out = []
        by_key = {p.key: p for p in self.spec.space}
        for t in self._study.get_trials(deepcopy=False):
            params = {k: by_key[k].decode(v) if k in by_key else v for k, v in t.params.items()}
            value = t.value if t.state.name == "COMPLETE" else None
            out.append(
                TrialInfo(
                    number=t.number,
                    trial_id=t._trial_id,
                    state=STATES.get(t.state.name, t.state.name.lower()),
                    value=value,
                    params=params,
                    attrs=dict(t.user_attrs),
                    started=t.datetime_start.timestamp() if t.datetime_start else None,
                    finished=t.datetime_complete.timestamp() if t.datetime_complete else None,
                    intermediate={int(k): float(v) for k, v in t.intermediate_values.items()},
                )
            )
        return sorted(out, key=lambda t: t.number)

    def trial(self, trial_id: int) -> TrialInfo:
        number = self.trial_number(trial_id)
        return next(t for t in self.trials() if t.number == number)


class TrialReporter:
    """Per-epoch values of one trial, reported from inside its `dlcli train` process, and the
    pruner's verdict."""

    def __init__(
        self, study_name: str, url: str, trial_id: int, prune: str, startup_trials: int, warmup_epochs: int
    ) -> None:
        optuna = _optuna()
        storage = make_storage(url)
        # The sampler draws nothing here; the pruner must be the sweep's own.
        study = optuna.load_study(
            study_name=study_name,
            storage=storage,
            sampler=optuna.samplers.RandomSampler(),
            pruner=_pruner(prune, startup_trials, warmup_epochs),
        )
        self._trial = optuna.Trial(study, trial_id)

    def report(self, value: float, epoch: int) -> bool:
        """Report the epoch's value; True when the trial should stop (be pruned)."""
        if value is None or not math.isfinite(value):
            return False
        self._trial.report(float(value), epoch)
        return bool(self._trial.should_prune())
