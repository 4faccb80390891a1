"""`data.dataset: csv`: a table with a header row, its columns typed, scaled and one-hot encoded.

Reading. The separator is `data.delimiter` or the most frequent of `, ; tab |` in the header.
A file is read by pyarrow's multi-threaded CSV reader when pyarrow is installed, else by
NumPy's C `loadtxt` when every cell is a number, else (and to explain any problem with exact
line numbers) by the standard library's csv module; all three give the same table. UTF-8,
with or without a byte-order mark; quoted fields may hold the separator.

Fitting (training split only). Columns are numeric (every cell a number), boolean (true/
false, yes/no, ...) or categorical (anything else), unless `data.column_types` says so.
Numeric columns are standardised (`normalize`), categorical columns become one-hot with a
last "unknown" slot for values never seen in training. The task comes from the target:
text or up to MAX_INTEGER_CLASSES distinct integers -> classes (two -> binary), other
numbers -> regression; several 0/1 target columns -> multilabel. Class names are the label
texts in natural order, saved with the rest in the preprocessing state.

`encode_table(state, path_or_rows)` turns any table into model inputs with a saved state:
training, evaluation and prediction all use it.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Iterable, Literal, Mapping, Optional, Sequence, Union

import numpy as np

from ..config import DataConfig, option
from ..errors import ConfigError, DataError
from ..registry import DATASETS
from .dataset import DataInfo, Dataset, DatasetSource, ProgressFn
from .folders import natural_key
from .inputs import TABLE_SUFFIXES, Inputs, InputSpec, ReadRequest, expand_paths
from .preprocessing import STATE_VERSION, check_state
from .splits import split_samples

ColumnType = Literal["numeric", "categorical", "boolean", "ignore"]


@dataclass(frozen=True, kw_only=True)
class TableData(DataConfig):
    """The keys of users' tables (csv and timeseries share them, each meaning one thing)."""

    path: Optional[str] = option(None, help="the table, split by dlcli (or train_path with test_path)")
    train_path: Optional[str] = option(None, help="the training file, with test_path (instead of path)")
    test_path: Optional[str] = option(None, help="a separate test file")
    target: Union[str, tuple[str, ...], None] = option(
        None, help="the target column, or a list of columns (multilabel or several regression outputs)"
    )
    features: Optional[tuple[str, ...]] = option(
        None, help="the input columns (csv default: every other column; timeseries: every numeric one)"
    )
    task: Literal["auto", "multiclass", "binary", "multilabel", "regression"] = option(
        "auto", help="the task (auto: inferred from the target)"
    )
    normalize: Literal["standard", "minmax", "none"] = option(
        "standard", help="numeric columns scaled with the training split's mean/std (standard) or min/max"
    )
    missing: Literal["error", "mean", "zero", "drop_rows", "interpolate", "ffill", "drop_windows"] = option(
        "error",
        help="empty cells: an error; csv: filled with the training mean or zero, or their rows dropped; "
        "timeseries: interpolated, carried forward (ffill), or the windows touching them dropped",
    )
    delimiter: Optional[str] = option(None, help="the field separator (default: found in the header: , ; tab or |)")

    # Each kind's values of `missing` (one key, one meaning: what to do with an empty cell).
    MISSING_POLICIES: ClassVar[dict[str, tuple[str, ...]]] = {
        "csv": ("error", "mean", "zero", "drop_rows"),
        "timeseries": ("error", "interpolate", "ffill", "drop_windows"),
    }
    MISSING_HINT: ClassVar[str] = ""
    EXAMPLE_PATH: ClassVar[str] = ""
    EXAMPLE_TARGET: ClassVar[str] = ""

    def check(self) -> None:
        super().check()
        fitting = self.MISSING_POLICIES[self.dataset]
        if self.missing not in fitting:
            owner = next(kind for kind, values in self.MISSING_POLICIES.items() if self.missing in values)
            raise ConfigError(
                f"{self.missing} is a policy for {owner} data; for {self.dataset} data the policies that fit are: "
                f"{', '.join(fitting)}.",
                hint=self.MISSING_HINT,
                key="data.missing",
            )
        if not self.path and not self.train_path:
            raise ConfigError(
                f"the {self.dataset} dataset needs `path:` (one file) or `train_path:` (with an optional `test_path:`).",
                hint=f"For example `path: {self.EXAMPLE_PATH}`.",
                key="data.path",
            )
        if self.path and (self.train_path or self.test_path):
            raise ConfigError(
                "give either `path:` (one file, split by dlcli) or `train_path:` and `test_path:`, not both.",
                key="data.train_path" if self.train_path else "data.test_path",
            )
        if self.test_path and not self.train_path:
            raise ConfigError("`test_path:` goes with `train_path:` (the training file).", key="data.test_path")
        if self.target is None:
            raise ConfigError(
                f"the {self.dataset} dataset needs `target:`, the column to predict.",
                hint=f"For example `target: {self.EXAMPLE_TARGET}`, or a list of columns for several outputs.",
                key="data.target",
            )
        if self.test_path and self.test_split:
            raise ConfigError("give test_path or test_split, not both.", key="data.test_split")


@dataclass(frozen=True, kw_only=True)
class CsvData(TableData):
    """csv: one row per sample; numeric, boolean and categorical columns, found or given."""

    column_types: Optional[dict[str, ColumnType]] = option(
        None, help="per-column type overrides: numeric, categorical, boolean or ignore"
    )

    MISSING_HINT: ClassVar[str] = "mean or zero fill a cell, drop_rows leaves its row out."
    EXAMPLE_PATH: ClassVar[str] = "examples/tabular/iris.csv"
    EXAMPLE_TARGET: ClassVar[str] = "species"


if TYPE_CHECKING:
    import numpy.typing as npt

MISSING_MARKERS = frozenset({"", "na", "n/a", "nan", "null", "none", "?", "#n/a"})
TRUE_WORDS = frozenset({"true", "yes", "y", "t"})
FALSE_WORDS = frozenset({"false", "no", "n", "f"})
MAX_INTEGER_CLASSES = 20  # integer targets with at most this many values are classes
DELIMITERS = (",", ";", "\t", "|")
UNKNOWN = "<unknown>"
ENGINES = ("auto", "pyarrow", "numpy", "python")


