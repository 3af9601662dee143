"""Dashboard without a browser: figure dicts, importance on a rebuilt Optuna study, the JSON API, the page."""

from __future__ import annotations

import base64
import io
import json
import math
import re
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest

from analysis.dashboard import (
    DashboardApp,
    curves_figure,
    export_dashboard,
    parcoords_dimension,
    parcoords_figure,
    pareto_figure,
    render_page,
)
from analysis.load import read_sweep_specs
from analysis.sweeps import (
    Objective,
    Param,
    SweepInfo,
    param_importance,
    pareto_mask,
    study_from_trials,
    sweep_trials,
)
from analysis.synthetic import SyntheticRun, demo_store, write_run
from raygen.results import read_metrics, read_runs


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return demo_store(tmp_path_factory.mktemp("store"))


def _trials(n: int = 6, *, status=None, objective=None) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame({
        "run_id": [f"r{i}" for i in range(n)],
        "trial_id": [f"{i:05d}" for i in range(n)],
        "status": status or ["completed"] * n,
        "lr": 10 ** rng.uniform(-5, -2, n),
        "kind": (["a", "b"] * n)[:n],
        "alpha": [0.1 if i % 2 else np.nan for i in range(n)],
        "score": objective if objective is not None else rng.normal(size=n),
    })


INFO = SweepInfo("s", "s", [Objective("score", "maximize")], [
    Param("lr", "float", log=True, low=1e-5, high=1e-2),
    Param("kind", "categorical", choices=["a", "b"]),
    Param("alpha", "float", low=0.0, high=0.2, condition={"kind": ["b"]}),
])


# ---------------------------------------------------------------------------------------------- figures


def test_log_parameter_axis_plots_log10_with_data_unit_ticks():
    values = pd.Series([1e-5, 3e-4, 1e-2])
    dim = parcoords_dimension(Param("lr", "float", log=True), values)
    assert dim["values"] == pytest.approx([math.log10(v) for v in values])
    assert dim["tickvals"] == [-5.0, -4.0, -3.0, -2.0]
    assert [float(t) for t in dim["ticktext"]] == pytest.approx([1e-5, 1e-4, 1e-3, 1e-2])
    assert dim["label"] == "lr (log)" and dim["range"] == pytest.approx([-5.0, -2.0])


def test_categorical_and_inactive_values_get_codes_and_na_ticks():
    dim = parcoords_dimension(Param("kind", "categorical", choices=["x", "y", "z"]), pd.Series(["z", None, "x"]))
    assert dim["values"] == [2, -1, 0]
    assert dict(zip(dim["tickvals"], dim["ticktext"])) == {-1: "n/a", 0: "x", 1: "y", 2: "z"}
    num = parcoords_dimension(Param("alpha", "float"), pd.Series([0.1, np.nan, 0.3]))
    assert num["ticktext"][0] == "n/a" and num["values"][1] == num["tickvals"][0] < 0.1
    assert num["values"][0] == 0.1 and num["values"][2] == 0.3
    assert parcoords_dimension(Param("never", "float"), pd.Series([np.nan, np.nan])) is None


def test_parcoords_figure_shows_finished_trials_only():
    trials = _trials(6, status=["completed"] * 4 + ["failed", "running"])
    trials.loc[4:, "score"] = np.nan
    fig = parcoords_figure(trials, INFO)
    (trace,) = fig["data"]
    assert trace["type"] == "parcoords"
    labels = [d["label"] for d in trace["dimensions"]]
    assert labels == ["lr (log)", "kind", "alpha", "score (max)"]
    assert len(trace["line"]["color"]) == 4 and "2 unfinished" in fig["layout"]["title"]["text"]
    assert trace["dimensions"][-1]["values"] == pytest.approx(list(trials["score"][:4]))


def _brute_force_front(values: np.ndarray, signs) -> set[int]:
    v = values * np.asarray(signs)
    return {i for i in range(len(v)) if not any(
        all(v[j] <= v[i]) and any(v[j] < v[i]) for j in range(len(v)) if j != i)}


def test_pareto_mask_matches_brute_force():
    rng = np.random.default_rng(3)
    for signs in ([1, 1], [1, -1], [-1, 1, 1]):
        values = rng.integers(0, 6, size=(40, len(signs))).astype(float)  # ties included
        assert set(np.flatnonzero(pareto_mask(values, signs))) == _brute_force_front(values, signs)


