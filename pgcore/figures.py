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
Maker = Callable[[Mapping[str, Any], dict[str, pd.DataFrame], Title], Made]


@dataclass(frozen=True)
class Figure:
    """A figure: its notebook (``notebooks/<notebook>.ipynb``), its files' stem in ``figures/<profile>/``, the series
    it reads as a function of the parameters, and its maker (None: the notebook draws interactively)."""

    notebook: str
    output: str | None
    series: Callable[[Mapping[str, Any]], dict[str, Series]]
    make: Maker | None = None
    caption: str = ""  # what the figure shows and the paper's claim it tests, for READMEs


# ---- the series each figure reads ----------------------------------------------------------------------------

def _fig1(p: Mapping[str, Any]) -> dict[str, Series]:
    out = {p["prune"].get("retrain", "lrr"): series("imp")}
    for name, changes in (p.get("variants") or {}).items():
        out[name] = series("imp", {f"prune.{k}": v for k, v in changes.items()})
    return out


def _levels(p: Mapping[str, Any]) -> int:
    return int(p["prune"].get("levels", 20))


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


def _fig5(p: Mapping[str, Any]) -> dict[str, Series]:
    out = {"IMP (magnitude, LRR)": series("imp"), "random pruning (LRR)": series("imp", {"prune.method": "random"}),
           "IMP mask, reinitialized": series("reinit")}
    return {**out, **{f"pruned at init ({m})": series("pai", {"prune.method": m}) for m in p["pai_methods"]}}


def _fig6(p: Mapping[str, Any]) -> dict[str, Series]:
    out = {"IMP (both, iterative)": series("imp"), "extended dense (time only)": series("extended_dense"),
           "reinit mask (size only)": series("reinit"),
           "extended + one-shot prune (both; our reading)": series("extended_oneshot")}
    return {**out, **{f"pruned at init, {m} (size only)": series("pai", {"prune.method": m}) for m in p["pai_methods"]}}


def tie_levels(p: Mapping[str, Any]) -> list[int]:
    """Figure 7's levels (``tie_levels``: ``all`` or a list), each one IMP reaches."""
    levels = p["tie_levels"]
    out = list(range(1, _levels(p) + 1)) if levels == "all" else [int(k) for k in levels]
    beyond = [k for k in out if k > _levels(p)]
    if beyond:
        raise ConfigError(f"tie_levels lists level {beyond[0]}, beyond prune.levels={_levels(p)}: figure 7 reads "
                          f"IMP's levels 1 to {_levels(p)}")
    return out


def _fig7(p: Mapping[str, Any]) -> dict[str, Series]:
    """IMP, and dense retrainings without its top-improved examples at each ``tie_levels`` level and without as many
    random ones (one run per seed serves every level)."""
    f = float(p["tie_fraction"])
    out = {"imp": series("imp")}
    for k in tie_levels(p):
        out[f"top-improved, level {k}"] = series("tie", {"data.leave_out": "top-improved",
                                                          "data.leave_out_fraction": f, "data.leave_out_level": k})
    out["random"] = series("tie", {"data.leave_out": "random", "data.leave_out_fraction": f})
    return out


def _fig9(p: Mapping[str, Any]) -> dict[str, Series]:
    out = {"profile": series("imp")}
    for name, changes in (p.get("recipes") or {}).items():
        out[name] = series("imp", {f"train.{k}": v for k, v in changes.items()})
    return out


# ---- how each figure is drawn and judged ---------------------------------------------------------------------

def _panels(n: int, width: float = 6.2, height: float = 4.2) -> tuple[plt.Figure, list[plt.Axes]]:
    fig, axes = plt.subplots(1, n, figsize=(width * n, height), squeeze=False, layout="constrained")
    return fig, list(axes[0])


def _tested(ax: plt.Axes, verdict: claims.Verdict) -> None:
    """The panel that draws what ``verdict`` tests: its paired differences per level (:func:`plots.paired_panel`)."""
    plots.paired_panel(ax, verdict)
    ax.set_title(f"what the verdict tests: {verdict.status}", fontsize="medium")


