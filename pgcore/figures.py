"""Every figure, declared once: its notebook, the series it reads (a protocol and dotted changes to the parameter
file's config, per figure's keys), and how it is drawn and judged. ``pgcore plan``, ``pgcore compute``, the
notebooks, the explorer, ``make figures`` and the tests all read :data:`FIGURES`. Verdicts come from
:mod:`pgcore.claims`; no figure words one by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import matplotlib.pyplot as plt
import pandas as pd

from . import analysis, claims, plots
from .config import ConfigError

__all__ = ["Series", "Figure", "Made", "FIGURES", "series", "noise_label", "tie_frame"]


@dataclass(frozen=True)
class Series:
    """One curve of a figure: every seed's run of ``protocol`` with dotted ``changes`` to the base config."""

    protocol: str
    changes: tuple[tuple[str, Any], ...] = ()


def series(protocol: str, changes: Mapping[str, Any] | None = None) -> Series:
    return Series(protocol, tuple(sorted((changes or {}).items())))


@dataclass
class Made:
    """A drawn figure: the figure, the frames behind it (label -> tidy frame), its verdicts and notes."""

    fig: plt.Figure
    numbers: dict[str, pd.DataFrame]
    verdicts: list[claims.Verdict] | dict[str, claims.Verdict]
    notes: list[str] = field(default_factory=list)
    metrics: tuple[str, ...] = ("error", "loss", "accuracy")


Title = Callable[..., str]  # Study.title: (what, levels=None) -> the figure's title


@dataclass(frozen=True)
class Figure:
    """A figure: its notebook (``notebooks/<notebook>.ipynb``), its files' stem in ``figures/<profile>/``, the series
    it reads as a function of the parameters, and its maker (None: the notebook draws interactively)."""

    notebook: str
    output: str | None
    series: Callable[[Mapping[str, Any]], dict[str, Series]]
    make: Callable[[Mapping[str, Any], dict[str, pd.DataFrame], Title], Made] | None = None
    caption: str = ""  # what the figure shows and the paper's claim it tests, for READMEs


# ---- the series each figure reads ----------------------------------------------------------------------------

def _levels(p: Mapping[str, Any]) -> int:
    return int(p["prune"].get("levels", 20))


def _variants(p: Mapping[str, Any], key: str, section: str) -> dict[str, Series]:
    """One IMP series per entry of ``p[key]`` (figure 1's ``variants``, figure 9's ``recipes``), each changing
    ``section``."""
    return {name: series("imp", {f"{section}.{k}": v for k, v in changes.items()})
            for name, changes in (p.get(key) or {}).items()}


def noise_label(protocol: str, fraction: float) -> str:
    return f"{protocol}, {fraction:.0%} noise" if fraction else f"{protocol}, no noise"


def _fig4(p: Mapping[str, Any]) -> dict[str, Series]:
    """IMP to ``noise_levels`` (memorization may give way only near 99.9% sparsity), extended dense training to
    ``prune.levels``, with and without noise."""
    out = {}
    for f in [0.0, *p["noise_fractions"]]:
        noise = {"data.noisy_fraction": f} if f else {}
        out[noise_label("imp", f)] = series("imp", {**noise, "prune.levels": int(p["noise_levels"] or _levels(p))})
        out[noise_label("extended_dense", f)] = series("extended_dense", {**noise, "prune.levels": _levels(p)})
    return out


def _fig3(p: Mapping[str, Any]) -> dict[str, Series]:
    out = {"IMP (LRR)": series("imp"), "extended dense (replayed cycles)": series("extended_dense")}
    if p.get("stretched_levels"):
        out["extended dense (one stretched schedule)"] = series("extended_stretched",
                                                                {"prune.levels": int(p["stretched_levels"])})
    return out


