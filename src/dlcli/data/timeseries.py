"""`data.dataset: timeseries`: a CSV in time order, cut into windows, split by time.

Windows. The window starting at row s holds rows s, s + r, ..., s + (length - 1) r (r =
`sampling_rate`); its target is the target column(s) at row s + (length - 1) r + h for each
horizon h: a horizon counts rows of the file after the window's last row, as the `delay` of
Chollet's temperature chapter does. Windows start every `stride` rows, and the samples of a
part of the series are exactly those of Keras's

    timeseries_dataset_from_array(data[:-delay], targets=target[delay:], sequence_length=length,
                                  sampling_rate=r, sequence_stride=stride)

with delay = (length - 1) r + the largest horizon: like that call, a part of n rows holds the
windows starting at 0, stride, ... below n - delay - (length - 1) r. Windows are never stored as
windows x length x features: `WindowedSeries` keeps the part's rows once and gathers a batch of
windows with one index computation (start + offsets) when the engine's batches index it.

Splits. By time, never shuffled across a boundary: the oldest rows train, the next
`validation_split` of the rows validate, the last `test_split` test (0.25 and 0.25 unless the
config says otherwise), or a second file (`test_path`) tests. Each part is windowed on its own,
so no window (nor its target) straddles two parts; training batches are shuffled among the
training windows only.

Fitting (training rows only). Each feature is scaled (`normalize`: standard or minmax, or none)
with the training rows' statistics, and a numeric target the same way; the model learns scaled
targets, and everything reported (the MAE, predictions, an export's outputs) is turned back into
the target's own units through the state's `output_scaling`. A categorical target makes a
classifier (one target, one horizon).

Missing cells (`missing`): `error` names the first; `interpolate` fills a cell linearly from its
neighbouring rows (within its part; cells before the first or after the last known value take
that value); `ffill` repeats the last value before it (the first known value for leading gaps);
`drop_windows` leaves out the windows that touch one. A target cell is never made up: windows
whose target is missing are left out under every policy but `error`. With `frequency` (1h, 1D,
15min...) time stamps the file lacks become rows of missing cells; without it rows are steps as
they come (a market's nights are no gap).

The persistence forecast (the target h rows later equals its value at the window's last row,
Chollet's common-sense baseline) is kept per window, so training and evaluation report the
model's test MAE beside it (`baseline_results`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Collection, Literal, Optional, Sequence, Union

import numpy as np

from ..config import option
from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .dataset import DataInfo, Dataset, DatasetSource, ProgressFn
from .folders import natural_key
from .inputs import TABLE_SUFFIXES, Inputs, InputSpec, ReadRequest, expand_paths
from .preprocessing import STATE_VERSION, check_state
from .splits import fold_range, nonzero_holdout
from .tabular import RawTable, TableData, _delimiter, check_columns, check_same_rows, number_text, read_table

if TYPE_CHECKING:
    import torch

KIND = "timeseries"
DEFAULT_SPLIT = 0.25  # validation and test fractions when the config does not give them (Chollet's chapter)
TimeFeature = Literal["day_of_year", "day_of_week", "hour"]


@dataclass(frozen=True)
class WindowConfig:
    """How a series becomes samples, as Keras's timeseries_dataset_from_array cuts it."""

    length: int = option(help="rows in one window (Keras's sequence_length)", ge=1)
    horizon: Union[int, tuple[int, ...]] = option(
        1,
        help="rows after the window's last row whose target is predicted; a list for several outputs",
        ge=1,
        min_items=1,
    )
    stride: int = option(1, help="rows between the starts of consecutive windows (sequence_stride)", ge=1)
    sampling_rate: int = option(1, help="every r-th row inside a window (sampling_rate)", ge=1)

    @property
    def horizons(self) -> tuple[int, ...]:
        return (self.horizon,) if isinstance(self.horizon, int) else tuple(self.horizon)


@dataclass(frozen=True, kw_only=True)
class TimeseriesData(TableData):
    """timeseries: a table whose rows are time steps, cut into windows (`window:`)."""

    time_column: Optional[str] = option(None, help="the column of time stamps (checked to increase)")
    window: Optional[WindowConfig] = option(None, help="{length, horizon, stride, sampling_rate}")
    frequency: Optional[str] = option(
        None, help="the rows' regular step (1h, 1D, 15min...): missing time stamps become missing cells"
    )
    time_features: tuple[TimeFeature, ...] = option(
        (), help="calendar inputs as sine/cosine pairs: day_of_year, day_of_week, hour"
    )

    MISSING_HINT: ClassVar[str] = (
        "A time series' rows are its order: interpolate fills a cell from its neighbouring rows, ffill repeats the "
        "last value before it, drop_windows leaves out only the windows that touch it."
    )
    EXAMPLE_PATH: ClassVar[str] = "examples/timeseries/seattle-weather.csv"
    EXAMPLE_TARGET: ClassVar[str] = "temp_max"

    def defaults_for(self, given: Collection[str]) -> dict[str, Any]:
        """The last quarter of the rows for testing and the quarter before it for validation."""
        changes: dict[str, Any] = {}
        if "validation_split" not in given and "validation_size" not in given:
            changes["validation_split"] = DEFAULT_SPLIT
        if "test_split" not in given and not self.test_path:
            changes["test_split"] = DEFAULT_SPLIT
        return changes

    def check(self) -> None:
        super().check()
        if self.window is None:
            raise ConfigError(
                "the timeseries dataset needs `window:`, how many rows one sample holds.",
                hint="For example `window: {length: 14, horizon: 1}`: 14 rows in, the target 1 row after the last.",
                key="data.window",
            )
        horizons = self.window.horizons
        if len(set(horizons)) != len(horizons):
            raise ConfigError(f"lists a horizon twice: {list(horizons)}.", key="data.window.horizon")
        if self.time_features and not self.time_column:
            raise ConfigError(
                "calendar features are computed from the time stamps, and no `time_column:` is given.",
                hint="Name the column of dates or times in data.time_column.",
                key="data.time_features",
            )
        if self.frequency is not None and not self.time_column:
            raise ConfigError(
                "a frequency places rows by their time stamps, and no `time_column:` is given.",
                hint="Name the column of dates or times in data.time_column, or leave frequency out (rows are steps).",
                key="data.frequency",
            )
        if len(set(self.time_features)) != len(self.time_features):
            raise ConfigError(f"lists a feature twice: {list(self.time_features)}.", key="data.time_features")


_FREQUENCY = re.compile(r"^\s*(\d+)?\s*(s|sec|min|T|h|H|D|d|W|w)\s*$")
_UNIT_SECONDS = {"s": 1, "sec": 1, "min": 60, "T": 60, "h": 3600, "H": 3600, "D": 86400, "d": 86400, "W": 604800}
_UNIT_SECONDS["w"] = 604800
MAX_INSERTED_FACTOR = 10  # frequency may add at most this many rows per row of the file
PART_NAMES = {"train": "training", "val": "validation", "test": "test"}


# ----------------------------------------------------------------------------- windows


