"""Each claim's verdict from synthetic frames: every branch and evidence class, with numbers that could be wrong."""

import re

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402
from scipy import stats  # noqa: E402

from pgcore import analysis, claims, plots  # noqa: E402

T975 = stats.t.ppf(0.975, 4)  # 5 seeds


def exact_noise(seeds, levels, rng):
    """Per-seed offsets whose every column has mean 0 and standard deviation 1 exactly (0 for a single seed)."""
    z = np.random.default_rng(rng).standard_normal((seeds, levels))
    if seeds < 2:
        return np.zeros((seeds, levels))
    z -= z.mean(axis=0)
    return z / z.std(axis=0, ddof=1)


def tidy(test, val=None, loss=None, noisy=None, sd=0.0, loss_sd=0.0, noisy_sd=0.0, seeds=5, rng=0, step=None,
         procedure="imp"):
    """Rows per seed x level x source like the engine's tidy frames (seed, level, sparsity, source, error, loss,
    accuracy, epochs_total, procedure). Pruned levels' test error (training loss, noisy-label accuracy) is the given
    mean plus per-seed noise of exactly that mean and standard deviation ``sd`` (``loss_sd``, ``noisy_sd``); the dense
    model (level 0) and validation carry none, so a difference from the dense model, or from a frame without noise,
    has exactly the given mean and sd. ``step`` rounds test errors to a test set's resolution."""
    val = test if val is None else val
    z = exact_noise(seeds, len(test), rng)
    z[:, 0] = 0
    rows = []
    for seed in range(seeds):
        for level, t in enumerate(test):
            err = t + sd * z[seed, level]
            if step:
                err = round(err / step) * step
            tl = (loss[level] if loss else 0.1) + loss_sd * z[seed, level]
            base = {"seed": seed, "level": level, "sparsity": 1 - 0.8 ** level, "epochs_total": 40 * (level + 1),
                    "procedure": procedure}
            rows.append({**base, "source": "test", "error": err, "loss": err, "accuracy": 1 - err})
            rows.append({**base, "source": "val", "error": val[level], "loss": val[level], "accuracy": 1 - val[level]})
            rows.append({**base, "source": "train", "error": tl, "loss": tl, "accuracy": 1 - tl})
            if noisy:
                acc = noisy[level] + noisy_sd * z[seed, level]
                rows.append({**base, "source": "train_noisy", "error": 1 - acc, "loss": 1.0, "accuracy": acc})
    return pd.DataFrame(rows)


def tie(top, rand, sd=0.0, levels=(1, 2), seeds=5):
    """Figure 7's retrainings: per level and seed, test error without the top-improved (mean ``top``, exact ``sd``)
    and without random examples (``rand``)."""
    z = exact_noise(seeds, 1, 3)[:, 0]
    return pd.DataFrame([{"source": "test", "tie_level": k, "tie_sparsity": 1 - 0.8 ** k, "seed": s, "removed": r,
                          "error": e} for k in levels for s in range(seeds)
                         for r, e in (("top-improved", top + sd * z[s]), ("random", rand))])


def no_nan(v):
    """Nothing a reader sees is NaN: status, summary, evidence of every part, the markdown."""
    assert v.status in claims.STATUSES
    for text in (v.summary, v.markdown(), v._repr_markdown_()):
        assert not re.search(r"\bnan\b|n/a", text, re.I), text
    for p in v.parts:
        assert p.evidence in analysis.EVIDENCE and p.status in claims.STATUSES


IMP = tidy([0.05, 0.04, 0.045])  # gain of 0.01 at level 1 for every seed; margin 0.005


# -- figure 1 ----------------------------------------------------------------------------------------------------------

def test_test_error_gain_beyond_the_margin_is_reproduced():
    v = claims.pruning_improves_test_error(tidy([0.05, 0.04, 0.045], sd=0.002))
    assert v.status == "reproduced" and v.main.evidence == "beyond the margin"
    assert v.numbers["diff"] == pytest.approx(-0.01) and v.numbers["ci"] == pytest.approx(T975 * 0.002 / np.sqrt(5))
    assert v.row()["ruled_out_beyond"] == pytest.approx(-0.01 - T975 * 0.002 / np.sqrt(5))
    assert v.row()["effect_size"] == pytest.approx(-5.0) and v.row()["margin"] == pytest.approx(0.005)
    assert v.summary.startswith("test error: IMP − dense = -0.0100 ± 0.0025")  # the effect first, the word second