# ----------------------------------------------------------------------------- reading


@dataclass
class RawColumn:
    """One column as read: numbers where cells are numbers, texts where they are needed."""

    values: np.ndarray  # float64: each cell's number; NaN where the cell is missing or not a number
    missing: np.ndarray  # bool: empty, or a missing-value marker (NA, NaN, null, None, ?)
    texts: Optional[np.ndarray]  # object array of stripped cell texts; None when every cell is a number or missing

    def text(self, row: int) -> str:
        if self.texts is not None:
            return self.texts[row]
        return "" if self.missing[row] else number_text(self.values[row])

    def label(self, row: int) -> str:
        """A cell as a class label: numbers in one canonical form, so `1` and `1.0` agree."""
        if not self.missing[row] and not math.isnan(self.values[row]):
            return number_text(self.values[row])
        return self.text(row)


@dataclass
class RawTable:
    """A whole table as read from one file (or from rows given in memory)."""

    source: str  # the file, or "the rows given"
    header: list[str]
    columns: dict[str, RawColumn]
    n_rows: int
    delimiter: str = ","
    path: Optional[Path] = None
    _lines: Optional[np.ndarray] = None  # file line of each row, computed when a message needs it
    decimal_comma_columns: tuple[str, ...] = ()  # read as numbers written with a decimal comma

    def line(self, row: int) -> int:
        if self._lines is None:
            self._lines = _row_lines(self.path, self.delimiter) if self.path else np.arange(1, self.n_rows + 1)
        return int(self._lines[row])

    def where(self, row: int, column: Optional[str] = None) -> str:
        place = f"{self.source}, line {self.line(row)}" if self.path else f"{self.source}, row {row + 1}"
        return f"{place}, column {column!r}" if column is not None else place


def number_text(value: float) -> str:
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(float(value))


def _column_from_texts(cells: Sequence[str], keep_texts: bool) -> RawColumn:
    texts = np.array([c.strip() for c in cells], dtype=object)
    n = len(texts)
    missing = np.fromiter((t.lower() in MISSING_MARKERS for t in texts), dtype=bool, count=n)
    values = np.full(n, np.nan)
    present = ~missing
    all_numbers = True
    try:
        values[present] = np.array(texts[present].tolist(), dtype=np.float64)
    except (ValueError, TypeError):
        all_numbers = False
        for i in np.flatnonzero(present):
            try:
                values[i] = float(texts[i])
            except ValueError:
                pass
    return RawColumn(values, missing, None if all_numbers and not keep_texts else texts)


def _column_from_numbers(values: np.ndarray) -> RawColumn:
    values = np.asarray(values, dtype=np.float64)
    return RawColumn(values, np.isnan(values), None)


def _sniff_delimiter(header_line: str) -> str:
    counts = {d: 0 for d in DELIMITERS}
    quoted = False
    for ch in header_line:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(DELIMITERS, key=lambda d: counts[d])
    return best if counts[best] else ","


def _delimiter(config_delimiter: Optional[str]) -> Optional[str]:
    if config_delimiter is None:
        return None
    named = {"tab": "\t", "\\t": "\t", "comma": ",", "semicolon": ";", "pipe": "|"}
    value = named.get(config_delimiter.lower(), config_delimiter)
    if len(value) != 1:
        raise ConfigError(
            f"data.delimiter: expected one character (or tab), found {config_delimiter!r}.", key="data.delimiter"
        )
    return value


def _decode_error(path: Path, exc: UnicodeDecodeError) -> DataError:
    from .checks import binary_kind

    data = path.read_bytes()
    kind = binary_kind(data[:16])
    if kind is not None:
        return DataError(f"{path} is {kind[0]}, not a text table.", hint=kind[1])
    start = exc.start
    try:
        data.decode("utf-8-sig")
    except UnicodeDecodeError as whole:
        start = whole.start
    line = data.count(b"\n", 0, start) + 1
    return DataError(
        f"{path}, line {line}: the file is not UTF-8 text (byte 0x{data[start]:02x} at offset {start}).",
        hint="Save it as UTF-8 (in a spreadsheet: 'CSV UTF-8').",
    )


def _read_header(path: Path, delimiter: Optional[str]) -> tuple[list[str], str]:
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            first = fh.readline()
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    except OSError as exc:
        raise DataError(f"Cannot read {path}: {exc.strerror or exc}.") from None
    if not first.strip():
        raise DataError(f"{path} is empty; a csv file needs a header row of column names and data rows.")
    delimiter = delimiter or _sniff_delimiter(first)
    header = [name.strip() for name in next(csv.reader([first], delimiter=delimiter))]
    for i, name in enumerate(header):
        if not name:
            raise DataError(
                f"{path}, line 1: column {i + 1} of the header has no name.",
                hint="Give every column a name in the first row (and no trailing separator).",
            )
    seen: set[str] = set()
    for name in header:
        if name in seen:
            raise DataError(
                f"{path}, line 1: the header names the column {name!r} twice.", hint="Column names must be unique."
            )
        seen.add(name)
    return header, delimiter


def _read_python(path: Path, header: list[str], delimiter: str, text_columns: frozenset[str]) -> RawTable:
    """The reference reader: every problem reported with its line."""
    width = len(header)
    rows: list[list[str]] = []
    lines: list[int] = []
    try:
        with open(path, encoding="utf-8-sig", newline="") as fh:
            reader = csv.reader(fh, delimiter=delimiter)
            next(reader, None)
            line = reader.line_num
            for record in reader:
                start, line = line + 1, reader.line_num
                if not record:
                    continue  # a blank line
                if len(record) != width:
                    if len(record) == 1 and not record[0].strip():
                        continue  # a line of spaces
                    raise DataError(
                        f"{path}, line {start}: {len(record)} field{'s' if len(record) != 1 else ''}, but the header "
                        f"has {width} columns.",
                        hint=f"Every row needs {width} fields; a field that contains {delimiter!r} must be in "
                        "double quotes.",
                    )
                rows.append(record)
                lines.append(start)
    except UnicodeDecodeError as exc:
        raise _decode_error(path, exc) from None
    except csv.Error as exc:
        raise DataError(f"{path}, line {line + 1}: {exc}.") from None
    cells = list(zip(*rows)) if rows else [() for _ in header]
    columns = {name: _column_from_texts(col, name in text_columns) for name, col in zip(header, cells)}
    return RawTable(str(path), header, columns, len(rows), delimiter, path, np.asarray(lines, dtype=np.int64))