@dataclass(frozen=True)
class Window:
    """The window options as plain numbers (from a config or a saved state)."""

    length: int
    horizons: tuple[int, ...]
    stride: int = 1
    sampling_rate: int = 1

    @classmethod
    def of(cls, config: WindowConfig) -> Window:
        return cls(config.length, config.horizons, config.stride, config.sampling_rate)

    @property
    def span(self) -> int:
        """Rows from a window's first to its last, both included."""
        return (self.length - 1) * self.sampling_rate + 1

    @property
    def delay(self) -> int:
        """Keras's `delay` for the farthest horizon: rows from a window's start to its target."""
        return (self.length - 1) * self.sampling_rate + max(self.horizons)

    def rows_needed(self) -> int:
        """The fewest rows of a part that hold one window with its targets (Keras's count)."""
        return self.delay + (self.length - 1) * self.sampling_rate + 1

    def as_json(self) -> dict:
        return {
            "length": self.length,
            "horizon": list(self.horizons),
            "stride": self.stride,
            "sampling_rate": self.sampling_rate,
        }


def window_starts(n_rows: int, window: Window) -> np.ndarray:
    """Start rows of the windows of a part of n_rows rows: the sequences Keras's
    timeseries_dataset_from_array(data[:-delay], targets=target[delay:], ...) makes."""
    count = n_rows - window.delay - (window.length - 1) * window.sampling_rate
    return np.arange(0, max(count, 0), window.stride, dtype=np.int64)


def window_offsets(window: Window) -> np.ndarray:
    return np.arange(window.length, dtype=np.int64) * window.sampling_rate


def target_rows(starts: np.ndarray, window: Window) -> np.ndarray:
    """(windows, horizons): the row of each window's target at each horizon."""
    last = starts + (window.length - 1) * window.sampling_rate
    return last[:, None] + np.asarray(window.horizons, dtype=np.int64)[None, :]


def windows_touching(flags: Any, starts: np.ndarray, window: Window) -> np.ndarray:
    """For each window, whether any of its rows (s, s + r, ...) is flagged: inclusive running
    counts along every residue class modulo r, so O(rows + windows) whatever the length."""
    r = window.sampling_rate
    if len(starts) == 0:
        return np.zeros(0, dtype=bool)
    padded = np.zeros(math.ceil(len(flags) / r) * r, dtype=np.int64)
    padded[: len(flags)] = flags
    running = padded.reshape(-1, r).cumsum(axis=0).reshape(-1)
    last = starts + (window.length - 1) * r
    return (running[last] - running[starts] + padded[starts]) > 0


@dataclass(frozen=True)
class Persistence:
    """Per window and output, in the targets' own units (float64): the naive forecast (the
    target's value at the window's last row) and the true target."""

    forecast: np.ndarray
    truth: np.ndarray

    def mae(self) -> float:
        return float(np.abs(self.forecast - self.truth).mean())


class WindowedSeries:
    """The windows of one stored series, gathered when indexed.

    `series` holds the part's rows once (rows x features); window i is series[starts[i] +
    offsets]. Indexing by an int, a slice or an index tensor gathers those windows with one
    index computation, so a batch costs batch x length x features and the whole set never
    exists. It answers what dlcli's batches and data checks ask of an input tensor: len, shape,
    dtype, device, `to`, `numel`/`element_size` (of what is stored: what moving it to a device
    costs) and `sum` (of every window's elements, computed from how often each row is used).
    `persistence`: the naive forecast and the truth per window, in the targets' units (or None).
    """

    def __init__(
        self,
        series: torch.Tensor,
        starts: torch.Tensor,
        offsets: torch.Tensor,
        persistence: Optional[Persistence] = None,
    ) -> None:
        self.series = series
        self.starts = starts
        self.offsets = offsets
        self.persistence = persistence

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.starts), len(self.offsets), *self.series.shape[1:])

    @property
    def dtype(self) -> Any:
        return self.series.dtype

    @property
    def device(self) -> Any:
        return self.series.device

    def is_floating_point(self) -> bool:
        return self.series.is_floating_point()

    def is_complex(self) -> bool:
        return False

    def element_size(self) -> int:
        return self.series.element_size()

    def numel(self) -> int:
        index_bytes = (self.starts.numel() + self.offsets.numel()) * self.starts.element_size()
        return self.series.numel() + math.ceil(index_bytes / self.series.element_size())

    def to(self, device: Any, non_blocking: bool = False) -> WindowedSeries:
        return WindowedSeries(
            self.series.to(device, non_blocking=non_blocking),
            self.starts.to(device, non_blocking=non_blocking),
            self.offsets.to(device, non_blocking=non_blocking),
            self.persistence,
        )

    def __getitem__(self, index: Any) -> torch.Tensor:
        starts = self.starts[index]
        if starts.dim() == 0:
            return self.series.index_select(0, starts + self.offsets)
        rows = (starts.unsqueeze(1) + self.offsets).reshape(-1)
        return self.series.index_select(0, rows).reshape(len(starts), len(self.offsets), *self.series.shape[1:])

    def row_uses(self) -> torch.Tensor:
        """How many windows use each stored row (a difference array summed per residue class)."""
        import torch

        rows, r = self.series.shape[0], int(self.offsets[1] - self.offsets[0]) if len(self.offsets) > 1 else 1
        size = math.ceil((rows + len(self.offsets) * r) / r) * r
        ends = self.starts + len(self.offsets) * r
        diff = torch.bincount(self.starts, minlength=size)[:size] - torch.bincount(ends, minlength=size)[:size]
        return diff.reshape(-1, r).cumsum(0).reshape(-1)[:rows]

    def sum(self) -> torch.Tensor:
        uses = self.row_uses().to(self.series.dtype)
        return (self.series * uses.unsqueeze(1)).sum()


# ----------------------------------------------------------------------------- time stamps


def parse_frequency(text: str) -> int:
    """Seconds per step of a frequency such as 1h, 1D, 15min, 30s or 1W."""
    found = _FREQUENCY.match(text)
    if not found or (found.group(1) is not None and int(found.group(1)) == 0):
        raise ConfigError(
            f"data.frequency: {text!r} is not a frequency dlcli understands.",
            hint="Give a number and a unit: s, min, h, D or W (for example 1h, 15min, 1D); months and years are "
            "not a fixed step.",
            key="data.frequency",
        )
    return int(found.group(1) or 1) * _UNIT_SECONDS[found.group(2)]