def test_inconclusive_gain_is_not_significant_and_states_the_largest_gain_allowed():
    v = claims.pruning_improves_test_error(tidy([0.05, 0.045, 0.06], sd=0.008))
    bound = -0.005 - T975 * 0.008 / np.sqrt(5)
    assert v.status == "not significant" and v.main.evidence == "inconclusive"
    assert v.row()["ruled_out_beyond"] == pytest.approx(bound)
    assert f"a drop beyond {-bound:.4f} is ruled out" in v.summary


def test_tight_interval_inside_the_margin_is_not_reproduced_with_its_bound():
    """paper-lenet's figure 1: -0.0001 ± 0.0004 at 2% error. A gain beyond ~0.05 points is ruled out: a finding."""
    v = claims.pruning_improves_test_error(tidy([0.0202, 0.0200, 0.021], sd=0.0003))
    bound = -0.0002 - T975 * 0.0003 / np.sqrt(5)
    assert v.status == "not reproduced" and v.main.evidence == "inside the margin"
    assert v.row()["ruled_out_beyond"] == pytest.approx(bound) and bound > -0.00202
    assert f"a drop beyond {-bound:.5f} is ruled out" in v.summary and "not significant" not in v.summary


def test_significant_gain_smaller_than_the_margin_is_not_reproduced():
    v = claims.pruning_improves_test_error(tidy([0.05, 0.048, 0.06], sd=0.0005))
    assert v.main.evidence == "significant, within the margin" and v.status == "not reproduced"


def test_gain_is_read_at_the_level_validation_picks():
    v = claims.pruning_improves_test_error(tidy([0.05, 0.06, 0.03], val=[0.05, 0.045, 0.07], sd=0.001))
    assert v.numbers["level"] == 1 and v.status == "not reproduced" and v.main.evidence == "significant the other way"


def test_validation_picking_the_dense_model_is_never_reproduced():
    worse = claims.pruning_improves_test_error(tidy([0.05, 0.06, 0.07], sd=0.001))
    assert worse.numbers["level"] == 0 and worse.numbers["read_at"] == 1 and worse.status == "not reproduced"
    better_on_test = claims.pruning_improves_test_error(tidy([0.05, 0.04, 0.06], val=[0.05, 0.055, 0.06], sd=0.001))
    assert better_on_test.main.evidence == "beyond the margin" and better_on_test.status == "not significant"
    assert "validation picks the dense model" in better_on_test.summary


# -- figure 2: a scan over levels, Holm-corrected ----------------------------------------------------------------------

def test_one_lucky_level_of_twenty_is_not_reproduced_after_holm():
    loss = [0.1] * 21
    loss[7] = 0.06  # t = 0.04 / (0.02 / sqrt 5) = 4.47: p = 0.011 at this level, 0.22 after Holm over 20
    v = claims.pruning_improves_training(tidy([0.05] * 21, loss=loss, loss_sd=0.02))
    d = v.main.differences.set_index("level")
    assert d.loc[7, "p"] == pytest.approx(2 * stats.t.sf(0.04 / (0.02 / np.sqrt(5)), 4))
    assert d.loc[7, "p"] < 0.05 and d.loc[7, "evidence"] == "beyond the margin"  # uncorrected: reproduced
    assert d.loc[7, "p_holm"] == pytest.approx(20 * d.loc[7, "p"]) and d.loc[7, "p_holm"] > 0.05
    assert v.status == "not significant" and v.numbers["levels_lower"] == 0 and v.numbers["levels"] == 20
    assert v.numbers["level"] == 7 and "after Holm's correction over 20 levels" in v.summary
    assert "beyond the margin before the correction" in v.summary and "a drop beyond" in v.summary