def _read_pyarrow(path: Path, header: list[str], delimiter: str, text_columns: frozenset[str]) -> Optional[RawTable]:
    """pyarrow's reader, or None when it is not installed or the file needs the reference reader."""
    try:
        import pyarrow as pa
        import pyarrow.csv as pacsv
    except ImportError:
        return None

    def read(as_text: set[str]):
        return pacsv.read_csv(
            path,
            read_options=pacsv.ReadOptions(column_names=header, skip_rows=1),
            parse_options=pacsv.ParseOptions(delimiter=delimiter),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in as_text},
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                true_values=[],
                false_values=[],
                timestamp_parsers=[],
            ),
        )

    try:
        as_text = set(text_columns)
        table = read(as_text)
        other = [
            f.name
            for f in table.schema
            if not (pa.types.is_integer(f.type) or pa.types.is_floating(f.type) or pa.types.is_string(f.type))
        ]
        if other:  # dates, times, invalid UTF-8: read those columns as text
            table = read(as_text | set(other))
            if any(not pa.types.is_string(table.schema.field(n).type) for n in other):
                return None
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError, OSError):
        return None  # ragged rows, bad bytes...: the reference reader says where
    columns = {}
    for name, column in zip(header, table.columns):
        if pa.types.is_string(column.type):
            columns[name] = _column_from_texts(column.to_pylist(), name in text_columns)
        else:
            columns[name] = _column_from_numbers(column.to_numpy())
    return RawTable(str(path), header, columns, table.num_rows, delimiter, path)


def _read_numpy(path: Path, header: list[str], delimiter: str, text_columns: frozenset[str]) -> Optional[RawTable]:
    """NumPy's C reader for tables of numbers only; None when any cell is something else."""
    if text_columns:
        return None
    try:
        matrix = np.loadtxt(
            path,
            delimiter=delimiter,
            skiprows=1,
            comments=None,
            quotechar='"',
            dtype=np.float64,
            ndmin=2,
            encoding="utf-8-sig",
        )
    except (ValueError, UnicodeDecodeError):
        return None
    if matrix.shape[0] and matrix.shape[1] != len(header):
        return None
    if matrix.shape[0] == 0:
        matrix = matrix.reshape(0, len(header))
    columns = {name: _column_from_numbers(matrix[:, i].copy()) for i, name in enumerate(header)}
    return RawTable(str(path), header, columns, matrix.shape[0], delimiter, path)


_CACHE: dict[tuple, RawTable] = {}


def read_table(
    path: Union[str, Path], delimiter: Optional[str] = None, text_columns: Iterable[str] = (), engine: str = "auto"
) -> RawTable:
    """Read a csv file (header row first). text_columns keep their cell texts even when they
    hold numbers (categorical codes such as zip codes). A table read before is reused while
    the file is unchanged, so `dlcli train` reads it once for the plan and the data."""
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}")
    path = Path(path)
    if not path.is_file():
        what = "does not exist" if not path.exists() else "is not a file"
        raise DataError(f"{str(path)!r} {what}.", hint="Check data.path (or train_path / test_path).")
    stat = path.stat()
    texts = frozenset(text_columns)
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size, delimiter, texts, engine)
    if key in _CACHE:
        return _CACHE[key]
    header, delimiter = _read_header(path, delimiter)
    texts = texts & set(header)  # overrides of columns the file lacks are reported by the caller
    table = None
    if engine in ("auto", "pyarrow"):
        table = _read_pyarrow(path, header, delimiter, texts)
    if table is None and engine in ("auto", "numpy"):
        table = _read_numpy(path, header, delimiter, texts)
    if table is None:
        table = _read_python(path, header, delimiter, texts)
    if table.n_rows == 0:
        raise DataError(f"{path} has a header but no data rows.")
    if table.delimiter != ",":  # where the comma is free to be the decimal mark, as spreadsheets write it
        table = _read_decimal_commas(table, texts)
    if len(_CACHE) >= 4:
        _CACHE.pop(next(iter(_CACHE)))
    _CACHE[key] = table
    return table


_DECIMAL_COMMA = re.compile(r"^[+-]?(\d+,\d*|\d*,\d+)$")
_INTEGER = re.compile(r"^[+-]?\d+$")


def _read_decimal_commas(table: RawTable, text_columns: frozenset[str]) -> RawTable:
    """Columns whose every cell is a number written with a decimal comma (5,1) or a whole
    number, read as numbers: what spreadsheets write in many locales, and otherwise taken for
    categories. Columns that column_types names categorical or boolean keep their texts."""
    converted = []
    for name, column in table.columns.items():
        if column.texts is None or name in text_columns:
            continue
        present = column.texts[~column.missing]
        if not len(present) or not all(_DECIMAL_COMMA.match(t) or _INTEGER.match(t) for t in present):
            continue
        if not any("," in t for t in present):
            continue
        table.columns[name] = _column_from_texts([t.replace(",", ".") for t in column.texts], keep_texts=False)
        converted.append(name)
    if converted:
        table.decimal_comma_columns = tuple(converted)
    return table


