"""Figures in one consistent seaborn style, saved as PDF and PNG."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import matplotlib.ticker as mticker
import numpy as np
import pandas as pd
import seaborn as sns

from .analysis import best_level, summarize
from .provenance import machine, project_dir

__all__ = ["style", "remaining_axis", "log_axis", "pruning_curve", "curve", "dense_band", "paired_panel",
           "figures_dir", "save", "save_numbers"]

PALETTE = {"imp": "#1f77b4", "lrr": "#1f77b4", "dense": "#7f7f7f", "extended_dense": "#d62728", "random": "#2ca02c",
           "reinit": "#9467bd", "extended_oneshot": "#ff7f0e", "rewind": "#17becf", "finetune": "#8c564b"}


def style() -> None:
    """The project's plotting style (call once per notebook)."""
    sns.set_theme(context="notebook", style="whitegrid", font_scale=0.95,
                  rc={"figure.dpi": 100, "savefig.dpi": 150, "savefig.bbox": "tight"})


LEGEND = {"framealpha": 0.85, "fontsize": "small"}  # framed: a legend may lie across a curve
NICE_REMAINING = (100, 50, 20, 10, 5, 2, 1, 0.5, 0.2, 0.1, 0.05, 0.02, 0.01)


def remaining_axis(ax: plt.Axes) -> None:
    """x axis = percent of weights remaining, log scale, dense on the left (as in the paper), labelled over the
    whole range drawn so far (a noise curve's interesting part is often below 1% remaining)."""
    ax.set_xscale("log")
    ax.xaxis.set_inverted(True)
    lo, hi = sorted(ax.dataLim.intervalx)
    ticks = [t for t in NICE_REMAINING if lo * 0.999 <= t <= hi * 1.001]
    if len(ticks) < 4:  # a short range (a few levels): the levels' own percentages, 0.8^k
        levels = [t for t in (100 * 0.8 ** k for k in range(60)) if lo * 0.999 <= t <= hi * 1.001]
        ticks = [float(f"{t:.3g}") for t in levels[:: max(1, int(np.ceil(len(levels) / 8)))]]
    if lo < min(ticks, default=hi) / 1.5:  # label the sparsest point itself when no nice tick is near it
        if ticks and min(ticks) / lo < 2.5:  # in place of a nice tick too close to it to be read beside it
            ticks.remove(min(ticks))
        ticks.append(float(f"{lo:.2g}"))
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("weights remaining (%)")


def log_axis(ax: plt.Axes) -> None:
    """A log-scale y axis labelled in plain numbers at 1, 2 and 5 of each decade, or finer when the data span less
    than a decade (so a value such as the dense model's can be read off it)."""
    ax.set_yscale("log")
    lo, hi = sorted(ax.dataLim.intervaly)
    narrow = lo > 0 and hi / lo < 10
    subs = (1.0, 1.2, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 8.0) if narrow else (1.0, 2.0, 5.0)
    ax.yaxis.set_major_locator(mticker.LogLocator(base=10, subs=subs, numticks=12))
    ax.yaxis.set_major_formatter(mticker.FuncFormatter(lambda v, _: f"{v:.2g}"))
    ax.yaxis.set_minor_locator(mticker.NullLocator())


def pruning_curve(df: pd.DataFrame, ax: plt.Axes | None = None, metric: str = "error", source: str = "test",
                  label: str = "IMP", color: str | None = None, select_on: str = "val") -> plt.Axes:
    """``metric`` on ``source`` vs sparsity (mean ± 95% CI), the dense model as a band, the best level (parts on
    ``select_on``) starred."""
    ax = ax or plt.subplots(figsize=(6, 4))[1]
    dense_band(df, ax, metric, source)
    curve(df, ax, metric, source, label, color or PALETTE["imp"])
    s = summarize(df, metric)
    best = s[(s.source == source) & (s.level == best_level(df, select_on, metric))].iloc[0]
    ax.plot(100 * (1 - best.sparsity), best["mean"], "*", color="black", ms=13,
            label=f"best on {select_on}: {best.sparsity:.1%} sparse")
    ax.legend(**LEGEND)
    return ax


def curve(df: pd.DataFrame, ax: plt.Axes, metric: str = "error", source: str = "test", label: str = "",
          color: str | None = None, x: str = "remaining", marker: str = "o", ls: str = "-") -> plt.Axes:
    """One mean ± 95% CI line of ``metric`` on ``source`` over levels, against ``x``: ``remaining`` (percent of
    weights left) or ``epochs`` (total epochs trained)."""
    s = summarize(df, metric)
    s = s[s.source == source].sort_values("level")
    xs = 100 * (1 - s.sparsity.to_numpy()) if x == "remaining" else s.epochs_total.to_numpy()
    mean, ci = s["mean"].to_numpy(), np.nan_to_num(s["ci"].to_numpy())
    ax.plot(xs, mean, marker=marker, ls=ls, color=color, ms=3.5, lw=1.5, label=label)
    ax.fill_between(xs, mean - ci, mean + ci, color=color, alpha=0.18, lw=0)
    if x == "remaining":
        remaining_axis(ax)
    else:
        ax.set_xlabel("epochs trained in total")
    ax.set_ylabel(f"{source.replace('_', ' ')} {metric}")
    return ax


