"""A small name -> object registry per kind of thing (datasets, optimizers, losses...).

An unknown name is a ConfigError that lists the valid names and the closest ones.

A registry may also know, by name only, the module that registers each built-in entry
(`modules`): the entry is registered when first asked for, as plug-in entry points are, so a
low layer (config validation) can ask for a dataset kind without importing the data layer,
and `dlcli summary` of an MNIST config never loads the csv or image readers.
"""

from __future__ import annotations

import difflib
from typing import Callable, Generic, Iterable, Mapping, TypeVar

from .errors import ConfigError

T = TypeVar("T")


def suggest(name: str, choices: Iterable[str]) -> str:
    """A 'Did you mean ...?' sentence, or '' when nothing is close."""
    close = difflib.get_close_matches(str(name), list(choices), n=3, cutoff=0.5)
    if not close:
        return ""
    return "Did you mean " + " or ".join(repr(c) for c in close) + "?"


class Registry(Generic[T]):
    def __init__(self, kind: str, plural: str | None = None, modules: Mapping[str, str] | None = None) -> None:
        self.kind = kind
        self.plural = plural or kind + "s"
        self._items: dict[str, T] = {}
        self._modules = dict(modules or {})  # name -> the module that registers it when imported

    def load(self, name: str | None = None) -> None:
        """Import the module that registers `name`; every known module for an unknown name or
        None, so that an error or a listing names all the valid entries."""
        if name in self._items:
            return
        wanted = [self._modules[name]] if name in self._modules else sorted(set(self._modules.values()))
        for module in wanted:
            # Not importlib.import_module: what it imports is missing from `python -X importtime`.
            __import__(module)

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
        if isinstance(name, str):
            self.load(name)
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
        return sorted(set(self._items) | set(self._modules))

    def loaded(self) -> dict[str, T]:
        """Every entry, with all the known modules imported."""
        self.load()
        return dict(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items or name in self._modules


# Dataset kinds: name -> the data module that registers its `DatasetSource` (data/dataset.py).
# A new built-in kind is one module in data/ plus its line here.
DATASETS: Registry = Registry(
    "dataset",
    modules={
        "mnist": "dlcli.data.vision",
        "fashion_mnist": "dlcli.data.vision",
        "imdb": "dlcli.data.imdb",
        "npz": "dlcli.data.npz",
        "synthetic": "dlcli.data.synthetic",
        "csv": "dlcli.data.tabular",
        "timeseries": "dlcli.data.timeseries",
        "image_folder": "dlcli.data.images",
        "text_folder": "dlcli.data.text",
        "video_folder": "dlcli.data.video",
    },
)