def _make_fig1(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    main, df = next(iter(frames.items()))
    verdicts = {f"IMP ({n})": claims.pruning_improves_test_error(d) for n, d in frames.items()}
    fig, axes = _panels(3 if len(frames) > 1 else 2)
    plots.pruning_curve(df, ax=axes[0], label=f"IMP ({main})")
    _tested(axes[-1], verdicts[f"IMP ({main})"])
    axes[0].set_title(f"IMP with {main}")
    if len(frames) > 1:
        plots.dense_band(df, axes[1])
        for name, d in frames.items():
            plots.curve(d, axes[1], label=f"IMP ({name})", color=plots.PALETTE.get(name))
        axes[1].set_title("retraining schemes")
        axes[1].legend(frameon=False, fontsize="small")
    fig.suptitle(title("test error vs sparsity"))
    return Made(fig, frames, verdicts)


def _make_fig2(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    df = frames["imp"]
    verdict = claims.pruning_improves_training(df)
    fig, axes = _panels(2)
    plots.dense_band(df, axes[0], "loss", "train")
    plots.curve(df, axes[0], "loss", "train", label="IMP (pruned)", color=plots.PALETTE["imp"])
    axes[0].legend(frameon=False, fontsize="small")
    plots.log_axis(axes[0])
    axes[0].set_title("training loss (log scale)")
    _tested(axes[1], verdict)
    fig.suptitle(title("training vs sparsity"))
    return Made(fig, frames, [verdict])


def _make_fig3(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    colors = [plots.PALETTE["imp"], plots.PALETTE["extended_dense"], plots.PALETTE["extended_oneshot"]]
    imp, *others = frames.items()
    verdicts = [claims.training_time_explains_gain(imp[1], d, name.split("(")[1].rstrip(")")) for name, d in others]
    fig, axes = _panels(3)
    _tested(axes[2], verdicts[0])
    for ax, (metric, source) in zip(axes, [("error", "test"), ("loss", "train")]):
        for (name, d), color, marker in zip(frames.items(), colors, "osD"):
            plots.curve(d, ax, metric, source, label=name, color=color, x="epochs", marker=marker)
        ax.legend(frameon=False, fontsize="small")
    plots.log_axis(axes[1])
    axes[0].set_title("test error")
    axes[1].set_title("training loss (log scale)")
    fig.suptitle(title("pruning vs training longer"))
    return Made(fig, frames, verdicts)


_NOISE_PANELS = [("error", "test", "test error"), ("degradation", "test", "degradation due to noise"),
                 ("accuracy", "train_noisy", "memorization: noisy-label accuracy"),
                 ("accuracy", "train_clean", "clean training accuracy")]


def _make_fig4(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    fractions = list(p["noise_fractions"])
    if not fractions:  # the clean runs only: nothing to compare them with
        fig, axes = _panels(1)
        plots.curve(frames[noise_label("imp", 0.0)], axes[0], label="IMP (LRR), no noise", color=plots.PALETTE["imp"])
        fig.suptitle(title("label noise", levels=p["noise_levels"]))
        return Made(fig, frames, [], ["noise_fractions lists no noise fraction: figure 4 has no noisy runs to judge."])
    fig, grid = plt.subplots(len(fractions), 5, figsize=(24, 4.0 * len(fractions)), squeeze=False,
                             layout="constrained")
    verdicts, notes = [], []
    clean = {proto: frames[noise_label(proto, 0.0)] for proto in ("imp", "extended_dense")}
    for row, f in zip(grid, fractions):
        r = {proto: frames[noise_label(proto, f)] for proto in ("imp", "extended_dense")}
        deg = {proto: claims.degradation(r[proto], clean[proto]).assign(source="test") for proto in r}
        for ax, (metric, source, name) in zip(row, _NOISE_PANELS):
            use = deg if metric == "degradation" else r
            imp_f, ext_f = use["imp"], analysis.matched_sparsity(use["extended_dense"], r["imp"])
            plots.dense_band(imp_f, ax, metric, source)
            plots.curve(imp_f, ax, metric, source, label="IMP (LRR)", color=plots.PALETTE["imp"])
            plots.curve(ext_f, ax, metric, source, label="extended dense (matched time)",
                        color=plots.PALETTE["extended_dense"], marker="s", ls="--")
            ax.set_title(f"{f:.0%} noisy labels: {name}", fontsize="medium")
        row[0].legend(frameon=False, fontsize="small")
        verdicts.append(claims.pruning_regularizes_noise(r["imp"], clean["imp"], f))
        _tested(row[4], verdicts[-1])
        notes.append(_memorization_note(r["imp"], f))
    fig.suptitle(title("label noise", levels=p["noise_levels"]))
    return Made(fig, frames, verdicts, notes)


def _memorization_note(imp: pd.DataFrame, f: float) -> str:
    """Where the noisy-label accuracy first falls below half the dense model's (a description, not a verdict)."""
    mem = analysis.summarize(imp, "accuracy").query("source == 'train_noisy'").set_index("level")
    gives = mem[mem["mean"] < mem.loc[0, "mean"] / 2]
    return f"Where memorization gives way ({f:.0%} noise): " + (
        f"below half the dense model's from {gives.sparsity.min():.1%} sparsity (level {int(gives.index.min())})."
        if len(gives) else f"never below half the dense model's up to {mem.sparsity.max():.1%} sparsity.")


def _controls(frames: dict[str, pd.DataFrame], palette: Sequence[str], title: str, verdict: claims.Verdict,
              dashed: str = "") -> plt.Figure:
    """Figures 5 and 6: every procedure's test error and training loss, the dense model as a band, and what the
    verdict tests."""
    imp = next(iter(frames.values()))
    colors = dict(zip(frames, (plots.PALETTE[k] for k in palette)))
    fig, axes = _panels(3)
    _tested(axes[2], verdict)
    for ax, (metric, source) in zip(axes, [("error", "test"), ("loss", "train")]):
        plots.dense_band(imp, ax, metric, source)
        for name, d in frames.items():
            plots.curve(d, ax, metric, source, label=name, color=colors[name], ls="--" if dashed in name and dashed
                        else "-")
    axes[0].legend(frameon=False, fontsize="small")
    plots.log_axis(axes[1])
    axes[0].set_title("test error")
    axes[1].set_title("training loss (log scale)")
    fig.suptitle(title)
    return fig


def _make_fig5(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    imp, *controls = frames.items()
    verdict = claims.size_alone_falls_short(imp[1], dict(controls))
    fig = _controls(frames, ("imp", "random", "reinit", "rewind", "finetune", "extended_oneshot"),
                    title("size-reduction controls"), verdict)
    return Made(fig, frames, [verdict])


def _make_fig6(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    imp, ext = frames["IMP (both, iterative)"], frames["extended dense (time only)"]
    drawn = {**frames, "extended dense (time only)": analysis.matched_sparsity(ext, imp)}  # at the time-matched level
    v = claims.both_factors_reproduce_pruning(imp, frames["extended + one-shot prune (both; our reading)"], ext,
                                              frames["reinit mask (size only)"])
    fig = _controls(drawn, ("imp", "extended_dense", "reinit", "extended_oneshot", "rewind", "finetune"),
                    title("training time and size reduction"), v, dashed="time only")
    fig.axes[0].set_xlabel("weights remaining (%); extended dense: of the time-matched IMP level")
    return Made(fig, drawn, [v])


def tie_frame(frames: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Figure 7's retrainings as one frame with the columns :func:`pgcore.claims.improved_examples_matter` reads: ``removed``
    (top-improved | random), ``tie_level`` and ``tie_sparsity`` (the random control repeated at every level)."""
    imp = frames["imp"]
    sparsity = imp.groupby("level").sparsity.first()
    tops = {int(label.rsplit(" ", 1)[1]): d for label, d in frames.items() if label.startswith("top-improved")}
    parts = []
    for k, d in tops.items():
        for removed, rows in (("top-improved", d), ("random", frames["random"])):
            parts.append(rows.assign(removed=removed, tie_level=k, tie_sparsity=float(sparsity.loc[k]), level=k,
                                     sparsity=float(sparsity.loc[k])))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def _make_fig7(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    imp, tie = frames["imp"], tie_frame(frames)
    test = tie[tie.source == "test"]
    verdict = claims.improved_examples_matter(tie, imp)
    fig, axes = _panels(2)
    plots.dense_band(imp, axes[0], label="dense, full training set")
    for removed, color in (("top-improved", plots.PALETTE["imp"]), ("random", plots.PALETTE["random"])):
        plots.curve(test[test.removed == removed], axes[0], "error", "test", color=color,
                    label=f"dense, without {float(p['tie_fraction']):.0%} {removed}")
    axes[0].legend(frameon=False, fontsize="small")
    axes[0].set_xlabel("weights remaining (%) of the IMP level whose gains chose them")
    plots.remaining_axis(axes[0])
    _tested(axes[1], verdict)
    fig.suptitle(title("top-improved examples"))
    numbers = {f"dense without {r}": test[test.removed == r] for r in ("top-improved", "random")}
    return Made(fig, numbers, [verdict], metrics=("error",))


def _make_fig9(p: Mapping[str, Any], frames: dict[str, pd.DataFrame], title: Title) -> Made:
    palette = [plots.PALETTE[k] for k in ("imp", "extended_oneshot", "random", "reinit")]
    fig, axes = _panels(3 if len(frames) == 2 else 2)
    for ax, (metric, source, what) in zip(axes, [("error", "test", "test error"), ("loss", "train", "training loss")]):
        for (name, d), color in zip(frames.items(), palette):
            paired = analysis.vs_dense(d, metric, source)
            x, lo, hi = 100 * (1 - paired.sparsity), paired.diff_ci.fillna(0), paired["diff"]
            ax.plot(x, hi, "o-", ms=3.5, color=color, label=f"IMP, {name} recipe")
            ax.fill_between(x, hi - lo, hi + lo, color=color, alpha=0.18, lw=0)
        ax.axhline(0, color=plots.PALETTE["dense"], ls="--", lw=1, label="its own dense model")
        plots.remaining_axis(ax)
        ax.set_ylabel(f"pruned − dense {what} (paired)")
        ax.set_title(f"IMP's change in {what}, per recipe (below 0: a gain)")
        ax.legend(frameon=False, fontsize="small")
    fig.suptitle(title("pruning's gain under two recipes"))
    if len(frames) != 2:
        return Made(fig, frames, [], [f"this profile lists {len(frames) - 1} other recipe(s); the claim compares "
                                      f"exactly two."])
    verdict = claims.gain_shrinks_when_dense_is_trained_well(frames, weaker=p.get("weaker_recipe") or
                                                             next(iter(p["recipes"])))
    _tested(axes[2], verdict)
    return Made(fig, frames, [verdict])


FIGURES: dict[str, Figure] = {
    "fig1": Figure("01_pruning_curve", "fig1_pruning_curve", _fig1, _make_fig1,
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
    "fig9": Figure("09_recipe", "fig9_recipe", _fig9, _make_fig9,
                   "Not in the paper: IMP's gain over dense under two training recipes: does pruning gain more where "
                   "the dense model is less well trained?"),
}
