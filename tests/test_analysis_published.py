"""analysis/published.yaml: every paper table is present, with the right row counts, and its numbers are the
papers' (each value must occur in the paper's text file; a few are also spelled out here)."""

from __future__ import annotations

import numpy as np
import pytest

from analysis.published import published, published_frame, published_tables
from tests.shared_data import SHARED_DATA

PAPERS = SHARED_DATA.parent / "papers"

# table id -> number of rows (TAB A.1: rows per sub-table), as printed in the papers (INVENTORY.md §4.1).
EXPECTED_ROWS = {
    "pf_table_2_1": 8,
    "pf_table_2_2": 5,
    "pf_ptb_bpc": 2,
    "pf_tsne_distances": 2,
    "vw_table_3_1a": 4,
    "vw_table_3_1b": 7,
    "vw_table_3_2": 5,
    "vw_s001_table_1": 6,
    "vw_inception": 6,
    "vw_reversibility": 1,
    "it_table_3_1": 9,
    "it_table_3_2": 5,
    "it_parzen": 7,
}
TAB_A1_ROWS = {1: 12, 5: 8, 10: 8, 15: 7}


def test_every_table_is_present_with_its_row_count():
    tables = published_tables()
    for key, n in EXPECTED_ROWS.items():
        assert key in tables, key
        assert len(tables[key]["rows"]) == n, key
        assert tables[key]["id"] and tables[key]["source"] and tables[key]["columns"]
    blocks = {b["steps"]: b for b in published("it_tab_a1")["subtables"]}
    assert {k: len(b["rows"]) for k, b in blocks.items()} == TAB_A1_ROWS
    assert blocks[1]["rate_key"] == "alpha0" and {blocks[k]["rate_key"] for k in (5, 10, 15)} == {"omega"}


def _value(key: str, model: str, column: str) -> float:
    rows = [r for r in published(key)["rows"] if r["model"] == model]
    assert len(rows) == 1, (key, model)
    return rows[0][column]


def test_spot_checked_values():
    assert _value("pf_table_2_1", "Professor Forcing (ours)", "nll") == 79.58
    assert _value("pf_table_2_1", "DRAW [Gregor et al., 2015]", "nll_mark") == "≤"
    assert _value("pf_ptb_bpc", "Teacher Forcing (baseline)", "valid_bpc") == 1.50
    assert _value("pf_ptb_bpc", "Professor Forcing", "valid_bpc") == 1.48
    assert _value("pf_tsne_distances", "Teacher Forcing", "centroid_distance") == 3000.0
    assert _value("pf_tsne_distances", "Professor Forcing", "centroid_distance") == 1800.0
    assert _value("pf_tsne_distances", "Teacher Forcing", "nearest_free_distance") == 22.8
    assert _value("pf_tsne_distances", "Professor Forcing", "nearest_free_distance") == 16.4
    assert _value("vw_table_3_1a", "VW (IS estimate)", "train_ll") == 1311
    assert _value("vw_table_3_1a", "VW (15 step, LB)", "test_ll") == 1018
    assert _value("vw_table_3_1b", "VW (IS estimate)", "test_ll_pm") == 3.4
    assert _value("vw_table_3_2", "VW", "bits_per_dim") == 4.40
    assert _value("vw_s001_table_1", "VW(20 steps)", "bits_per_dim") == 5.20
    assert _value("vw_reversibility", "VW", "reversibility_percent") == 3.6
    assert _value("vw_inception", "VW(30 steps)", "inception_score_pm") == 0.2
    assert _value("it_table_3_1", "Infusion training (IS estimate)", "test_ll") == 1836.27
    assert _value("it_table_3_1", "Infusion training + isotropic (IS estimate)", "test_ll") == 413.297
    assert _value("it_table_3_1", "Infusion training (lower bound)", "train_ll_pm") == 0.532
    assert _value("it_table_3_2", "Infusion training", "inception_score") == 4.62
    assert _value("it_parzen", "Infusion training (Our)", "parzen_ll") == 312
    assert _value("it_parzen", "GSN [4]", "parzen_ll_pm") == 1.1
    a1 = published_frame("it_tab_a1")
    assert a1.loc[(a1.steps == 1) & (a1.rate == 0.9), "lower_bound"].item() == -161.37
    assert a1.loc[(a1.steps == 5) & (a1.rate == 0.1), "lower_bound"].item() == 1448.66
    assert a1.loc[(a1.steps == 15) & (a1.rate == 0.01), "lower_bound"].item() == 1351.03
    # TAB A.1(C) prints 0.05 twice; the second row is matched as 0.06 and says so.
    doubled = a1[(a1.steps == 10) & (a1.rate == 0.05)]
    assert list(doubled["lower_bound"]) == [1057.43, 846.73]
    assert doubled["presumed_rate"].iloc[1] == 0.06 and np.isnan(doubled["presumed_rate"].iloc[0])


def _numbers(table: dict) -> list[float]:
    rows = [r for b in table.get("subtables", []) for r in b["rows"]] + list(table.get("rows", []))
    out = []
    for row in rows:
        for key, value in row.items():
            if key in ("presumed_rate",) or isinstance(value, (str, bool)) or value is None:
                continue
            out.append(float(value))
    return out


def _printed_forms(x: float) -> set[str]:
    forms = {repr(x), f"{x:g}", np.format_float_positional(x, trim="-")}
    if x == int(x):
        forms.add(str(int(x)))
    forms |= {f.lstrip("0") for f in forms if f.startswith("0.")}  # ".12" as printed in TAB 3.2
    return forms


@pytest.mark.skipif(not PAPERS.is_dir(), reason="paper texts not present in shared/papers beside the repository")
def test_every_number_occurs_in_its_paper_text():
    missing = []
    for key, table in published_tables().items():
        text = (PAPERS / table["source"]).read_text(encoding="utf-8")
        for x in _numbers(table):
            if not any(form in text for form in _printed_forms(x)):
                missing.append((key, x))
    assert not missing, missing