_DATE_FORMATS = ("%Y-%m-%d", "%Y-%m-%d %H:%M", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S")


def _parse_time_text(text: str) -> Optional[int]:
    """Seconds since 1970 of one date or time (ISO 8601, / or - between the date's parts; an
    offset is converted to UTC), or None."""
    candidates = (text, text.replace("/", "-"))
    for candidate in candidates:
        try:
            moment = datetime.fromisoformat(candidate)
            break
        except ValueError:
            continue
    else:
        for candidate in candidates:
            for fmt in _DATE_FORMATS:
                try:
                    moment = datetime.strptime(candidate, fmt)
                    break
                except ValueError:
                    continue
            else:
                continue
            break
        else:
            return None
    if moment.tzinfo is not None:
        moment = moment.astimezone(timezone.utc).replace(tzinfo=None)
    return int((moment - datetime(1970, 1, 1)).total_seconds())


def parse_times(table: RawTable, column: str) -> tuple[np.ndarray, str]:
    """(times, kind): int64 seconds since 1970 for dates and times ("datetime"), or the numbers
    themselves ("number"); every cell must hold one."""
    cells = table.columns[column]
    if cells.missing.any():
        row = int(np.flatnonzero(cells.missing)[0])
        raise DataError(
            f"{table.where(row, column)}: the time stamp is missing; every row of a series needs its time.",
            hint="Fill it in or remove the row.",
        )
    numbers = ~np.isnan(cells.values)
    if numbers.all():
        return cells.values.astype(np.float64), "number"
    texts = np.asarray([cells.text(i) for i in range(table.n_rows)], dtype=str)
    if np.char.find(texts, "/").max() >= 0:
        texts = np.char.replace(texts, "/", "-")
    try:
        return texts.astype("datetime64[s]").astype(np.int64), "datetime"
    except ValueError:
        pass
    times = np.empty(table.n_rows, dtype=np.int64)
    for row in range(table.n_rows):
        parsed = _parse_time_text(cells.text(row))
        if parsed is None:
            raise DataError(
                f"{table.where(row, column)}: {cells.text(row)!r} is not a date or time (such as 2016-01-31 or "
                "2016-01-31 14:00) nor a number.",
                hint="Correct the cell, or name the column of time stamps in data.time_column.",
            )
        times[row] = parsed
    return times, "datetime"


def time_text(value: Any, kind: Optional[str], whole_days: Optional[bool] = None) -> str:
    """A time stamp as people write it; dates alone when whole_days (None: when it is midnight)."""
    if kind == "datetime":
        text = str(np.datetime64(int(value), "s")).replace("T", " ")
        if whole_days is None:
            whole_days = int(value) % 86400 == 0
        return text[:10] if whole_days else text
    if kind == "number":
        return number_text(float(value))
    return str(value)


def check_increasing(table: RawTable, column: str, times: np.ndarray, kind: str) -> None:
    steps = np.diff(times)
    bad = np.flatnonzero(steps <= 0)
    if not len(bad):
        return
    row = int(bad[0]) + 1
    here, before = time_text(times[row], kind), time_text(times[row - 1], kind)
    if steps[row - 1] == 0:
        raise DataError(
            f"{table.where(row, column)}: the time stamp {here} is the same as the row before's "
            f"({table.where(row - 1)}): a duplicated time stamp.",
            hint="Keep one row per time stamp (merge or remove the duplicate).",
        )
    raise DataError(
        f"{table.where(row, column)}: the time stamp {here} comes before the previous row's {before}: "
        "this is the first row out of time order.",
        hint="Sort the file by its time column, oldest first; dlcli never reorders a series.",
    )


def time_feature_columns(times: np.ndarray, names: Sequence[str]) -> np.ndarray:
    """(rows, 2 x features): sin and cos of each calendar position as a fraction of its cycle."""
    seconds = times.astype(np.int64)
    days = np.floor_divide(seconds, 86400)
    into_day = (seconds - days * 86400) / 86400.0
    columns = []
    for name in names:
        if name == "hour":
            fraction = into_day
        elif name == "day_of_week":  # 1970-01-01 was a Thursday: Monday = 0
            fraction = (np.mod(days + 3, 7) + into_day) / 7.0
        else:
            day = days.astype("datetime64[D]")
            year_start = day.astype("datetime64[Y]").astype("datetime64[D]")
            next_start = (day.astype("datetime64[Y]") + 1).astype("datetime64[D]")
            length = (next_start - year_start).astype(np.float64)
            fraction = ((day - year_start).astype(np.float64) + into_day) / length
        angle = 2.0 * np.pi * fraction
        columns += [np.sin(angle), np.cos(angle)]
    return np.stack(columns, axis=1) if columns else np.zeros((len(times), 0))


def time_feature_names(names: Sequence[str]) -> list[str]:
    return [f"{name}_{part}" for name in names for part in ("sin", "cos")]


# ----------------------------------------------------------------------------- reading a series


@dataclass(frozen=True)
class Layout:
    """Which columns play which part: from a config when fitting, from the state afterwards."""

    time_column: Optional[str]
    features: tuple[str, ...]
    targets: tuple[str, ...]
    classify: bool  # the (one) target holds class labels
    frequency: Optional[str]
    missing: str
    time_features: tuple[str, ...]
    window: Window

    @property
    def numeric(self) -> list[str]:
        """The columns read as numbers: the features, then numeric targets that are not features."""
        extra = [] if self.classify else [t for t in self.targets if t not in self.features]
        return list(self.features) + extra

    @classmethod
    def from_state(cls, state: dict) -> Layout:
        window = state["window"]
        return cls(
            state["time_column"],
            tuple(s["name"] for s in state["features"]),
            tuple(state["target"]),
            state["task"] in ("binary", "multiclass"),
            state["frequency"],
            state["missing"],
            tuple(state["time_features"]),
            Window(window["length"], tuple(window["horizon"]), window["stride"], window["sampling_rate"]),
        )


@dataclass
class Series:
    """One file's rows in time order as numbers: what windows are cut from."""

    table: RawTable
    columns: list[str]  # Layout.numeric
    values: np.ndarray  # float64 (rows, columns); NaN where missing
    missing: np.ndarray  # bool (rows, columns)
    labels: Optional[np.ndarray]  # object (rows,): a categorical target's label texts, None where missing
    times: Optional[np.ndarray]  # per row: int64 seconds (datetime) or float64 (number); None without a time column
    time_kind: Optional[str]
    file_rows: np.ndarray  # the table row of each row; -1 for a time stamp the file lacks (frequency)
    frequency: Optional[str]

    @property
    def n(self) -> int:
        return len(self.values)

    def time(self, row: int) -> str:
        return time_text(self.times[row], self.time_kind) if self.times is not None else f"row {row + 1}"

    def where(self, row: int, column: Optional[str] = None) -> str:
        file_row = int(self.file_rows[row])
        if file_row >= 0:
            return self.table.where(file_row, column)
        place = (
            f"{self.table.source}: the time {self.time(row)}, which the file has no row for "
            f"(data.frequency: {self.frequency})"
        )
        return f"{place}, column {column!r}" if column is not None else place

    def line(self, row: int) -> str:
        file_row = int(self.file_rows[row])
        return str(self.table.line(file_row)) if file_row >= 0 else self.time(row)


def _mostly_numbers(table: RawTable, name: str) -> bool:
    column = table.columns[name]
    present = ~column.missing
    if column.texts is None:
        return True
    numbers = ~np.isnan(column.values[present])
    return bool(present.any()) and int(numbers.sum()) * 2 > int(present.sum())


def _number_matrix(table: RawTable, columns: Sequence[str], targets: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    values = np.empty((table.n_rows, len(columns)), dtype=np.float64)
    missing = np.empty((table.n_rows, len(columns)), dtype=bool)
    for j, name in enumerate(columns):
        column = table.columns[name]
        text = ~column.missing & np.isnan(column.values)
        if text.any():
            row = int(np.flatnonzero(text)[0])
            role = "a numeric target" if name in targets else "a numeric feature"
            raise DataError(
                f"{table.where(row, name)}: {column.text(row)!r} is not a number, but {name!r} is {role}.",
                hint="Correct the cell, or leave it empty (missing) and choose a data.missing policy.",
            )
        infinite = ~column.missing & ~np.isfinite(column.values)
        infinite &= ~np.isnan(column.values)
        if infinite.any():
            row = int(np.flatnonzero(infinite)[0])
            raise DataError(
                f"{table.where(row, name)}: {column.text(row)!r} is not a finite number.",
                hint="Correct the cell or leave it empty (missing).",
            )
        values[:, j] = column.values
        missing[:, j] = column.missing
    return values, missing


def read_series(table: RawTable, layout: Layout, with_targets: bool = True) -> Series:
    """The table's rows as a Series: times parsed and checked, numbers checked, missing time
    stamps inserted (frequency). with_targets=False reads the features alone (predict's input)."""
    numeric = layout.numeric if with_targets else list(layout.features)
    values, missing = _number_matrix(table, numeric, layout.targets)
    labels = None
    if layout.classify and with_targets:
        column = table.columns[layout.targets[0]]
        labels = np.array([None if column.missing[i] else column.label(i) for i in range(table.n_rows)], dtype=object)
    times, kind = None, None
    file_rows = np.arange(table.n_rows, dtype=np.int64)
    if layout.time_column is not None:
        times, kind = parse_times(table, layout.time_column)
        check_increasing(table, layout.time_column, times, kind)
        if layout.time_features and kind != "datetime":
            raise DataError(
                f"{table.source}: the time column {layout.time_column!r} holds numbers, and calendar features "
                "(data.time_features) need dates or times.",
                hint="Give dates (such as 2016-01-31) in the time column, or leave time_features out.",
            )
        if layout.frequency is not None:
            if kind != "datetime":
                raise DataError(
                    f"{table.source}: the time column {layout.time_column!r} holds numbers, and data.frequency "
                    "places rows by dates or times.",
                    hint="Leave frequency out: the rows are the steps.",
                )
            step = parse_frequency(layout.frequency)
            offsets = times - times[0]
            off_grid = np.flatnonzero(offsets % step)
            if len(off_grid):
                row = int(off_grid[0])
                raise DataError(
                    f"{table.where(row, layout.time_column)}: the time {time_text(times[row], kind)} is not a whole "
                    f"number of {layout.frequency} steps after the first row's {time_text(times[0], kind)}.",
                    hint="Give the frequency the rows were recorded at, or leave data.frequency out.",
                )
            positions = offsets // step
            rows = int(positions[-1]) + 1
            if rows > MAX_INSERTED_FACTOR * table.n_rows:
                raise DataError(
                    f"{table.source}: data.frequency: {layout.frequency} would make {rows:,} steps of the "
                    f"{table.n_rows:,} rows, most of them missing.",
                    hint="Check the frequency against the time stamps (1D for daily rows, 1h for hourly ones).",
                )
            if rows > table.n_rows:
                full = np.full((rows, values.shape[1]), np.nan)
                full[positions] = values
                gaps = np.ones((rows, values.shape[1]), dtype=bool)
                gaps[positions] = missing
                values, missing = full, gaps
                if labels is not None:
                    spread = np.full(rows, None, dtype=object)
                    spread[positions] = labels
                    labels = spread
                file_rows = np.full(rows, -1, dtype=np.int64)
                file_rows[positions] = np.arange(table.n_rows)
                times = times[0] + np.arange(rows, dtype=np.int64) * step
    return Series(table, numeric, values, missing, labels, times, kind, file_rows, layout.frequency)


def missing_cell_error(series: Series, layout: Layout) -> Optional[DataError]:
    """Under missing: error, the first missing cell (row order, then column), else None."""
    cells = series.missing.copy()
    if series.labels is not None:
        cells = np.concatenate([cells, _unknown(series.labels)[:, None]], axis=1)
    flat = np.flatnonzero(cells.ravel())
    if not len(flat):
        return None
    row, col = divmod(int(flat[0]), cells.shape[1])
    names = series.columns + ([layout.targets[0]] if series.labels is not None else [])
    count = int(cells.sum())
    what = (
        "the cell is empty (or a missing-value marker such as NA)"
        if series.file_rows[row] >= 0
        else "its cells are missing"
    )
    return DataError(
        f"{series.where(row, names[col])}: {what}; {count} cell{'s are' if count != 1 else ' is'} missing in all.",
        hint="Fill it in, or set data.missing to interpolate, ffill or drop_windows.",
    )


def _unknown(labels: np.ndarray) -> np.ndarray:
    return np.fromiter((label is None for label in labels), dtype=bool, count=len(labels))


def fill_missing(values: np.ndarray, missing: np.ndarray, policy: str) -> np.ndarray:
    """The cells filled as `policy` says (interpolate, ffill); unchanged otherwise. Columns with
    no known value stay missing."""
    if policy not in ("interpolate", "ffill") or not missing.any():
        return values
    values = values.copy()
    rows = np.arange(len(values))
    for j in range(values.shape[1]):
        gap = missing[:, j]
        known = ~gap
        if not gap.any() or not known.any():
            continue
        if policy == "interpolate":
            values[gap, j] = np.interp(rows[gap], rows[known], values[known, j])
        else:
            last = np.maximum.accumulate(np.where(known, rows, -1))
            last[last < 0] = int(np.flatnonzero(known)[0])
            values[:, j] = values[last, j]
    return values


# ----------------------------------------------------------------------------- fitting


def _scaling(values: np.ndarray, name: str, normalize: str, source: str) -> dict:
    known = values[~np.isnan(values)]
    if not len(known):
        raise DataError(
            f"{source}: the column {name!r} has no value in the training rows, so it cannot be scaled.",
            hint="Leave the column out of data.features, or give it values in the oldest rows.",
        )
    spec: dict[str, Any] = {"name": name}
    if normalize == "standard":
        std = float(known.std())
        spec.update(mean=float(known.mean()), std=std if std > 0 else 1.0)
    elif normalize == "minmax":
        low, high = float(known.min()), float(known.max())
        spec.update(min=low, max=high if high > low else low + 1.0)
    return spec


def shift_and_divisor(spec: dict) -> tuple[float, float]:
    """(shift, divisor) such that scaled = (raw - shift) / divisor."""
    if "mean" in spec:
        return spec["mean"], spec["std"]
    if "min" in spec:
        return spec["min"], spec["max"] - spec["min"]
    return 0.0, 1.0


def _layout(config: TimeseriesData, table: RawTable) -> Layout:

    if config.window is None:  # config validation requires it; a config built in code may lack it
        raise ConfigError("data.window: the timeseries dataset needs `window: {length: N}`.", key="data.window")
    targets = [config.target] if isinstance(config.target, str) else list(config.target or ())
    if not targets:
        raise ConfigError("data.target: the timeseries dataset needs the column to predict.", key="data.target")
    check_columns(table, targets, "target")
    time_column = config.time_column
    if time_column is not None:
        check_columns(table, [time_column], "time_column")
        if time_column in targets:
            raise DataError(f"data.target: {time_column!r} is the time column; it cannot be the target.")
    numeric_target = [_mostly_numbers(table, t) for t in targets]
    task = config.task
    classify = task in ("binary", "multiclass") or (task == "auto" and not numeric_target[0] and len(targets) == 1)
    if task == "multilabel":
        raise ConfigError(
            "data.task: multilabel is not a task of the timeseries dataset (regression, binary or multiclass).",
            key="data.task",
        )
    if classify and (len(targets) > 1 or len(config.window.horizons) > 1):
        raise DataError(
            f"{table.source}: a categorical target forecasts one class: one target column and one horizon "
            f"(data.target lists {len(targets)}, data.window.horizon {len(config.window.horizons)}).",
            hint="Give one target and one horizon, or numeric targets for several outputs.",
        )
    if not classify:
        for target, numeric in zip(targets, numeric_target):
            if not numeric:
                column = table.columns[target]
                row = int(np.flatnonzero(~column.missing & np.isnan(column.values))[0])
                raise DataError(
                    f"{table.where(row, target)}: {column.text(row)!r} is not a number, but a regression target "
                    f"must be{' (several targets are each forecast as numbers)' if len(targets) > 1 else ''}.",
                    hint="Give numeric target columns, or one categorical target (classification).",
                )
    if config.features is not None:
        check_columns(table, config.features, "features")
        features = list(config.features)
        if time_column in features:
            raise DataError(
                f"data.features: {time_column!r} is the time column; calendar inputs come from data.time_features."
            )
        if classify and targets[0] in features:
            raise DataError(
                f"data.features: {targets[0]!r} is a categorical target; the inputs of a series are numeric columns."
            )
        for name in features:
            if not _mostly_numbers(table, name):
                column = table.columns[name]
                present = np.flatnonzero(~column.missing)
                row = int(present[np.isnan(column.values[present])][0]) if len(present) else 0
                raise DataError(
                    f"data.features: {name!r} is not a numeric column ({table.where(row, name)} holds "
                    f"{column.text(row)!r}); the inputs of a series are numbers.",
                    hint="Leave it out of data.features.",
                )
    else:
        features = [
            c
            for c in table.header
            if c != time_column and not (classify and c == targets[0]) and _mostly_numbers(table, c)
        ]
    if not features:
        raise DataError(
            f"{table.source}: no numeric input column is left besides the time column.",
            hint="A series needs numeric columns to learn from; list them in data.features.",
        )
    return Layout(
        time_column,
        tuple(features),
        tuple(targets),
        classify,
        config.frequency,
        config.missing,
        tuple(config.time_features),
        Window.of(config.window),
    )


def _split_rows(n: int, config: TimeseriesData, has_test_file: bool) -> dict[str, tuple[int, int]]:
    """Row ranges [start, end) of each part, oldest first."""
    test_split = DEFAULT_SPLIT if config.test_split is None else config.test_split
    n_test = 0 if has_test_file else nonzero_holdout(n, test_split, "test_split", "rows")
    n_val = (
        config.validation_size
        if config.validation_size is not None
        else nonzero_holdout(n, config.validation_split, "validation_split", "rows")
    )
    if config.fold is not None:  # dlcli cv: an expanding window of TimeSeriesSplit (data/splits.py)
        start, end = fold_range(config, n - n_test)
        return {"train": (0, start), "val": (start, end), "test": (n - n_test, n)}
    n_train = n - n_test - n_val
    if n_train <= 0:
        raise DataError(
            f"Holding out the last {n_test} rows for testing and {n_val} for validation leaves none of the "
            f"{n} rows to train on.",
            hint="Use a smaller data.test_split or validation_split, or a longer series.",
        )
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n)}


