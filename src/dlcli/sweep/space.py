"""The search space: `-p KEY=SPEC` on the command line or `params:` in a `sweep:` section.

A SPEC is a YAML list (a grid axis: the sweep is the product of all lists) or a function:
`loguniform(lo, hi)`, `uniform(lo, hi)`, `int(lo, hi)`, `int(lo, hi, log)` or
`choice(a, b, ...)`. This module knows no Optuna: `study` maps these onto its distributions.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Optional

from ..errors import ConfigError

KINDS = ("grid", "choice", "uniform", "loguniform", "int")
FUNCTIONS = ("loguniform", "uniform", "int", "choice")
_CALL = re.compile(r"^\s*([A-Za-z_]\w*)\s*\((.*)\)\s*$", re.DOTALL)
SYNTAX_HINT = (
    "A parameter is KEY=[a, b, ...] (a grid axis), or KEY=loguniform(lo, hi), uniform(lo, hi), "
    "int(lo, hi), int(lo, hi, log) or choice(a, b, ...)."
)


@dataclass(frozen=True)
class Param:
    """One searched config key and where its values come from."""

    key: str  # dotted config path, as --set takes it
    kind: str  # one of KINDS
    values: tuple = ()  # grid and choice
    low: Optional[float] = None  # uniform, loguniform, int
    high: Optional[float] = None
    log: bool = False

    @property
    def is_categorical(self) -> bool:
        return self.kind in ("grid", "choice")

    def spec_text(self) -> str:
        """The SPEC as a person writes it (sweep.yaml and messages)."""
        if self.kind == "grid":
            return yaml_text(list(self.values))
        if self.kind == "choice":
            return "choice(" + ", ".join(yaml_text(v) for v in self.values) + ")"
        if self.kind == "int":
            return f"int({self.low}, {self.high}{', log' if self.log else ''})"
        return f"{self.kind}({_num(self.low)}, {_num(self.high)})"

    def to_data(self) -> Any:
        """What sweep.yaml holds: a list for a grid axis, else the SPEC text."""
        return list(self.values) if self.kind == "grid" else self.spec_text()

    def bounds(self) -> tuple[float, float]:
        """(low, high) of a range; a grid or choice has none."""
        if self.low is None or self.high is None:
            raise ValueError(f"{self.key}: a {self.kind} parameter has no bounds")
        return self.low, self.high

    def values_to_check(self) -> list[Any]:
        """Values that must all fit the config before the first trial: every listed value, and
        for a range its two ends and a value inside (which catches a float drawn for an
        integer key)."""
        if self.is_categorical:
            return list(self.values)
        low, high = self.bounds()
        if self.kind == "int":
            return sorted({int(low), int(high)})
        low, high = float(low), float(high)
        # A point inside that is not a whole number (a midpoint such as 36.0 would pass for an
        # integer key, and the trials' draws would then fail).
        share = 1 / math.pi
        inside = math.exp(math.log(low) + share * math.log(high / low)) if self.log else low + share * (high - low)
        if inside.is_integer():
            inside += (high - low) * 1e-3
        return [low, inside, high]

    # Optuna's categorical choices must be None, bool, int, float or str: other values (lists,
    # mappings) travel as their JSON text and are decoded when a trial's config is built.
    def encoded_choices(self) -> list[Any]:
        return [encode_choice(v) for v in self.values]

    def decode(self, value: Any) -> Any:
        if self.is_categorical and isinstance(value, str) and any(not _is_scalar(v) for v in self.values):
            for v in self.values:
                if encode_choice(v) == value:
                    return v
        return value


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, (bool, int, float, str))


def encode_choice(value: Any) -> Any:
    return value if _is_scalar(value) else json.dumps(value, separators=(", ", ": "))


def _num(x: Any) -> str:
    return repr(float(x)) if not isinstance(x, int) else str(x)


def yaml_text(value: Any) -> str:
    """A value as one line of YAML that reads back as the same value (floats keep their dot or
    exponent so YAML does not read `1e-05` as text)."""
    import yaml

    text = yaml.safe_dump(value, default_flow_style=True, width=10_000).strip()
    if text.endswith("\n..."):
        text = text[: -len("\n...")].strip()
    elif text.endswith("..."):
        text = text[:-3].strip()
    return text


def override_text(key: str, value: Any) -> str:
    """The `--set` text that fixes `key` to `value`."""
    return f"{key}={yaml_text(value)}"


def _problem(where: str, problem: str) -> ConfigError:
    return ConfigError(f"{where}: {problem}", hint=SYNTAX_HINT)


def _as_number(value: Any, where: str, what: str) -> float:
    if isinstance(value, bool):
        raise _problem(where, f"{what} must be a number, found {value!r}.")
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, str):
        try:  # YAML 1.1 reads 1e-5 (no dot) as text
            return float(value)
        except ValueError:
            pass
    raise _problem(where, f"{what} must be a number, found {value!r}.")


def parse_spec(key: str, spec: Any, where: Optional[str] = None) -> Param:
    """A Param from a SPEC: a list (grid), or text of a function call (or of a list)."""
    import yaml

    where = where or f"-p {key}={spec if isinstance(spec, str) else yaml_text(spec)}"
    _check_key(key, where)
    if isinstance(spec, str):
        match = _CALL.match(spec)
        if match is None:
            try:
                spec = yaml.safe_load(spec) if spec.strip() else None
            except yaml.YAMLError as exc:
                raise _problem(where, f"the value is not valid YAML ({getattr(exc, 'problem', exc)}).") from None
            if isinstance(spec, str):
                raise _problem(where, f"{spec!r} is neither a list nor one of {', '.join(FUNCTIONS)}(...).")
        else:
            return _parse_call(key, match.group(1), match.group(2), where)
    if isinstance(spec, list):
        if not spec:
            raise _problem(where, "the list is empty; give at least one value.")
        _check_unique(spec, where)
        return Param(key, "grid", values=tuple(spec))
    if spec is None or isinstance(spec, (bool, int, float)):
        raise ConfigError(
            f"{where}: a single value is not a search space.",
            hint=f"Fix one value with --set {key}=VALUE; search with {key}=[a, b] or a function such as "
            f"loguniform(1e-5, 1e-1).",
        )
    raise _problem(where, f"expected a list or a function, found a {type(spec).__name__}.")


def _check_key(key: str, where: str) -> None:
    if not key or any(not part for part in key.split(".")):
        raise ConfigError(
            f"{where}: the key path {key!r} is empty or has an empty part.",
            hint="For example -p optimizer.lr=[0.001,0.01].",
        )


def _check_unique(values: list, where: str) -> None:
    seen: list[str] = []
    for v in values:
        text = json.dumps(v, sort_keys=True)
        if text in seen:
            raise ConfigError(
                f"{where}: the value {yaml_text(v)} is listed twice.",
                hint="List each value once, so that no point is run twice.",
            )
        seen.append(text)


def _parse_call(key: str, name: str, inner: str, where: str) -> Param:
    import yaml

    from ..registry import suggest

    if name not in FUNCTIONS:
        hint = suggest(name, FUNCTIONS)
        raise ConfigError(
            f"{where}: unknown function {name!r}; valid are: {', '.join(FUNCTIONS)}.", hint=hint or SYNTAX_HINT
        )
    try:
        args = yaml.safe_load(f"[{inner}]")
    except yaml.YAMLError as exc:
        raise _problem(where, f"the arguments are not valid YAML ({getattr(exc, 'problem', exc)}).") from None
    if name == "choice":
        if not args:
            raise _problem(where, "choice(...) needs at least one value.")
        _check_unique(args, where)
        return Param(key, "choice", values=tuple(args))
    if name == "int":
        log = False
        if len(args) == 3:
            if args[2] != "log":
                raise _problem(where, f"the third argument of int(...) can only be `log`, found {args[2]!r}.")
            log, args = True, args[:2]
        if len(args) != 2:
            raise _problem(where, "int(...) takes two bounds and an optional `log`: int(16, 256, log).")
        low, high = args
        for what, v in (("the lower bound", low), ("the upper bound", high)):
            if isinstance(v, bool) or not isinstance(v, int):
                raise _problem(where, f"{what} of int(...) must be a whole number, found {v!r}.")
        if low > high:
            raise _problem(where, f"the lower bound {low} is above the upper bound {high}.")
        if log and low < 1:
            raise _problem(where, f"int(..., log) needs a lower bound of at least 1, found {low}.")
        return Param(key, "int", low=low, high=high, log=log)
    if len(args) != 2:
        raise _problem(where, f"{name}(...) takes two bounds, found {len(args)} argument(s).")
    low = float(_as_number(args[0], where, "the lower bound"))
    high = float(_as_number(args[1], where, "the upper bound"))
    if not (math.isfinite(low) and math.isfinite(high)):
        raise _problem(where, "the bounds must be finite numbers.")
    if low >= high:
        raise _problem(where, f"the lower bound {low} must be below the upper bound {high}.")
    if name == "loguniform" and low <= 0:
        raise _problem(where, f"loguniform(...) needs a lower bound above 0, found {low}.")
    return Param(key, name, low=low, high=high, log=name == "loguniform")


def parse_cli_param(text: str) -> Param:
    """`KEY=SPEC` as `-p` takes it."""
    if "=" not in text:
        raise ConfigError(
            f"-p {text!r}: expected KEY=SPEC.",
            hint="For example -p optimizer.lr=[0.0001,0.001,0.01] or -p optimizer.lr='loguniform(1e-5,1e-1)'.",
        )
    key, _, spec = text.partition("=")
    return parse_spec(key.strip(), spec, where=f"-p {text}")


def parse_space(params: Iterable[tuple[str, Any]]) -> list[Param]:
    """Params in order; a key given twice is an error (the last would silently win)."""
    out: list[Param] = []
    for key, spec in params:
        param = spec if isinstance(spec, Param) else parse_spec(key, spec, where=f"sweep.params.{key}")
        if any(p.key == param.key for p in out):
            raise ConfigError(
                f"-p {param.key}: the key is searched twice.",
                hint="Give each key once; a later -p replaces a `sweep:` section's entry.",
            )
        out.append(param)
    return out


def merge_space(section: list[Param], cli: list[Param]) -> list[Param]:
    """The file's params, with those given again by -p replaced and new ones added."""
    by_key = {p.key: p for p in section}
    for p in cli:
        if sum(q.key == p.key for q in cli) > 1:
            raise ConfigError(f"-p {p.key}: the key is searched twice.", hint="Give each key once.")
        by_key[p.key] = p
    return list(by_key.values())


def is_grid(space: list[Param]) -> bool:
    return all(p.kind == "grid" for p in space)


def grid_points(space: list[Param]) -> list[dict[str, Any]]:
    """Every point of the grid (the product of the lists), in the order the lists give."""
    keys = [p.key for p in space]
    return [dict(zip(keys, combo)) for combo in itertools.product(*(p.values for p in space))]


def grid_size(space: list[Param]) -> int:
    return math.prod(len(p.values) for p in space)


def space_to_data(space: list[Param]) -> dict[str, Any]:
    return {p.key: p.to_data() for p in space}


def space_from_data(data: dict[str, Any]) -> list[Param]:
    return parse_space(list(data.items()))


def params_label(params: dict[str, Any], width: int = 60) -> str:
    """`lr=0.01 hidden=[64]`: the last part of each key, as a plot legend or table cell."""
    short = {}
    for key, value in params.items():
        name = key.split(".")[-1]
        if name in short or name.isdigit():
            name = key
        short[name] = value
    text = " ".join(f"{k}={_fmt_value(v)}" for k, v in short.items())
    return text if len(text) <= width else text[: width - 1] + "…"


def _fmt_value(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return yaml_text(value)
