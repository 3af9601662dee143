"""Figures fit for a paper: PNG at ≥ 200 dpi, vector PDF (a raster only where the content is a picture, no
Type 3 bitmap fonts), at most 7.2 in wide, every text inside the figure and tick labels not overlapping,
published numbers drawn as references, no empty panels; pictures with step labels and gaps."""

from __future__ import annotations

import io

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from PIL import Image

from analysis import infusion, professor, sweeps, walkback
from analysis.figures import PAPER_RC, fit_suptitle
from analysis.render import write_figure
from analysis.synthetic import SyntheticRun, demo_store, write_run
from raygen import plots
from raygen.results import read_artifacts, read_metrics, read_runs


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = demo_store(tmp_path_factory.mktemp("store"))
    return root, read_runs(root), read_metrics(root), read_artifacts(root)


def _figures(demo):
    import matplotlib

    root, runs, metrics, artifacts = demo
    with matplotlib.rc_context(PAPER_RC):
        return {
            "tab_a1_plot": infusion.tab_a1_figure(runs),
            "fig_a1": infusion.fig_a1(runs, metrics),
            "fig_3_3": infusion.fig_3_3(runs, metrics),
            "fig_2_3": professor.distances_figure(runs),
            "curves": professor.training_curves(runs, metrics, dataset="ptb"),
            "effects": sweeps.effects_figure(runs, "infusion-omega", {}),
            "samples": infusion.samples_figure(runs, artifacts, root),
            "discriminator": professor.discriminator_figure(runs, metrics),
            "tsne": professor.tsne_figure(runs, artifacts, root),
            "nearest": infusion.fig_3_5(runs, artifacts, root),
            "chains": walkback.chains_figure(runs, artifacts, root),
            "long_chains": walkback.long_chains_figure(runs, artifacts, root),
            "toy": walkback.toy_figure(runs, artifacts, root),
        }


PICTURES = {"samples", "tsne", "nearest", "chains", "long_chains", "toy"}  # figures whose content is a picture


def _overlaps(a, b) -> bool:
    return a.x0 < b.x1 - 0.5 and b.x0 < a.x1 - 0.5 and a.y0 < b.y1 - 0.5 and b.y0 < a.y1 - 0.5


def test_figures_are_paper_sized_and_every_text_fits(demo, tmp_path):
    for name, fig in _figures(demo).items():
        assert fig.get_figwidth() <= 7.2 + 1e-9, name
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        # Everything drawn (titles, labels, tick labels, legends) lies inside the figure.
        tight = fig.get_tightbbox(renderer)
        width, height = fig.get_size_inches()
        assert tight.x0 >= -0.01 and tight.y0 >= -0.01, name
        assert tight.x1 <= width + 0.01 and tight.y1 <= height + 0.01, (name, tight, width, height)
        for ax in fig.axes:
            lo, hi = sorted(ax.get_xlim())
            drawn = [t for t, loc in zip(ax.get_xticklabels(), ax.get_xticks())
                     if t.get_visible() and t.get_text() and lo - 1e-12 <= loc <= hi + 1e-12]
            extents = [t.get_window_extent(renderer) for t in drawn]
            for i in range(len(extents) - 1):
                assert not _overlaps(extents[i], extents[i + 1]), (name, drawn[i].get_text(), drawn[i + 1].get_text())
        files = write_figure(fig, tmp_path, name)
        png, pdf = files
        assert Image.open(png).info["dpi"][0] >= 199.9
        data = pdf.read_bytes()
        assert data.startswith(b"%PDF") and b"/Type3" not in data, name  # TrueType text, not bitmap glyphs
        assert fig.get_figheight() <= 9.0 + 0.5, name  # a page's text height (a wrapped title may add a line)
        if name in PICTURES:
            assert b"/Subtype /Image" in data  # the content is a picture: embedded as one
        else:
            assert b"/Subtype /Image" not in data, name  # a plot: vector only


def test_fig_3_3_has_no_empty_parzen_panel(tmp_path):
    run = SyntheticRun("a", "infusion", "mnist", config={"algo.steps": 5, "algo.omega": 0.1},
                       curves={"valid/lower_bound": ([10, 20], [1.0, 2.0])}, finals={"test/lower_bound": 2.0})
    write_run(tmp_path, run)
    fig = infusion.fig_3_3(read_runs(tmp_path), read_metrics(tmp_path))
    assert len(fig.axes) == 1 and fig.axes[0].lines
    run.run_id, run.curves["valid/parzen_ll"] = "b", ([10, 20], [100.0, 200.0])
    write_run(tmp_path / "p", run)
    fig = infusion.fig_3_3(read_runs(tmp_path / "p"), read_metrics(tmp_path / "p"))
    assert len(fig.axes) == 2 and all(ax.lines for ax in fig.axes)
    # One run's final test Parzen point carries its standard error as an error bar.
    run.run_id, run.finals = "c", {"test/lower_bound": 2.0, "test/parzen_ll": 300.0, "test/parzen_ll_se": 4.0}
    write_run(tmp_path / "se", run)
    parzen = infusion.fig_3_3(read_runs(tmp_path / "se"), read_metrics(tmp_path / "se")).axes[1]
    bars = [c for c in parzen.collections if c.get_segments()]
    assert bars and np.allclose(bars[0].get_segments()[0][:, 1], [296.0, 304.0])