def _typical_step(times: Optional[np.ndarray], frequency: Optional[str]) -> Optional[float]:
    """The step between rows a forecast's time stamp is counted in: the frequency, else the most
    common difference between consecutive rows."""
    if times is None:
        return None
    if frequency is not None:
        return float(parse_frequency(frequency))
    if len(times) < 2:
        return None
    steps, counts = np.unique(np.diff(times), return_counts=True)
    return float(steps[np.argmax(counts)])


@dataclass
class _Part:
    name: str
    series: Series
    start: int
    end: int


@dataclass
class _Fitted:
    state: dict
    parts: list[_Part]  # train, val, test: rows of a Series each


def _class_index(labels: np.ndarray, class_names: list[str], series: Series, target: str) -> np.ndarray:
    index = {c: i for i, c in enumerate(class_names)}
    out = np.full(len(labels), -1, dtype=np.int64)
    for row, label in enumerate(labels):
        if label is None:
            continue
        if label not in index:
            raise DataError(
                f"{series.where(row, target)}: the label {label!r} is not one of the classes seen in the training "
                f"rows: {', '.join(class_names[:20])}{', ...' if len(class_names) > 20 else ''}.",
                hint="A classifier only knows the classes of its training rows; give it a longer training part.",
            )
        out[row] = index[label]
    return out


