"""The paper's claims, each decided by one function from tidy frames as a :class:`Verdict`.

Every decision rests on paired differences: per seed, one procedure's number minus another's (at the same level,
read on test; levels are chosen on validation). A verdict carries them as :class:`Part` s, one per comparison, each
with its per-level differences (mean, 95% Student-t interval, seeds), its margin, its evidence and its own status,
so that a figure draws exactly what the verdict tests (:func:`pgcore.plots.paired_panel`).

**Statuses.** ``reproduced``; ``not reproduced``; ``not significant`` (the evidence is inconclusive: neither the
claim nor an effect beyond its margin is ruled out); ``no gain to explain`` (figures 3, 5, 6, 7, which explain IMP's
gain over the dense model: that gain is shown absent, so the explanation is not judged); ``not tested`` (the runs a
comparison needs are missing).

**Rules.** One interval, one test, both paired by seed (:func:`pgcore.analysis.paired_stats`):

- *Differs* (a difference predicted ``lower`` or ``higher``): **reproduced** when the 95% interval excludes zero on
  the predicted side and an effect beyond the margin is not ruled out; **not reproduced** when the one-sided 97.5%
  bound on the predicted side (``ruled_out_beyond``, the largest effect the data still allow) lies inside the margin:
  an effect beyond the margin is ruled out, whether or not the difference is significant (a significant effect
  smaller than the margin is not the effect claimed); otherwise **not significant**, and the summary states the
  bound.
- *Matches* (figure 3: IMP − extended dense; figure 6: both factors − IMP): two one-sided tests at 5%, i.e. the 90%
  interval inside ±margin (``equivalent_within``): **reproduced**; a difference significant at 95% and no such match:
  **not reproduced**; otherwise **not significant**. A mere lack of significance is never read as a match.
- *A scan over levels* (figure 2, "at some sparsities"): reproduced when some level is significant on the predicted
  side after **Holm's correction** over the levels scanned (counts such as "12 of 20 levels" are after correction);
  not reproduced when the bound lies inside the margin at *every* level (an intersection of per-level tests, which
  needs no correction); otherwise not significant.
- *A claim refuted by any of several tests* (figure 5: any control not worse than IMP by more than the margin;
  figure 6's "each factor alone falls short"): the refuting tests (one-sided at 2.5%, against "the effect reaches
  the margin") are **Holm-corrected** across the claim's comparisons; "every control is worse" needs each control
  significant (an intersection, uncorrected).
- *Compound claims report their parts as sub-verdicts*: figure 6's main claim is the match of both factors with IMP;
  "each factor alone falls short" is its own sub-verdict (``alone_status``) and never overturns it. Figure 3 is
  reproduced when extended training matches IMP and gains on the dense model itself; extended training
  significantly *better* than IMP refutes the match in its own words. Figure 4 needs lower degradation *and* less
  memorization (the regularization signature), each reported.
- *Premise*: figures 3, 5, 6 and 7 first test IMP's own gain over the dense model at its best level on validation
  (figure 1's rule); where validation picks the dense model or an IMP gain beyond the margin is ruled out, their
  status is ``no gain to explain``.
- Figure 9's weaker recipe is declared by the caller (``weaker=``, the recipe the parameter file names), never read
  off observed validation errors.
- Degenerate data: identical differences get the spread of their quantization step (never a zero-width interval);
  one seed gives "not significant" (no interval), none "not tested"; no status, evidence or summary is ever NaN.

**Evidence** (:func:`pgcore.analysis.evidence`, the class of the uncorrected 95% interval; for a match that is not
significant, "inside the margin" is the equivalence test's 90% interval): "beyond the margin"; "significant, within
the margin"; "inside the margin"; "inconclusive"; "significant the other way".

**Margins**, in each claim's own quantity, each a fixed fraction (the constants below) of the dense model's own
value of that quantity; the full rationale is in docs/verdict-rules.md. They were set after the `small` figures and
paper-lenet's figures 1–3 had been seen, before paper-lenet's figures 4–7 were computed.

================  ================================  =============================  ==================================
figure            quantity (paired difference)      margin                         why
================  ================================  =============================  ==================================
1, 3, 5, 6, 7     test error                        10% of dense test error        the size of gain first probed
                                                                                   (8–15%); at `small` 4.7 of 1,000
                                                                                   test images, above 5 seeds' 90%
                                                                                   half-width (≈3.3), so a match is
                                                                                   reachable; at paper-lenet 20 of
                                                                                   10,000
2                 training loss                     10% of dense training loss     loss moves by factors, so relative
4                 degradation due to noise          10% of dense degradation       a share of what noise costs
4                 memorization (noisy-label acc.)   10% of dense memorization      a tenth of the labels it fits
9                 difference of gains               10% of mean dense test error   gains are test errors
================  ================================  =============================  ==================================
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
from scipy import stats

from .analysis import best_level, dense_at, evidence, holm, paired_stats, quantization_step

__all__ = ["REPRODUCED", "NOT_REPRODUCED", "NOT_SIGNIFICANT", "NO_GAIN", "NOT_TESTED", "STATUSES", "ALPHA",
           "TEST_ERROR_MARGIN", "TRAIN_LOSS_MARGIN", "DEGRADATION_MARGIN", "MEMORIZATION_MARGIN",
           "GAIN_DIFFERENCE_MARGIN", "EQUIVALENCE_MARGIN", "Part", "Verdict", "margin_of",
           "pruning_improves_test_error", "pruning_improves_training", "training_time_explains_gain", "degradation",
           "pruning_regularizes_noise", "size_alone_falls_short", "both_factors_reproduce_pruning",
           "improved_examples_matter", "gain_shrinks_when_dense_is_trained_well", "table", "save"]

REPRODUCED, NOT_REPRODUCED, NOT_SIGNIFICANT = "reproduced", "not reproduced", "not significant"
NO_GAIN, NOT_TESTED = "no gain to explain", "not tested"
STATUSES = (REPRODUCED, NOT_REPRODUCED, NOT_SIGNIFICANT, NO_GAIN, NOT_TESTED)
ALPHA = 0.05  # two-sided: 95% intervals, one-sided bounds and refuting tests at 97.5% / 2.5%

# Margins: a tenth each of the dense model's own value of the quantity (the table in the module docstring).
TEST_ERROR_MARGIN = TRAIN_LOSS_MARGIN = DEGRADATION_MARGIN = MEMORIZATION_MARGIN = GAIN_DIFFERENCE_MARGIN = 0.10
EQUIVALENCE_MARGIN = TEST_ERROR_MARGIN  # the name the notebooks' prose cites for figures 3 and 6

_COLUMNS = ["level", "sparsity", "mean", "ci", "lo", "hi", "n", "sd", "effect_size", "p", "p_margin",
            "ruled_out_beyond", "equivalent_within", "p_equivalence", "evidence", "status"]
_DIFF = ("diff", "ci", "n")  # the numbers of a verdict's deciding difference
_MATCH = (*_DIFF, "margin", "p_equivalence")


@dataclass(frozen=True)
class Part:
    """One paired comparison a verdict rests on.

    ``differences`` has one row per level: ``level``, ``sparsity``, ``mean``, ``ci`` (95% half-width), ``lo``,
    ``hi``, ``n`` (seeds), ``sd``, ``effect_size``, ``p`` (two-sided), ``p_margin`` (one-sided, against "the effect
    reaches the margin": small when such an effect is ruled out), ``ruled_out_beyond``, ``equivalent_within`` and
    ``p_equivalence`` (matches), ``evidence`` and ``status`` (that level alone, uncorrected; a scan's ``status`` is
    Holm-corrected, its ``p_holm`` beside it). ``level`` is the level the part's status
    is read at; ``role`` is ``main``, ``premise`` (IMP's own gain), ``secondary`` (a sub-verdict) or ``context``
    (reported, not decided on)."""

    key: str
    name: str
    quantity: str
    margin: float
    direction: str
    differences: pd.DataFrame = field(compare=False, repr=False)
    level: int
    status: str
    evidence: str
    role: str = "main"
    note: str = ""

    def at(self) -> dict[str, Any]:
        """The row of ``differences`` the part is decided at (``n`` = 0 and NaN numbers when not measured)."""
        hit = self.differences[self.differences.level == self.level]
        if len(hit):
            return hit.iloc[0].to_dict()
        return {**dict.fromkeys(_COLUMNS, float("nan")), "level": self.level, "n": 0, "evidence": "inconclusive",
                "status": NOT_TESTED}

    def _fmt(self, x: float, sign: bool = False) -> str:
        """``x`` with enough decimals (4 at least) to show the smaller of the margin and the 95% half-width."""
        if not np.isfinite(x):
            return "n/a"
        scale = min((v for v in (self.margin, self.at()["ci"]) if np.isfinite(v) and v > 0), default=1.0)
        digits = int(np.clip(1 - np.floor(np.log10(scale)), 4, 8))
        return f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}"

    def _value(self) -> str:
        """The difference and, from two seeds on, its 95% half-width: "-0.0034 ± 0.0042"."""
        r = self.at()
        return self._fmt(r["mean"], sign=True) + (f" ± {self._fmt(r['ci'])}" if r["n"] >= 2 else "")

    @property
    def effect(self) -> str:
        """The difference with its 95% interval, seeds and standardized effect, in words."""
        r = self.at()
        if r["n"] == 0:
            return f"{self.quantity}: not measured at level {self.level}"
        bits = [f"{r['sparsity']:.1%} sparse"] if np.isfinite(r["sparsity"]) else []
        bits.append(f"95% interval, {int(r['n'])} seeds, d = {r['effect_size']:+.2f}" if r["n"] >= 2 else
                    "one seed: no interval")
        return f"{self.quantity} = {self._value()} at level {self.level} ({'; '.join(bits)})"

    @property
    def short(self) -> str:
        """The difference and its 95% half-width only: "time only − IMP -0.0034 ± 0.0042"."""
        n = self.at()["n"]
        if n == 0:
            return f"{self.name} not measured"
        return f"{self.name} {self._value()}" + ("" if n >= 2 else " (one seed)")

    @property
    def ruled_out(self) -> str:
        """What the data rule out, in words: the bound on the claim's side (and ±bound of a match)."""
        b = self.at()["ruled_out_beyond"]
        if not np.isfinite(b):
            return "nothing is ruled out (no interval)"
        if self.direction == "match":
            return (f"a difference beyond ±{self._fmt(b)} is ruled out (95%); equivalent within "
                    f"±{self._fmt(self.at()['equivalent_within'])} (90%)")
        word = "drop" if self.direction == "lower" else "rise"
        if (b < 0) == (self.direction == "lower") and b != 0:
            return f"a {word} beyond {self._fmt(abs(b))} is ruled out"
        return f"any {word} is ruled out (the interval lies on the other side of zero)"

    @property
    def reads(self) -> str:
        """The evidence and bound after the effect: "inside the margin (margin ±m); a drop beyond b is ruled out"."""
        return f"{self.evidence} (margin ±{self._fmt(self.margin)}); {self.ruled_out}"

    def numbers(self, prefix: str = "", keys: Sequence[str] | None = None) -> dict[str, Any]:
        """The part's decision as flat columns (``prefix`` before each name; ``keys``: only these)."""
        r = self.at()
        out = {"status": self.status, "evidence": self.evidence, "level": self.level, "diff": r["mean"],
               "ci": r["ci"], "n": int(r["n"]), "margin": self.margin, "ruled_out_beyond": r["ruled_out_beyond"],
               "effect_size": r["effect_size"]}
        if self.direction == "match":
            out.update(equivalent_within=r["equivalent_within"], p_equivalence=r["p_equivalence"])
        return {f"{prefix}{k}": out[k] for k in keys or out}


@dataclass(frozen=True)
class Verdict:
    """A claim's status with its summary (effect and interval first, then what they mean), its numbers and the
    :class:`Part` s it rests on (the first ``main`` part decides)."""

    claim: str
    status: str
    summary: str
    numbers: dict[str, Any] = field(default_factory=dict)
    parts: tuple[Part, ...] = ()

    @property
    def main(self) -> Part | None:
        """The deciding comparison, if any: IMP's own gain (the ``premise``) when there is no gain to explain, else
        the first ``main`` part."""
        return next((p for p in self.parts if p.role == ("premise" if self.status == NO_GAIN else "main")), None)

    def markdown(self) -> str:
        """One line: the claim and its status in bold, then the summary."""
        return f"**{self.claim}: {self.status}.** {self.summary}"

    def _repr_markdown_(self) -> str:
        """Jupyter's view: the claim and status, then per part its effect ± interval, status, evidence and bound."""
        lines = [f"**{self.claim}: {self.status}**", ""]
        for p in self.parts:
            head = "" if p.role == "main" else f"*{p.role}* "
            lines.append(f"- {head}{p.effect}; **{p.status}**: {p.reads}" + (f"; {p.note}" if p.note else ""))
        return "\n".join([*lines, "", self.summary])

    def row(self) -> dict[str, Any]:
        """One flat row: claim, status, summary, the numbers, the deciding part's ``evidence``, ``ruled_out_beyond``,
        ``effect_size`` (and ``equivalent_within`` for a match), and the same per part, prefixed by its key."""
        out = {"claim": self.claim, "status": self.status, "summary": self.summary, **self.numbers}
        own = {"evidence": "inconclusive"} if self.main is None else self.main.numbers()  # none measured: inconclusive
        out.update((k, own[k]) for k in ("evidence", "margin", "ruled_out_beyond", "equivalent_within",
                                         "p_equivalence", "effect_size") if k in own)
        if len(self.parts) > 1:
            out.update({k: v for p in self.parts for k, v in p.numbers(f"{p.key}_").items()})
        return out


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


# -- per-seed differences --------------------------------------------------------------------------------------------

def _sparsity(df: pd.DataFrame) -> pd.Series:
    return df.groupby("level")["sparsity"].first() if len(df) else pd.Series(dtype=float)


def _per_seed(a: pd.DataFrame, b: pd.DataFrame, metric: str = "error", source: str = "test",
              sparsity: pd.Series | None = None) -> pd.DataFrame:
    """``a - b`` of ``metric`` on ``source``, paired by seed and level: seed, level, sparsity, diff; ``attrs["step"]``
    is the step the compared values move in (:func:`pgcore.analysis.quantization_step`)."""
    if not len(a) or not len(b):
        return _with_step(pd.DataFrame(columns=["seed", "level", "sparsity", "diff"]), [])
    left, right = (df[df.source == source][["seed", "level", metric]] for df in (a, b))
    m = left.merge(right, on=["seed", "level"], suffixes=("", "_b"))
    m["diff"] = m[metric] - m[f"{metric}_b"]
    m["sparsity"] = m.level.map(_sparsity(a) if sparsity is None else sparsity)
    per_seed = m[["seed", "level", "sparsity", "diff"]].dropna(subset=["diff"])
    return _with_step(per_seed, pd.concat([left, right])[metric])


def _with_step(per_seed: pd.DataFrame, values: Any) -> pd.DataFrame:
    """``per_seed`` with the quantization step of the raw ``values`` its differences come from."""
    per_seed.attrs["step"] = quantization_step(np.asarray(values, dtype=float))
    return per_seed


def _vs_own_dense(df: pd.DataFrame, metric: str = "error", source: str = "test") -> pd.DataFrame:
    """Every pruned level of ``df`` minus the same seed's dense model (level 0), per seed."""
    levels = sorted(lv for lv in df.level.unique() if lv > 0) if len(df) else []
    return _per_seed(df, dense_at(df, levels), metric, source)


def _dense_mean(df: pd.DataFrame, metric: str = "error", source: str = "test") -> float:
    return float(df[(df.level == 0) & (df.source == source)][metric].mean()) if len(df) else float("nan")


def _margin(fraction: float, reference: float) -> float:
    """``fraction`` of ``|reference|`` (0 when the reference is unknown: then nothing is inside the margin)."""
    return fraction * abs(reference) if np.isfinite(reference) else 0.0


def margin_of(df: pd.DataFrame) -> float:
    """The test-error margin of a frame: :data:`TEST_ERROR_MARGIN` of its dense model's mean test error."""
    return _margin(TEST_ERROR_MARGIN, _dense_mean(df))


# -- one part, decided -------------------------------------------------------------------------------------------------

def _tail(x: float, se: float, n: int) -> float:
    """P(T > x / se) for Student's t with n - 1 degrees of freedom; with se = 0 (all differences zero), certainty."""
    return float(stats.t.sf(x / se, n - 1)) if se > 0 else (0.0 if x > 0 else 1.0)


def _level_row(level: int, sparsity: float, diffs: np.ndarray, step: float, margin: float,
               direction: str) -> dict[str, Any]:
    """One level of a part: :func:`pgcore.analysis.paired_stats`, the bound on the claim's side, the one-sided test
    that the effect is beyond the margin (``p_margin``; a match: two one-sided tests), evidence and status."""
    s = paired_stats(diffs, step)
    n, mean, se = s["n"], s["mean"], s["se"]
    row = {**s, "level": int(level), "sparsity": float(sparsity), "n": int(n),
           **dict.fromkeys(("p_margin", "ruled_out_beyond", "equivalent_within", "p_equivalence"), float("nan"))}
    if n >= 2:
        # one-sided tests of "the effect reaches the margin": H0 mean >= +margin (a rise), H0 mean <= -margin (a drop)
        rise, drop = _tail(margin - mean, se, n), _tail(mean + margin, se, n)
        if direction == "match":
            row.update(p_equivalence=max(rise, drop), equivalent_within=abs(mean) + s["ci90"],
                       ruled_out_beyond=max(abs(s["lo"]), abs(s["hi"])))
        else:
            lower = direction == "lower"
            row.update(p_margin=drop if lower else rise, ruled_out_beyond=s["lo"] if lower else s["hi"])
    row["evidence"] = evidence(s["lo"], s["hi"], margin, direction, row["equivalent_within"])
    row["status"] = _status_of(row, direction, row["p"], row["p_margin"])
    return row


def _status_of(row: dict[str, Any], direction: str, p: float, p_margin: float) -> str:
    """A comparison's status from its (possibly Holm-corrected) two-sided ``p`` (significant below :data:`ALPHA`)
    and refuting ``p_margin`` (an effect beyond the margin ruled out below ``ALPHA / 2``)."""
    if row["n"] < 2:
        return NOT_TESTED if row["n"] == 0 else NOT_SIGNIFICANT
    if direction == "match":  # equivalence shown; else a significant difference refutes the match
        if row["p_equivalence"] < ALPHA:
            return REPRODUCED
        return NOT_REPRODUCED if p < ALPHA else NOT_SIGNIFICANT
    if p_margin < ALPHA / 2:
        return NOT_REPRODUCED
    predicted = row["mean"] < 0 if direction == "lower" else row["mean"] > 0
    return REPRODUCED if p < ALPHA and predicted else NOT_SIGNIFICANT


def _part(key: str, name: str, quantity: str, per_seed: pd.DataFrame, margin: float, direction: str,
          level: int | None = None, role: str = "main", scan: bool = False, note: str = "") -> Part:
    """A :class:`Part` from per-seed differences (seed, level, sparsity, diff). Decided at ``level``, or, for a
    ``scan``, over every level with Holm's correction of the significance tests (see the module docstring)."""
    rows = [_level_row(lv, g.sparsity.iloc[0], g["diff"].to_numpy(), per_seed.attrs["step"], margin, direction)
            for lv, g in per_seed.groupby("level")]
    diffs = pd.DataFrame(rows, columns=_COLUMNS)
    status, level = _scan(diffs, direction, level) if scan else (None, int(level))
    part = Part(key, name, quantity, margin, direction, diffs, level, NOT_TESTED, "inconclusive", role, note)
    return replace(part, status=status or part.at()["status"], evidence=part.at()["evidence"])


def _scan(diffs: pd.DataFrame, direction: str, level: int | None) -> tuple[str, int]:
    """A scan's status and the level it is read at; adds each level's Holm-corrected ``p_holm`` and ``status``."""
    diffs["p_holm"] = holm(diffs.p.to_numpy())
    diffs["status"] = [_status_of(r, direction, r["p_holm"], r["p_margin"]) for r in diffs.to_dict("records")]
    if (diffs.n == 0).all():  # also with no level
        return NOT_TESTED, int(level or 0)
    sign = 1 if direction == "higher" else -1  # the predicted side
    if (diffs.status == REPRODUCED).any():  # the largest effect among the levels that reproduce
        won = diffs[diffs.status == REPRODUCED]
        return REPRODUCED, int(won.loc[(won["mean"] * sign).idxmax(), "level"])
    status = NOT_REPRODUCED if (diffs.status == NOT_REPRODUCED).all() else NOT_SIGNIFICANT
    predicted = diffs["mean"] * sign > 0
    if status == NOT_SIGNIFICANT and (predicted & diffs.p.notna()).any():  # the level closest to reproducing
        return status, int(diffs.loc[diffs.p.where(predicted).idxmin(), "level"])
    # the largest effect still allowed
    return status, int(diffs.loc[(diffs.ruled_out_beyond * sign).fillna(-np.inf).idxmax(), "level"])


def _all_hold(parts: Sequence[Part]) -> str:
    """The status of "every part holds": the weakest of theirs, from not tested (also with no part), not reproduced
    (any refuted) and not significant to reproduced (all are)."""
    statuses = {p.status for p in parts} or {NOT_TESTED}
    return next(s for s in (NOT_TESTED, NOT_REPRODUCED, NOT_SIGNIFICANT, REPRODUCED) if s in statuses)


# -- IMP's gain over the dense model (figure 1, and the premise of figures 3, 5, 6, 7) ---------------------------------

def _read_at(df: pd.DataFrame) -> tuple[int, int, str]:
    """The best level on validation, the level a gain over the dense model is read at and a note saying so. When
    validation picks the dense model, the gain is read at the pruned level (> 0) with the lowest mean validation
    error (test error without a validation split)."""
    k = best_level(df)
    if k > 0:
        return k, k, ""
    val = df[(df.source == "val") & (df.level > 0)]
    source = "val" if len(val) and not val.error.isna().all() else "test"
    means = df[(df.source == source) & (df.level > 0)].groupby("level")["error"].mean()
    at = int(means.idxmin()) if len(means) else 0
    return k, at, f"validation picks the dense model; read at the best pruned level on validation, {at}"


def _gain(imp: pd.DataFrame, role: str = "premise") -> tuple[int, Part, bool]:
    """IMP's best level on validation, its test error minus the dense model's as a part (read at the best pruned
    level on validation when validation picks the dense model), and whether the gain is shown absent."""
    k, at, note = _read_at(imp)
    part = _part("gain", "IMP − dense", "test error: IMP − dense", _vs_own_dense(imp), margin_of(imp), "lower",
                 level=at, role=role, note=note)
    part = replace(part, status=_chosen_by_validation(k, part.status))
    return k, part, k == 0 or part.status == NOT_REPRODUCED


def _chosen_by_validation(k: int, status: str) -> str:
    """The status of a gain read at a pruned level when validation chose level ``k``: where it chose the dense model
    (``k`` = 0), the procedure claims no gain, so ``reproduced`` becomes ``not significant``."""
    return NOT_SIGNIFICANT if k == 0 and status == REPRODUCED else status


def _vs(key: str, a_name: str, b_name: str, a: pd.DataFrame, b: pd.DataFrame, imp: pd.DataFrame, direction: str,
        level: int, role: str = "main") -> Part:
    """The part "test error: ``a_name`` − ``b_name``", paired at ``level``, on IMP's sparsities and test-error
    margin."""
    name = f"{a_name} − {b_name}"
    return _part(key, name, f"test error: {name}", _per_seed(a, b, sparsity=_sparsity(imp)), margin_of(imp),
                 direction, level=level, role=role)


def _worse_than_imp(imp: pd.DataFrame, frames: dict[str, pd.DataFrame], level: int,
                    role: str = "main") -> tuple[list[Part], str, str]:
    """Each of ``frames`` − IMP at ``level``, predicted higher (worse): a claim any one of them refutes, so their
    refuting tests are Holm-corrected across them. Returns the parts, the status of "every one is worse"
    (:func:`_all_hold`) and which are refuted, and how: "random beats IMP"; "reinit is not worse … (…)"."""
    parts = [_vs(_slug(name), name, "IMP", df, imp, imp, "higher", level, role) for name, df in frames.items()]
    adjusted = holm([pt.at()["p_margin"] for pt in parts])
    parts = [replace(pt, status=_status_of(pt.at(), "higher", pt.at()["p"], ph),
                     note=f"refuting test Holm-corrected over {len(parts)}: p = {ph:.3f}" if np.isfinite(ph) else "")
             for pt, ph in zip(parts, adjusted)]
    refuted = "; ".join(f"{name} beats IMP" if p.at()["hi"] < 0 else
                        f"{name} is not worse than IMP by more than the margin ({p.ruled_out})"
                        for name, p in zip(frames, parts) if p.status == NOT_REPRODUCED)
    return parts, _all_hold(parts), refuted


def _no_gain(claim: str, gain: Part, k: int, parts: tuple[Part, ...], numbers: dict[str, Any]) -> Verdict:
    """The verdict of an explanation when IMP has no gain to explain (``k``: IMP's best level on validation). The
    gain decides, so its level, difference, interval and seeds lead the row (its evidence, bound and effect size
    follow by :attr:`Verdict.main`); the explanation's own numbers stay in its parts' columns, and the summary ends
    with them, measured but not judged."""
    why = f"{gain.ruled_out} (margin ±{gain._fmt(gain.margin)})" if k else "validation picks the dense model"
    own = {c: v for c, v in dict(numbers, level=gain.level, **gain.numbers(keys=_DIFF)).items() if c != "p_equivalence"}
    seen = "; ".join(f"{p.short} ({p.evidence})" for p in parts if p.role != "premise")
    return Verdict(claim, NO_GAIN, f"{gain.effect}: {gain.evidence}; {why}: no gain to explain. Measured, not "
                   f"judged: {seen}.", own, parts)


# -- the claims --------------------------------------------------------------------------------------------------------

def pruning_improves_test_error(imp: pd.DataFrame) -> Verdict:
    """Figure 1: the best pruned level (chosen on validation) has lower test error than the dense model, by an effect
    the margin does not rule out (see the module docstring)."""
    claim = "Pruning lowers test error"
    k, part, _ = _gain(imp, role="main")
    dense, pruned = _dense_mean(imp), float(imp[(imp.level == part.level) & (imp.source == "test")].error.mean())
    numbers = {"level": k, "read_at": part.level, "sparsity": part.at()["sparsity"] if k else 0.0,
               **part.numbers(keys=_DIFF), "dense": dense, "pruned": pruned}
    if part.status == NOT_TESTED:
        return Verdict(claim, NOT_TESTED, "no pruned level paired with the dense model was measured.", numbers, (part,))
    chosen = ("chosen on validation" if k else
              "validation picks the dense model itself; this is the best pruned level on validation")
    text = f"{part.effect}, {chosen} (test error {pruned:.4f} vs dense {dense:.4f}): {part.reads}."
    return Verdict(claim, part.status, text, numbers, (part,))


def pruning_improves_training(imp: pd.DataFrame) -> Verdict:
    """Figure 2: at some sparsities the pruned model's training loss is below the dense model's (a scan over the
    pruned levels, Holm-corrected)."""
    claim = "Pruning lowers training loss"
    margin = _margin(TRAIN_LOSS_MARGIN, _dense_mean(imp, "loss", "train"))
    part = _part("loss", "pruned − dense", "training loss: pruned − dense", _vs_own_dense(imp, "loss", "train"),
                 margin, "lower", scan=True)
    d, r = part.differences, part.at()
    lower = d[(d.p_holm < ALPHA) & (d["mean"] < 0)]
    beyond = lower[lower.hi < -margin]
    numbers = {"levels_lower": len(lower), "levels_beyond_margin": len(beyond), "levels": len(d),
               "level": part.level, "sparsity": r["sparsity"], **part.numbers(keys=_DIFF)}
    if part.status == NOT_TESTED:
        return Verdict(claim, NOT_TESTED, "no pruned level paired with the dense model was measured.", numbers, (part,))
    span = (f"{lower.sparsity.min():.1%}–{lower.sparsity.max():.1%}" if len(lower) > 1 else
            f"{lower.sparsity.min():.1%}" if len(lower) else "")
    count = (f"significantly below the dense model's at {len(lower)} of {len(d)} levels after Holm's correction"
             + (f" ({span} sparse; {len(beyond)} of them wholly beyond the margin)" if len(lower) else ""))
    tests = f"p = {r['p']:.3g}, {r['p_holm']:.3g} after Holm's correction over {len(d)} levels" if r["n"] >= 2 else ""
    text = {REPRODUCED: f"largest drop: {part.effect}, {tests}: {part.evidence}",
            NOT_REPRODUCED: f"largest drop still allowed: {part.effect}: {part.reads}, and so at every level",
            NOT_SIGNIFICANT: f"closest to a drop: {part.effect}, {tests}: {part.evidence} before the correction "
                             f"(margin ±{part._fmt(margin)}); {part.ruled_out}"}[part.status]
    return Verdict(claim, part.status, f"{text}; training loss {count}.", numbers, (part,))


def training_time_explains_gain(imp: pd.DataFrame, extended: pd.DataFrame, reading: str = "") -> Verdict:
    """Figure 3: dense training as long as IMP's matches IMP at IMP's best level (equivalence within the test-error
    margin) and itself gains on the dense model; a significant difference either way refutes the match. ``reading``
    names the extended schedule in the claim. No gain of IMP's to explain: ``no gain to explain``."""
    claim = f"Extended dense training{f' ({reading})' if reading else ''} matches pruning"
    k, gain, absent = _gain(imp)
    match = _vs("match", "IMP", "extended dense", imp, extended, imp, "match", k)
    dense = dense_at(imp, sorted(extended.level.unique()) if len(extended) else [])
    own = _vs("extended_gain", "extended dense", "dense", extended, dense, imp, "lower", k, role="secondary")
    parts, o = (match, gain, own), own.at()
    numbers = {"level": k, **match.numbers(keys=_MATCH), "extended_vs_dense": o["mean"],
               "extended_vs_dense_ci": o["ci"]}
    if absent:
        return _no_gain(claim, gain, k, parts, numbers)
    if match.status == NOT_TESTED:
        return Verdict(claim, NOT_TESTED, f"extended training was not run to IMP's best level {k}; no comparison "
                       "there.", numbers, parts)
    text = f"{match.effect} ({k + 1}× the training time): {match.reads}; {own.effect}: {own.evidence}"
    if match.status == own.status == REPRODUCED:
        status, why = REPRODUCED, ("extended training matches IMP within the margin and gains on the dense model: "
                                   "the training time alone gives the gain")
    elif match.status == NOT_REPRODUCED:
        status, why = NOT_REPRODUCED, ("pruning beats the same training time without pruning" if numbers["diff"] < 0
                                       else "extended training is significantly better than IMP: the training time "
                                       "alone gives more than pruning's gain, so the two do not match")
    elif match.status == REPRODUCED:
        status, why = NOT_SIGNIFICANT, "extended training matches IMP, but its own gain over the dense model is " + (
            "ruled out beyond the margin" if own.status == NOT_REPRODUCED else "not shown")
    else:
        status, why = NOT_SIGNIFICANT, "neither a match within the margin nor a difference is shown"
    return Verdict(claim, status, f"{text}: {why}.", numbers, parts)


def degradation(noisy: pd.DataFrame, clean: pd.DataFrame) -> pd.DataFrame:
    """Per seed and level, the paper's degradation due to noise: test error with noise minus without."""
    a = noisy[noisy.source == "test"][["seed", "level", "error", "sparsity"]]
    b = clean[clean.source == "test"][["seed", "level", "error"]]
    m = a.merge(b, on=["seed", "level"], suffixes=("", "_clean"))
    return m.assign(degradation=m.error - m.error_clean)


def pruning_regularizes_noise(noisy: pd.DataFrame, clean: pd.DataFrame, fraction: float) -> Verdict:
    """Figure 4: with noisy labels, at the best level on (noisy-run) validation, the degradation due to noise is
    lower than the dense model's *and* fewer noisy labels are memorized (each a part with its own margin)."""
    claim = f"Pruning reduces the degradation due to {fraction:.0%} label noise"
    k, at, note = _read_at(noisy)
    d = degradation(noisy, clean)
    dense_deg, pruned_deg = (float(d[d.level == lv].degradation.mean()) for lv in (0, at))
    deg_p = _part("degradation", "pruned − dense", "degradation due to noise: pruned − dense",
                  _vs_own_dense(d.assign(source="test"), "degradation"), _margin(DEGRADATION_MARGIN, dense_deg),
                  "lower", level=at, note=note)
    mem_p = _part("memorization", "pruned − dense", "noisy labels memorized (accuracy): pruned − dense",
                  _vs_own_dense(noisy, "accuracy", "train_noisy"),
                  _margin(MEMORIZATION_MARGIN, _dense_mean(noisy, "accuracy", "train_noisy")), "lower", level=at)
    err_p = _part("test_error", "pruned − dense", "test error under noise: pruned − dense", _vs_own_dense(noisy),
                  margin_of(noisy), "lower", level=at, role="context")
    parts = (deg_p, mem_p, err_p)
    numbers = {"level": k, "sparsity": deg_p.at()["sparsity"], "degradation_dense": dense_deg,
               "degradation_pruned": pruned_deg, **deg_p.numbers(keys=_DIFF),
               **mem_p.numbers("memorization_", ("diff", "ci")), **err_p.numbers("test_error_", ("diff", "ci"))}
    if deg_p.status == NOT_TESTED:
        return Verdict(claim, NOT_TESTED, "no pruned level with and without noise was measured.", numbers, parts)
    status = _chosen_by_validation(k, _all_hold(parts[:2]))  # as for IMP's gain
    chosen = "chosen on validation" if k else "validation picks the dense model; best pruned level on validation"
    text = (f"{deg_p.effect}, {chosen} (degradation {pruned_deg:.4f} vs dense {dense_deg:.4f}): {deg_p.reads}; "
            f"{mem_p.effect}: {mem_p.reads}; {err_p.effect}: {err_p.evidence}.")
    why = {REPRODUCED: "Both lower: the regularization signature", NOT_SIGNIFICANT: "Not both shown",
           NOT_REPRODUCED: "Refuted by " + " and by ".join(f"{p.key} ({p.ruled_out})" for p in parts[:2]
                                                           if p.status == NOT_REPRODUCED)}.get(status)
    return Verdict(claim, status, f"{text} {why}." if why else text, numbers, parts)


def size_alone_falls_short(imp: pd.DataFrame, controls: dict[str, pd.DataFrame]) -> Verdict:
    """Figure 5: masks of IMP's sparsity that are not IMP's (random, reinitialized, chosen at initialization), trained
    as their protocol trains, are worse than IMP at IMP's best level: every control significantly worse; refuted
    when one is shown not worse by more than the margin (Holm-corrected across the controls)."""
    claim = "Size reduction alone does not explain pruning"
    k, gain, absent = _gain(imp)
    tested, status, refuted = _worse_than_imp(imp, controls, k)
    parts = (*tested, gain)
    numbers = {"level": k, "n": max((int(p.at()["n"]) for p in tested), default=0)}
    if absent:
        return _no_gain(claim, gain, k, parts, numbers)
    if not tested:
        return Verdict(claim, NOT_TESTED, "no size-reduction control was given.", numbers, parts)
    why = {REPRODUCED: "every control is significantly worse than IMP",
           NOT_REPRODUCED: refuted + " (Holm-corrected across the controls)",
           NOT_TESTED: "a control was not run at IMP's best level",
           NOT_SIGNIFICANT: "not every control is resolved from IMP, and none is shown within the margin of it after "
                            "Holm's correction"}[status]
    effects = "; ".join(f"{p.effect}: {p.evidence}" for p in tested)
    return Verdict(claim, status, f"{effects}: {why}.", numbers, parts)


def both_factors_reproduce_pruning(imp: pd.DataFrame, both: pd.DataFrame, time_only: pd.DataFrame,
                                   size_only: pd.DataFrame) -> Verdict:
    """Figure 6: extended training then size reduction matches IMP at IMP's best level (equivalence within the
    test-error margin): the main claim. Its sub-verdict ``alone_status``, "each factor alone falls short" (each
    significantly worse than IMP; refuted, Holm-corrected, when one is not worse by more than the margin), is
    reported beside it and does not overturn it."""
    claim = "Training time and size reduction together reproduce pruning"
    k, gain, absent = _gain(imp)
    main = _vs("both", "both factors", "IMP", both, imp, imp, "match", k)
    alone, alone_status, refuted = _worse_than_imp(imp, {"time only": time_only, "size only": size_only}, k,
                                                   role="secondary")
    parts = (main, *alone, gain)
    numbers = {"level": k, **main.numbers(keys=_MATCH), "alone_status": alone_status,
               **{c: v for p in alone for c, v in p.numbers(f"{p.key}_", ("diff", "ci")).items()}}
    if absent:
        return _no_gain(claim, gain, k, parts, numbers)
    if main.status == NOT_TESTED:
        return Verdict(claim, NOT_TESTED, f"the combined procedure was not run at IMP's best level {k}.", numbers,
                       parts)
    why = {REPRODUCED: "the combination matches IMP within the margin",
           NOT_REPRODUCED: f"the combined procedure is significantly {'worse' if numbers['diff'] > 0 else 'better'} "
                           "than IMP, beyond a match",
           NOT_SIGNIFICANT: "neither a match within the margin nor a difference is shown"}[main.status]
    alone_why = {REPRODUCED: "each is significantly worse than IMP", NOT_REPRODUCED: refuted + " (Holm-corrected)",
                 NOT_SIGNIFICANT: "not both resolved from IMP",
                 NOT_TESTED: "a single factor was not run at IMP's best level"}[alone_status]
    text = (f"{main.effect}: {main.reads}: {why}. Sub-verdict, each factor alone falls short: "
            f"{'; '.join(f'{p.short} ({p.evidence})' for p in alone)}: {alone_status}, {alone_why}.")
    return Verdict(claim, main.status, text, numbers, parts)


def improved_examples_matter(tie: pd.DataFrame, imp: pd.DataFrame) -> Verdict:
    """Figure 7: dense models trained without the top-improved examples generalize worse than without as many
    random ones, read at the measured level (``tie_levels``) nearest IMP's best level on validation; the count of
    levels where it holds is Holm-corrected. No gain of IMP's to explain: ``no gain to explain``."""
    claim = "The examples pruning improves most drive generalization"
    k_best, gain, absent = _gain(imp)
    if not len(tie) or not (tie.source == "test").any():
        return Verdict(claim, NOT_TESTED, "no retraining without top-improved examples was measured.",
                       {"level": k_best, "best_level": k_best, "n": 0, "levels": 0})
    test = tie[tie.source == "test"]
    per = test.pivot_table(index=["tie_level", "seed"], columns="removed", values="error")
    per_seed = (per["top-improved"] - per["random"]).rename("diff").reset_index().rename(columns={"tie_level": "level"})
    sp = test.groupby("tie_level")["tie_sparsity"].first() if "tie_sparsity" in test else _sparsity(imp)
    per_seed = _with_step(per_seed.assign(sparsity=per_seed.level.map(sp)), test.error)
    k = int(min(per_seed.level.unique(), key=lambda j: (abs(j - k_best), j)))  # nearest measured, lower on a tie
    part = _part("tie", "without top-improved − without random",
                 "test error: without top-improved − without random", per_seed, margin_of(imp), "higher", level=k)
    d = part.differences
    higher, lower = (int(((holm(d.p.to_numpy()) < ALPHA) & (sign * d["mean"] > 0)).sum()) for sign in (1, -1))
    numbers = {"level": k, "best_level": k_best, **part.numbers(keys=_DIFF), "levels_higher": higher,
               "levels_lower": lower, "levels": len(d)}
    if absent:
        return _no_gain(claim, gain, k_best, (part, gain), numbers)
    where = "" if k == k_best else f", the measured level nearest IMP's best level {k_best}"
    found = " and ".join(f"{w} at {n}" for w, n in (("higher", higher), ("lower", lower)) if n)
    scan = f"significantly {found} of" if found else "no significant difference at any of"
    text = f"{part.effect}{where}: {part.reads}; {scan} the {len(d)} levels measured (Holm-corrected)."
    return Verdict(claim, part.status, text, numbers, (part, gain))


def _gain_per_seed(imp: pd.DataFrame) -> tuple[int, int, pd.Series]:
    """IMP's best level on validation, the level its gain is drawn at (:func:`_read_at`) and, per seed, its test
    error at the best level minus the seed's dense model's."""
    k, at, _ = _read_at(imp)
    return k, at, _per_seed(imp, dense_at(imp, [k])).set_index("seed")["diff"].sort_index()


def gain_shrinks_when_dense_is_trained_well(recipes: dict[str, pd.DataFrame], weaker: str = "paper") -> Verdict:
    """Figure 9 (not in the paper): of two recipes, IMP's gain over its dense model (at its best level on validation)
    is larger under the recipe declared ``weaker`` (the recipe the parameter file names; never read off observed
    errors), as the training-time explanation predicts: paired weaker − stronger gain lower, within the
    difference-of-gains margin."""
    claim = "Pruning gains more where the dense model is less well trained"
    if len(recipes) != 2:
        return Verdict(claim, NOT_TESTED, f"needs exactly two recipes, got {len(recipes)}.", {"n": 0})
    if weaker not in recipes:
        return Verdict(claim, NOT_TESTED, f"the recipe declared weaker, {weaker!r}, is not among the recipes given "
                       f"({', '.join(map(repr, recipes))}).", {"n": 0, "weaker": weaker})
    strong = next(name for name in recipes if name != weaker)
    (k_w, at_w, g_w), (k_s, at_s, g_s) = _gain_per_seed(recipes[weaker]), _gain_per_seed(recipes[strong])
    difference = (g_w - g_s).dropna().reset_index()  # seed, diff
    per_seed = _with_step(difference.assign(level=k_w, sparsity=_sparsity(recipes[weaker]).get(k_w, np.nan)),
                          pd.concat([df[df.source == "test"].error for df in recipes.values()]))
    margin = _margin(GAIN_DIFFERENCE_MARGIN, float(np.mean([_dense_mean(recipes[name]) for name in (weaker, strong)])))
    main = _part("gain_difference", "weaker gain − stronger gain", f"test error gain: {weaker} (level {k_w}) − "
                 f"{strong} (level {k_s})", per_seed, margin, "lower", level=k_w)
    context = tuple(_part(_slug(f"gain {name}"), f"IMP − dense, {name}", f"test error: IMP − dense ({name})",
                          _vs_own_dense(recipes[name]), margin_of(recipes[name]), "lower", level=at, role="context",
                          note="" if k else "validation picks the dense model; drawn at the best pruned level")
                    for name, k, at in ((weaker, k_w, at_w), (strong, k_s, at_s)))
    val = {name: _dense_mean(recipes[name], "error", "val") for name in (weaker, strong)}
    lower = {name: pruning_improves_training(recipes[name]).numbers["levels_lower"] for name in (weaker, strong)}
    numbers = {"weaker": weaker, "stronger": strong, "dense_val_weaker": val[weaker], "dense_val_stronger": val[strong],
               "level_weaker": k_w, "level_stronger": k_s, "gain_weaker": float(g_w.mean()),
               "gain_stronger": float(g_s.mean()), **main.numbers(keys=_DIFF),
               "train_loss_lower_levels_weaker": lower[weaker], "train_loss_lower_levels_stronger": lower[strong]}
    if main.status == NOT_TESTED:
        return Verdict(claim, NOT_TESTED, "no seed was measured under both recipes.", numbers, (main, *context))
    text = (f"{main.effect} (IMP's gain over its dense model: {g_w.mean():+.4f} under {weaker}, declared weaker, at "
            f"level {k_w}; {g_s.mean():+.4f} under {strong}, at level {k_s}): {main.reads}. Dense validation error "
            f"{val[weaker]:.4f} ({weaker}) vs {val[strong]:.4f} ({strong}); levels whose training loss is "
            f"significantly below the dense model's (Holm): {lower[weaker]} ({weaker}) vs {lower[strong]} ({strong}).")
    return Verdict(claim, main.status, text, numbers, (main, *context))


def table(verdicts: list[Verdict]) -> pd.DataFrame:
    """Verdicts as one row each (:meth:`Verdict.row`)."""
    return pd.DataFrame([v.row() for v in verdicts])


def save(verdicts: list[Verdict], name: str, figures_dir: str | Path, profile: str) -> Path:
    """Write the verdicts of one figure as ``<figures_dir>/<name>_verdicts.csv`` (one row each)."""
    path = Path(figures_dir) / f"{name}_verdicts.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table(verdicts).assign(profile=profile, figure=name).to_csv(path, index=False, float_format="%.6g")
    return path