def test_tab_a1_figure_draws_the_published_numbers_as_reference(demo):
    _, runs, _, _ = demo
    fig = infusion.tab_a1_figure(runs)
    five = next(ax for ax in fig.axes if ax.get_title() == "5 steps")
    published = next(line for line in five.lines if line.get_linestyle() == "--")
    assert list(published.get_ydata()) == [823.81, 910.19, 1142.43, 1303.19, 1406.38, 1448.66, 1397.41, 1262.57]
    assert fig.legends and {t.get_text() for t in fig.legends[0].get_texts()} == {"published (TAB A.1)", "ours"}


def test_tile_leaves_gaps_between_pairs_and_chains():
    images = np.zeros((4, 1, 3, 3), dtype=np.float32)
    canvas = tile = plots.tile(images, nrow=4, pad=1, group=2, group_pad=3)
    assert tile.shape == (1 + 3 + 1, 1 + 3 + 1 + 3 + 3 + 3 + 1 + 3 + 1, 1)
    # White (1.0) between the pairs, black (0.0) inside the images.
    assert (canvas[1:4, 8:11] == 1).all() and (canvas[1:4, 1:4] == 0).all()
    rows = plots.tile(np.zeros((4, 1, 3, 3), dtype=np.float32), nrow=2, pad=1, row_pad=4)
    assert rows.shape[0] == 1 + 3 + 4 + 3 + 1 and (rows[4:8] == 1).all()


def test_picture_artifacts_are_200_dpi_pngs():
    chains = np.random.default_rng(0).random((12, 3, 1, 8, 8)).astype(np.float32)
    for data in (plots.chains_png(chains, title="chains"),
                 plots.image_grid_png(chains[0], nrow=3, group=1, title="a | b | c")):
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.info["dpi"][0] >= 199.9
        assert image.size[0] <= 7.2 * 200


def test_toy_point_chains_stay_within_the_paper_width_on_one_scale():
    # 31 chain steps every 5 = 7 panels: one row of them was 12 in wide (unreadable once shrunk to a page).
    chains = np.random.default_rng(0).normal(size=(31, 50, 2)).astype(np.float32)
    chains *= np.linspace(3, 0.1, 31)[:, None, None]
    for data in (plots.point_chains_png(chains, chains[-1], every=5, title="model sampling chain"),
                 plots.points_png(chains[-1], chains[0], title="samples")):
        image = Image.open(io.BytesIO(data))
        assert image.format == "PNG" and image.info["dpi"][0] >= 199.9
        assert image.size[0] <= 7.2 * 200, image.size
    # Every panel on the same axes: the chain's shrinking spread is what the panels show.
    with pytest.MonkeyPatch.context() as mp:
        figures = []
        mp.setattr(plots, "_png", lambda fig: figures.append(fig) or b"")
        plots.point_chains_png(chains, every=5)
    drawn = [ax for ax in figures[0].axes if ax.get_visible() and ax.collections]
    assert len(drawn) == 7
    assert len({tuple(ax.get_xlim()) for ax in drawn}) == 1 and len({tuple(ax.get_ylim()) for ax in drawn}) == 1


def test_plot_axes_are_labelled_in_words_with_units(demo):
    import re

    for name, fig in _figures(demo).items():
        for ax in fig.axes:
            if ax.images or not ax.axison or ax.get_label() == "<colorbar>" or not (ax.lines or ax.collections
                                                                                  or ax.patches):
                continue  # pictures and colour bars carry no quantity axis of their own
            # Bars over named categories (Fig 2.3) need no x label: the tick labels name them.
            categorical = any(re.search("[A-Za-z]", t.get_text().replace("mathdefault", "")) for t in ax.get_xticklabels())
            for label in ([ax.get_ylabel()] if categorical else [ax.get_xlabel(), ax.get_ylabel()]):
                assert label, (name, ax.get_title())
                assert not re.fullmatch(r"\w+/\w+", label), (name, label)  # a metric key, not words
    effects = _figures(demo)["effects"]
    assert {ax.get_ylabel() for ax in effects.axes if ax.collections} == {"validation lower bound (nats)"}