def _fit(config: TimeseriesData, state: Optional[dict]) -> _Fitted:
    if state is not None:
        check_state(state, KIND)
    path = config.train_path or config.path
    if path is None:
        raise ConfigError("data.path: the timeseries dataset needs the file of the series.", key="data.path")
    delimiter = state["delimiter"] if state is not None else _delimiter(config.delimiter)
    time_columns = [config.time_column] if config.time_column else []
    table = read_table(path, delimiter, time_columns)
    if state is None:
        layout = _layout(config, table)
    else:
        layout = Layout.from_state(state)
        check_columns(table, layout.numeric + time_columns, "features")
        check_same_rows(table, state)
    series = read_series(table, layout)
    if layout.missing == "error":
        problem = missing_cell_error(series, layout)
        if problem is not None:
            raise problem
    ranges = _split_rows(series.n, config, bool(config.test_path))
    parts = [_Part(name, series, *ranges[name]) for name in ("train", "val", "test")]
    if config.test_path:
        test_table = read_table(config.test_path, table.delimiter, time_columns)
        wanted = layout.numeric + time_columns + list(layout.targets)
        check_columns(test_table, wanted, "test_path", " (a column of the training file)")
        test_series = read_series(test_table, layout)
        if layout.missing == "error":
            problem = missing_cell_error(test_series, layout)
            if problem is not None:
                raise problem
        parts[2] = _Part("test", test_series, 0, test_series.n)
    if state is None:
        state = _fit_state(config, layout, table, series, parts)
    return _Fitted(state, parts)


