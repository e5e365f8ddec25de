"""From per-seed results to the numbers a figure states: mean, 95% CI, best sparsity."""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats


def ci95(values: np.ndarray) -> float:
    """Half-width of the 95% Student-t confidence interval of the mean (NaN for one value)."""
    values = np.asarray(values, dtype=float)
    n = len(values)
    if n < 2:
        return float("nan")
    return float(stats.t.ppf(0.975, n - 1) * values.std(ddof=1) / np.sqrt(n))


def summarize(df: pd.DataFrame, metric: str = "error",
              by: tuple[str, ...] = ("level", "sparsity", "epochs_total")) -> pd.DataFrame:
    """Mean, 95% CI and seed count of ``metric`` per ``by`` group and metric source."""
    keys = [k for k in (*by, "source") if k in df.columns]
    return df.groupby(keys, sort=True)[metric].agg(mean="mean", ci=ci95, n="count").reset_index()


class NoValidationError(ValueError):
    """Choosing a level needs a validation split; choosing on test must be asked for."""


def significance(diff_mean: float, diff_ci: float) -> str:
    """The one rule for "significant": ``lower``/``higher`` when the 95% interval of a paired difference
    excludes zero, ``same`` when it includes it, ``undetermined`` without one (fewer than two seeds)."""
    if np.isnan(diff_ci) or np.isnan(diff_mean):
        return "undetermined"
    if diff_mean + diff_ci < 0:
        return "lower"
    if diff_mean - diff_ci > 0:
        return "higher"
    return "same"


def equivalence(diffs: np.ndarray, margin: float, alpha: float = 0.05) -> tuple[bool, float]:
    """Two one-sided t-tests (TOST) of paired differences against ``(-margin, +margin)``: ``(equivalent, p)``,
    ``p`` the larger one-sided p-value (NaN with fewer than two differences or no spread)."""
    d = np.asarray(diffs, dtype=float)
    d = d[~np.isnan(d)]
    if len(d) < 2 or not np.isfinite(margin) or margin <= 0:
        return False, float("nan")
    se = d.std(ddof=1) / np.sqrt(len(d))
    if se == 0:
        return bool(abs(d.mean()) < margin), float("nan")
    p_low = float(stats.t.sf((d.mean() + margin) / se, len(d) - 1))  # H0: mean <= -margin
    p_high = float(stats.t.cdf((d.mean() - margin) / se, len(d) - 1))  # H0: mean >= +margin
    p = max(p_low, p_high)
    return p < alpha, p


def selection_source(df: pd.DataFrame, select_on: str = "val", metric: str = "error") -> str:
    """``select_on`` if it has data; else raises :class:`NoValidationError` (choosing on test must be asked for)."""
    sel = df[df.source == select_on]
    if len(sel) and not sel[metric].isna().all():
        return select_on
    raise NoValidationError(f"no '{select_on}' data to choose the best level on: set data.val_fraction (e.g. 0.1), "
                            f"or pass select_on='test' to choose on test knowingly (optimistic)")


def best_level(df: pd.DataFrame, select_on: str = "val", metric: str = "error") -> int:
    """The level with the lowest mean ``metric`` on ``select_on`` (validation, so the choice is honest)."""
    source = selection_source(df, select_on, metric)
    means = df[df.source == source].groupby("level")[metric].mean()
    return int(means.idxmin())


def compare_to_dense(df: pd.DataFrame, select_on: str = "val", metric: str = "error") -> dict[str, float]:
    """Test ``metric`` of dense, of the best level on ``select_on``, and their paired difference (negative: helped)."""
    test = df[df.source == "test"].pivot_table(index="seed", columns="level", values=metric)
    best = best_level(df, select_on, metric)
    dense, pruned = test[0], test[best]
    diff = (pruned - dense).to_numpy()
    sparsity = float(df.loc[df.level == best, "sparsity"].iloc[0])
    return {
        "best_level": best, "best_sparsity": sparsity, "seeds": len(test),
        "selected_on": selection_source(df, select_on, metric),
        "dense_mean": float(dense.mean()), "dense_ci": ci95(dense.to_numpy()),
        "best_mean": float(pruned.mean()), "best_ci": ci95(pruned.to_numpy()),
        "diff_mean": float(diff.mean()), "diff_ci": ci95(diff),
    }


def paired_by_level(a: pd.DataFrame, b: pd.DataFrame, metric: str = "error", source: str = "test") -> pd.DataFrame:
    """Per level, the paired difference ``a - b`` of ``metric`` on ``source``, its CI and :func:`significance`."""
    cols = ["seed", "level", metric]
    left = a[a.source == source][cols + ["sparsity", "epochs_total"]]
    right = b[b.source == source][cols].rename(columns={metric: f"{metric}_b"})
    m = left.merge(right, on=["seed", "level"])
    m["diff"] = m[metric] - m[f"{metric}_b"]
    out = m.groupby("level").agg(sparsity=("sparsity", "mean"), epochs_total=("epochs_total", "mean"),
                                 a=(metric, "mean"), b=(f"{metric}_b", "mean"),
                                 diff=("diff", "mean"), diff_ci=("diff", ci95), n=("diff", "count")).reset_index()
    out["verdict"] = [significance(d, c) for d, c in zip(out["diff"], out["diff_ci"])]
    return out


def vs_dense(df: pd.DataFrame, metric: str = "loss", source: str = "train") -> pd.DataFrame:
    """:func:`paired_by_level` of every level against the same seed's dense model (level 0)."""
    dense = df[df.level == 0]
    levels = sorted(df.level.unique())
    ref = pd.concat([dense.assign(level=lv) for lv in levels], ignore_index=True)
    return paired_by_level(df, ref, metric, source)


def matched_sparsity(df: pd.DataFrame, imp: pd.DataFrame) -> pd.DataFrame:
    """``df`` (e.g. extended dense training) with each level's sparsity set to IMP's, to draw them together."""
    by_level = imp.groupby("level")["sparsity"].first()
    out = df[df.level.isin(by_level.index)].copy()
    out["sparsity"] = out.level.map(by_level)
    return out


def best_vs_dense(df: pd.DataFrame, dense: pd.DataFrame, select_on: str = "val",
                  metric: str = "error") -> dict[str, float]:
    """:func:`compare_to_dense` of every level of ``df`` (level 0 included) against ``dense``'s level 0."""
    ref = dense[dense.level == 0].assign(level=-1, sparsity=0.0)
    both = pd.concat([ref, df], ignore_index=True)
    both["level"] = both["level"] + 1  # the dense reference becomes level 0
    c = compare_to_dense(both, select_on, metric)
    c["best_level"] = c["best_level"] - 1
    c["dense_level"] = -1  # the reference itself was best
    return c