def _row_lines(path: Path, delimiter: str) -> np.ndarray:
    """The file line where each data row starts (blank lines skipped, quoted newlines counted)."""
    lines = []
    with open(path, encoding="utf-8-sig", newline="", errors="replace") as fh:
        reader = csv.reader(fh, delimiter=delimiter)
        next(reader, None)
        line = reader.line_num
        for record in reader:
            start, line = line + 1, reader.line_num
            if record and not (len(record) == 1 and not record[0].strip()):
                lines.append(start)
    return np.asarray(lines, dtype=np.int64)


def table_from_rows(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[str], text_columns: Iterable[str] = ()
) -> RawTable:
    """A table from in-memory rows (dicts of column -> value), as `dlcli predict` gets them."""
    texts = set(text_columns)
    raw: dict[str, RawColumn] = {}
    for name in columns:
        cells = []
        for i, row in enumerate(rows):
            if name not in row:
                raise DataError(
                    f"Row {i + 1} has no value for the column {name!r}.",
                    hint="Every row needs every input column the model was trained on.",
                )
            value = row[name]
            cells.append(
                ""
                if value is None
                else value
                if isinstance(value, str)
                else repr(value)
                if isinstance(value, float)
                else str(value)
            )
        raw[name] = _column_from_texts(cells, name in texts)
    return RawTable("the rows given", list(columns), raw, len(rows))


# ----------------------------------------------------------------------------- fitting


def _targets(config: CsvData) -> list[str]:
    target = config.target
    if target is None:
        raise ConfigError("data.target: the csv dataset needs the column to predict.", key="data.target")
    return [target] if isinstance(target, str) else list(target)


def check_same_rows(table: RawTable, state: dict) -> None:
    """A DataError when the file has another number of rows than when the run was trained:
    the splits, drawn from the row count, would differ."""
    saved = state.get("split", {})
    if saved.get("file_rows") not in (None, table.n_rows):
        raise DataError(
            f"{table.source} has {table.n_rows} rows, but had {saved['file_rows']} when this run was trained; "
            "its splits would differ.",
            hint="Use the file the run was trained on.",
        )


def check_columns(table: RawTable, names: Iterable[str], key: str, what: str = "") -> None:
    """A DataError naming `data.<key>`, the first column the table lacks (with `what` after it)
    and the nearest of its columns."""
    from ..registry import suggest

    for name in names:
        if name not in table.columns:
            hint = suggest(name, table.header)
            raise DataError(
                f"data.{key}: {table.source} has no column {name!r}{what}; its columns are: {', '.join(table.header)}.",
                hint=hint or None,
            )


def _feature_names(config: CsvData, table: RawTable, targets: list[str]) -> list[str]:
    overrides = config.column_types or {}
    check_columns(table, overrides, "column_types")
    check_columns(table, targets, "target")
    if config.features is not None:
        check_columns(table, config.features, "features")
        both = [f for f in config.features if f in targets]
        if both:
            raise DataError(f"data.features: {both[0]!r} is the target; a column cannot be both.")
        features = list(config.features)
    else:
        features = [c for c in table.header if c not in targets]
    features = [f for f in features if overrides.get(f) != "ignore"]
    if not features:
        raise DataError(
            f"{table.source}: no input columns are left besides the target.",
            hint="List the inputs in data.features, or drop `ignore` from data.column_types.",
        )
    return features


def _first_row(mask: npt.ArrayLike) -> int:
    return int(np.flatnonzero(mask)[0])


def _usable_rows(table: RawTable, features: list[str], targets: list[str], policy: str) -> np.ndarray:
    """Row indices to use: all, or (drop_rows) those without missing cells; missing cells
    under `error`, and missing targets under `mean`/`zero`, raise naming the first."""
    used = [c for c in features + targets if c in table.columns]
    if not used:
        return np.arange(table.n_rows)
    missing = np.stack([table.columns[c].missing for c in used], axis=1)
    if policy == "drop_rows":
        rows = np.flatnonzero(~missing.any(axis=1))
        if len(rows) == 0:
            raise DataError(f"{table.source}: every row has a missing cell, so data.missing: drop_rows leaves none.")
        return rows
    if policy == "error":
        flat = np.flatnonzero(missing.ravel())
        if len(flat):
            row, col = divmod(int(flat[0]), len(used))
            count = int(missing.sum())
            raise DataError(
                f"{table.where(row, used[col])}: the cell is empty (or a missing-value marker such as NA); "
                f"{count} cell{'s are' if count != 1 else ' is'} missing in all.",
                hint="Fill it in, or set data.missing to mean (fill with the training mean), zero, or drop_rows.",
            )
    target_cols = [i for i, c in enumerate(used) if c in targets]
    target_missing = missing[:, target_cols].any(axis=1) if target_cols else np.zeros(table.n_rows, bool)
    if target_missing.any():
        row = _first_row(target_missing)
        column = next(c for c in targets if table.columns[c].missing[row])
        raise DataError(
            f"{table.where(row, column)}: the target is missing, and a target cannot be filled in.",
            hint="Fill it in, or set data.missing: drop_rows to leave such rows out.",
        )
    return np.arange(table.n_rows)


def _is_bool_word(text: str) -> bool:
    low = text.lower()
    return low in TRUE_WORDS or low in FALSE_WORDS


def _bool_value(column: RawColumn, row: int) -> Optional[float]:
    if column.texts is not None:
        low = column.texts[row].lower()
        if low in TRUE_WORDS:
            return 1.0
        if low in FALSE_WORDS:
            return 0.0
    value = column.values[row]
    if value in (0.0, 1.0):
        return float(value)
    return None


def _not_numbers(table: RawTable, name: str, rows: np.ndarray) -> np.ndarray:
    column = table.columns[name]
    return rows[~column.missing[rows] & np.isnan(column.values[rows])]


def _text_in_numbers(table: RawTable, name: str, row: int, what: str = "a numeric column") -> DataError:
    return DataError(
        f"{table.where(row, name)}: {table.columns[name].text(row)!r} is not a number, but {name!r} is {what}.",
        hint=f"Correct the cell, mark it missing (leave it empty), or set data.column_types: {{{name}: categorical}}.",
    )


