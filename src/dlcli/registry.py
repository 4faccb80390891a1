"""A small name -> object registry per kind of thing (datasets, optimizers, losses...).

An unknown name is a ConfigError that lists the valid names and the closest ones.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def suggest(name: str, choices: Iterable[str]) -> str:
    """A 'Did you mean ...?' sentence, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return "Did you mean " + " or ".join(repr(c) for c in close) + "?"


class Registry(Generic[T]):
    def __init__(self, kind: str, plural: str | None = None) -> None:
        self.kind = kind
        self.plural = plural or kind + "s"
        self._items: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def add(obj: T) -> T:
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = obj
            return obj

        return add

    def add(self, name: str, obj: T) -> None:
        self.register(name)(obj)

    def get(self, name: str, *, key: str | None = None) -> T:
        try:
            return self._items[name]
        except (KeyError, TypeError):
            where = f"{key}: " if key else ""
            valid = ", ".join(self.names())
            hint = suggest(name, self._items)
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}; valid {self.plural} are: {valid}.",
                hint=hint or None,
                key=key,
            ) from None

    def names(self) -> list[str]:
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items