def test_genuine_drop_at_twelve_levels_is_counted_after_holm():
    loss = [0.1] + [0.05] * 12 + [0.1] * 8
    v = claims.pruning_improves_training(tidy([0.05] * 21, loss=loss, loss_sd=0.005))
    assert v.status == "reproduced" and v.numbers["levels_lower"] == 12 and v.numbers["levels_beyond_margin"] == 12
    assert "at 12 of 20 levels after Holm's correction" in v.summary


def test_training_loss_drop_ruled_out_at_every_level_is_not_reproduced():
    v = claims.pruning_improves_training(tidy([0.05] * 6, loss=[0.1] + [0.098] * 5, loss_sd=0.002))
    bound = -0.002 - T975 * 0.002 / np.sqrt(5)
    assert v.status == "not reproduced" and v.main.evidence == "inside the margin"
    assert v.row()["ruled_out_beyond"] == pytest.approx(bound) and "every level" in v.summary
    higher = claims.pruning_improves_training(tidy([0.05] * 3, loss=[0.1, 0.2, 0.3], loss_sd=0.01))
    assert higher.status == "not reproduced" and higher.main.evidence == "significant the other way"


def test_training_loss_margin_is_a_tenth_of_the_dense_models_loss():
    v = claims.pruning_improves_training(tidy([0.05] * 3, loss=[0.0005, 0.0001, 0.0002], loss_sd=0.00001))
    assert v.main.margin == pytest.approx(0.00005) and v.status == "reproduced"


# -- figure 3: a match, its missing branch, the premise ----------------------------------------------------------------

def test_extended_training_matching_imp_with_its_own_gain_is_reproduced():
    v = claims.training_time_explains_gain(IMP, tidy([0.05, 0.04, 0.04], sd=0.001))
    assert v.status == "reproduced" and v.main.direction == "match" and v.main.evidence == "inside the margin"
    half90 = stats.t.ppf(0.95, 4) * 0.001 / np.sqrt(5)
    assert v.row()["equivalent_within"] == pytest.approx(half90, abs=1e-12) and v.row()["p_equivalence"] < 0.05
    assert "equivalent within ±" in v.summary


def test_extended_training_better_than_imp_has_its_own_branch():
    v = claims.training_time_explains_gain(IMP, tidy([0.05, 0.03, 0.04], sd=0.001))
    assert v.status == "not reproduced" and "extended training is significantly better than IMP" in v.summary
    assert v.numbers["diff"] == pytest.approx(0.01) and "neither" not in v.summary


def test_imp_better_than_extended_training_refutes_the_match():
    v = claims.training_time_explains_gain(IMP, tidy([0.05, 0.05, 0.05], sd=0.001))
    assert v.status == "not reproduced" and "pruning beats the same training time" in v.summary


def test_extended_training_inconclusive_or_without_own_gain_is_not_significant():
    v = claims.training_time_explains_gain(IMP, tidy([0.05, 0.042, 0.04], sd=0.008))
    assert v.status == "not significant" and v.main.evidence == "inconclusive"
    vague_imp = tidy([0.05, 0.046, 0.06], sd=0.006)  # IMP's own gain neither shown nor ruled out
    v = claims.training_time_explains_gain(vague_imp, vague_imp)
    assert v.status == "not significant" and "its own gain over the dense model is not shown" in v.summary


def test_no_gain_of_imp_means_no_gain_to_explain():
    flat = tidy([0.05, 0.05, 0.06], val=[0.05, 0.045, 0.06], sd=0.0005)  # validation picks 1; no gain on test
    v = claims.training_time_explains_gain(flat, tidy([0.05, 0.03, 0.03], sd=0.001))
    assert v.status == "no gain to explain" and "a drop beyond" in v.summary
    gain = next(p for p in v.parts if p.role == "premise")
    assert gain.status == "not reproduced" and gain.evidence == "inside the margin"
    dense_best = claims.training_time_explains_gain(tidy([0.05, 0.06]), tidy([0.05, 0.06]))
    assert dense_best.status == "no gain to explain" and "validation picks the dense model" in dense_best.summary