def _control(protocol: str, p: Mapping[str, Any], changes: Mapping[str, Any] | None = None) -> Series:
    """A control of figures 5 and 6 (its levels independent of each other) at ``control_levels``."""
    at = () if p["control_levels"] == "all" else tuple(sorted(set(chosen_levels(p, "control_levels"))))
    return series(protocol, {**(changes or {}), **({"prune.at_levels": at} if at else {})})


def _fig5(p: Mapping[str, Any]) -> dict[str, Series]:
    out = {"IMP (magnitude, LRR)": series("imp"), "random pruning (LRR)": series("imp", {"prune.method": "random"}),
           "IMP mask, reinitialized": _control("reinit", p)}
    return {**out, **{f"pruned at init ({m})": _control("pai", p, {"prune.method": m}) for m in p["pai_methods"]}}


def _fig6(p: Mapping[str, Any]) -> dict[str, Series]:
    out = {"IMP (both, iterative)": series("imp"), "extended dense (time only)": series("extended_dense"),
           "reinit mask (size only)": _control("reinit", p),
           "extended + one-shot prune (both; our reading)": _control("extended_oneshot", p)}
    return {**out, **{f"pruned at init, {m} (size only)": _control("pai", p, {"prune.method": m})
                      for m in p["pai_methods"]}}


_READ_BY = {"tie_levels": "figure 7 reads", "control_levels": "figures 5 and 6 read"}


def chosen_levels(p: Mapping[str, Any], key: str = "tie_levels") -> list[int]:
    """The levels ``key`` (``tie_levels``: figure 7's; ``control_levels``: figures 5 and 6's controls) lists, ``all``
    or a list, each one IMP reaches."""
    out = list(range(1, _levels(p) + 1)) if p[key] == "all" else [int(k) for k in p[key]]
    beyond = [k for k in out if k > _levels(p)]
    if beyond:
        raise ConfigError(f"{key} lists level {beyond[0]}, beyond prune.levels={_levels(p)}: {_READ_BY[key]} "
                          f"IMP's levels 1 to {_levels(p)}")
    return out


def _fig7(p: Mapping[str, Any]) -> dict[str, Series]:
    """IMP, and dense retrainings without its top-improved examples at each ``tie_levels`` level and without as many
    random ones (one run per seed serves every level)."""
    f = float(p["tie_fraction"])
    out = {"imp": series("imp")}
    for k in chosen_levels(p):
        out[f"top-improved, level {k}"] = series("tie", {"data.leave_out": "top-improved",
                                                          "data.leave_out_fraction": f, "data.leave_out_level": k})
    out["random"] = series("tie", {"data.leave_out": "random", "data.leave_out_fraction": f})
    return out


# ---- how each figure is drawn and judged ---------------------------------------------------------------------

_ERROR_AND_LOSS = [("error", "test", "test error"), ("loss", "train", "training loss (log scale)")]
_NOISE_PANELS = [("error", "test", "test error"), ("degradation", "test", "degradation due to noise"),
                 ("accuracy", "train_noisy", "memorization: noisy-label accuracy"),
                 ("accuracy", "train_clean", "clean training accuracy")]


def _layout(n: int, title: str, verdicts: Sequence[claims.Verdict], size: tuple[float, float] = (6.2, 4.2)) -> tuple:
    """A figure of ``n`` panels per row and, right of them, a panel drawing what a verdict tests (one row per
    verdict, :func:`plots.paired_panel`); returns the figure and its grid of axes."""
    rows, cols = max(len(verdicts), 1), n + bool(verdicts)
    fig, grid = plt.subplots(rows, cols, figsize=(size[0] * cols, size[1] * rows), squeeze=False, layout="constrained")
    for row, verdict in zip(grid, verdicts):
        plots.paired_panel(row[-1], verdict)
        row[-1].set_title(f"what the verdict tests: {verdict.status}", fontsize="medium")
    fig.suptitle(title)
    return fig, grid


