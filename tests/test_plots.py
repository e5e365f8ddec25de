"""Figures label the whole sparsity range their curves cover."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pgcore import plots  # noqa: E402


def _frame(levels: int) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "level": k, "sparsity": 1 - 0.8 ** k, "epochs_total": k + 1, "source": "test",
                          "error": 0.1 + 0.001 * s, "loss": 0.1, "accuracy": 0.9} for k in range(levels + 1) for s in range(2)])


def testremaining_axis_labels_down_to_the_sparsest_curve():
    """A 30-level noise curve (0.12% remaining) drawn with a 20-level one: the labels reach
    below 1% remaining, whichever curve is drawn last."""
    for order in ((30, 20), (20, 30)):
        fig, ax = plt.subplots()
        for levels in order:
            plots.curve(_frame(levels), ax)
        labels = [float(t.get_text()) for t in ax.get_xticklabels()]
        assert max(labels) == 100 and min(labels) <= 0.2 and 0.5 in labels
        plt.close(fig)


# ---- every registered figure, drawn at smoke scale ------------------------------------------------------------

import dataclasses  # noqa: E402
import itertools  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from pgcore.config import load_yaml  # noqa: E402
from pgcore.figures import FIGURES  # noqa: E402
from pgcore.study import Study  # noqa: E402

DRAWN = [f for f, entry in FIGURES.items() if entry.make is not None]


@pytest.fixture(scope="module")
def smoke_study(tmp_path_factory) -> Study:
    """The smoke profile, shrunk (1,000 examples, 2 epochs), computed in this process."""
    p = load_yaml(Path(__file__).resolve().parent.parent / "params" / "smoke.yaml")
    p["train"]["epochs"], p["data"]["num_samples"] = 2, 1000
    study = Study.from_dict(p, root=tmp_path_factory.mktemp("store"), progress=False, compute=True)
    for need in study.expand():
        study.train(need)
    return study


def _texts(fig: plt.Figure) -> list:
    """Every visible text element: tick labels, axis labels, titles, legend entries, the suptitle."""
    out = []
    for ax in fig.axes:
        for axis, lim in ((ax.xaxis, ax.get_xlim()), (ax.yaxis, ax.get_ylim())):
            lo, hi = sorted(lim)
            out += [t for loc, t in zip(axis.get_ticklocs(), axis.get_ticklabels())  # drawn: inside the view
                    if t.get_visible() and t.get_text() and lo - 1e-12 <= loc <= hi + 1e-12]
        out += [t for t in (ax.xaxis.label, ax.yaxis.label, ax.title) if t.get_text()]
        legend = ax.get_legend()
        if legend is not None:
            out.append(legend)
    return out + ([fig._suptitle] if fig._suptitle is not None else [])


def overlaps(fig: plt.Figure) -> list[tuple[str, str]]:
    """Pairs of text elements of ``fig`` whose boxes intersect (by more than a pixel)."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    boxes = [(getattr(t, "get_text", lambda: "legend")(), t.get_window_extent(renderer)) for t in _texts(fig)]
    hits = []
    for (a, ba), (b, bb) in itertools.combinations(boxes, 2):
        w = min(ba.x1, bb.x1) - max(ba.x0, bb.x0)
        h = min(ba.y1, bb.y1) - max(ba.y0, bb.y0)
        if w > 1 and h > 1:
            hits.append((a, b))
    return hits


def test_a_30_level_axis_has_no_colliding_labels():
    """Figure 4's axis reaches 0.12% remaining: the sparsest point's label never sits on a nice tick's (0.2)."""
    fig, ax = plt.subplots(figsize=(4.5, 3.5))
    plots.curve(_frame(30), ax)
    labels = [t.get_text() for t in ax.get_xticklabels()]
    assert overlaps(fig) == [] and "0.12" in labels and "0.2" not in labels
    plt.close(fig)


def test_overlap_check_sees_colliding_labels():
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.set_xticks([0.0, 0.01])
    ax.set_xticklabels(["0.2", "0.12"])  # figure 4's old collision: two labels drawn over each other
    assert overlaps(fig)
    plt.close(fig)


@pytest.mark.parametrize("figure", DRAWN)
def test_every_figure_draws_without_overlapping_text(smoke_study, figure):
    made = FIGURES[figure].make(smoke_study.params, smoke_study.frames(figure), smoke_study.title)
    assert overlaps(made.fig) == [], figure
    plt.close(made.fig)


def test_every_sparsity_axis_uses_the_same_tick_labels(smoke_study):
    """Where two panels span the same weights-remaining range they are labelled alike, in every figure."""
    by_range: dict[tuple, set] = {}
    for figure in DRAWN:
        made = FIGURES[figure].make(smoke_study.params, smoke_study.frames(figure), smoke_study.title)
        made.fig.canvas.draw()
        for ax in made.fig.axes:
            if ax.get_xlabel().startswith("weights remaining"):
                lo, hi = sorted(round(v, 6) for v in ax.dataLim.intervalx)
                by_range.setdefault((lo, hi), set()).add(tuple(t.get_text() for t in ax.get_xticklabels()))
        plt.close(made.fig)
    assert by_range and all(len(labels) == 1 for labels in by_range.values()), by_range


@pytest.mark.parametrize("figure", ["fig5", "fig6"])
def test_figures_5_and_6_draw_their_controls_at_a_level_subset(smoke_study, figure):
    """The same store read with ``control_levels: [2]``: the controls' frames hold levels 0 and 2 only (nothing
    trains: level 2 is stored), IMP's chains every level, and the figure is drawn and judged."""
    study = dataclasses.replace(smoke_study, params={**smoke_study.params, "control_levels": [2]}, compute=False)
    frames = study.frames(figure)
    controls = [n for n in frames if any(w in n for w in ("reinit", "init", "one-shot"))]
    assert controls and all(sorted(frames[n].level.unique()) == [0, 2] for n in controls)
    assert sorted(frames[next(iter(frames))].level.unique()) == [0, 1, 2, 3]
    made = FIGURES[figure].make(study.params, frames, study.title)
    assert made.verdicts and overlaps(made.fig) == []
    plt.close(made.fig)