def _infer_type(table: RawTable, name: str, rows: np.ndarray, override: Optional[str]) -> str:
    column = table.columns[name]
    present = rows[~column.missing[rows]]
    if override in ("categorical", "numeric", "boolean"):
        return override
    if column.texts is None:
        return "numeric"
    numbers = ~np.isnan(column.values[present])
    if numbers.all():
        return "numeric"
    words = column.texts[present]
    if all(_is_bool_word(t) or t in ("0", "1") for t in words) and any(_is_bool_word(t) for t in words):
        return "boolean"
    if numbers.sum() * 2 > len(present):  # mostly numbers: a stray text is a mistake, not a category
        raise _text_in_numbers(table, name, int(present[~numbers].min()))
    return "categorical"


def _sort_labels(labels: Iterable[str], numeric: bool) -> list[str]:
    unique = set(labels)
    if numeric:
        return sorted(unique, key=float)
    return sorted(unique, key=natural_key)


def _infer_task(table: RawTable, targets: list[str], rows: np.ndarray, task: str) -> tuple[str, Optional[list[str]]]:
    """(task, class names) from the target column(s) over the training file's rows."""
    if len(targets) > 1:
        if task in ("multiclass", "binary"):
            raise DataError(
                f"data.task: {task} needs one target column, and data.target lists {len(targets)}.",
                hint="A list of targets is multilabel (0/1 columns) or regression (numbers).",
            )
        all_01 = True
        for name in targets:
            column = table.columns[name]
            if any(_bool_value(column, r) is None for r in rows):
                all_01 = False
                break
        if task == "multilabel" or (task == "auto" and all_01):
            if not all_01:
                name = next(n for n in targets if any(_bool_value(table.columns[n], r) is None for r in rows))
                row = next(int(r) for r in rows if _bool_value(table.columns[name], r) is None)
                raise DataError(
                    f"{table.where(row, name)}: {table.columns[name].text(row)!r} is not 0/1 (or true/"
                    f"false), but multilabel targets must be."
                )
            return "multilabel", list(targets)
        for name in targets:
            bad = _not_numbers(table, name, rows)
            if len(bad):
                raise _text_in_numbers(table, name, int(bad[0]), "a regression target")
        return "regression", None
    name = targets[0]
    column = table.columns[name]
    bad = _not_numbers(table, name, rows)
    values = column.values[rows]
    if task == "regression" or (
        task == "auto"
        and not len(bad)
        and not (np.all(values == np.round(values)) and len(np.unique(values)) <= MAX_INTEGER_CLASSES)
    ):
        if len(bad):
            raise _text_in_numbers(table, name, int(bad[0]), "a regression target")
        return "regression", None
    names = _sort_labels((column.label(r) for r in rows), numeric=not len(bad))
    if len(names) < 2:
        raise DataError(
            f"{table.source}: the target column {name!r} has a single value, {names[0]!r}; "
            "a classifier needs at least two classes."
        )
    if task == "binary" and len(names) != 2:
        raise DataError(
            f"data.task: binary needs two classes, and {name!r} has {len(names)}: "
            f"{', '.join(names[:10])}{', ...' if len(names) > 10 else ''}.",
            hint="Use task: multiclass (or auto).",
        )
    if task == "auto":
        task = "binary" if len(names) == 2 else "multiclass"
    return task, names


def _fit_feature(table: RawTable, name: str, rows: np.ndarray, kind: str, config: CsvData) -> dict:
    column = table.columns[name]
    present = rows[~column.missing[rows]]
    spec: dict[str, Any] = {"name": name, "type": kind}
    if kind == "numeric":
        bad = _not_numbers(table, name, present)
        if len(bad):
            raise _text_in_numbers(table, name, int(bad[0]))
        values = column.values[present]
        infinite = present[~np.isfinite(values)]
        if len(infinite):
            raise DataError(
                f"{table.where(int(infinite[0]), name)}: {column.text(int(infinite[0]))!r} is not a finite number.",
                hint="Correct the cell or leave it empty (missing).",
            )
        mean = float(values.mean()) if len(values) else 0.0
        spec["fill"] = {"mean": mean, "zero": 0.0}.get(config.missing)
        if config.normalize == "standard":
            std = float(values.std()) if len(values) else 0.0
            spec.update(mean=mean, std=std if std > 0 else 1.0)
        elif config.normalize == "minmax":
            low = float(values.min()) if len(values) else 0.0
            high = float(values.max()) if len(values) else 1.0
            spec.update(min=low, max=high if high > low else low + 1.0)
    elif kind == "boolean":
        bits = [_bool_value(column, int(r)) for r in present]
        if any(b is None for b in bits):
            row = int(present[[b is None for b in bits]][0])
            raise DataError(
                f"{table.where(row, name)}: {column.text(row)!r} is not true/false (yes/no, 1/0), but "
                f"{name!r} is a boolean column.",
                hint=f"Correct the cell, or set data.column_types: {{{name}: categorical}}.",
            )
        known = [b for b in bits if b is not None]  # all of them, after the check above
        spec["fill"] = {"mean": float(np.mean(known)) if known else 0.0, "zero": 0.0}.get(config.missing)
    else:
        spec["categories"] = sorted({column.text(int(r)) for r in present}, key=natural_key)
    return spec


def fit_state(
    table: RawTable,
    features: list[str],
    targets: list[str],
    rows: np.ndarray,
    task: str,
    class_names: Optional[list[str]],
    config: CsvData,
) -> dict:
    """The preprocessing state fitted on the training rows `rows` of table."""
    overrides = config.column_types or {}
    specs = [_fit_feature(table, f, rows, _infer_type(table, f, rows, overrides.get(f)), config) for f in features]
    _check_encoded_width(table, specs, len(rows), overrides)
    _check_something_varies(table, features, rows)
    state: dict[str, Any] = {
        "kind": "csv",
        "version": STATE_VERSION,
        "delimiter": table.delimiter,
        "target": list(targets),
        "task": task,
        "class_names": class_names,
        "normalize": config.normalize,
        "missing": config.missing,
        "features": specs,
    }
    state["input_names"] = input_names(state)
    return state