def test_a_verdict_without_gain_to_explain_leads_its_row_with_the_gain():
    """The gain decides, so the row's level, difference, interval, evidence, bound and effect size are IMP − dense's
    (as the summary's), not the explanation's, which stay in their parts' columns."""
    flat = tidy([0.05, 0.05, 0.06], val=[0.05, 0.045, 0.06], sd=0.0005)  # validation picks 1; gain ruled out
    verdicts = [claims.training_time_explains_gain(flat, tidy([0.05, 0.03, 0.03], sd=0.001)),
                claims.size_alone_falls_short(flat, {"random": WORSE}),
                claims.both_factors_reproduce_pruning(flat, BOTH_MATCH, WORSE, WORSE),
                claims.improved_examples_matter(tie(0.07, 0.05, sd=0.002), flat)]
    bound = -0.0005 * T975 / np.sqrt(5)  # the gain is 0 ± that: a drop beyond it is ruled out
    for v in verdicts:
        row = v.row()
        assert v.status == "no gain to explain" and v.main.key == "gain", v.claim
        assert row["diff"] == pytest.approx(0, abs=1e-12) and row["ci"] == pytest.approx(-bound), v.claim
        assert row["ruled_out_beyond"] == pytest.approx(bound) and row["effect_size"] == pytest.approx(0, abs=1e-9)
        assert row["level"] == 1 and row["evidence"] == "inside the margin" and "p_equivalence" not in row
        assert f"a drop beyond {-bound:.5f} is ruled out" in v.summary
    assert verdicts[0].row()["match_diff"] == pytest.approx(0.02)  # the explanation's own numbers stay
    assert "no gain to explain. Measured, not judged: without top-improved − without random +0.02" in verdicts[3].summary
    assert "Measured, not judged: IMP − extended dense +0.02" in verdicts[0].summary


def test_extended_training_not_run_to_imps_level_is_not_tested():
    v = claims.training_time_explains_gain(IMP, tidy([0.05]))
    assert v.status == "not tested" and "not run to IMP's best level 1" in v.summary
    no_nan(v)


def test_controls_or_combination_not_run_to_imps_level_are_not_tested():
    short = tidy([0.05])
    assert claims.size_alone_falls_short(IMP, {"random": short}).status == "not tested"
    assert claims.size_alone_falls_short(IMP, {}).status == "not tested"
    v = claims.both_factors_reproduce_pruning(IMP, short, WORSE, WORSE)
    assert v.status == "not tested" and v.numbers["alone_status"] == "reproduced"
    no_nan(v)


def test_missing_seeds_are_dropped_from_the_pairing():
    v = claims.training_time_explains_gain(IMP, tidy([0.05, 0.04, 0.04], sd=0.001, seeds=3))
    assert v.numbers["n"] == 3 and v.main.at()["n"] == 3
    no_nan(v)


# -- figure 4 ----------------------------------------------------------------------------------------------------------

CLEAN = tidy([0.05, 0.05, 0.06])


def test_noise_claim_needs_lower_degradation_and_memorization():
    noisy = tidy([0.30, 0.25, 0.20], noisy=[1.0, 0.9, 0.2], sd=0.01, noisy_sd=0.01)
    v = claims.pruning_regularizes_noise(noisy, CLEAN, 0.4)
    assert v.status == "reproduced" and v.numbers["level"] == 2
    assert v.numbers["degradation_dense"] == pytest.approx(0.25)
    assert v.numbers["degradation_pruned"] == pytest.approx(0.14)
    assert v.main.margin == pytest.approx(0.025)  # a tenth of the dense model's degradation
    memo = next(p for p in v.parts if p.key == "memorization")
    assert memo.margin == pytest.approx(0.1) and memo.status == "reproduced"


def test_noise_claim_without_less_memorization_is_not_reproduced():
    noisy = tidy([0.30, 0.25, 0.20], noisy=[1.0, 0.99, 0.99], sd=0.01, noisy_sd=0.01)
    v = claims.pruning_regularizes_noise(noisy, CLEAN, 0.4)
    assert v.main.status == "reproduced" and v.status == "not reproduced"
    assert "Refuted by memorization (a drop beyond" in v.summary


