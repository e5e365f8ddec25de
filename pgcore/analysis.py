"""From per-seed results to the numbers a figure states: mean, 95% CI, best sparsity, and the paired statistics a
verdict rests on (:func:`paired_stats`, :func:`holm`, :func:`evidence`)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["EVIDENCE", "NoValidationError", "best_level", "ci95", "dense_at", "evidence", "holm", "matched_sparsity",
           "paired_by_level", "paired_stats", "quantization_step", "summarize", "vs_dense"]


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (NaN for one value)."""
    values = np.asarray(values, dtype=float)
    if len(values) < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, len(values) - 1) * values.std(ddof=1) / np.sqrt(len(values)))


def summarize(df: pd.DataFrame, metric: str = "error",
              by: tuple[str, ...] = ("level", "sparsity", "epochs_total")) -> pd.DataFrame:
    """Mean, 95% CI and seed count of ``metric`` per ``by`` group and metric source."""
    keys = [k for k in (*by, "source") if k in df.columns]
    return df.groupby(keys, sort=True)[metric].agg(mean="mean", ci=ci95, n="count").reset_index()


class NoValidationError(ValueError):
    """Choosing a level needs a validation split; choosing on test must be asked for."""


def best_level(df: pd.DataFrame, select_on: str = "val", metric: str = "error") -> int:
    """The level with the lowest mean ``metric`` on ``select_on`` (validation, so the choice is honest); raises
    :class:`NoValidationError` when ``select_on`` has no data (choosing on test must be asked for)."""
    sel = df[df.source == select_on]
    if not len(sel) or sel[metric].isna().all():
        raise NoValidationError(f"no '{select_on}' data to choose the best level on: set data.val_fraction (e.g. "
                                f"0.1), or pass select_on='test' to choose on test knowingly (optimistic)")
    return int(sel.groupby("level")[metric].mean().idxmin())


def paired_by_level(a: pd.DataFrame, b: pd.DataFrame, metric: str = "error", source: str = "test") -> pd.DataFrame:
    """Per level, the paired difference ``a - b`` of ``metric`` on ``source`` and its 95% half-width (``diff_ci``);
    what a difference means is decided by :mod:`pgcore.claims`."""
    left = a[a.source == source][["seed", "level", metric, "sparsity", "epochs_total"]]
    right = b[b.source == source][["seed", "level", metric]]
    m = left.merge(right, on=["seed", "level"], suffixes=("", "_b"))
    m["diff"] = m[metric] - m[f"{metric}_b"]
    out = m.groupby("level").agg(sparsity=("sparsity", "mean"), epochs_total=("epochs_total", "mean"),
                                 a=(metric, "mean"), b=(f"{metric}_b", "mean"),
                                 diff=("diff", "mean"), diff_ci=("diff", ci95), n=("diff", "count")).reset_index()
    return out


def dense_at(df: pd.DataFrame, levels: list[int]) -> pd.DataFrame:
    """``df``'s dense model (level 0) repeated at each of ``levels``, to pair every level with the same seed's."""
    dense = df[df.level == 0]
    return pd.concat([dense.assign(level=lv) for lv in levels], ignore_index=True) if len(levels) else dense.iloc[:0]


def vs_dense(df: pd.DataFrame, metric: str = "loss", source: str = "train") -> pd.DataFrame:
    """:func:`paired_by_level` of every level against the same seed's dense model (level 0)."""
    return paired_by_level(df, dense_at(df, sorted(df.level.unique())), metric, source)


def matched_sparsity(df: pd.DataFrame, imp: pd.DataFrame) -> pd.DataFrame:
    """``df`` (e.g. extended dense training) with each level's sparsity set to IMP's, to draw them together."""
    by_level = imp.groupby("level")["sparsity"].first()
    return df[df.level.isin(by_level.index)].assign(sparsity=lambda kept: kept.level.map(by_level))


def quantization_step(values: np.ndarray) -> float:
    """The step a quantity moves in, read off its values: the smallest positive gap between distinct values and zero,
    at nine decimals (a test error over 1,000 images moves in steps of 0.001); 0 when all are zero."""
    v = np.asarray(values, dtype=float)
    gaps = np.diff(np.union1d(np.round(v[np.isfinite(v)], 9), [0.0]))
    gaps = gaps[gaps > 5e-10]
    return float(gaps.min()) if len(gaps) else 0.0