def _check_something_varies(table: RawTable, features: list[str], rows: np.ndarray) -> None:
    """Refuse inputs that are all constant on the training rows: the model could only learn the
    classes' frequencies."""
    for name in features:
        column = table.columns[name]
        present = rows[~column.missing[rows]]
        cells = column.texts[present] if column.texts is not None else column.values[present]
        if len(set(cells.tolist())) > 1:
            return
    raise DataError(
        f"{table.source}: every input column ({', '.join(features)}) holds one value on all {len(rows)} training "
        "rows, so there is nothing to learn from.",
        hint="Check the file (a column filled down, or the wrong delimiter), or list other columns in data.features.",
    )


MAX_CATEGORIES_SHARE = 0.5  # of the training rows: more distinct values than this is an identifier
FEW_CATEGORIES = 20  # as many distinct values as this are a category in any table, however small
ENCODED_MEMORY_SHARE = 0.5  # of the memory available that the encoded table may take


def _check_encoded_width(table: RawTable, specs: list[dict], training_rows: int, overrides: Mapping) -> None:
    """Refuse, before one-hot encoding allocates it, a categorical column that is an identifier
    (a distinct value on most rows: nothing to generalise from) unless column_types names it
    categorical, and a table whose encoded inputs would not fit in memory."""
    from ..devices import available_memory, human

    for spec in specs:
        count = len(spec.get("categories", ()))
        if (
            spec["type"] == "categorical"
            and overrides.get(spec["name"]) != "categorical"
            and count > max(FEW_CATEGORIES, MAX_CATEGORIES_SHARE * training_rows)
        ):
            raise DataError(
                f"{table.source}: column {spec['name']!r} has {count:,} distinct values in {training_rows:,} training "
                f"rows, so one-hot encoding would make {count + 1:,} inputs, most of them seen once: it looks like an "
                "identifier or free text, which a model cannot learn from as a category.",
                hint=f"Leave it out with data.column_types: {{{spec['name']}: ignore}}, read it as numbers with "
                f"{{{spec['name']}: numeric}}, or keep it with {{{spec['name']}: categorical}}.",
            )
    width = sum(len(s["categories"]) + 1 if s["type"] == "categorical" else 1 for s in specs)
    need = table.n_rows * width * 4  # float32 inputs of every row
    available, _ = available_memory("cpu")
    if available is not None and need > ENCODED_MEMORY_SHARE * available:
        widest = max(specs, key=lambda s: len(s.get("categories", ())))
        raise DataError(
            f"{table.source}: the encoded table would need {human(need)} ({table.n_rows:,} rows x {width:,} inputs as "
            f"float32), more than {ENCODED_MEMORY_SHARE:.0%} of the {human(available)} available; the widest column is "
            f"{widest['name']!r} with {len(widest.get('categories', ())):,} categories.",
            hint=f"Leave it out with data.column_types: {{{widest['name']}: ignore}}, or read it as numbers with "
            f"{{{widest['name']}: numeric}}.",
        )


def input_names(state: dict) -> list[str]:
    """One name per model input: the column, or `column=category` for one-hot slots."""
    names = []
    for spec in state["features"]:
        if spec["type"] == "categorical":
            names += [f"{spec['name']}={c}" for c in spec["categories"]] + [f"{spec['name']}={UNKNOWN}"]
        else:
            names.append(spec["name"])
    return names


def table_text_columns(state: dict) -> list[str]:
    return [s["name"] for s in state["features"] if s["type"] in ("categorical", "boolean")]


def describe_columns(state: dict) -> str:
    """columns.txt: what was fitted for each input column, one line each."""
    lines = [
        (
            f"# {len(state['input_names'])} model inputs from {len(state['features'])} columns; "
            f"normalize: {state['normalize']}, missing: {state['missing']}"
        )
    ]
    for spec in state["features"]:
        text = f"{spec['name']}: {spec['type']}"
        if "mean" in spec:
            text += f", mean {spec['mean']:.6g}, std {spec['std']:.6g}"
        if "min" in spec:
            text += f", min {spec['min']:.6g}, max {spec['max']:.6g}"
        if spec.get("fill") is not None:
            text += f", missing cells become {spec['fill']:.6g}"
        if "categories" in spec:
            shown = ", ".join(spec["categories"][:50]) + (", ..." if len(spec["categories"]) > 50 else "")
            text += f", {len(spec['categories'])} categories + {UNKNOWN}: {shown}"
        lines.append(text)
    targets = ", ".join(state["target"])
    lines.append(f"# target: {targets} ({state['task']})")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------- encoding


def _encode_features(state: dict, table: RawTable, rows: np.ndarray) -> np.ndarray:
    x = np.zeros((len(rows), len(state["input_names"])), dtype=np.float32)
    at = 0
    for spec in state["features"]:
        name = spec["name"]
        column = table.columns[name]
        missing = column.missing[rows]
        if spec["type"] == "numeric":
            values = column.values[rows].copy()
            bad = ~missing & ~np.isfinite(values)
            if bad.any():
                row = int(rows[bad][0])
                if np.isnan(column.values[row]):
                    raise _text_in_numbers(table, name, row)
                raise DataError(
                    f"{table.where(row, name)}: {column.text(row)!r} is not a finite number.",
                    hint="Correct the cell or leave it empty (missing).",
                )
            if missing.any():
                values[missing] = spec["fill"] if spec.get("fill") is not None else np.nan
            if "mean" in spec:
                values = (values - spec["mean"]) / spec["std"]
            elif "min" in spec:
                values = (values - spec["min"]) / (spec["max"] - spec["min"])
            x[:, at] = values
            at += 1
        elif spec["type"] == "boolean":
            for i, row in enumerate(rows):
                if missing[i]:
                    x[i, at] = spec["fill"] if spec.get("fill") is not None else np.nan
                    continue
                bit = _bool_value(column, int(row))
                if bit is None:
                    raise DataError(
                        f"{table.where(int(row), name)}: {column.text(int(row))!r} is not true/false "
                        f"(yes/no, 1/0), but {name!r} is a boolean column."
                    )
                x[i, at] = bit
            at += 1
        else:
            categories = spec["categories"]
            index = {c: i for i, c in enumerate(categories)}
            unknown = len(categories)
            slots = np.fromiter(
                (unknown if missing[i] else index.get(column.text(int(row)), unknown) for i, row in enumerate(rows)),
                dtype=np.int64,
                count=len(rows),
            )
            x[np.arange(len(rows)), at + slots] = 1.0
            at += unknown + 1
    return x