def _fit_state(config: TimeseriesData, layout: Layout, table: RawTable, series: Series, parts: list[_Part]) -> dict:
    train = parts[0]
    rows = slice(train.start, train.end)
    train_values = fill_missing(series.values[rows], series.missing[rows], layout.missing)
    specs = {
        name: _scaling(train_values[:, j], name, config.normalize, table.source)
        for j, name in enumerate(series.columns)
    }
    class_names = None
    task = "regression"
    if layout.classify:
        labels = [label for label in series.labels[rows] if label is not None]  # type: ignore[index]
        numeric = all(_is_number(label) for label in labels)
        class_names = sorted(set(labels), key=float if numeric else natural_key)
        if len(class_names) < 2:
            raise DataError(
                f"{table.source}: the target column {layout.targets[0]!r} has a single value in the training rows, "
                f"{class_names[0] if class_names else 'none'!r}; a classifier needs at least two classes."
            )
        if config.task == "binary" and len(class_names) != 2:
            raise DataError(
                f"data.task: binary needs two classes, and {layout.targets[0]!r} has {len(class_names)} in the "
                "training rows.",
                hint="Use task: multiclass (or auto).",
            )
        task = "binary" if len(class_names) == 2 else "multiclass"
    window = layout.window
    state: dict[str, Any] = {
        "kind": KIND,
        "version": STATE_VERSION,
        "delimiter": table.delimiter,
        "time_column": layout.time_column,
        "time_kind": series.time_kind,
        "frequency": layout.frequency,
        "step": _typical_step(series.times[rows] if series.times is not None else None, layout.frequency),
        "window": window.as_json(),
        "normalize": config.normalize,
        "missing": layout.missing,
        "features": [specs[name] for name in layout.features],
        "time_features": list(layout.time_features),
        "target": list(layout.targets),
        "task": task,
        "class_names": class_names,
    }
    state["input_names"] = list(layout.features) + time_feature_names(layout.time_features)
    if task == "regression":
        names, shift, scale = [], [], []
        for target in layout.targets:
            mean, divisor = shift_and_divisor(specs[target])
            for h in window.horizons:
                names.append(target if len(window.horizons) == 1 else f"{target}+{h}")
                shift.append(mean)
                scale.append(divisor)
        state["targets"] = [specs[t] for t in layout.targets]
        state["output_names"] = names
        state["output_scaling"] = {"shift": shift, "scale": scale}
    else:
        state["output_names"] = list(class_names or [])
    state["split"] = {
        "file_rows": table.n_rows,
        "rows": {p.name: p.end - p.start for p in parts},
        "windows": {p.name: len(window_starts(p.end - p.start, window)) for p in parts},
        "first_time": {p.name: p.series.time(p.start) for p in parts if p.end > p.start},
        "test_file": config.test_path,
    }
    if series.n != table.n_rows:
        state["split"]["inserted_rows"] = series.n - table.n_rows
    return state


def _is_number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


def info_from_state(state: dict) -> DataInfo:
    window = state["window"]
    shape = (window["length"], len(state["input_names"]))
    task = state["task"]
    if task in ("binary", "multiclass"):
        names = tuple(state["class_names"])
        return DataInfo(input_shape=shape, task=task, num_classes=len(names), class_names=names)
    outputs = tuple(state["output_names"])
    return DataInfo(input_shape=shape, task="regression", num_classes=len(outputs), class_names=outputs)


def _info(config: TimeseriesData, seed: int, state: Optional[dict]) -> DataInfo:
    if state is not None:
        return info_from_state(check_state(state, KIND))
    return info_from_state(_fit(config, None).state)


# ----------------------------------------------------------------------------- the dataset


def scaled_inputs(state: dict, values: np.ndarray, times: Optional[np.ndarray]) -> np.ndarray:
    """(rows, inputs) float32: the features scaled with the saved statistics, then the calendar
    features. `values` holds the features (the first columns of a Series' values)."""
    specs = state["features"]
    out = np.empty((len(values), len(state["input_names"])), dtype=np.float32)
    for j, spec in enumerate(specs):
        shift, divisor = shift_and_divisor(spec)
        out[:, j] = (values[:, j] - shift) / divisor
    if state["time_features"]:
        assert times is not None  # the layout requires a time column for them
        out[:, len(specs) :] = time_feature_columns(times, state["time_features"])
    return out


def _targets_scaled(state: dict, raw: np.ndarray) -> np.ndarray:
    """(rows, targets): each numeric target (a column of raw) scaled as its output is."""
    out = np.empty(raw.shape, dtype=np.float64)
    for j, spec in enumerate(state["targets"]):
        shift, divisor = shift_and_divisor(spec)
        out[:, j] = (raw[:, j] - shift) / divisor
    return out


@dataclass
class _PartWindows:
    x: Optional[WindowedSeries]
    y: Any
    starts: np.ndarray
    dropped: int  # windows left out for missing cells


def _window_part(state: dict, part: _Part, layout: Layout, limit: Optional[int] = None) -> _PartWindows:
    import torch

    window = layout.window
    series = part.series
    rows = slice(part.start, part.end)
    values = series.values[rows]
    missing = series.missing[rows]
    filled = fill_missing(values, missing, layout.missing)
    starts = window_starts(part.end - part.start, window)
    targets = target_rows(starts, window)
    keep = np.ones(len(starts), dtype=bool)
    if layout.missing == "drop_windows":
        keep &= ~windows_touching(missing.any(axis=1), starts, window)
    if layout.classify:
        labels = series.labels[rows]  # type: ignore[index]
        keep &= ~_unknown(labels[targets[:, 0]])
    else:
        target_columns = [series.columns.index(t) for t in layout.targets]
        keep &= ~missing[:, target_columns][targets].any(axis=(1, 2))
    dropped = int((~keep).sum())
    starts, targets = starts[keep], targets[keep]
    if limit is not None:
        starts, targets = starts[:limit], targets[:limit]
    features = np.nan_to_num(filled[:, : len(layout.features)], nan=0.0)  # cells no kept window reads
    times = series.times[rows] if series.times is not None else None
    stored = torch.from_numpy(scaled_inputs(state, features, times))
    persistence: Optional[Persistence] = None
    if layout.classify:
        y = torch.from_numpy(_class_index(labels[targets[:, 0]], state["class_names"], series, layout.targets[0]))
    else:
        target_columns = [series.columns.index(t) for t in layout.targets]
        raw = np.nan_to_num(filled, nan=0.0)[:, target_columns]
        scaled = _targets_scaled(state, raw)
        last = starts + (window.length - 1) * window.sampling_rate

        def outputs(values: np.ndarray) -> np.ndarray:
            """(windows, targets x horizons), target-major as output_names."""
            picked = values[targets[:, None, :], np.arange(values.shape[1])[None, :, None]]
            return picked.reshape(len(starts), values.shape[1] * targets.shape[1])  # no window left: (0, width)

        y = torch.from_numpy(outputs(scaled).astype(np.float32))
        persistence = Persistence(np.repeat(raw[last], len(window.horizons), axis=1), outputs(raw))
    x = WindowedSeries(
        stored, torch.from_numpy(starts), torch.from_numpy(window_offsets(window)), persistence=persistence
    )
    return _PartWindows(x, y, starts, dropped)


def _too_few_rows(part: _Part, window: Window, config: TimeseriesData) -> DataError:
    rows = part.end - part.start
    where = PART_NAMES[part.name]
    fix = {
        "train": "smaller data.test_split and data.validation_split",
        "val": "a larger data.validation_split",
        "test": "a larger data.test_split",
    }[part.name]
    if part.name == "test" and config.test_path:
        fix = "a longer test file"
    if rows < window.span:
        return DataError(
            f"The window (length {window.length}"
            + (f", sampling_rate {window.sampling_rate}" if window.sampling_rate > 1 else "")
            + f": {window.span} rows) is longer than the {where} part of the series ({rows} rows).",
            hint=f"Use a shorter data.window, or {fix}.",
        )
    return DataError(
        f"The {where} part of the series ({rows} rows) holds no window with its target: a window spans "
        f"{window.span} rows and its target lies {max(window.horizons)} rows after its last, and, as Keras's "
        f"timeseries_dataset_from_array(data[:-delay], targets=target[delay:]) counts them, a part needs at least "
        f"{window.rows_needed()} rows for one window.",
        hint=f"Use a smaller data.window.horizon or length, or {fix}.",
    )