def test_noise_claim_never_calls_an_interval_with_zero_significant():
    """The old notebook said "significantly worse" when the interval included zero."""
    unclear = tidy([0.30, 0.29, 0.35], noisy=[1.0, 0.5, 0.2], sd=0.08, noisy_sd=0.4)
    v = claims.pruning_regularizes_noise(unclear, tidy([0.05, 0.05, 0.05]), 0.2)
    assert v.status == "not significant" and "significantly" not in v.summary


# -- figure 5: every control worse; any refutation Holm-corrected ------------------------------------------------------

def test_size_controls_all_worse_are_reproduced():
    controls = {"random": tidy([0.05, 0.06, 0.07], sd=0.002), "reinit": tidy([0.05, 0.055, 0.06], sd=0.002)}
    v = claims.size_alone_falls_short(IMP, controls)
    assert v.status == "reproduced" and [p.status for p in v.parts[:2]] == ["reproduced"] * 2
    assert v.row()["random_status"] == "reproduced" and v.row()["reinit_diff"] == pytest.approx(0.015)


def test_size_control_that_beats_or_matches_imp_refutes():
    beats = claims.size_alone_falls_short(IMP, {"random": tidy([0.05, 0.03, 0.05], sd=0.002)})
    assert beats.status == "not reproduced" and "random beats IMP" in beats.summary
    close = claims.size_alone_falls_short(IMP, {"random": tidy([0.05, 0.041, 0.05], sd=0.001)})
    assert close.parts[0].evidence == "inside the margin" and close.status == "not reproduced"
    assert "not worse than IMP by more than the margin" in close.summary and "matches or beats" not in close.summary


def test_one_lucky_refutation_of_three_controls_does_not_survive_holm():
    s = 0.005 * np.sqrt(5) / stats.t.isf(0.015, 4)  # one-sided p = 0.015 that the control is 0.005 worse: 0.045 x3
    controls = {"random": tidy([0.05, 0.06, 0.07], sd=0.002), "snip": tidy([0.05, 0.06, 0.07], sd=0.002, rng=1),
                "reinit": tidy([0.05, 0.04, 0.05], sd=s)}
    v = claims.size_alone_falls_short(IMP, controls)
    reinit = next(p for p in v.parts if p.key == "reinit")
    assert reinit.at()["p_margin"] == pytest.approx(0.015) and reinit.evidence == "inside the margin"
    assert reinit.status == "not significant" and "p = 0.045" in reinit.note
    assert v.status == "not significant"


def test_size_controls_unresolved_are_not_significant():
    mixed = {"random": tidy([0.05, 0.06, 0.07], sd=0.002), "reinit": tidy([0.05, 0.041, 0.06], sd=0.05)}
    assert claims.size_alone_falls_short(IMP, mixed).status == "not significant"


# -- figure 6: the main claim and its sub-verdict ----------------------------------------------------------------------

BOTH_MATCH = tidy([0.05, 0.04, 0.05], sd=0.001)
WORSE = tidy([0.05, 0.06, 0.05], sd=0.002)


def test_both_factors_match_and_each_alone_falls_short():
    v = claims.both_factors_reproduce_pruning(IMP, BOTH_MATCH, WORSE, tidy([0.05, 0.065, 0.05], sd=0.002, rng=2))
    assert v.status == "reproduced" and v.numbers["alone_status"] == "reproduced"
    assert v.numbers["margin"] == pytest.approx(0.005) and v.numbers["p_equivalence"] < 0.05