@pytest.mark.parametrize("side", [8, 28])
def test_picture_column_labels_never_overlap(side):
    # 8x8 digits paired with their nearest training example: "sample"/"nearest" over 8-pixel columns overlapped.
    rng = np.random.default_rng(0)
    figures = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(plots, "_png", lambda fig: figures.append(fig) or b"")
        plots.image_grid_png(rng.random((16, 1, side, side)), nrow=8, group=2, title="sample | nearest training example")
        plots.chains_png(rng.random((40, 3, 1, side, side)), title="chains")
        plots.chains_png(rng.random((6, 2, 1, side, side)), title="chains")
    for fig in figures:
        assert fig.get_figwidth() <= 7.2
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        renderer = canvas.get_renderer()
        labels = [t for t in fig.axes[0].get_xticklabels() if t.get_text()]
        assert len(labels) >= 2
        extents = [t.get_window_extent(renderer) for t in labels]
        for a, b, ta, tb in zip(extents, extents[1:], labels, labels[1:]):
            assert not _overlaps(a, b), (side, ta.get_text(), tb.get_text())


def test_figure_titles_naming_other_data_fit_and_stay_short(tmp_path):
    # The only run: MNIST with other settings. The title names them briefly and fits in the figure.
    run = SyntheticRun("a", "infusion", "mnist", config={"algo.steps": 5, "algo.omega": 0.1,
                                                         "data.mnist_split": "test-only", "data.max_train": 500},
                       curves={"valid/lower_bound": ([10, 20], [1.0, 2.0]), "valid/parzen_ll": ([10, 20], [3.0, 4.0])},
                       finals={"test/lower_bound": 2.0})
    write_run(tmp_path, run)
    runs, metrics = read_runs(tmp_path), read_metrics(tmp_path)
    import matplotlib

    with matplotlib.rc_context(PAPER_RC):  # as build_report makes them
        figures = (infusion.fig_3_3(runs, metrics), infusion.fig_a1(runs, metrics))
    for i, fig in enumerate(figures):
        title = fig._suptitle.get_text()
        assert "not the paper's data" in title and "test-only" in title and "(paper:" not in title, title
        fit_suptitle(fig)  # what write_figure does before saving
        canvas = FigureCanvasAgg(fig)
        canvas.draw()
        tight = fig.get_tightbbox(canvas.get_renderer())
        width, height = fig.get_size_inches()
        assert tight.x0 >= -0.01 and tight.x1 <= width + 0.01 and tight.y1 <= height + 0.01, (title, tight, width)
        assert all(ax.get_position().height * height > 1.0 for ax in fig.axes if ax.lines), title  # panels keep room
        files = write_figure(fig, tmp_path, f"f{i}")
        assert abs(Image.open(files[0]).size[1] - height * 200) <= 1  # saved as laid out


def test_picture_figures_fit_a_page_and_the_title_never_covers_a_label(tmp_path):
    import pandas as pd

    from analysis.figures import image_panel

    rng = np.random.default_rng(0)
    paths = []
    for i in range(6):  # six datasets' inpainting pictures: 16.7 in tall, the title over the first label
        (tmp_path / f"{i}.png").write_bytes(plots.image_grid_png(rng.random((16, 1, 28, 28)), nrow=8,
                                                                 title="original | start | inpainted"))
        paths.append(f"{i}.png")
    rows = pd.DataFrame({"run_id": [f"run-{i}" for i in range(6)], "step": 5, "path": paths})
    labels = [f"npz:file{i}.npz · infusion-20261130-131312-da59da" for i in range(6)]
    fig = image_panel(tmp_path, rows, title="Fig 3.6: inpainting (top half clamped)", labels=labels)
    width, height = fig.get_size_inches()
    assert width <= 7.2 and height <= 9.0 + 1e-9, (width, height)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    title = fig._suptitle.get_window_extent(renderer)
    for ax in fig.axes:
        if ax.get_title():
            assert not _overlaps(title, ax.title.get_window_extent(renderer)), ax.get_title()
    tight = fig.get_tightbbox(renderer)
    assert tight.x0 >= -0.01 and tight.y0 >= -0.01 and tight.x1 <= width + 0.01 and tight.y1 <= height + 0.01
    # One small picture is shown at the size it was drawn (its own 7-8 pt text stays 7-8 pt), not blown up.
    small = plots.image_grid_png(rng.random((8, 1, 8, 8)), nrow=8, title="samples")
    (tmp_path / "small.png").write_bytes(small)
    drawn_in = Image.open(io.BytesIO(small)).size[0] / 200
    one = image_panel(tmp_path, rows.iloc[:1].assign(path="small.png"), title="samples", labels=["digits · run"])
    assert one.get_figwidth() <= max(1.5, drawn_in) + 0.01, (one.get_figwidth(), drawn_in)