def _load(config: TimeseriesData, seed: int, state: Optional[dict], progress: Optional[ProgressFn]) -> Dataset:
    fitted = _fit(config, state)
    state = fitted.state
    layout = Layout.from_state(state)
    windows: dict[str, _PartWindows] = {}
    notes: list[str] = []
    used = [part for part in fitted.parts if part.end > part.start]
    for part in sorted(used, key=lambda p: p.end - p.start >= layout.window.span):  # too short first
        if len(window_starts(part.end - part.start, layout.window)) == 0:
            raise _too_few_rows(part, layout.window, config)
    for part in used:
        limit = config.max_train_samples if part.name == "train" else None
        windows[part.name] = made = _window_part(state, part, layout, limit)
        if made.dropped:
            notes.append(
                f"{made.dropped} {PART_NAMES[part.name]} window{'s' if made.dropped != 1 else ''} touching a missing "
                f"cell left out (data.missing: {layout.missing}"
                + ("; a missing target is never filled in" if layout.missing != "drop_windows" else "")
                + ")."
            )
        if len(made.starts) == 0:
            raise DataError(
                f"Every window of the {PART_NAMES[part.name]} part touches a missing cell, so none is left.",
                hint="Use data.missing: interpolate or ffill to fill the cells instead.",
            )
    inserted = state["split"].get("inserted_rows")
    if inserted:
        notes.append(
            f"{inserted} time stamp{'s' if inserted != 1 else ''} missing from the file became rows of missing "
            f"cells (data.frequency: {layout.frequency})."
        )

    def split(name: str) -> tuple[Any, Any]:
        made = windows.get(name)
        return (made.x, made.y) if made is not None else (None, None)

    x_val, y_val = split("val")
    x_test, y_test = split("test")
    return Dataset(
        info=info_from_state(state),
        x_train=windows["train"].x,
        y_train=windows["train"].y,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        preprocessing=state,
        notes=tuple(notes),
    )


# ----------------------------------------------------------------------------- the naive baseline


def _horizon_words(horizons: Sequence[int]) -> str:
    words = [str(h) for h in horizons]
    listed = words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]
    return f"{listed} row{'s' if horizons[-1] != 1 else ''}"


def baseline_results(x: Any, state: Optional[dict], model_mae: Optional[float], prefix: str = "") -> dict:
    """{prefix}persistence_mae (on the windows of x, in the targets' units), the model's MAE over
    it, and a sentence (`baseline`) that says plainly whether the model beats the naive forecast;
    {} where there is none (a classifier)."""
    if not isinstance(x, WindowedSeries) or x.persistence is None or len(x) == 0 or state is None:
        return {}
    if model_mae is None:
        return {}
    naive = x.persistence.mae()
    target = " and ".join(state["target"])
    rule = (
        f"the persistence forecast ({target} {_horizon_words(state['window']['horizon'])} after a window equals its "
        "value at the window's last row)"
    )
    ratio = model_mae / naive if naive > 0 else None
    if naive > 0 and model_mae < naive:
        sentence = (
            f"The model beats {rule}: its MAE {model_mae:.4g} is {ratio:.3f} times the persistence forecast's "
            f"{naive:.4g} on the same windows."
        )
    else:
        sentence = (
            f"The model does NOT beat {rule}: its MAE {model_mae:.4g} against the persistence forecast's {naive:.4g} "
            "on the same windows. Predicting the last value would do as well; see docs/timeseries.md."
        )
    return {
        f"{prefix}persistence_mae": naive,
        f"{prefix}mae_over_persistence": ratio,
        "baseline": sentence,
    }


# ----------------------------------------------------------------------------- predict and export


@dataclass
class RecentWindows:
    """Windows of a recent file for `dlcli predict`: inputs, their names, true values where the
    file holds them, and the time stamp columns."""

    names: list[str]
    x: Any  # tensor (windows, length, inputs), scaled as in training
    labels: Any  # tensor of true targets (units, or class indices), a list with None where unknown, or None
    columns: dict[str, list]  # extra output columns, in order


def read_recent(state: dict, path: Path, all_windows: bool = False) -> RecentWindows:
    """The last window of a file (every window with all_windows), read as training read its rows."""
    import torch

    check_state(state, KIND)
    layout = Layout.from_state(state)
    window = layout.window
    series, with_targets, source = _recent_series(state, layout, path)
    feature_count = len(layout.features)
    feature_missing = series.missing[:, :feature_count]
    if layout.missing == "error" and feature_missing.any():
        row, col = divmod(int(np.flatnonzero(feature_missing.ravel())[0]), feature_count)
        raise DataError(
            f"{series.where(row, layout.features[col])}: the cell is empty (or a missing-value marker such as NA), "
            "and this run was trained with data.missing: error.",
            hint="Fill it in; the run's missing policy is error.",
        )
    last_start = series.n - window.span
    if all_windows:
        starts = np.arange(last_start % window.stride, last_start + 1, window.stride, dtype=np.int64)
    else:
        starts = np.array([last_start], dtype=np.int64)
    if layout.missing == "drop_windows":
        starts = starts[~windows_touching(feature_missing.any(axis=1), starts, window)]
        if not len(starts):
            raise DataError(
                f"{source}: every window touches a missing cell, and this run was trained with "
                "data.missing: drop_windows.",
                hint="Fill the cells of the last rows in.",
            )
    filled = fill_missing(series.values[:, :feature_count], feature_missing, layout.missing)
    inputs = scaled_inputs(state, np.nan_to_num(filled, nan=0.0), series.times)
    gathered = inputs[starts[:, None] + window_offsets(window)[None, :]]
    lasts = starts + (window.length - 1) * window.sampling_rate
    rows = lasts[:, None] + np.asarray(window.horizons, dtype=np.int64)[None, :]
    names = [f"{Path(path).name}:{series.line(int(s))}-{series.line(int(e))}" for s, e in zip(starts, lasts)]
    columns = _time_columns(state, series, window, lasts, rows) if series.times is not None else {}
    labels = _recent_labels(state, layout, series, rows) if with_targets else None
    return RecentWindows(names, torch.from_numpy(np.ascontiguousarray(gathered)), labels, columns)


def _recent_series(state: dict, layout: Layout, path: Path) -> tuple[Series, bool, str]:
    """(the file's rows, whether it holds the targets, its name): the columns the model reads
    and at least one window's rows, or a DataError saying what is missing."""
    from ..registry import suggest

    window = layout.window
    time_columns = [layout.time_column] if layout.time_column else []
    table = read_table(path, state["delimiter"], time_columns)
    needed = list(layout.features) + time_columns
    absent = [c for c in needed if c not in table.columns]
    if absent:
        hint = suggest(absent[0], [c for c in table.header if c not in needed])
        raise DataError(
            f"{table.source} lacks the column{'s' if len(absent) > 1 else ''} {', '.join(repr(c) for c in absent)} "
            f"that the model reads; it needs: {', '.join(needed)}.",
            hint=(f"{hint} " if hint else "") + "Give the same columns as the training file (extra ones are ignored).",
        )
    with_targets = all(t in table.columns for t in layout.targets)
    series = read_series(table, layout, with_targets=with_targets)
    if series.n < window.span:
        raise DataError(
            f"{table.source} has {series.n} row{'s' if series.n != 1 else ''}, and one window needs {window.span} "
            f"(data.window length {window.length}"
            + (f", sampling_rate {window.sampling_rate}" if window.sampling_rate > 1 else "")
            + ").",
            hint=f"Give at least the last {window.span} rows of the series.",
        )
    return series, with_targets, table.source


