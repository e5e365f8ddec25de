"""The paper's claims, each decided by one function from tidy frames (paired by seed, levels chosen on validation)
as a :class:`Verdict`: reproduced, not reproduced (a significant difference against it) or not significant.
"Differs" is :func:`pgcore.analysis.significance`; "matches" (figures 3, 6) is :func:`pgcore.analysis.equivalence`
within ±:data:`EQUIVALENCE_MARGIN` × dense test error, so a mere lack of significance is never read as a match.
Notebooks print these verdicts; they never word one by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .analysis import best_level, ci95, compare_to_dense, equivalence, significance, vs_dense

REPRODUCED, NOT_REPRODUCED, NOT_SIGNIFICANT = "reproduced", "not reproduced", "not significant"
# "Matches": the paired difference lies within this fraction of the dense model's test error
# (two one-sided tests at 5%). Fixed before any result of the paper profiles was seen.
EQUIVALENCE_MARGIN = 0.05


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


def _pm_match(g: dict[str, Any], margin: float) -> str:
    """A :func:`_paired_at` difference with its equivalence test."""
    return f"{_pm(g['diff'], g['diff_ci'])} (margin ±{margin:.4f}, equivalence p = {g['p_equiv']:.3f})"


def _status(word: str, good: str = "lower", bad: str = "higher") -> str:
    """The verdict of a claim that predicts a ``good`` significant difference."""
    return {good: REPRODUCED, bad: NOT_REPRODUCED}.get(word, NOT_SIGNIFICANT)


def _paired_at(a: pd.DataFrame, b: pd.DataFrame, level: int, metric: str = "error", source: str = "test",
               margin: float = float("nan")) -> dict[str, Any]:
    """Paired difference a - b at one level: mean, CI, n, significance word and, given a margin, equivalence."""
    cols = ["seed", metric]
    left = a[(a.level == level) & (a.source == source)][cols]
    right = b[(b.level == level) & (b.source == source)][cols]
    d = left.merge(right, on="seed", suffixes=("", "_b"))
    diffs = (d[metric] - d[f"{metric}_b"]).to_numpy()
    if not len(diffs):
        return {"diff": float("nan"), "diff_ci": float("nan"), "n": 0, "word": "undetermined",
                "equivalent": False, "p_equiv": float("nan")}
    mean, ci = float(diffs.mean()), ci95(diffs)
    equivalent, p = equivalence(diffs, margin)
    return {"diff": mean, "diff_ci": ci, "n": len(diffs), "word": significance(mean, ci),
            "equivalent": equivalent, "p_equiv": p}


def _dense_as(df: pd.DataFrame, level: int) -> pd.DataFrame:
    """The dense model's rows (level 0) relabelled as ``level``, to pair a level with dense."""
    return df[df.level == 0].assign(level=level)


def margin_of(df: pd.DataFrame) -> float:
    """The equivalence margin for test error: :data:`EQUIVALENCE_MARGIN` of the dense model's mean."""
    dense = df[(df.level == 0) & (df.source == "test")]["error"]
    return EQUIVALENCE_MARGIN * float(dense.mean()) if len(dense) else float("nan")


def pruning_improves_test_error(imp: pd.DataFrame) -> Verdict:
    """Figure 1: the best pruned level (chosen on validation) has lower test error than the dense model."""
    claim = "Pruning lowers test error"
    c = compare_to_dense(imp)
    numbers = {"level": c["best_level"], "sparsity": c["best_sparsity"], "diff": c["diff_mean"], "ci": c["diff_ci"],
               "n": c["seeds"], "dense": c["dense_mean"], "pruned": c["best_mean"]}
    if c["best_level"] == 0:  # no evidence for a gain, and none against it at 95%
        return Verdict(claim, NOT_SIGNIFICANT, f"no pruned level beats the dense model on validation (dense test "
                       f"error {c['dense_mean']:.4f}).", numbers)
    text = (f"best level on validation {c['best_level']} ({c['best_sparsity']:.1%} sparse): test error "
            f"{c['best_mean']:.4f} vs dense {c['dense_mean']:.4f}, paired {_pm(c['diff_mean'], c['diff_ci'])} "
            f"over {c['seeds']} seeds.")
    return Verdict(claim, _status(significance(c["diff_mean"], c["diff_ci"])), text, numbers)