def dense_band(df: pd.DataFrame, ax: plt.Axes, metric: str = "error", source: str = "test",
               label: str = "dense (level 0)") -> None:
    """The dense model (level 0 of ``df``) as a horizontal line with its 95% CI band."""
    s = summarize(df, metric)
    d = s[(s.source == source) & (s.level == 0)].iloc[0].fillna({"ci": 0.0})
    ax.axhspan(d["mean"] - d.ci, d["mean"] + d.ci, color=PALETTE["dense"], alpha=0.25, lw=0)
    ax.axhline(d["mean"], color=PALETTE["dense"], lw=1, ls="--", label=label)


def paired_panel(ax: plt.Axes, verdict: Any) -> plt.Axes:
    """Draw what a verdict tests: for each of its parts (``verdict.parts``), the paired difference per level, mean and
    95% interval, against the weights remaining; the zero line; the ±margin band of a "match" part and the margin line
    on the predicted side of a "lower"/"higher" part, both named in the legend and always inside the y range; the level
    each part is decided at ringed. Reads the parts by
    their attributes only (``name``, ``quantity``, ``margin``, ``direction``, ``level``, ``differences``)."""
    parts = list(verdict.parts)
    distinct = len({p.name for p in parts}) == len(parts)  # else the legend names each part's quantity
    edges = [0.0]  # every y the panel must show: the intervals' ends and the margins
    for part, color in zip(parts, sns.color_palette("deep", max(len(parts), 1))):
        d = part.differences.sort_values("level")
        if not len(d):
            continue
        xs, mean = 100 * (1 - d.sparsity.to_numpy(dtype=float)), d["mean"].to_numpy(dtype=float)
        ci = np.nan_to_num(d["ci"].to_numpy(dtype=float))
        label = (part.name if distinct else part.quantity) if len(parts) > 1 else None
        ax.errorbar(xs, mean, yerr=ci, fmt="o-", ms=3.5, lw=1.3, capsize=2, color=color, label=label)
        edges += [*(mean - ci), *(mean + ci)]
        at = (d.level == part.level).to_numpy()
        if at.any():
            ax.plot(xs[at], mean[at], "o", ms=10, mfc="none", mec="black", mew=1.2)
        if np.isfinite(part.margin) and part.margin > 0:
            edges += [-part.margin, part.margin]
            if part.direction == "match":
                ax.axhspan(-part.margin, part.margin, color=color, alpha=0.12, lw=0, label="equivalence margin")
            else:
                ax.axhline(-part.margin if part.direction == "lower" else part.margin, color=color, ls=":", lw=1,
                           label="margin")
    ax.axhline(0, color=PALETTE["dense"], lw=1, ls="--")
    lo, hi = np.nanmin(edges), np.nanmax(edges)
    ax.set_ylim(lo - 0.08 * (hi - lo or 1), hi + 0.08 * (hi - lo or 1))  # margins never on the frame
    remaining_axis(ax)
    quantities = {p.quantity for p in parts}
    units = {q.split(":")[0] for q in quantities}
    ax.set_ylabel(quantities.pop() if len(quantities) == 1 else
                  f"{units.pop()}, paired difference" if len(units) == 1 else "paired difference")
    handles, labels = ax.get_legend_handles_labels()
    if labels:  # each part, then one entry per kind of margin drawn
        keep = dict(sorted(zip(labels, handles), key=lambda lh: lh[0] in ("margin", "equivalence margin")))
        ax.legend(keep.values(), keep.keys(), **LEGEND)
    return ax


def figures_dir(profile: str, override: str | Path | None = None) -> Path:
    """``figures/<profile>/`` of the checkout; the ``smoke`` profile (CI) writes to ``build/figures-smoke/`` so
    it never overwrites the committed figures."""
    if override is not None:
        return Path(override)
    return project_dir() / ("build/figures-smoke" if profile == "smoke" else f"figures/{profile}")


def save(fig: plt.Figure, name: str, figures_dir: str | Path = "figures") -> list[Path]:
    """Save ``fig`` as ``<figures_dir>/<name>.pdf`` and ``.png`` with a footer naming the machine; returns the paths."""
    m = machine()
    fig.text(0.99, -0.01, f"{m['cpu']} · {m['cpu_capability']} kernels · torch {m['torch']}", ha="right", va="top",
             fontsize=6, color="grey")
    paths = [Path(figures_dir) / f"{name}.{ext}" for ext in ("pdf", "png")]
    paths[0].parent.mkdir(parents=True, exist_ok=True)
    for p in paths:
        # A fixed creation date keeps the PDF byte-identical when the numbers are.
        fig.savefig(p, metadata={"CreationDate": None} if p.suffix == ".pdf" else {"Software": None})
    return paths


def save_numbers(curves: dict[str, pd.DataFrame], name: str, figures_dir: str | Path, profile: str,
                 metrics: tuple[str, ...] = ("error", "loss", "accuracy")) -> Path:
    """The numbers behind a figure as a tidy CSV beside it: mean, 95% CI and seed count per procedure x level x
    metric x source."""
    table = pd.concat([summarize(df, metric).assign(profile=profile, procedure=procedure, metric=metric)
                       for procedure, df in curves.items() for metric in metrics], ignore_index=True)
    cols = ["profile", "procedure", "level", "sparsity", "epochs_total", "metric", "source", "mean", "ci", "n"]
    path = Path(figures_dir) / f"{name}.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table[[c for c in cols if c in table.columns]].to_csv(path, index=False, float_format="%.6g")
    return path