def test_pareto_figure_is_only_for_several_objectives():
    trials = _trials(8).assign(cost=np.arange(8.0))
    assert pareto_figure(trials, INFO) is None
    info = SweepInfo("s", "s", [Objective("score", "maximize"), Objective("cost", "minimize")], INFO.params)
    fig = pareto_figure(trials, info)
    front = _brute_force_front(trials[["score", "cost"]].to_numpy(), [-1, 1])
    assert len(fig["data"][1]["x"]) == len(front) and len(fig["data"][0]["x"]) == 8 - len(front)


def test_curves_figure_downsamples_and_tags_traces_with_run_ids():
    steps = np.arange(1, 2001)
    metrics = pd.DataFrame({"run_id": "r0", "step": steps, "split": "valid", "metric": "loss", "value": np.sqrt(steps)})
    metrics = pd.concat([metrics, metrics.assign(run_id="r1", value=1.0)])
    trials = pd.DataFrame({"run_id": ["r0", "r1"], "trial_id": ["0", "1"], "stopped_early": [False, True]})
    fig = curves_figure(metrics, trials, "valid/loss", ["r1", "r0", "absent"])
    assert [t["meta"] for t in fig["data"]] == ["r1", "r0"]
    r0 = fig["data"][1]
    assert len(r0["x"]) <= 500 and r0["x"][0] == 1 and r0["x"][-1] == 2000
    assert r0["y"] == pytest.approx(np.sqrt(r0["x"]))
    assert fig["data"][0]["line"]["dash"] == "dash" and "stopped early" in fig["data"][0]["name"]


# ---------------------------------------------------------------------------------------------- importance


def test_importance_handles_zero_and_one_completed_trial():
    for n_done in (0, 1):
        trials = _trials(3, status=["completed"] * n_done + ["failed"] * (3 - n_done))
        result = param_importance(trials, INFO)
        assert not result.values and "at least 2 completed" in result.message and result.completed == n_done


def test_importance_excludes_conditional_params_and_finds_the_one_that_matters():
    rng = np.random.default_rng(1)
    n = 60
    lr = 10 ** rng.uniform(-5, -2, n)
    trials = _trials(n, objective=-np.abs(np.log10(lr) + 3.5) + rng.normal(0, 0.01, n))  # peaks at lr = 10^-3.5
    trials["lr"] = lr
    result = param_importance(trials, INFO)
    assert set(result.excluded) == {"alpha"} and "conditional" in result.excluded["alpha"]
    imp = result.values["score"]
    assert set(imp) == {"lr", "kind"} and imp["lr"] > imp["kind"]
    assert sum(imp.values()) == pytest.approx(1.0)


def test_study_rebuilt_from_trials_keeps_states_directions_and_inactive_params():
    trials = _trials(5, status=["completed", "completed", "failed", "completed", "completed"])
    trials.loc[2, "score"] = np.nan
    study = study_from_trials(trials, INFO, INFO.params)
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert study.direction.name == "MAXIMIZE"
    assert study.best_trial.values[0] == trials.loc[trials.status == "completed", "score"].max()
    assert "alpha" not in study.trials[0].params and study.trials[1].params["alpha"] == 0.1
    assert study.trials[3].params["lr"] == pytest.approx(trials.loc[3, "lr"])


def test_multi_objective_importance_has_one_entry_per_objective(store):
    trials, info = sweep_trials(read_runs(store), "pf-pareto", read_sweep_specs(store))
    result = param_importance(trials, info)
    assert set(result.values) == {"valid/bpc", "train/seconds_per_step"}


# ---------------------------------------------------------------------------------------------- API and page


def _get(app: DashboardApp, target: str):
    status, ctype, body = app.handle(target)
    return status, (json.loads(body) if ctype == "application/json" else body.decode())