def pruning_improves_training(imp: pd.DataFrame) -> Verdict:
    """Figure 2: at some sparsities the pruned model's training loss is below the dense model's."""
    claim = "Pruning lowers training loss"
    v = vs_dense(imp, "loss", "train")
    v = v[v.level > 0]
    lower = v[v.verdict == "lower"]
    best = v.loc[v["diff"].idxmin()]
    numbers = {"levels_lower": int(len(lower)), "levels": int(len(v)), "level": int(best.level),
               "sparsity": float(best.sparsity), "diff": float(best["diff"]), "ci": float(best.diff_ci),
               "n": int(best.n)}
    if len(lower):
        lo, hi = lower.sparsity.min(), lower.sparsity.max()
        return Verdict(claim, REPRODUCED, f"training loss is significantly below the dense model's at {len(lower)} "
                       f"of {len(v)} levels ({lo:.1%}–{hi:.1%} sparse); largest drop "
                       f"{_pm(best['diff'], best.diff_ci)} at {best.sparsity:.1%}.", numbers)
    status = NOT_REPRODUCED if (v.verdict == "higher").all() else NOT_SIGNIFICANT
    return Verdict(claim, status, f"no level has a significantly lower training loss than the dense model; the "
                   f"lowest is {_pm(best['diff'], best.diff_ci)} at {best.sparsity:.1%}.", numbers)


def training_time_explains_gain(imp: pd.DataFrame, extended: pd.DataFrame, reading: str = "") -> Verdict:
    """Figure 3: dense training as long as IMP's matches IMP at its best level (equivalence) and itself beats the
    dense model; IMP significantly better refutes it. ``reading`` names the extended schedule in the claim."""
    claim = f"Extended dense training{f' ({reading})' if reading else ''} matches pruning"
    k = best_level(imp)
    margin = margin_of(imp)
    gap = _paired_at(imp, extended, k, margin=margin)
    own = _paired_at(extended, _dense_as(imp, k), k)
    numbers = {"level": k, "diff": gap["diff"], "ci": gap["diff_ci"], "n": gap["n"], "margin": margin,
               "p_equivalence": gap["p_equiv"], "extended_vs_dense": own["diff"],
               "extended_vs_dense_ci": own["diff_ci"]}
    if k == 0:
        return Verdict(claim, NOT_SIGNIFICANT, "IMP's best level on validation is the dense model, so there is no "
                       "pruning gain to explain.", numbers)
    if gap["n"] == 0:
        return Verdict(claim, NOT_SIGNIFICANT,
                       f"extended training was not run to IMP's best level {k}; no comparison there.", numbers)
    text = (f"at IMP's best level {k} ({(k + 1)}× the training time): IMP − extended dense "
            f"{_pm_match(gap, margin)}; extended dense − dense {_pm(own['diff'], own['diff_ci'])}")
    if gap["word"] == "lower":
        status, why = NOT_REPRODUCED, "pruning beats the same training time without pruning"
    elif gap["equivalent"] and own["word"] == "lower":
        status, why = REPRODUCED, ("extended training gains on the dense model and matches IMP within the margin: "
                                   "the training time alone gives the gain")
    else:
        status, why = NOT_SIGNIFICANT, ("neither a match within the margin with a gain of its own, nor a difference, "
                                        "is shown at this number of seeds")
    return Verdict(claim, status, f"{text}: {why}.", numbers)