def _draw(ax: plt.Axes, frames: Mapping[str, pd.DataFrame], palette: Sequence[str | None], metric: str = "error",
          source: str = "test", band: bool = True, legend: bool = True, styles: Mapping[str, dict] | None = None,
          **common: Any) -> None:
    """Each frame's mean ± 95% CI of ``metric`` on ``source`` in its colour (``palette``: keys of
    :data:`plots.PALETTE`, in order) and its label's ``styles``, after the first frame's dense model as a band
    (``band``); loss on a log scale."""
    if band:
        plots.dense_band(next(iter(frames.values())), ax, metric, source)
    for i, (label, d) in enumerate(frames.items()):
        style = {"color": plots.PALETTE.get(palette[i]), **(styles or {}).get(label, {})}
        plots.curve(d, ax, metric, source, label=label, **style, **common)
    if legend:
        ax.legend(**plots.LEGEND)
    if metric == "loss":
        plots.log_axis(ax)


def _curve_panels(frames: Mapping[str, pd.DataFrame], palette: Sequence[str], title: str,
                  verdicts: Sequence[claims.Verdict], panels: Sequence[tuple[str, str, str]] = _ERROR_AND_LOSS,
                  legends: int = 1, **kwargs: Any) -> plt.Figure:
    """Figures 2, 3, 5 and 6: a panel of every frame's curves (:func:`_draw`) per metric, source and title in
    ``panels`` (legends on the first ``legends``), and what the verdicts test."""
    fig, [axes] = _layout(len(panels), title, verdicts)
    for i, (ax, (metric, source, what)) in enumerate(zip(axes, panels)):
        _draw(ax, frames, palette, metric, source, legend=i < legends, **kwargs)
        ax.set_title(what)
    return fig