def paired_stats(diffs: np.ndarray, step: float | None = None) -> dict[str, float]:
    """Student-t statistics of paired differences: ``n``, ``mean``, ``sd``, ``se``, the 95% half-width ``ci``, its
    ends ``lo`` and ``hi``, the 90% half-width ``ci90``, the two-sided ``p`` against zero and the standardized effect
    ``effect_size`` (mean / sd).

    Differences of a quantized quantity (``step``, by default :func:`quantization_step` of ``diffs``) can all be equal,
    which would give a zero-width interval; their sd is taken as at least ``step / sqrt(6)``, the spread that rounding
    both sides to the step hides. Only with no step (all values zero) can the sd stay zero (then ``p`` = 1). With one
    difference every statistic but ``n`` and ``mean`` is NaN; with none, all are."""
    d = np.asarray(diffs, dtype=float)
    d = d[np.isfinite(d)]
    n = len(d)
    mean = float(d.mean()) if n else float("nan")
    out = {**dict.fromkeys(("sd", "se", "ci", "lo", "hi", "ci90", "p", "effect_size"), float("nan")), "mean": mean,
           "n": n}
    if n < 2:
        return out
    step = quantization_step(d) if step is None else step
    sd = max(float(d.std(ddof=1)), step / np.sqrt(6))
    se = sd / np.sqrt(n)
    ci, ci90 = (float(stats.t.ppf(q, n - 1) * se) for q in (0.975, 0.95))
    p = float(2 * stats.t.sf(abs(mean) / se, n - 1)) if se > 0 else float(mean == 0)  # se = 0: certainty
    out.update(sd=sd, se=se, ci=ci, lo=mean - ci, hi=mean + ci, ci90=ci90, p=p,
               effect_size=mean / sd if sd > 0 else (0.0 if mean == 0 else float(np.copysign(np.inf, mean))))
    return out


def holm(pvalues: np.ndarray) -> np.ndarray:
    """Holm's step-down adjusted p-values (NaN, an untested level, stays NaN and does not count as a test): reject
    where the adjusted p is below the family's alpha."""
    p = np.asarray(pvalues, dtype=float)
    out = np.full(len(p), np.nan)
    ok = np.flatnonzero(np.isfinite(p))
    order = ok[np.argsort(p[ok], kind="stable")]
    m = len(order)
    out[order] = np.minimum(np.maximum.accumulate((m - np.arange(m)) * p[order]), 1.0)
    return out


# The classes of a 95% interval against zero and a claim's margin (see :func:`evidence`).
EVIDENCE = ("beyond the margin", "significant, within the margin", "inside the margin", "inconclusive",
            "significant the other way")


def evidence(lo: float, hi: float, margin: float, direction: str, within: float | None = None) -> str:
    """The class of a 95% interval ``[lo, hi]`` of a paired difference, for a claim that it is ``lower`` or
    ``higher`` than zero, or that it is zero within ``±margin`` (``match``):

    - *beyond the margin*: excludes zero on the claim's side and lies wholly past the margin;
    - *significant, within the margin*: excludes zero on the claim's side, but reaches inside the margin;
    - *inside the margin*: includes zero and does not reach past the margin on the claim's side (both sides for a
      match);
    - *inconclusive*: includes zero and reaches past the margin; also with no interval (fewer than two seeds);
    - *significant the other way*: excludes zero on the side the claim does not predict.

    For a match, a significant difference of either sign is *beyond the margin* or *significant, within the
    margin*; given ``within``, the farthest end of the 90% interval (two one-sided tests at 5%), a match not
    significant is *inside the margin* when ``within`` is, so the class reads as the equivalence test decides."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "inconclusive"
    if direction not in ("lower", "higher", "match"):
        raise ValueError(f"direction must be 'lower', 'higher' or 'match', not {direction!r}")
    if direction == "lower" or (direction == "match" and hi < 0):  # mirror onto "higher" (a match: either sign)
        lo, hi = -hi, -lo
    if lo > 0:
        return "beyond the margin" if lo > margin else "significant, within the margin"
    if direction == "match":
        inside = within < margin if within is not None and np.isfinite(within) else -margin < lo and hi < margin
        return "inside the margin" if inside else "inconclusive"
    if hi < 0:
        return "significant the other way"
    return "inside the margin" if hi < margin else "inconclusive"
