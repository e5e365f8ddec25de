"""The paper's claims, each decided by one function from tidy frames.

Every function returns a :class:`Verdict`: ``reproduced`` (a significant difference in the
claimed direction), ``not reproduced`` (a significant difference against it) or ``not
significant`` (the data neither confirm nor refute the claim at this number of seeds; also
when validation picks the dense model, which is no evidence either way), a sentence with the
numbers, and the numbers themselves. Every comparison is paired by seed,
and "significant" always means :func:`pgcore.analysis.significance`: the 95% Student-t
interval of the paired difference excludes zero. Levels are always chosen on validation.
Notebooks print these verdicts; they never word one by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis import best_level, ci95, compare_to_dense, paired_by_level, significance, vs_dense

REPRODUCED, NOT_REPRODUCED, NOT_SIGNIFICANT = "reproduced", "not reproduced", "not significant"


@dataclass(frozen=True)
class Verdict:
    claim: str
    status: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)

    def markdown(self) -> str:
        return f"**{self.claim}: {self.status}.** {self.summary}"

    def row(self) -> dict[str, Any]:
        return {"claim": self.claim, "status": self.status, "summary": self.summary, **self.numbers}


def _pm(mean: float, ci: float) -> str:
    return f"{mean:+.4f} ± {ci:.4f}" if not np.isnan(ci) else f"{mean:+.4f} (no CI)"


def _paired_at(a: pd.DataFrame, b: pd.DataFrame, level: int, metric: str = "error", source: str = "test") -> dict[str, float]:
    """Paired difference a - b at one level (per seed), its CI, n and :func:`significance`."""
    p = paired_by_level(a[a.level == level], b[b.level == level], metric, source)
    if p.empty:
        return {"diff": float("nan"), "diff_ci": float("nan"), "n": 0, "word": "undetermined"}
    r = p.iloc[0]
    return {"diff": float(r["diff"]), "diff_ci": float(r["diff_ci"]), "n": int(r["n"]),
            "word": significance(r["diff"], r["diff_ci"])}


def pruning_improves_test_error(imp: pd.DataFrame) -> Verdict:
    """Figure 1: the best pruned level (chosen on validation) has lower test error than the
    dense model, paired by seed."""
    c = compare_to_dense(imp)
    word = "same" if c["best_level"] == 0 else significance(c["diff_mean"], c["diff_ci"])
    status = {"lower": REPRODUCED, "higher": NOT_REPRODUCED}.get(word, NOT_SIGNIFICANT)
    if c["best_level"] == 0:  # no evidence for a gain, and none against it at 95%
        status = NOT_SIGNIFICANT
        text = f"no pruned level beats the dense model on validation (dense test error {c['dense_mean']:.4f})"
    else:
        text = (f"best level on validation {c['best_level']} ({c['best_sparsity']:.1%} sparse): test error "
                f"{c['best_mean']:.4f} vs dense {c['dense_mean']:.4f}, paired {_pm(c['diff_mean'], c['diff_ci'])} "
                f"over {c['seeds']} seeds")
    return Verdict("Pruning lowers test error", status, text + ".", {
        "level": c["best_level"], "sparsity": c["best_sparsity"], "diff": c["diff_mean"], "ci": c["diff_ci"],
        "n": c["seeds"], "dense": c["dense_mean"], "pruned": c["best_mean"]})


def pruning_improves_training(imp: pd.DataFrame) -> Verdict:
    """Figure 2: at some sparsities the pruned model's training loss is below the dense model's."""
    v = vs_dense(imp, "loss", "train")
    v = v[v.level > 0]
    lower = v[v.verdict == "lower"]
    best = v.loc[v["diff"].idxmin()]
    numbers = {"levels_lower": int(len(lower)), "levels": int(len(v)), "level": int(best.level),
               "sparsity": float(best.sparsity), "diff": float(best["diff"]), "ci": float(best.diff_ci), "n": int(best.n)}
    if len(lower):
        lo, hi = lower.sparsity.min(), lower.sparsity.max()
        return Verdict("Pruning lowers training loss", REPRODUCED,
                       f"training loss is significantly below the dense model's at {len(lower)} of {len(v)} levels "
                       f"({lo:.1%}–{hi:.1%} sparse); largest drop {_pm(best['diff'], best.diff_ci)} at {best.sparsity:.1%}.",
                       numbers)
    status = NOT_REPRODUCED if (v.verdict == "higher").all() else NOT_SIGNIFICANT
    return Verdict("Pruning lowers training loss", status,
                   f"no level has a significantly lower training loss than the dense model; the lowest is "
                   f"{_pm(best['diff'], best.diff_ci)} at {best.sparsity:.1%}.", numbers)


def training_time_explains_gain(imp: pd.DataFrame, extended: pd.DataFrame, reading: str = "") -> Verdict:
    """Figure 3: dense training extended to IMP's training time matches IMP: at IMP's best
    level (chosen on validation), IMP is not significantly better than extended dense training
    at the same total epochs, and extended training itself beats the dense model. ``reading``
    names the schedule of extended training (our assumption) in the claim."""
    claim = f"Extended dense training{f' ({reading})' if reading else ''} matches pruning"
    k = best_level(imp)
    gap = _paired_at(imp, extended, k)
    own = vs_dense(extended, "error", "test").set_index("level")
    ext_k = own.loc[k] if k in own.index else None
    numbers = {"level": k, "diff": gap["diff"], "ci": gap["diff_ci"], "n": gap["n"],
               "extended_vs_dense": float(ext_k["diff"]) if ext_k is not None else float("nan"),
               "extended_vs_dense_ci": float(ext_k.diff_ci) if ext_k is not None else float("nan")}
    if k == 0:
        return Verdict(claim, NOT_SIGNIFICANT,
                       "IMP's best level on validation is the dense model, so there is no pruning gain to explain.", numbers)
    if gap["n"] == 0:
        return Verdict(claim, NOT_SIGNIFICANT,
                       f"extended training was not run to IMP's best level {k}; no comparison there.", numbers)
    text = (f"at IMP's best level {k} ({(k + 1)}× the training time): IMP − extended dense {_pm(gap['diff'], gap['diff_ci'])}; "
            f"extended dense − dense {_pm(numbers['extended_vs_dense'], numbers['extended_vs_dense_ci'])}")
    if gap["word"] == "lower":
        return Verdict(claim, NOT_REPRODUCED,
                       text + ": pruning beats the same training time without pruning.", numbers)
    if ext_k is not None and ext_k.verdict == "lower":
        return Verdict(claim, REPRODUCED,
                       text + ": the training time alone gives the gain.", numbers)
    return Verdict(claim, NOT_SIGNIFICANT,
                   text + ": neither difference is resolved at this number of seeds.", numbers)


def degradation(noisy: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """Per seed and level, the accuracy degradation due to noise: test error with noise minus
    test error without noise at the same level (the paper's measure)."""
    cols = ["seed", "level", "error"]
    a = noisy[noisy.source == "test"][cols + ["sparsity"]]
    b = clean[clean.source == "test"][cols].rename(columns={"error": "error_clean"})
    m = a.merge(b, on=["seed", "level"])
    return m.assign(degradation=m.error - m.error_clean)


def pruning_regularizes_noise(noisy: pd.DataFrame, clean: pd.DataFrame, fraction: float) -> Verdict:
    """Figure 4: with noisy labels, pruning reduces the accuracy degradation due to noise
    relative to the dense model: at the best level on (noisy-run) validation, degradation is
    significantly lower than the dense model's, and fewer noisy labels are memorized."""
    k = best_level(noisy)
    d = degradation(noisy, clean)
    per_seed = d.pivot_table(index="seed", columns="level", values="degradation")
    claim = f"Pruning reduces the degradation due to {fraction:.0%} label noise"
    if k == 0 or k not in per_seed:
        return Verdict(claim, NOT_SIGNIFICANT, "no pruned level beats the dense model on validation under noise.",
                       {"level": k, "n": int(len(per_seed))})
    diff = (per_seed[k] - per_seed[0]).dropna().to_numpy()
    mem = _paired_at(noisy, _dense_as(noisy, k), k, "accuracy", "train_noisy")
    err = _paired_at(noisy, _dense_as(noisy, k), k)
    numbers = {"level": k, "sparsity": float(noisy[noisy.level == k].sparsity.iloc[0]),
               "degradation_dense": float(per_seed[0].mean()), "degradation_pruned": float(per_seed[k].mean()),
               "diff": float(diff.mean()), "ci": ci95(diff), "n": len(diff),
               "memorization_diff": mem["diff"], "memorization_ci": mem["diff_ci"],
               "test_error_diff": err["diff"], "test_error_ci": err["diff_ci"]}
    word = significance(numbers["diff"], numbers["ci"])
    text = (f"best level on validation {k} ({numbers['sparsity']:.1%} sparse): degradation {numbers['degradation_pruned']:.4f} "
            f"vs dense {numbers['degradation_dense']:.4f}, paired {_pm(numbers['diff'], numbers['ci'])}; noisy labels "
            f"memorized {_pm(mem['diff'], mem['diff_ci'])} vs dense; test error {_pm(err['diff'], err['diff_ci'])} vs dense")
    if word == "lower" and mem["word"] == "lower":
        return Verdict(claim, REPRODUCED, text + ".", numbers)
    if word == "higher":
        return Verdict(claim, NOT_REPRODUCED, text + ".", numbers)
    return Verdict(claim, NOT_SIGNIFICANT, text + ".", numbers)


def _dense_as(df: pd.DataFrame, level: int) -> pd.DataFrame:
    """The dense model's rows (level 0) relabelled as ``level``, to pair a level with dense."""
    return df[df.level == 0].assign(level=level)


def size_alone_falls_short(imp: pd.DataFrame, controls: dict[str, pd.DataFrame]) -> Verdict:
    """Figure 5: masks of the same sparsity that are not IMP's (random pruning, IMP's mask on a
    new initialization, masks chosen at initialization), trained as long as their protocol
    trains, do not reach IMP's test error at IMP's best level (chosen on validation)."""
    k = best_level(imp)
    parts, numbers, words = [], {"level": k}, []
    for name, df in controls.items():
        g = _paired_at(df, imp, k)
        numbers[f"{name}_diff"], numbers[f"{name}_ci"], numbers["n"] = g["diff"], g["diff_ci"], g["n"]
        words.append(g["word"])
        parts.append(f"{name} − IMP {_pm(g['diff'], g['diff_ci'])}")
    text = f"at IMP's best level {k}: " + "; ".join(parts)
    if k == 0:
        return Verdict("Size reduction alone does not explain pruning", NOT_SIGNIFICANT,
                       "IMP's best level on validation is the dense model, so the controls have nothing to match.", numbers)
    if all(w == "higher" for w in words):
        return Verdict("Size reduction alone does not explain pruning", REPRODUCED,
                       text + ": every control is significantly worse.", numbers)
    if any(w == "lower" for w in words):
        return Verdict("Size reduction alone does not explain pruning", NOT_REPRODUCED,
                       text + ": a control matches or beats IMP.", numbers)
    return Verdict("Size reduction alone does not explain pruning", NOT_SIGNIFICANT,
                   text + ": not every control is resolved from IMP.", numbers)


def both_factors_reproduce_pruning(imp: pd.DataFrame, both: pd.DataFrame, time_only: pd.DataFrame,
                                   size_only: pd.DataFrame) -> Verdict:
    """Figure 6: a procedure with both factors (extended training, then size reduction) is
    indistinguishable from IMP at IMP's best level, while a factor alone is significantly worse."""
    k = best_level(imp)
    g_both, g_time, g_size = (_paired_at(df, imp, k) for df in (both, time_only, size_only))
    numbers = {"level": k, "diff": g_both["diff"], "ci": g_both["diff_ci"], "n": g_both["n"],
               "time_only_diff": g_time["diff"], "time_only_ci": g_time["diff_ci"],
               "size_only_diff": g_size["diff"], "size_only_ci": g_size["diff_ci"]}
    text = (f"at IMP's best level {k}: both factors − IMP {_pm(g_both['diff'], g_both['diff_ci'])}; time only − IMP "
            f"{_pm(g_time['diff'], g_time['diff_ci'])}; size only − IMP {_pm(g_size['diff'], g_size['diff_ci'])}")
    claim = "Training time and size reduction together reproduce pruning"
    if k == 0:
        return Verdict(claim, NOT_SIGNIFICANT, "IMP's best level on validation is the dense model: nothing to reproduce.",
                       numbers)
    if g_both["word"] == "higher":
        return Verdict(claim, NOT_REPRODUCED, text + ": the combined procedure is significantly worse than IMP.", numbers)
    if "lower" in (g_time["word"], g_size["word"]):
        return Verdict(claim, NOT_REPRODUCED, text + ": a single factor alone already beats IMP.", numbers)
    if g_both["word"] == "same" and g_time["word"] == g_size["word"] == "higher":
        return Verdict(claim, REPRODUCED, text + ": the combination matches IMP where each factor alone falls short.",
                       numbers)
    return Verdict(claim, NOT_SIGNIFICANT, text + ": not every factor alone is resolved from IMP.", numbers)


def improved_examples_matter(tie: pd.DataFrame, imp: pd.DataFrame) -> Verdict:
    """Figure 7: dense models trained without the top-improved examples generalize worse than
    dense models trained without as many random examples, at IMP's best level (validation)."""
    test = tie[tie.source == "test"]
    per = test.pivot_table(index=["tie_level", "seed"], columns="removed", values="error")
    diffs = (per["top-improved"] - per["random"]).rename("diff").reset_index()
    by_level = diffs.groupby("tie_level")["diff"].agg(["mean", ci95, "count"])
    words = [significance(m, c) for m, c in zip(by_level["mean"], by_level["ci95"])]
    k = best_level(imp)
    if k not in by_level.index:  # the dense model was best: the level where pruning lowered training loss most
        k = int(by_level.index[0]) if k == 0 else k
    row = by_level.loc[k]
    word = significance(row["mean"], row["ci95"])
    numbers = {"level": k, "diff": float(row["mean"]), "ci": float(row["ci95"]), "n": int(row["count"]),
               "levels_higher": words.count("higher"), "levels_lower": words.count("lower"), "levels": len(words)}
    text = (f"at level {k}: without top-improved − without random {_pm(row['mean'], row['ci95'])}; over the "
            f"{len(words)} levels measured, significantly higher at {words.count('higher')}, lower at {words.count('lower')}")
    status = {"higher": REPRODUCED, "lower": NOT_REPRODUCED}.get(word, NOT_SIGNIFICANT)
    return Verdict("The examples pruning improves most drive generalization", status, text + ".", numbers)


def table(verdicts: list[Verdict]) -> pd.DataFrame:
    """Verdicts as one row each (claim, status and their numbers)."""
    return pd.DataFrame([v.row() for v in verdicts])


def save(verdicts: list[Verdict], name: str, figures_dir: str | Path, profile: str) -> Path:
    """Write the verdicts of one figure as ``<figures_dir>/<name>_verdicts.csv`` (one row each)."""
    path = Path(figures_dir) / f"{name}_verdicts.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table(verdicts).assign(profile=profile, figure=name).to_csv(path, index=False, float_format="%.6g")
    return path