def test_api_index_sweep_curves_images(store):
    app = DashboardApp(store)
    runs = read_runs(store)
    status, index = _get(app, "/api/index")
    assert status == 200
    sweeps = {s["id"]: s for s in index["sweeps"]}
    assert sweeps["infusion-omega"]["trials"] == (runs.sweep_id == "infusion-omega").sum()
    assert sweeps["infusion-omega"]["states"]["failed"] == 2 and sweeps["pf-pareto"]["multi_objective"]
    assert "runs: walkback" in sweeps  # plain runs are grouped per algorithm
    best = runs[(runs.sweep_id == "infusion-omega") & (runs.status == "completed")]["final.valid/lower_bound"].max()
    assert sweeps["infusion-omega"]["objectives"][0]["best"] == best

    status, sweep = _get(app, "/api/sweep?id=infusion-omega")
    assert status == 200 and len(sweep["table"]["rows"]) == 24
    assert sweep["figures"]["pareto"] is None and sweep["figures"]["parcoords"]["data"][0]["type"] == "parcoords"
    assert sweep["importance"]["excluded"].keys() == {"algo.alpha0"}
    assert "valid/lower_bound" in sweep["metric_keys"] and sweep["default_key"] == "valid/lower_bound"

    top = sweep["ranking"][:3]
    status, fig = _get(app, f"/api/curves?sweep=infusion-omega&key=valid/lower_bound&runs={','.join(top)}")
    metrics = read_metrics(store)
    first = metrics[(metrics.run_id == top[0]) & (metrics.metric == "lower_bound") & (metrics.split == "valid")]
    assert [t["meta"] for t in fig["data"]] == top
    assert fig["data"][0]["y"] == pytest.approx(list(first.sort_values("step").value))

    run = sweep["image_runs"][0]
    status, images = _get(app, f"/api/images?run={run}")
    assert status == 200 and {i["name"] for i in images["images"]} >= {"samples.png", "nearest.png"}
    png = base64.b64decode(images["images"][0]["src"].split(",", 1)[1])
    assert png.startswith(b"\x89PNG")

    status, csv = _get(app, "/api/trials.csv?sweep=pf-pareto")
    assert status == 200 and len(csv.strip().splitlines()) == 13
    assert _get(app, "/api/sweep")[0] == 400 and _get(app, "/api/sweep?id=nope")[0] == 400
    assert _get(app, "/nope")[0] == 404
    assert _get(app, "/api/sweep?id=" + quote("runs: infusion"))[0] == 200


def test_api_sees_new_trials_while_a_sweep_writes(tmp_path):
    write_run(tmp_path, SyntheticRun("t0", "infusion", "mnist", sweep_id="live", trial_id="0", params={"x": 1.0},
                                     finals={"valid/lower_bound": 1.0}))
    app = DashboardApp(tmp_path)
    v0 = _get(app, "/api/version")[1]["fingerprint"]
    assert _get(app, "/api/sweep?id=live")[1]["summary"]["trials"] == 1
    write_run(tmp_path, SyntheticRun("t1", "infusion", "mnist", sweep_id="live", trial_id="1", params={"x": 2.0},
                                     finals={"valid/lower_bound": 2.0}))
    assert _get(app, "/api/version")[1]["fingerprint"] != v0
    sweep = _get(app, "/api/sweep?id=live")[1]
    assert sweep["summary"]["trials"] == 2 and sweep["summary"]["objectives"][0]["best"] == 2.0


def _outside_plotly(html: str) -> str:
    from plotly.offline import get_plotlyjs

    js = get_plotlyjs()
    assert html.count(js) == 1  # plotly.js inlined exactly once
    return html.replace(js, "")