def _encode_target(state: dict, table: RawTable, rows: np.ndarray) -> np.ndarray:
    task, targets = state["task"], state["target"]
    if task in ("multiclass", "binary"):
        name = targets[0]
        column = table.columns[name]
        index = {c: i for i, c in enumerate(state["class_names"])}
        y = np.empty(len(rows), dtype=np.int64)
        for i, row in enumerate(rows):
            label = column.label(int(row))
            if label not in index:
                names = state["class_names"]
                raise DataError(
                    f"{table.where(int(row), name)}: the label {label!r} is not one of the classes seen in training: "
                    f"{', '.join(names[:20])}{', ...' if len(names) > 20 else ''}.",
                    hint="Correct the label, or train with data that has this class.",
                )
            y[i] = index[label]
        return y
    y = np.empty((len(rows), len(targets)), dtype=np.float32)
    for j, name in enumerate(targets):
        column = table.columns[name]
        if task == "multilabel":
            for i, row in enumerate(rows):
                bit = _bool_value(column, int(row))
                if bit is None:
                    raise DataError(
                        f"{table.where(int(row), name)}: {column.text(int(row))!r} is not 0/1 (or true/"
                        "false), but multilabel targets must be."
                    )
                y[i, j] = bit
        else:
            values = column.values[rows]
            bad = ~np.isfinite(values)
            if bad.any():
                raise _text_in_numbers(table, name, int(rows[bad][0]), "a regression target")
            y[:, j] = values
    return y


def encode_table(
    state: dict,
    source: Union[str, Path, RawTable, Sequence[Mapping[str, Any]]],
    *,
    with_rows: bool = False,
) -> tuple:
    """Model inputs (and targets, when the table has the target columns) for any table, with
    a saved state: the code path of training, evaluation and prediction alike.

    source: a csv file, a RawTable, or rows as dicts of column -> value. Returns (x, y) as
    tensors (y None without targets); with_rows=True adds the indices of the rows used
    (rows with missing cells are left out under missing: drop_rows).
    """
    import torch

    check_state(state, "csv")
    features = [s["name"] for s in state["features"]]
    if isinstance(source, RawTable):
        table = source
    elif isinstance(source, (str, Path)):
        table = read_table(source, state["delimiter"], table_text_columns(state))
    else:
        present = set().union(*(row.keys() for row in source)) if source else set()
        columns = features + [t for t in state["target"] if t in present]
        table = table_from_rows(source, columns, table_text_columns(state))
    missing_inputs = [f for f in features if f not in table.columns]
    if missing_inputs:
        from ..registry import suggest

        nearest = suggest(missing_inputs[0], [c for c in table.columns if c not in features])
        raise DataError(
            f"{table.source} lacks the input column{'s' if len(missing_inputs) > 1 else ''} "
            f"{', '.join(repr(c) for c in missing_inputs)} that the model was trained on.",
            hint=(f"{nearest} " if nearest else "") + f"The inputs are: {', '.join(features)}.",
        )
    has_targets = all(t in table.columns for t in state["target"])
    targets = state["target"] if has_targets else []
    rows = _usable_rows(table, features, targets, state["missing"])
    x = torch.from_numpy(_encode_features(state, table, rows))
    y = torch.from_numpy(_encode_target(state, table, rows)) if has_targets else None
    return (x, y, rows) if with_rows else (x, y)


def unseen_categories(state: dict, source: Union[str, Path, RawTable]) -> dict[str, list[str]]:
    """Per categorical column, the values that training never saw (they take the unknown slot)."""
    table = (
        source if isinstance(source, RawTable) else read_table(source, state["delimiter"], table_text_columns(state))
    )
    unseen: dict[str, list[str]] = {}
    for spec in state["features"]:
        if spec["type"] != "categorical" or spec["name"] not in table.columns:
            continue
        column, known = table.columns[spec["name"]], set(spec["categories"])
        values = sorted({column.text(r) for r in range(table.n_rows) if not column.missing[r]} - known)
        if values:
            unseen[spec["name"]] = values
    return unseen


def standardisation(state: dict) -> tuple[list[float], list[float]]:
    """(shift, scale) per model input such that (raw - shift) * scale is what `_encode_features`
    gives: numeric columns standardised or min-max scaled, booleans and one-hot slots as they are.
    An export puts this inside the graph."""
    shift: list[float] = []
    scale: list[float] = []
    for spec in state["features"]:
        if spec["type"] == "numeric":
            if "mean" in spec:
                shift.append(spec["mean"])
                scale.append(1.0 / spec["std"])
            elif "min" in spec:
                shift.append(spec["min"])
                scale.append(1.0 / (spec["max"] - spec["min"]))
            else:
                shift.append(0.0)
                scale.append(1.0)
        elif spec["type"] == "boolean":
            shift.append(0.0)
            scale.append(1.0)
        else:
            width = len(spec["categories"]) + 1
            shift += [0.0] * width
            scale += [1.0] * width
    return shift, scale


def info_from_state(state: dict) -> DataInfo:
    task = state["task"]
    if task in ("multiclass", "binary"):
        classes = 2 if task == "binary" else len(state["class_names"])
    else:
        classes = len(state["target"])
    names = tuple(state["class_names"]) if state.get("class_names") else None
    return DataInfo(input_shape=(len(state["input_names"]),), task=task, num_classes=classes, class_names=names)


# ----------------------------------------------------------------------------- the dataset


@dataclass
class _Fitted:
    state: dict
    table: RawTable
    rows: np.ndarray  # usable rows of the training file
    split: Any  # splits.Split over `rows`


