"""Look at one level of a stored study: what pruning left of each layer, how that level trained, and which
training examples it fits better or worse than the dense model. Reads the store only; trains nothing.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from .progress import widget_front_end
from .store import Run, find_run

__all__ = ["stored_studies", "levels", "layer_weights", "level_curves", "loss_change", "level_figure", "explore"]

Runs = Sequence[Run]
# Figures whose runs have levels to explore (figure 7 adds only dense retrainings, one level each).
EXPLORABLE = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "explore")


def stored_studies(study: Any, figures: Sequence[str] = EXPLORABLE) -> dict[str, list[Run]]:
    """The studies behind ``figures`` that the store holds for every seed with more than one level, named by what
    they vary and the figures that read them: ``{"imp [fig1, fig2, ...]": [run_seed0, run_seed1]}``."""
    order = list(figures)
    found = {}
    for need, group in study.plan(figures).groupby("need", sort=False):
        if not group.state.isin(["done", "partial"]).all():  # partial: stored, and more levels are wanted
            continue
        runs = [find_run(path) for path in group.run]
        if all(len(r.finished_levels()) > 1 for r in runs):
            figs = {f for cell in group.figures for f in cell.split(",") if f in order}
            found[f"{need} [{', '.join(sorted(figs, key=order.index))}]"] = runs
    return found


def levels(runs: Runs) -> pd.DataFrame:
    """One row per level finished by every seed: ``level``, ``sparsity`` (mean over seeds), ``remaining``,
    ``epochs_total``."""
    frames = [r.frame() for r in runs]
    if any(f.empty for f in frames):
        empty = [str(r.path) for r, f in zip(runs, frames) if f.empty]
        raise ValueError(f"no finished level in {empty}; run the study first (Study.run)")
    df = pd.concat(frames, ignore_index=True).drop_duplicates(["seed", "level"])
    df = df.groupby("level").filter(lambda d: d.seed.nunique() == len(runs))  # the levels every seed finished
    out = df.groupby("level", as_index=False).agg(sparsity=("sparsity", "mean"), epochs_total=("epochs_total", "max"))
    out.insert(2, "remaining", 1.0 - out.sparsity)
    return out


def layer_weights(run: Run, level: int) -> pd.DataFrame:
    """Per prunable layer at ``level``, from the stored mask: ``weights``, ``remaining``, ``fraction_remaining``."""
    mask = run.load_checkpoint(level)["mask"]
    rows = [{"layer": name, "weights": int(m.numel()), "remaining": int(m.sum())} for name, m in mask.items()]
    return pd.DataFrame(rows).assign(fraction_remaining=lambda df: df.remaining / df.weights)


def level_curves(runs: Runs, level: int, sources: Sequence[str] = ("train", "test")) -> pd.DataFrame:
    """The training curves of ``level``: one row per seed x evaluated epoch x source (loss, accuracy, error)."""
    hist = pd.concat([r.history() for r in runs], ignore_index=True)
    hist = hist[hist.level == level]
    rows = [hist[["seed", "level", "epoch"]].assign(source=s, loss=hist[f"{s}_loss"], accuracy=hist[f"{s}_accuracy"],
                                                    error=1.0 - hist[f"{s}_accuracy"]) for s in sources]
    return pd.concat(rows, ignore_index=True).sort_values(["seed", "source", "epoch"], ignore_index=True)


def loss_change(run: Run, level: int, base_level: int = 0) -> pd.DataFrame:
    """Per training example: final loss at ``base_level`` (dense) and at ``level``, and ``change`` = level - dense
    (negative: the pruned model fits it better)."""
    dense = run.load_checkpoint(base_level)["per_example_loss"]
    pruned = run.load_checkpoint(level)["per_example_loss"]
    if dense.shape != pruned.shape or dense.numel() == 0:
        raise ValueError(f"{run.path}: per-example losses of levels {base_level} and {level} do not match")
    df = pd.DataFrame({"dense_loss": dense.numpy(), "loss": pruned.numpy()}).rename_axis("example")
    return df.assign(change=df.loss - df.dense_loss)


def _layers_panel(ax: plt.Axes, run: Run, level: int) -> None:
    layers = layer_weights(run, level)
    ax.barh(layers.layer, layers.fraction_remaining, color="C0")
    for y, row in enumerate(layers.itertuples()):  # beside the bar, readable however short it is
        ax.text(row.fraction_remaining + 0.02, y, f"{row.remaining:,} / {row.weights:,}", va="center",
                fontsize="x-small")
    ax.invert_yaxis()  # first layer on top
    ax.set(xlim=(0, 1.45), xticks=[0, 0.25, 0.5, 0.75, 1], xlabel="fraction of weights remaining",
           title="remaining weights per layer")


def _curves_panel(ax: plt.Axes, runs: Runs, level: int) -> None:
    if level != 0:  # the dense model's curves, for reference
        for (_, source), d in level_curves(runs, 0).groupby(["seed", "source"]):
            ax.plot(d.epoch, d.error, color="0.75", lw=1, ls="--" if source == "train" else "-")
    for (s, source), d in level_curves(runs, level).groupby(["seed", "source"]):
        ax.plot(d.epoch, d.error, color=f"C{s % 10}", ls="--" if source == "train" else "-",
                label=f"{source}, seed {s}")
    ax.set(xlabel="epoch of this level", ylabel="error",
           title="training curves (dense in grey)" if level else "training curves")
    ax.legend(framealpha=0.85, fontsize="x-small", ncol=2)


def _change_panel(ax: plt.Axes, run: Run, level: int) -> None:
    c = loss_change(run, level).change.to_numpy()
    if level == 0:
        ax.text(0.5, 0.5, "level 0 is the dense model:\npick a sparser level", ha="center", va="center",
                transform=ax.transAxes)
    else:
        lim = max(float(np.quantile(np.abs(c), 0.99)), 1e-6)  # a few extreme examples would squash the rest
        ax.hist(np.clip(c, -lim, lim), bins=60, color="C2")
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlim(-lim, lim)
        ax.text(0.02, 0.95, f"lower: {np.mean(c < 0):.0%}\nhigher: {np.mean(c > 0):.0%}", transform=ax.transAxes,
                va="top", fontsize="small")
    ax.set(xlabel="training loss change vs dense, per example", title=f"{len(c):,} training examples")


def level_figure(runs: Runs, level: int, seed: int | None = None) -> plt.Figure:
    """Three panels for one level of one seed (default: the first): remaining weights per layer, error curves
    (every seed; dense in grey), histogram of per-example loss change vs dense."""
    run = next((r for r in runs if seed is None or r.cfg.seed == seed), None)
    if run is None:
        raise ValueError(f"seed {seed} is not in this study (seeds {[r.cfg.seed for r in runs]})")
    fig, (layers, curves, change) = plt.subplots(1, 3, figsize=(13, 3.6), width_ratios=[1, 1.1, 1.1])
    _layers_panel(layers, run, level)
    _curves_panel(curves, runs, level)
    _change_panel(change, run, level)
    m = run.load_metrics(level)
    fig.suptitle(f"{run.cfg.protocol}, level {level}: {m['sparsity']:.1%} sparse, "
                 f"{m['epochs_total']} epochs in all (seed {run.cfg.seed})", fontsize="medium")
    fig.tight_layout()
    return fig


def explore(studies: Mapping[str, Any] | Any, seed: int | None = None, widget: bool | None = None) -> Any:
    """Pickers for a study (``{name: Experiment}`` or one), a seed and a sparsity over :func:`level_figure`.
    ``widget=None``: the widget where a front end can show it, else (papermill, nbval) the first study's
    sparsest level as a plain figure."""
    import ipywidgets as widgets
    from IPython.display import display

    named = studies if isinstance(studies, Mapping) else {"study": studies}
    studies = {name: list(getattr(s, "runs", s)) for name, s in named.items()}  # Experiments or lists of runs
    if not studies:
        raise ValueError("no stored study to explore: run the figures' notebooks or `pgcore compute` first "
                         "(stored_studies lists what the store holds with more than one level)")
    if not (widget_front_end() if widget is None else widget):  # headless: no one to move a slider
        runs = next(iter(studies.values()))
        return level_figure(runs, int(levels(runs).level.max()), seed)
    pick = widgets.Dropdown(options=list(studies), description="study", layout=widgets.Layout(width="60%"))
    seeds = widgets.Dropdown(description="seed")
    slider = widgets.SelectionSlider(options=[("0.0%", 0)], description="sparsity", continuous_update=False,
                                     layout=widgets.Layout(width="60%"))
    out = widgets.Output()
    updating = False  # re-filling the pickers fires their observers; draw once, at the end

    def draw(_: Any = None) -> None:
        if updating:
            return
        fig = level_figure(studies[pick.value], slider.value, seeds.value)
        with out:
            out.clear_output(wait=True)
            display(fig)
        plt.close(fig)  # shown once, inside the output widget

    def refill(_: Any = None) -> None:
        nonlocal updating
        updating = True
        runs = studies[pick.value]
        seeds.options = [r.cfg.seed for r in runs]
        seeds.value = seed if seed in seeds.options else seeds.options[0]
        slider.options = [(f"{row.sparsity:.1%}", int(row.level)) for row in levels(runs).itertuples()]
        slider.value = slider.options[-1][1]  # the sparsest level
        updating = False
        draw()

    pick.observe(refill, names="value")
    seeds.observe(draw, names="value")
    slider.observe(draw, names="value")
    refill()
    return widgets.VBox([widgets.HBox([pick, seeds]), slider, out])