def test_only_the_secondary_part_refuted_leaves_the_main_claim_reproduced():
    """The flip between two machines: time only − IMP −0.0026 ± 0.0024 at p ≈ 0.04 refuted the whole claim."""
    imp = tidy([0.047, 0.0456, 0.05], sd=0.004)  # IMP's own gain inconclusive, as at `small`
    # the same noise draws (rng 0) under every frame: differences from IMP have exactly sd_frame - sd_imp
    both = tidy([0.047, 0.0454, 0.05], sd=0.004 + 0.002)
    time_only = tidy([0.047, 0.0456 - 0.0026, 0.05], sd=0.004 + 0.0024 / T975 * np.sqrt(5))
    v = claims.both_factors_reproduce_pruning(imp, both, time_only, WORSE)
    alone = {p.key: p for p in v.parts if p.role == "secondary"}
    assert alone["time_only"].at()["p"] == pytest.approx(0.04, abs=0.005)
    assert alone["time_only"].status == "not reproduced" and v.numbers["alone_status"] == "not reproduced"
    assert v.status == "reproduced" and v.main.status == "reproduced"
    assert "Sub-verdict, each factor alone falls short" in v.summary
    assert "time only beats IMP (Holm-corrected)" in v.summary


def test_both_factors_worse_or_unresolved():
    v = claims.both_factors_reproduce_pruning(IMP, tidy([0.05, 0.06, 0.05], sd=0.001), WORSE, WORSE)
    assert v.status == "not reproduced" and "significantly worse than IMP" in v.summary
    vague = claims.both_factors_reproduce_pruning(IMP, tidy([0.05, 0.041, 0.05], sd=0.008), WORSE, WORSE)
    assert vague.status == "not significant" and vague.numbers["p_equivalence"] > 0.05


def test_both_factors_without_imp_gain_is_no_gain_to_explain():
    flat = tidy([0.05, 0.05, 0.06], val=[0.05, 0.045, 0.06], sd=0.0005)
    v = claims.both_factors_reproduce_pruning(flat, BOTH_MATCH, WORSE, WORSE)
    assert v.status == "no gain to explain"
    no_nan(v)


# -- figure 7 ----------------------------------------------------------------------------------------------------------

def test_improved_examples_every_branch():
    higher = claims.improved_examples_matter(tie(0.07, 0.05, sd=0.002), IMP)
    assert higher.status == "reproduced" and "significantly higher at 2 of the 2 levels measured" in higher.summary
    tight = claims.improved_examples_matter(tie(0.0505, 0.05, sd=0.0005), IMP)
    bound = 0.0005 + T975 * 0.0005 / np.sqrt(5)
    assert tight.status == "not reproduced" and f"a rise beyond {bound:.5f} is ruled out" in tight.summary
    loose = claims.improved_examples_matter(tie(0.051, 0.05, sd=0.02), IMP)
    assert loose.status == "not significant" and "at 0" not in loose.summary
    assert "no significant difference at any of the 2 levels measured (Holm-corrected)" in loose.summary
    flat = tidy([0.05, 0.05, 0.06], val=[0.05, 0.045, 0.06], sd=0.0005)
    assert claims.improved_examples_matter(tie(0.07, 0.05, sd=0.002), flat).status == "no gain to explain"


@pytest.mark.parametrize("best, measured, read_at", [(9, [4, 8, 12], 8), (10, [4, 8, 12], 8),
                                                     (11, [4, 8, 12], 12), (30, [4, 8], 8), (8, [4, 8], 8)])
def test_improved_examples_reads_the_nearest_measured_level(best, measured, read_at):
    """Validation may pick any level; figure 7's retrainings exist only at some: the verdict is read at the
    nearest measured level."""
    test, val = [0.10] * 31, [0.10] * 31
    test[best], val[best] = 0.05, 0.05
    v = claims.improved_examples_matter(tie(0.12, 0.10, sd=0.002, levels=measured), tidy(test, val=val))
    assert v.numbers["level"] == read_at and v.numbers["best_level"] == best and v.status == "reproduced"
    assert (f"nearest IMP's best level {best}" in v.summary) == (read_at != best)


def test_improved_examples_without_retrainings_is_not_tested():
    v = claims.improved_examples_matter(pd.DataFrame(), tidy([0.10, 0.08]))
    assert v.status == "not tested" and "no retraining" in v.summary


# -- figure 9: the weaker recipe is declared ---------------------------------------------------------------------------