def _fit(config: CsvData, seed: int, state: Optional[dict]) -> _Fitted:
    if state is not None:
        check_state(state, "csv")
    delimiter = state["delimiter"] if state is not None else _delimiter(config.delimiter)
    overrides = config.column_types or {}
    forced = (
        table_text_columns(state)
        if state is not None
        else [c for c, t in overrides.items() if t in ("categorical", "boolean")]
    )
    path = config.train_path or config.path
    assert path is not None  # config validation requires one of them for csv
    table = read_table(path, delimiter, forced)
    if state is None:
        targets = _targets(config)
        features = _feature_names(config, table, targets)
        policy = config.missing
    else:
        targets, features, policy = state["target"], [s["name"] for s in state["features"]], state["missing"]
        check_columns(table, features + targets, "features")
    rows = _usable_rows(table, features, targets, policy)
    if state is None:
        task, class_names = _infer_task(table, targets, rows, config.task)
    else:
        task, class_names = state["task"], state["class_names"]
    labels = None
    if task in ("multiclass", "binary"):
        labels = _encode_target({"task": task, "target": targets, "class_names": class_names}, table, rows)
    split = split_samples(len(rows), labels, config, seed, has_test=bool(config.test_path))
    if state is None:
        state = fit_state(table, features, targets, rows[split.train], task, class_names, config)
        state["split"] = {
            "seed": seed,
            "file_rows": table.n_rows,
            "dropped_rows": table.n_rows - len(rows),
            **split.counts(),
            "stratified": split.stratified,
            "test_file": config.test_path,
        }
    else:
        check_same_rows(table, state)
    return _Fitted(state, table, rows, split)


def _info(config: CsvData, seed: int, state: Optional[dict]) -> DataInfo:
    if state is not None:
        return info_from_state(check_state(state, "csv"))
    return info_from_state(_fit(config, seed, None).state)


def _load(config: CsvData, seed: int, state: Optional[dict], progress: Optional[ProgressFn]) -> Dataset:
    import torch

    fitted = _fit(config, seed, state)
    state, table, rows, split = fitted.state, fitted.table, fitted.rows, fitted.split

    def encode(indices: np.ndarray):
        used = rows[indices]
        return torch.from_numpy(_encode_features(state, table, used)), torch.from_numpy(
            _encode_target(state, table, used)
        )

    x_train, y_train = encode(split.train)
    x_val, y_val = encode(split.val) if len(split.val) else (None, None)
    if config.test_path:
        x_test, y_test = encode_table(state, config.test_path)
    else:
        x_test, y_test = encode(split.test) if len(split.test) else (None, None)
    notes: list[str] = []
    dropped = state["split"]["dropped_rows"]
    if dropped:
        notes.append(
            f"{table.source}: {dropped} row{'s' if dropped != 1 else ''} with missing cells left out "
            "(data.missing: drop_rows)."
        )
    if table.decimal_comma_columns:
        shown = ", ".join(repr(c) for c in table.decimal_comma_columns)
        notes.append(
            f"{table.source}: read {shown} as numbers written with a decimal comma (5,1 is 5.1); "
            "data.column_types: {column: categorical} keeps a column's texts as categories."
        )

    def sample_names(part: str) -> list[str]:
        """Each sample's file and line (a test file's samples by their place: its lines are not read)."""
        if part == "test" and config.test_path:
            return [f"{config.test_path}, test sample {i + 1}" for i in range(len(x_test))]
        chosen = rows[{"train": split.train, "val": split.val, "test": split.test}[part]]
        return [f"{table.source}, line {table.line(int(r))}" for r in chosen]

    return Dataset(
        info=info_from_state(state),
        x_train=x_train,
        y_train=y_train,
        x_val=x_val,
        y_val=y_val,
        x_test=x_test,
        y_test=y_test,
        preprocessing=state,
        notes=tuple(notes),
        sample_names=sample_names,
    )


def _read_inputs(request: ReadRequest) -> Inputs:
    """Tables with the feature columns by name, in any order (extra columns ignored); with the
    target column(s) the rows carry labels."""
    import torch

    state = request.saved_state("csv")
    xs, ys, names, notes = [], [], [], []
    for path in expand_paths(request.inputs, TABLE_SUFFIXES):
        table = read_table(path, state["delimiter"], table_text_columns(state))
        x, y, rows = encode_table(state, table, with_rows=True)
        xs.append(x)
        ys.append(y)
        names += [f"{path.name}:{table.line(int(r))}" for r in rows]
        for column, values in unseen_categories(state, table).items():
            shown = ", ".join(repr(v) for v in values[:5]) + (", ..." if len(values) > 5 else "")
            notes.append(
                f"{path.name}: column {column!r} has values never seen in training ({shown}); "
                "they take the column's unknown slot, as in training."
            )
    if not xs:
        return Inputs([], None)
    labels = torch.cat(ys) if all(y is not None for y in ys) else None
    return Inputs(names, torch.cat(xs), labels, notes=notes, input_scale=None)


def _input_spec(config: CsvData, info: DataInfo, state: Optional[dict]) -> InputSpec:
    state = check_state(state, "csv")
    shift, scale = standardisation(state)
    features = [{k: v for k, v in f.items() if k in ("name", "type", "categories")} for f in state["features"]]
    return InputSpec(
        "float32",
        scale,
        shift,
        outside=(
            "One float32 row per sample, in the order of input_names: numeric columns as their raw values "
            "(standardisation is inside the graph), booleans as 0 or 1, and each categorical column as a one-hot "
            "block over its categories plus a last slot for values never seen in training."
        ),
        extra={"input_names": list(state["input_names"]), "features": features},
    )


DATASETS.add(
    "csv",
    DatasetSource(
        config=CsvData,
        info=_info,
        load=_load,
        read_inputs=_read_inputs,
        input_spec=_input_spec,
        state_files=lambda state: {"columns.txt": describe_columns(state)},
        fits_preprocessing=True,
    ),
)