def _make_fig1(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    main, df = next(iter(frames.items()))
    verdicts = {f"IMP ({n})": claims.pruning_improves_test_error(d) for n, d in frames.items()}
    fig, [axes] = _layout(1 + (len(frames) > 1), title("test error vs sparsity"), [verdicts[f"IMP ({main})"]])
    plots.pruning_curve(df, ax=axes[0], label=f"IMP ({main})").set_title(f"IMP with {main}")
    if len(frames) > 1:
        _draw(axes[1], {f"IMP ({n})": d for n, d in frames.items()}, list(frames))
        axes[1].set_title("retraining schemes")
    return Made(fig, frames, verdicts)


def _make_fig2(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    verdict = claims.pruning_improves_training(frames["imp"])
    fig = _curve_panels({"IMP (pruned)": frames["imp"]}, ["imp"], title("training vs sparsity"), [verdict],
                        panels=_ERROR_AND_LOSS[1:])
    return Made(fig, frames, [verdict])


def _make_fig3(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    imp, *others = frames.items()
    verdicts = [claims.training_time_explains_gain(imp[1], d, name.split("(")[1].rstrip(")")) for name, d in others]
    fig = _curve_panels(frames, ("imp", "extended_dense", "extended_oneshot"), title("pruning vs training longer"),
                        verdicts[:1], legends=2, band=False, styles={n: {"marker": m} for n, m in zip(frames, "osD")},
                        x="epochs")
    return Made(fig, frames, verdicts)


def _make_fig4(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    fractions, suptitle = list(p["noise_fractions"]), title("label noise", levels=p["noise_levels"])
    clean = {proto: frames[noise_label(proto, 0.0)] for proto in ("imp", "extended_dense")}
    if not fractions:  # the clean runs only: nothing to compare them with
        fig, [axes] = _layout(1, suptitle, [])
        plots.curve(clean["imp"], axes[0], label="IMP (LRR), no noise", color=plots.PALETTE["imp"])
        return Made(fig, frames, [], ["noise_fractions lists no noise fraction: figure 4 has no noisy runs to judge."])
    noisy = [{proto: frames[noise_label(proto, f)] for proto in clean} for f in fractions]
    verdicts = [claims.pruning_regularizes_noise(r["imp"], clean["imp"], f) for r, f in zip(noisy, fractions)]
    fig, grid = _layout(4, suptitle, verdicts, size=(4.8, 4.0))
    for row, f, r in zip(grid, fractions, noisy):
        degradation = {proto: claims.degradation(r[proto], clean[proto]).assign(source="test") for proto in r}
        for ax, (metric, source, name) in zip(row, _NOISE_PANELS):
            use = degradation if metric == "degradation" else r
            drawn = {"IMP (LRR)": use["imp"],
                     "extended dense (matched time)": analysis.matched_sparsity(use["extended_dense"], r["imp"])}
            _draw(ax, drawn, ("imp", "extended_dense"), metric, source, legend=ax is row[0],
                  styles={"extended dense (matched time)": {"marker": "s", "ls": "--"}})
            ax.set_title(f"{f:.0%} noisy labels: {name}", fontsize="medium")
    return Made(fig, frames, verdicts, [_memorization_note(r["imp"], f) for r, f in zip(noisy, fractions)])


def _memorization_note(imp: pd.DataFrame, f: float) -> str:
    """Where the noisy-label accuracy first falls below half the dense model's (a description, not a verdict)."""
    mem = analysis.summarize(imp, "accuracy").query("source == 'train_noisy'").set_index("level")
    gives = mem[mem["mean"] < mem.loc[0, "mean"] / 2]
    return f"Where memorization gives way ({f:.0%} noise): " + (
        f"below half the dense model's from {gives.sparsity.min():.1%} sparsity (level {int(gives.index.min())})."
        if len(gives) else f"never below half the dense model's up to {mem.sparsity.max():.1%} sparsity.")


def _make_fig5(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    imp, *controls = frames.items()
    verdict = claims.size_alone_falls_short(imp[1], dict(controls))
    fig = _curve_panels(frames, ("imp", "random", "reinit", "rewind", "finetune", "extended_oneshot"),
                        title("size-reduction controls"), [verdict])
    return Made(fig, frames, [verdict])


def _make_fig6(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    imp, ext = frames["IMP (both, iterative)"], frames["extended dense (time only)"]
    drawn = {**frames, "extended dense (time only)": analysis.matched_sparsity(ext, imp)}  # at the time-matched level
    v = claims.both_factors_reproduce_pruning(imp, frames["extended + one-shot prune (both; our reading)"], ext,
                                              frames["reinit mask (size only)"])
    fig = _curve_panels(drawn, ("imp", "extended_dense", "reinit", "extended_oneshot", "rewind", "finetune"),
                        title("training time and size reduction"), [v],
                        styles={"extended dense (time only)": {"ls": "--"}})
    fig.axes[0].set_xlabel("weights remaining (%); extended dense: of the time-matched IMP level")
    return Made(fig, drawn, [v])


def tie_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Figure 7's retrainings as one frame with the columns :func:`pgcore.claims.improved_examples_matter` reads: ``removed``
    (top-improved | random), ``tie_level`` and ``tie_sparsity`` (the random control repeated at every level)."""
    sparsity = frames["imp"].groupby("level").sparsity.first()
    tops = {int(label.rsplit(" ", 1)[1]): d for label, d in frames.items() if label.startswith("top-improved")}
    parts = [rows.assign(removed=removed, tie_level=k, tie_sparsity=float(sparsity.loc[k]), level=k,
                         sparsity=float(sparsity.loc[k]))
             for k, d in tops.items() for removed, rows in (("top-improved", d), ("random", frames["random"]))]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _make_fig7(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    imp, tie = frames["imp"], tie_frame(frames)
    test = tie[tie.source == "test"]
    verdict = claims.improved_examples_matter(tie, imp)
    fig, [axes] = _layout(1, title("top-improved examples"), [verdict])
    plots.dense_band(imp, axes[0], label="dense, full training set")
    f = float(p["tie_fraction"])
    _draw(axes[0], {f"dense, without {f:.0%} {r}": test[test.removed == r] for r in ("top-improved", "random")},
          ("imp", "random"), band=False)
    numbers = {f"dense without {r}": test[test.removed == r] for r in ("top-improved", "random")}
    return Made(fig, numbers, [verdict], metrics=("error",))


def _make_fig9(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    weaker = p.get("weaker_recipe") or next(iter(p.get("recipes") or {}), None)
    verdicts = [claims.gain_shrinks_when_dense_is_trained_well(frames, weaker=weaker)] if len(frames) == 2 else []
    fig, [axes] = _layout(2, title("pruning's gain under two recipes"), verdicts)
    for ax, (metric, source, what) in zip(axes, [("error", "test", "test error"), ("loss", "train", "training loss")]):
        for (name, d), key in zip(frames.items(), ("imp", "extended_oneshot", "random", "reinit")):
            paired = analysis.vs_dense(d, metric, source)
            x, ci, diff = 100 * (1 - paired.sparsity), paired.diff_ci.fillna(0), paired["diff"]
            ax.plot(x, diff, "o-", ms=3.5, color=plots.PALETTE[key], label=f"IMP, {name} recipe")
            ax.fill_between(x, diff - ci, diff + ci, color=plots.PALETTE[key], alpha=0.18, lw=0)
        ax.axhline(0, color=plots.PALETTE["dense"], ls="--", lw=1, label="its own dense model")
        plots.remaining_axis(ax)
        ax.set_ylabel(f"pruned − dense {what} (paired)")
        ax.set_title(f"IMP's change in {what}, per recipe (below 0: a gain)")
        ax.legend(**plots.LEGEND)
    notes = [f"this profile lists {len(frames) - 1} other recipe(s); the claim compares exactly two."]
    return Made(fig, frames, verdicts, [] if verdicts else notes)


FIGURES: dict[str, Figure] = {
    "fig1": Figure("01_pruning_curve", "fig1_pruning_curve",
                   lambda p: {p["prune"].get("retrain", "lrr"): series("imp"), **_variants(p, "variants", "prune")},
                   _make_fig1,
                   "Test error vs sparsity under IMP (LRR; other retraining schemes where `variants` are run): "
                   "does pruning lower test error?"),
    "fig2": Figure("02_training_loss", "fig2_training_loss", lambda p: {"imp": series("imp")}, _make_fig2,
                   "Training loss of pruned vs dense models: does pruning improve training at some sparsities?"),
    "fig3": Figure("03_extended_dense", "fig3_extended_dense", _fig3, _make_fig3,
                   "Extended dense training vs pruning at matched training time: does training as long match "
                   "pruning?"),
    "fig4": Figure("04_label_noise", "fig4_label_noise", _fig4, _make_fig4,
                   "Label noise: degradation due to noise, memorization, clean accuracy: do pruned models memorize "
                   "less and lose less to noise?"),
    "fig5": Figure("05_size_controls", "fig5_size_controls", _fig5, _make_fig5,
                   "Size-reduction controls (random pruning, reinitialized mask, pruning at init): does size alone "
                   "explain pruning?"),
    "fig6": Figure("06_both_factors", "fig6_both_factors", _fig6, _make_fig6,
                   "Training time and size reduction together vs each alone: do both factors reproduce pruning?"),
    "fig7": Figure("07_top_improved_examples", "fig7_top_improved_examples", _fig7, _make_fig7,
                   "Dense models without the top-improved examples vs without random ones: do the examples pruning "
                   "improves most matter?"),
    "explore": Figure("08_explore", None, lambda p: {"imp": series("imp")},
                      caption="One stored study, level by level (interactive; reads the store)"),
    "fig9": Figure("09_recipe", "fig9_recipe", lambda p: {"profile": series("imp"), **_variants(p, "recipes", "train")},
                   _make_fig9, "Not in the paper: IMP's gain over dense under two training recipes: does pruning "
                   "gain more where the dense model is less well trained?"),
}