def degradation(noisy: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """Per seed and level, the paper's degradation due to noise: test error with noise minus without."""
    cols = ["seed", "level", "error"]
    a = noisy[noisy.source == "test"][cols + ["sparsity"]]
    b = clean[clean.source == "test"][cols].rename(columns={"error": "error_clean"})
    m = a.merge(b, on=["seed", "level"])
    return m.assign(degradation=m.error - m.error_clean)


def pruning_regularizes_noise(noisy: pd.DataFrame, clean: pd.DataFrame, fraction: float) -> Verdict:
    """Figure 4: with noisy labels, at the best level on (noisy-run) validation, degradation is significantly
    lower than the dense model's and fewer noisy labels are memorized."""
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
    text = (f"best level on validation {k} ({numbers['sparsity']:.1%} sparse): degradation "
            f"{numbers['degradation_pruned']:.4f} vs dense {numbers['degradation_dense']:.4f}, paired "
            f"{_pm(numbers['diff'], numbers['ci'])}; noisy labels memorized {_pm(mem['diff'], mem['diff_ci'])} vs "
            f"dense; test error {_pm(err['diff'], err['diff_ci'])} vs dense.")
    status = _status(significance(numbers["diff"], numbers["ci"]))
    if status == REPRODUCED and mem["word"] != "lower":  # lower degradation alone, without less memorization
        status = NOT_SIGNIFICANT
    return Verdict(claim, status, text, numbers)


def size_alone_falls_short(imp: pd.DataFrame, controls: dict[str, pd.DataFrame]) -> Verdict:
    """Figure 5: masks of IMP's sparsity that are not IMP's (random, reinitialized, chosen at initialization),
    trained as their protocol trains, do not reach IMP's test error at IMP's best level."""
    claim = "Size reduction alone does not explain pruning"
    k = best_level(imp)
    parts, numbers, words = [], {"level": k}, []
    for name, df in controls.items():
        g = _paired_at(df, imp, k)
        numbers[f"{name}_diff"], numbers[f"{name}_ci"], numbers["n"] = g["diff"], g["diff_ci"], g["n"]
        words.append(g["word"])
        parts.append(f"{name} − IMP {_pm(g['diff'], g['diff_ci'])}")
    if k == 0:
        return Verdict(claim, NOT_SIGNIFICANT, "IMP's best level on validation is the dense model, so the controls "
                       "have nothing to match.", numbers)
    if all(w == "higher" for w in words):
        status, why = REPRODUCED, "every control is significantly worse"
    elif "lower" in words:
        status, why = NOT_REPRODUCED, "a control matches or beats IMP"
    else:
        status, why = NOT_SIGNIFICANT, "not every control is resolved from IMP"
    return Verdict(claim, status, f"at IMP's best level {k}: {'; '.join(parts)}: {why}.", numbers)


def both_factors_reproduce_pruning(imp: pd.DataFrame, both: pd.DataFrame, time_only: pd.DataFrame,
                                   size_only: pd.DataFrame) -> Verdict:
    """Figure 6: extended training then size reduction matches IMP at IMP's best level (equivalence), while each
    factor alone is significantly worse."""
    claim = "Training time and size reduction together reproduce pruning"
    k = best_level(imp)
    margin = margin_of(imp)
    g_both, g_time, g_size = (_paired_at(df, imp, k, margin=margin) for df in (both, time_only, size_only))
    numbers = {"level": k, "diff": g_both["diff"], "ci": g_both["diff_ci"], "n": g_both["n"], "margin": margin,
               "p_equivalence": g_both["p_equiv"],
               "time_only_diff": g_time["diff"], "time_only_ci": g_time["diff_ci"],
               "size_only_diff": g_size["diff"], "size_only_ci": g_size["diff_ci"]}
    if k == 0:
        return Verdict(claim, NOT_SIGNIFICANT,
                       "IMP's best level on validation is the dense model: nothing to reproduce.", numbers)
    text = (f"at IMP's best level {k}: both factors − IMP {_pm_match(g_both, margin)}; time only − IMP "
            f"{_pm(g_time['diff'], g_time['diff_ci'])}; size only − IMP {_pm(g_size['diff'], g_size['diff_ci'])}")
    if g_both["word"] == "higher":
        status, why = NOT_REPRODUCED, "the combined procedure is significantly worse than IMP"
    elif "lower" in (g_time["word"], g_size["word"]):
        status, why = NOT_REPRODUCED, "a single factor alone already beats IMP"
    elif g_both["equivalent"] and g_time["word"] == g_size["word"] == "higher":
        status, why = REPRODUCED, "the combination matches IMP within the margin where each factor alone falls short"
    else:
        status, why = NOT_SIGNIFICANT, "no match within the margin, or a factor alone not resolved from IMP"
    return Verdict(claim, status, f"{text}: {why}.", numbers)


def tie_gap(tie: pd.DataFrame) -> pd.DataFrame:
    """Figure 7 per measured level: test error without the top-improved minus without random examples (per seed)."""
    test = tie[tie.source == "test"]
    keys = ["tie_level", "tie_sparsity"] if "tie_sparsity" in test else ["tie_level"]
    per = test.pivot_table(index=[*keys, "seed"], columns="removed", values="error")
    diffs = (per["top-improved"] - per["random"]).rename("diff").reset_index()
    return diffs.groupby(keys)["diff"].agg(["mean", ci95, "count"]).reset_index()


def improved_examples_matter(tie: pd.DataFrame, imp: pd.DataFrame) -> Verdict:
    """Figure 7: dense models trained without the top-improved examples generalize worse than without as many
    random ones, read at the measured level (``tie_levels``) nearest IMP's best level on validation."""
    claim = "The examples pruning improves most drive generalization"
    k_best = best_level(imp)
    if not len(tie) or not (tie.source == "test").any():
        return Verdict(claim, NOT_SIGNIFICANT, "no retraining without top-improved examples was measured.",
                       {"level": k_best, "best_level": k_best, "n": 0, "levels": 0})
    by_level = tie_gap(tie).set_index("tie_level")
    words = [significance(m, c) for m, c in zip(by_level["mean"], by_level["ci95"])]
    k = min((int(j) for j in by_level.index), key=lambda j: (abs(j - k_best), j))  # nearest measured, lower on a tie
    row = by_level.loc[k]
    numbers = {"level": k, "best_level": k_best, "diff": float(row["mean"]), "ci": float(row["ci95"]),
               "n": int(row["count"]), "levels_higher": words.count("higher"), "levels_lower": words.count("lower"),
               "levels": len(words)}
    where = f"at level {k}" if k == k_best else f"at level {k}, the measured level nearest IMP's best level {k_best}"
    text = (f"{where}: without top-improved − without random {_pm(row['mean'], row['ci95'])}; over the "
            f"{len(words)} levels measured, significantly higher at {words.count('higher')}, lower at "
            f"{words.count('lower')}.")
    return Verdict(claim, _status(significance(row["mean"], row["ci95"]), good="higher", bad="lower"), text, numbers)


def _gain_per_seed(imp: pd.DataFrame) -> tuple[int, pd.Series]:
    """IMP's best level on validation and, per seed, its test error there minus the seed's dense model's."""
    k = best_level(imp)
    test = imp[imp.source == "test"].pivot_table(index="seed", columns="level", values="error")
    return k, test[k] - test[0]


def gain_shrinks_when_dense_is_trained_well(recipes: dict[str, pd.DataFrame]) -> Verdict:
    """Figure 9 (not in the paper): of two recipes, IMP's gain over dense is larger under the one whose dense model
    validates worse, as the training-time explanation predicts (paired weaker - stronger gain significantly < 0)."""
    claim = "Pruning gains more where the dense model is less well trained"
    if len(recipes) != 2:
        return Verdict(claim, NOT_SIGNIFICANT, f"needs exactly two recipes, got {len(recipes)}.", {"n": 0})
    dense_val = {name: float(df[(df.level == 0) & (df.source == "val")]["error"].mean())
                 for name, df in recipes.items()}
    weak, strong = sorted(recipes, key=lambda name: -dense_val[name])
    (k_w, g_w), (k_s, g_s) = _gain_per_seed(recipes[weak]), _gain_per_seed(recipes[strong])
    diff = (g_w - g_s).dropna().to_numpy()
    mean, ci = float(diff.mean()), ci95(diff)
    loss = {name: vs_dense(df, "loss", "train").query("level > 0") for name, df in recipes.items()}
    numbers = {"weaker": weak, "stronger": strong, "dense_val_weaker": dense_val[weak],
               "dense_val_stronger": dense_val[strong], "level_weaker": k_w, "level_stronger": k_s,
               "gain_weaker": float(g_w.mean()), "gain_stronger": float(g_s.mean()), "diff": mean, "ci": ci,
               "n": len(diff), "train_loss_lower_levels_weaker": int((loss[weak].verdict == "lower").sum()),
               "train_loss_lower_levels_stronger": int((loss[strong].verdict == "lower").sum())}
    text = (f"dense validation error {dense_val[weak]:.4f} ({weak}) vs {dense_val[strong]:.4f} ({strong}); IMP's gain "
            f"over its dense model at its best level on validation: {g_w.mean():+.4f} ({weak}, level {k_w}) vs "
            f"{g_s.mean():+.4f} ({strong}, level {k_s}), paired difference {_pm(mean, ci)} over {len(diff)} seeds; "
            f"levels whose training loss is significantly below the dense model's: "
            f"{numbers['train_loss_lower_levels_weaker']} ({weak}) vs "
            f"{numbers['train_loss_lower_levels_stronger']} ({strong}).")
    return Verdict(claim, _status(significance(mean, ci)), text, numbers)


def table(verdicts: list[Verdict]) -> pd.DataFrame:
    """Verdicts as one row each (claim, status and their numbers)."""
    return pd.DataFrame([v.row() for v in verdicts])


def save(verdicts: list[Verdict], name: str, figures_dir: str | Path, profile: str) -> Path:
    """Write the verdicts of one figure as ``<figures_dir>/<name>_verdicts.csv`` (one row each)."""
    path = Path(figures_dir) / f"{name}_verdicts.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table(verdicts).assign(profile=profile, figure=name).to_csv(path, index=False, float_format="%.6g")
    return path