def test_weaker_recipe_is_declared_not_read_off_validation():
    paper = tidy([0.05, 0.03, 0.04], val=[0.04, 0.03, 0.035], sd=0.002)  # validates *better* than tuned, gains more
    tuned = tidy([0.06, 0.06, 0.07], val=[0.05, 0.06, 0.07])
    v = claims.gain_shrinks_when_dense_is_trained_well({"tuned": tuned, "paper": paper})
    assert v.numbers["weaker"] == "paper" and v.status == "reproduced" and v.numbers["level_stronger"] == 0
    assert v.numbers["diff"] == pytest.approx(-0.02) and v.numbers["dense_val_weaker"] < v.numbers["dense_val_stronger"]
    swapped = claims.gain_shrinks_when_dense_is_trained_well({"tuned": tuned, "paper": paper}, weaker="tuned")
    assert swapped.numbers["weaker"] == "tuned" and swapped.status == "not reproduced"


def test_recipe_claim_needs_two_recipes_and_the_declared_one():
    one = claims.gain_shrinks_when_dense_is_trained_well({"a": tidy([0.1])})
    assert one.status == "not tested"
    missing = claims.gain_shrinks_when_dense_is_trained_well({"a": IMP, "b": IMP})
    assert missing.status == "not tested" and "'paper'" in missing.summary
    same = claims.gain_shrinks_when_dense_is_trained_well({"paper": tidy([0.10, 0.09], sd=0.02),
                                                           "b": tidy([0.05, 0.04], sd=0.001)})
    assert same.status == "not significant"


# -- degenerate data ---------------------------------------------------------------------------------------------------

def test_identical_differences_get_an_interval_and_no_nan():
    """At `small` test errors move in steps of 0.001: five seeds can all be exactly one image better."""
    imp = tidy([0.047, 0.046, 0.05], step=0.001)
    v = claims.pruning_improves_test_error(imp)
    r = v.main.at()
    assert r["ci"] == pytest.approx(T975 * 0.001 / np.sqrt(6) / np.sqrt(5)) and np.isfinite(r["p"])
    assert v.status == "not reproduced" and v.main.evidence == "significant, within the margin"
    no_nan(v)
    same = claims.both_factors_reproduce_pruning(imp, imp, imp, imp)  # every difference exactly zero
    both = next(p for p in same.parts if p.key == "both").at()
    assert both["ci"] == pytest.approx(r["ci"]) and both["p_equivalence"] < 0.05
    # a one-image gain is inside the margin: IMP's gain is shown absent, and nothing is NaN on the way
    assert same.status == "no gain to explain" and same.numbers["alone_status"] == "not reproduced"
    no_nan(same)


@pytest.mark.parametrize("seeds", [1, 2])
def test_one_or_two_seeds_give_a_clear_verdict(seeds):
    imp = tidy([0.05, 0.04, 0.045], sd=0.002, seeds=seeds)
    verdicts = [claims.pruning_improves_test_error(imp), claims.pruning_improves_training(imp),
                claims.training_time_explains_gain(imp, imp), claims.size_alone_falls_short(imp, {"r": imp}),
                claims.both_factors_reproduce_pruning(imp, imp, imp, imp),
                claims.improved_examples_matter(tie(0.07, 0.05, seeds=seeds), imp),
                claims.pruning_regularizes_noise(tidy([0.3, 0.2, 0.25], noisy=[1, 0.5, 0.6], seeds=seeds), imp, 0.2),
                claims.gain_shrinks_when_dense_is_trained_well({"paper": imp, "b": imp})]
    for v in verdicts:
        no_nan(v)
    if seeds == 1:
        v = verdicts[0]
        assert v.status == "not significant" and "one seed: no interval" in v.summary


# -- what a verdict carries --------------------------------------------------------------------------------------------

