"""The papers' published numbers (analysis/published.yaml) as plain dicts and DataFrames."""

from __future__ import annotations

import functools
from importlib import resources
from typing import Any

import pandas as pd
import yaml

PUBLISHED_FILE = "published.yaml"


@functools.lru_cache(maxsize=1)
def _load() -> dict[str, Any]:
    text = resources.files("analysis").joinpath(PUBLISHED_FILE).read_text(encoding="utf-8")
    data = yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))  # libyaml when present: 10x faster
    if not isinstance(data, dict) or "tables" not in data:
        raise ValueError(f"analysis/{PUBLISHED_FILE} must have a top-level 'tables' mapping")
    return data


def published_tables() -> dict[str, dict[str, Any]]:
    """Every published table keyed by its id in published.yaml (e.g. `it_table_3_1`)."""
    return _load()["tables"]


def published(key: str) -> dict[str, Any]:
    tables = published_tables()
    if key not in tables:
        raise KeyError(f"no published table '{key}' in analysis/{PUBLISHED_FILE} (known: {', '.join(tables)})")
    return tables[key]


def published_frame(key: str) -> pd.DataFrame:
    """The rows of one published table as a DataFrame (sub-tables are stacked with `steps`/`label` columns)."""
    table = published(key)
    if "subtables" in table:
        rows = [
            {"label": sub["label"], "steps": sub["steps"], "rate_key": sub["rate_key"], **row}
            for sub in table["subtables"]
            for row in sub["rows"]
        ]
    else:
        rows = list(table["rows"])
    return pd.DataFrame(rows)