def _time_columns(state: dict, series: Series, window: Window, lasts: np.ndarray, rows: np.ndarray) -> dict[str, list]:
    """last_time and forecast_time (one per horizon) for each window; a forecast past the file's
    last row is placed by the run's frequency, else left empty."""
    assert series.times is not None
    step = state.get("step")
    whole_days = series.time_kind == "datetime" and bool(np.all(series.times % 86400 == 0))
    if step is not None and series.time_kind == "datetime":
        whole_days = whole_days and step % 86400 == 0
    columns = {"last_time": [time_text(series.times[e], series.time_kind, whole_days) for e in lasts]}
    for j, h in enumerate(window.horizons):
        key = "forecast_time" if len(window.horizons) == 1 else f"forecast_time+{h}"
        stamps = []
        for target_row in rows[:, j]:
            if target_row < series.n:
                stamps.append(time_text(series.times[target_row], series.time_kind, whole_days))
            elif step is not None:
                moment = series.times[-1] + (target_row - (series.n - 1)) * step
                stamps.append(time_text(moment, series.time_kind, whole_days))
            else:
                stamps.append("")
        columns[key] = stamps
    return columns


def _recent_labels(state: dict, layout: Layout, series: Series, rows: np.ndarray) -> Any:
    """The true values of each window's targets where the file holds them: a tensor when all are
    known, a list with None where one is not, or None when none is."""
    import torch

    known: list[Any] = []
    for window_rows in rows:
        inside = window_rows < series.n
        if not inside.all():
            known.append(None)
        elif layout.classify:
            label = series.labels[window_rows[0]]  # type: ignore[index]
            classes = state["class_names"]
            known.append(torch.tensor(classes.index(label)) if label in classes else None)
        else:
            cols = [series.columns.index(t) for t in layout.targets]
            cells = series.values[window_rows][:, cols]  # (horizons, targets)
            if series.missing[window_rows][:, cols].any():
                known.append(None)
            else:
                known.append(torch.from_numpy(cells.T.reshape(-1).astype(np.float32)))
    if not any(k is not None for k in known):
        return None
    return torch.stack(known) if all(k is not None for k in known) else known


def export_inputs(state: dict) -> dict[str, Any]:
    """What an exported model takes and does with it: the raw window of the input columns, the
    scaling (inside the graph) and the outputs' return to the targets' units."""
    check_state(state, KIND)
    shift, scale = [], []
    for spec in state["features"]:
        mean, divisor = shift_and_divisor(spec)
        shift.append(mean)
        scale.append(1.0 / divisor)
    calendar = time_feature_names(state["time_features"])
    shift += [0.0] * len(calendar)
    scale += [1.0] * len(calendar)
    window = state["window"]
    outside = (
        f"One float32 window per sample: the last {window['length']} rows"
        + (f" (every {window['sampling_rate']}th)" if window["sampling_rate"] > 1 else "")
        + " of the series, oldest first, one column per entry of input_names: the feature columns as their raw "
        "values (scaling is inside the graph)"
        + (
            ", then the calendar features computed from the time column: for each of "
            + ", ".join(state["time_features"])
            + " the sine and cosine of 2 pi times its fraction of the cycle (hour: of the day; day_of_week: of the "
            "week, Monday 00:00 = 0; day_of_year: of the calendar year, 1 January 00:00 = 0)"
            if calendar
            else ""
        )
        + "."
    )
    if state["missing"] != "error":
        outside += f" Fill missing cells first as data.missing: {state['missing']} does."
    extra: dict[str, Any] = {
        "input_names": list(state["input_names"]),
        "window": dict(window),
        "time_column": state["time_column"],
        "output_names": list(state["output_names"]),
    }
    output = state.get("output_scaling")
    return {
        "shift": shift,
        "scale": scale,
        "outside": outside,
        "extra": extra,
        "output_shift": list(output["shift"]) if output else None,
        "output_scale": list(output["scale"]) if output else None,
    }


def describe_columns(state: dict) -> str:
    """columns.txt: each input and what was fitted, the window, the targets."""
    window = state["window"]
    lines = [
        f"# {len(state['input_names'])} inputs per row, windows of {window['length']} rows (horizon "
        f"{', '.join(str(h) for h in window['horizon'])}, stride {window['stride']}, sampling_rate "
        f"{window['sampling_rate']}); normalize: {state['normalize']}, missing: {state['missing']}"
    ]
    for spec in state["features"] + state.get("targets", []):
        text = spec["name"] + (": feature" if spec in state["features"] else ": target")
        if "mean" in spec:
            text += f", mean {spec['mean']:.6g}, std {spec['std']:.6g}"
        if "min" in spec:
            text += f", min {spec['min']:.6g}, max {spec['max']:.6g}"
        lines.append(text)
    for name in time_feature_names(state["time_features"]):
        lines.append(f"{name}: calendar feature from {state['time_column']!r}")
    lines.append(
        f"# target: {', '.join(state['target'])} ({state['task']}); outputs: {', '.join(state['output_names'])}"
    )
    return "\n".join(lines) + "\n"


def _read_inputs(request: ReadRequest) -> Inputs:
    """.csv files of the series' recent rows; the last window of each (every window with
    --all-windows), with its time stamps and, where the file holds them, the true values."""
    import torch

    state = request.saved_state(KIND)
    names: list[str] = []
    xs: list = []
    labels: list = []
    columns: dict[str, list] = {}
    for path in expand_paths(request.inputs, TABLE_SUFFIXES):
        recent = read_recent(state, path, request.options.all_windows)
        names += recent.names
        xs.append(recent.x)
        labels.append(recent.labels)
        for column, values in recent.columns.items():
            columns.setdefault(column, []).extend(values)
    if not xs:
        return Inputs([], None)
    if all(isinstance(y, torch.Tensor) for y in labels):
        known: Any = torch.cat(labels)
    elif all(y is None for y in labels):
        known = None
    else:
        known = [item for y, x in zip(labels, xs) for item in (list(y) if y is not None else [None] * len(x))]
    return Inputs(names, torch.cat(xs), known, columns={c: v for c, v in columns.items() if len(v) == len(names)})


def _input_spec(config: TimeseriesData, info: DataInfo, state: Optional[dict]) -> InputSpec:
    return InputSpec("float32", **export_inputs(check_state(state, KIND)))


DATASETS.add(
    KIND,
    DatasetSource(
        config=TimeseriesData,
        info=_info,
        load=_load,
        read_inputs=_read_inputs,
        input_spec=_input_spec,
        state_files=lambda state: {"columns.txt": describe_columns(state)},
        fits_preprocessing=True,
        baseline=baseline_results,
    ),
)