def test_page_is_offline_and_inlines_plotly_once():
    html = render_page("server", {})
    rest = _outside_plotly(html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", rest, re.IGNORECASE)
    assert "<script src" not in rest.lower() and "@import" not in rest and "cdn" not in rest.lower()


def test_export_is_self_contained(store, tmp_path):
    out = export_dashboard(store, tmp_path / "dash.html", top_k=5)
    html = out.read_text()
    rest = _outside_plotly(html)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", rest, re.IGNORECASE)
    data = json.loads(re.search(r'<script type="application/json" id="dashboard-data">(.*?)</script>', html,
                                re.DOTALL).group(1))
    assert {"infusion-omega", "pf-pareto"} <= set(data["sweeps"])
    curves = data["curves"]["infusion-omega"]["valid/lower_bound"]
    assert [t["meta"] for t in curves["data"]] == data["sweeps"]["infusion-omega"]["ranking"][:5]
    assert data["images"] and all(i["src"].startswith("data:image/png;base64,") for v in data["images"].values()
                                  for i in v)
    assert data["index"]["sweeps"][0]["id"] == "infusion-omega"


def edge_store(root):
    """Sweeps of awkward shapes: one trial, only failed trials, and a trial still running with no metrics."""
    write_run(root, SyntheticRun("one-0", "infusion", "mnist", sweep_id="one", trial_id="0", params={"x": 1.0},
                                 finals={"valid/lower_bound": 5.0}))
    for i in range(2):
        write_run(root, SyntheticRun(f"fail-{i}", "walkback", "mnist", sweep_id="failing", trial_id=str(i),
                                     params={"y": float(i)}, status="failed"))
    write_run(root, SyntheticRun("run-0", "teacher", "ptb", sweep_id="starting", trial_id="0", params={"z": "a"},
                                 status="running"))
    return root


def test_api_handles_sweeps_with_one_trial_only_failures_or_nothing_logged(tmp_path):
    app = DashboardApp(edge_store(tmp_path))
    status, index = _get(app, "/api/index")
    assert status == 200 and {s["id"] for s in index["sweeps"]} == {"one", "failing", "starting"}
    for sid, message in (("one", "at least 2 completed trials (this sweep has 1)"),
                         ("failing", "at least 2 completed trials (this sweep has 0)"),
                         ("starting", "at least 2 completed trials (this sweep has 0)")):
        status, sweep = _get(app, f"/api/sweep?id={sid}")
        assert status == 200, sweep
        assert message in sweep["importance"]["message"]
        assert sweep["figures"]["parcoords"]["data"] == [] or sid == "one"
    empty = tmp_path / "empty"
    (empty / "runs").mkdir(parents=True)
    assert _get(DashboardApp(empty), "/api/index")[1]["sweeps"] == []


# Strings that change an HTML page's structure when inlined unescaped: "</script>" ends the data block,
# "<!--<script>" puts the tokenizer in the double-escaped state (the real "</script>" no longer ends it and the
# page goes blank), U+2028 ends a line in older JavaScript, tags restyle plotly's pseudo-HTML text.
HOSTILE = "<!--<script>x</script><b>b</b>&amp;\u2028\u2029'\"`${x}<img src=x onerror=alert(1)>"
HOSTILE_NAME = "<!--<script>x<b>&\u2028"  # for file names (no "/")


def hostile_store(root):
    """Every string the dashboard renders carries HOSTILE: sweep id and name, run ids, trial ids, dataset,
    algorithm-independent params (names and values), metric names, notes, artifact names."""
    import numpy as np

    from analysis.synthetic import png_bytes, write_sweep_spec

    sid = "s" + HOSTILE_NAME
    write_sweep_spec(root, sid, {"name": HOSTILE, "metric": {"name": "valid/lb" + HOSTILE, "goal": "maximize"},
                                 "parameters": {"p" + HOSTILE: {"values": ["a" + HOSTILE, "b"]},
                                                "x": {"min": 0.0, "max": 1.0}}})
    for i in range(4):
        run = SyntheticRun(f"r{i}{HOSTILE_NAME}", "infusion", "d" + HOSTILE, sweep_id=sid, trial_id=f"{i}{HOSTILE}",
                           params={"p" + HOSTILE: ["a" + HOSTILE, "b"][i % 2], "x": i / 4},
                           curves={"valid/lb" + HOSTILE: ([1, 2], [float(i), float(i) + 1])},
                           finals={"valid/lb" + HOSTILE: float(i) + 1},
                           images={f"i{HOSTILE_NAME}.png": png_bytes(np.full((4, 4), 0.5))})
        write_run(root, run)
    # A run outside any sweep: its algorithm names a pseudo-sweep ("runs: <algorithm>") in the sweep list.
    write_run(root, SyntheticRun("plain" + HOSTILE_NAME, "algo" + HOSTILE, "d", config={"x" + HOSTILE: 1.0},
                                 finals={"valid/lower_bound": 1.0}))
    return root, sid


def _scripts(html: str) -> list[str]:
    """The text of each <script> element as an HTML parser sees it (what the browser runs or reads)."""
    from html.parser import HTMLParser

    class Parser(HTMLParser):
        def __init__(self) -> None:
            super().__init__(convert_charrefs=True)
            self.scripts: list[str] = []
            self.inside = False

        def handle_starttag(self, tag, attrs):
            if tag == "script":
                self.inside = True
                self.scripts.append("")

        def handle_endtag(self, tag):
            if tag == "script":
                self.inside = False

        def handle_data(self, data):
            if self.inside:
                self.scripts[-1] += data

    parser = Parser()
    parser.feed(html)
    return parser.scripts


def test_hostile_strings_cannot_change_the_exported_page(tmp_path):
    root, sid = hostile_store(tmp_path / "store")
    html = export_dashboard(root, tmp_path / "dash.html").read_text(encoding="utf-8")
    clean = render_page("static", {})
    # Same element structure as a page without data: three scripts (plotly, data, app), nothing added.
    scripts = _scripts(html)
    assert len(scripts) == len(_scripts(clean)) == 3
    assert scripts[2] == _scripts(clean)[2]  # the app's code is untouched
    data_text = scripts[1]
    assert not set("<>&\u2028\u2029") & set(data_text)
    data = json.loads(data_text)
    # The strings come back exactly as stored.
    assert data["sweeps"][sid]["summary"]["name"] == HOSTILE
    table = data["sweeps"][sid]["table"]
    assert "p" + HOSTILE in table["columns"]
    assert any(f"0{HOSTILE}" in row for row in table["rows"])
    assert any("a" + HOSTILE in row for row in table["rows"])
    # Chart text is escaped for plotly's pseudo-HTML (it shows &lt; as "<"); parallel-coordinate tick labels
    # (plain text there) and run ids in `meta` are not.
    parcoords = data["sweeps"][sid]["figures"]["parcoords"]
    dims = {d["label"]: d for d in parcoords["data"][0]["dimensions"]}
    label = "p" + HOSTILE.translate(str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;"}))
    assert label in dims and "a" + HOSTILE in dims[label]["ticktext"]
    assert "<" not in json.dumps(parcoords["layout"])
    curves = next(iter(data["curves"][sid].values()))
    assert all(t["meta"].endswith(HOSTILE_NAME) for t in curves["data"])


def test_hostile_strings_in_the_served_json(tmp_path):
    root, sid = hostile_store(tmp_path / "store")
    app = DashboardApp(root)
    status, index = _get(app, "/api/index")
    assert status == 200 and index["sweeps"][0]["name"] == HOSTILE
    assert index["sweeps"][1]["id"] == "runs: algo" + HOSTILE
    status, plain = _get(app, "/api/sweep?id=" + quote("runs: algo" + HOSTILE))
    assert status == 200 and plain["summary"]["trials"] == 1
    status, sweep = _get(app, "/api/sweep?id=" + quote(sid))
    assert status == 200 and sweep["summary"]["name"] == HOSTILE
    figures = dict(sweep["figures"])
    parcoords = figures.pop("parcoords")
    assert "<b>" not in json.dumps(figures) and "<b>" not in json.dumps(parcoords["layout"])
    page = app.page().decode()
    assert len(_scripts(page)) == 3


# ---------------------------------------------------------------------------------------------- first-run polish


def _test_objective_store(root, n: int = 4, extra_curves: dict | None = None):
    """A sweep selected on test/lower_bound (logged once per trial) whose trials log train/loss (8 steps) and
    valid/lower_bound (4 steps) as curves."""
    from analysis.synthetic import write_sweep_spec

    write_sweep_spec(root, "t", {"sweep_id": "t", "name": "t", "metric": {"name": "test/lower_bound", "goal": "maximize"},
                                 "parameters": {"x": {"type": "float", "low": 0.0, "high": 1.0, "path": "x"}}})
    for i in range(n):
        curves = {"train/loss": (list(range(10, 90, 10)), [1.0 / (s + i) for s in range(10, 90, 10)]),
                  "valid/lower_bound": ([20, 40, 60, 80], [-200.0 + s + i for s in (20, 40, 60, 80)]),
                  **(extra_curves or {})}
        write_run(root, SyntheticRun(f"t-{i}", "infusion", "mnist", sweep_id="t", trial_id=str(i), params={"x": i / n},
                                     curves=curves, finals={"test/lower_bound": -100.0 + i}))
    return root


def test_default_curve_metric_is_one_with_a_curve(tmp_path):
    app = DashboardApp(_test_objective_store(tmp_path / "a"))
    sweep = _get(app, "/api/sweep?id=t")[1]
    assert sweep["summary"]["objectives"][0]["metric"] == "test/lower_bound"
    assert "test/lower_bound" in sweep["metric_keys"]
    # The objective has one point per trial: the page opens on its validation counterpart instead.
    assert sweep["default_key"] == "valid/lower_bound"
    fig = _get(app, f"/api/curves?sweep=t&key={sweep['default_key']}&runs=t-0,t-1")[1]
    assert [len(t["x"]) for t in fig["data"]] == [4, 4]
    # No counterpart of the objective's metric: the metric with the most steps (train/loss, 8 per trial).
    app = DashboardApp(_test_objective_store(tmp_path / "b", extra_curves={"valid/lower_bound": ([80], [-1.0])}))
    assert _get(app, "/api/sweep?id=t")[1]["default_key"] == "train/loss"


def test_default_curve_metric_is_the_objective_when_it_has_a_curve(store):
    sweep = _get(DashboardApp(store), "/api/sweep?id=infusion-omega")[1]
    assert sweep["default_key"] == "valid/lower_bound"


def test_importance_from_few_trials_carries_a_caveat(tmp_path):
    from analysis.dashboard import IMPORTANCE_MIN_TRIALS, importance_figure

    rng = np.random.default_rng(3)
    for n, caveat in ((6, True), (IMPORTANCE_MIN_TRIALS, False)):
        trials = _trials(n, objective=list(rng.normal(size=n)))
        result = param_importance(trials, INFO)
        assert result.values and result.completed == n
        fig = importance_figure(result)
        notes = [a["text"] for a in fig["layout"].get("annotations", [])]
        if caveat:
            assert len(notes) == 1 and f"only {n} completed trials" in notes[0]
            assert f"fewer than {IMPORTANCE_MIN_TRIALS}" in notes[0]
        else:
            assert notes == []
    # The payload carries it for the page's note (the demo sweep has 22 completed of 24; pf-pareto has fewer).
    app = DashboardApp(_test_objective_store(tmp_path / "few"))
    imp = _get(app, "/api/sweep?id=t")[1]["importance"]
    assert imp["completed"] == 4 and "only 4 completed trials (fewer than 20)" in imp["caveat"]


def test_log_axis_ticks_are_decades_or_round_steps_and_never_crowded():
    from analysis.dashboard import MAX_LOG_TICKS, _log_ticks

    # Twelve decades: every other decade, at most MAX_LOG_TICKS labels, all powers of ten.
    vals, text = _log_ticks(-10.0, 2.0)
    assert len(vals) <= MAX_LOG_TICKS and all(float(v).is_integer() for v in vals)
    assert [float(t) for t in text] == pytest.approx([10 ** v for v in vals])
    assert text[:2] == ["1e-10", "1e-8"] and np.diff(vals).min() >= 2
    # Under two decades: 1-2-5 values inside the range, not arbitrary ones like 0.000316.
    vals, text = _log_ticks(math.log10(4e-4), math.log10(3e-3))
    assert text == ["5e-4", "1e-3", "2e-3"]
    assert [10 ** v for v in vals] == pytest.approx([5e-4, 1e-3, 2e-3])
    # The parcoords axis of a log parameter uses them.
    dim = parcoords_dimension(Param("lr", "float", log=True), pd.Series([1e-9, 1e-3, 1e2]))
    assert len(dim["tickvals"]) <= MAX_LOG_TICKS and dim["ticktext"][0] == "1e-9"


def test_long_chains_keep_a_legible_height(tmp_path):
    from PIL import Image

    from analysis.synthetic import png_bytes

    chain = np.tile(np.linspace(0, 1, 28)[None, :], (28, 30))  # 30 frames of 28 x 28 in one row
    square = np.linspace(0, 1, 64 * 64).reshape(64, 64)
    root = tmp_path / "chains"
    write_run(root, SyntheticRun("c-0", "walkback", "mnist", sweep_id="c", trial_id="0", params={"x": 0.0},
                                 finals={"valid/lower_bound": 1.0},
                                 images={"long_chain.png": png_bytes(chain), "samples.png": png_bytes(square)}))
    images = {i["name"]: i for i in _get(DashboardApp(root), "/api/images?run=c-0")[1]["images"]}
    for name, (w, h, strip) in (("long_chain.png", (840, 28, True)), ("samples.png", (64, 64, False))):
        im = images[name]
        png = Image.open(io.BytesIO(base64.b64decode(im["src"].split(",", 1)[1])))
        # The strip keeps its 28 px frames (squeezed to 320 px wide it would be 10 px high).
        assert png.size == (w, h) and (im["width"], im["height"], im["strip"]) == (w, h, strip)
    page = render_page("server", {})
    assert "figure.strip" in page and "overflow-x: auto" in page


def test_page_starts_with_a_loading_status_that_rendering_replaces():
    page = render_page("static", {})
    assert '<span id="status">loading…</span>' in page
    # Every user action reports a failure in the status line instead of leaving "loading…" there.
    assert 'main().catch((err) => failed("opening the dashboard", err))' in page
    assert page.count('guarded("reading the') >= 5
