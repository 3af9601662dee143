"""Where dataset names are resolved to loaders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from raygen.data.base import DataConfig, DataError, Dataset, DatasetInfo


@dataclass(frozen=True)
class DatasetSource:
    """A family of dataset names. `matches(name)` decides ownership; `load` builds the Dataset."""

    prefix: str  # exact name ("digits") or prefix ending in ":" ("toy2d:", "idx:")
    kind: str
    description: str
    load: Callable[[str, DataConfig], Dataset]
    names: tuple[str, ...] = ()  # concrete names listed by `raygen datasets`
    files: Callable[[str, DataConfig], list[Path]] | None = None  # files looked for (absent = embedded)

    def matches(self, name: str) -> bool:
        return name == self.prefix or (self.prefix.endswith(":") and name.startswith(self.prefix))


_SOURCES: list[DatasetSource] = []


def register(source: DatasetSource) -> DatasetSource:
    _SOURCES.append(source)
    return source


def data_root(config: DataConfig) -> Path:
    if config.root:
        return Path(config.root).expanduser()
    if os.environ.get("RAYGEN_DATA"):
        return Path(os.environ["RAYGEN_DATA"]).expanduser()
    return Path.home() / ".raygen" / "data"


def _sources() -> list[DatasetSource]:
    # Loader modules register themselves on import; importing here keeps `raygen.data` cheap to import.
    from raygen.data import embedded  # noqa: F401

    return _SOURCES


def find_source(name: str) -> DatasetSource:
    for source in _sources():
        if source.matches(name):
            return source
    known = ", ".join(sorted({n for s in _sources() for n in (s.names or (s.prefix + "…",))}))
    raise KeyError(f"unknown dataset '{name}' (known: {known})")


def dataset_kind(name: str) -> str:
    return find_source(name).kind


def load_dataset(name: str, config: DataConfig | None = None) -> Dataset:
    config = config or DataConfig()
    try:
        source = find_source(name)
    except KeyError as err:
        raise DataError(err.args[0]) from None
    return source.load(name, config)


def list_datasets(config: DataConfig | None = None) -> list[DatasetInfo]:
    config = config or DataConfig()
    rows = []
    for source in _sources():
        for name in source.names or (source.prefix + "PATH",):
            files = source.files(name, config) if source.files else []
            rows.append(
                DatasetInfo(
                    name=name,
                    kind=source.kind,
                    description=source.description,
                    locations=[str(f) for f in files] or ["embedded"],
                    present=all(f.exists() for f in files) if files else True,
                )
            )
    return rows