def test_parts_carry_the_per_level_differences_the_decision_uses():
    v = claims.both_factors_reproduce_pruning(IMP, BOTH_MATCH, WORSE, WORSE)
    assert [p.key for p in v.parts] == ["both", "time_only", "size_only", "gain"]
    for p in v.parts:
        assert {"level", "sparsity", "mean", "ci", "lo", "hi", "n"} <= set(p.differences.columns)
        assert p.direction in ("lower", "higher", "match") and p.margin == pytest.approx(0.005)
    both = v.main.differences.set_index("level")
    assert both.loc[1, "mean"] == pytest.approx(0.0) and both.loc[1, "lo"] == pytest.approx(-both.loc[1, "ci"])
    assert v.main.quantity == "test error: both factors − IMP" and both.loc[1, "sparsity"] == pytest.approx(0.2)


def test_verdict_rows_say_what_they_rule_out_and_save():
    v = claims.both_factors_reproduce_pruning(IMP, BOTH_MATCH, WORSE, WORSE)
    row = v.row()
    for key in ("evidence", "ruled_out_beyond", "equivalent_within", "effect_size", "time_only_status",
                "time_only_evidence", "time_only_ruled_out_beyond", "gain_status", "alone_status"):
        assert key in row, key
    f1 = claims.pruning_improves_test_error(tidy([0.05, 0.04, 0.045], sd=0.002))
    t = claims.table([v, f1])
    assert list(t.status) == ["reproduced", "reproduced"] and t.loc[1, "evidence"] == "beyond the margin"


def test_save_writes_one_row_per_verdict(tmp_path):
    v = claims.pruning_improves_test_error(tidy([0.0202, 0.0200, 0.021], sd=0.0003))
    path = claims.save([v], "fig1", tmp_path, "test")
    back = pd.read_csv(path)
    assert back.loc[0, "status"] == "not reproduced" and back.loc[0, "evidence"] == "inside the margin"
    assert back.loc[0, "ruled_out_beyond"] == pytest.approx(-0.0002 - T975 * 0.0003 / np.sqrt(5), rel=1e-4)


def test_markdown_puts_status_first_then_effect_evidence_and_bound():
    v = claims.pruning_improves_test_error(tidy([0.0202, 0.0200, 0.021], sd=0.0003))
    assert v.markdown().startswith("**Pruning lowers test error: not reproduced.**")
    md = v._repr_markdown_()
    assert md.startswith("**Pruning lowers test error: not reproduced**")
    first = md.splitlines()[2]
    assert first.index("±") < first.index("inside the margin") < first.index("is ruled out")


def test_paired_panel_draws_each_part_with_its_interval_and_margin():
    v = claims.both_factors_reproduce_pruning(IMP, BOTH_MATCH, WORSE, WORSE)
    fig, ax = plt.subplots()
    plots.paired_panel(ax, v)
    assert ax.get_xlabel() == "weights remaining (%)" and ax.xaxis_inverted()
    assert ax.get_ylabel() == "test error, paired difference"
    names = [t.get_text() for t in ax.get_legend().get_texts()]
    assert names[:len(v.parts)] == [p.name for p in v.parts] and set(names[len(v.parts):]) <= {"equivalence margin",
                                                                                                 "margin"}
    assert "equivalence margin" in names
    band = [p for p in ax.patches if p.get_alpha() == pytest.approx(0.12)]
    assert len(band) == 1 and band[0].get_path().get_extents(band[0].get_transform()).height > 0
    ys = [ln.get_ydata() for ln in ax.lines]
    assert any(np.allclose(y, 0.0) for y in ys if len(y) == 2)  # the zero line
    main = ax.lines[0]  # the match part: mean per level at 100, 80, 64 % remaining
    assert np.allclose(main.get_xdata(), [100, 80, 64]) and np.allclose(main.get_ydata()[1], 0.0, atol=1e-12)
    plt.close(fig)
    fig, ax = plt.subplots()
    v = claims.pruning_improves_test_error(tidy([0.05, 0.04, 0.045], sd=0.002))
    plots.paired_panel(ax, v)
    assert ax.get_ylabel() == "test error: IMP − dense"
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["margin"]
    lo, hi = ax.get_ylim()  # the margin line is drawn inside the panel, never on its frame
    assert lo < -v.parts[0].margin - 0.01 * (hi - lo) and hi > 0
    plt.close(fig)
