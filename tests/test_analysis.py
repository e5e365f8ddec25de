import numpy as np
import pandas as pd
import pytest

from pgcore import analysis


def _frame(val, test):
    """Rows for 3 seeds x len(val) levels; val/test give per-level errors, seed adds 0.01*seed."""
    rows = []
    for seed in range(3):
        for level, (v, t) in enumerate(zip(val, test)):
            for source, e in (("val", v), ("test", t)):
                rows.append({"seed": seed, "level": level, "sparsity": 1 - 0.8 ** level, "epochs_total": level + 1,
                             "source": source, "error": e + 0.01 * seed, "loss": e})
    return pd.DataFrame(rows)


def test_ci95_is_the_student_t_interval():
    # mean 2, sd 1, n 3: t_{0.975, 2} = 4.3027 -> 4.3027 / sqrt(3)
    assert analysis.ci95([1.0, 2.0, 3.0]) == pytest.approx(2.4841, abs=1e-4)
    assert pd.isna(analysis.ci95([1.0]))


def test_best_sparsity_is_chosen_on_validation_not_test():
    df = _frame(val=[0.30, 0.20, 0.25], test=[0.30, 0.28, 0.10])
    assert analysis.best_level(df) == 1  # not level 2, the best on test
    assert analysis.best_level(df, select_on="test") == 2


def test_choosing_on_test_must_be_asked_for_explicitly():
    df = _frame(val=[float("nan")] * 3, test=[0.30, 0.35, 0.40])
    with pytest.raises(analysis.NoValidationError, match="val_fraction"):
        analysis.best_level(df)
    assert analysis.best_level(df, select_on="test") == 0
    with pytest.raises(analysis.NoValidationError, match="'val'"):
        analysis.best_level(df[df.source == "test"])


def test_paired_stats_is_the_student_t_interval_with_its_effect_and_p():
    from scipy import stats

    s = analysis.paired_stats(np.array([1.0, 2.0, 3.0]) * 0.001, step=0.0)
    half = stats.t.ppf(0.975, 2) * 0.001 / np.sqrt(3)
    assert s["n"] == 3 and s["mean"] == pytest.approx(0.002) and s["sd"] == pytest.approx(0.001)
    assert s["ci"] == pytest.approx(half)
    assert s["lo"] == pytest.approx(0.002 - half) and s["hi"] == pytest.approx(0.002 + half)
    assert s["ci90"] == pytest.approx(stats.t.ppf(0.95, 2) * 0.001 / np.sqrt(3))
    assert s["p"] == pytest.approx(2 * stats.t.sf(2 * np.sqrt(3), 2)) and s["effect_size"] == pytest.approx(2.0)
    one = analysis.paired_stats(np.array([0.004]))
    assert one["n"] == 1 and one["mean"] == 0.004 and np.isnan(one["ci"]) and np.isnan(one["p"])
    assert analysis.paired_stats(np.array([]))["n"] == 0


def test_identical_differences_get_the_spread_of_their_step():
    """Test errors over 1,000 images move in steps of 0.001: five seeds one image better each is not certainty."""
    assert analysis.quantization_step(np.array([0.047, 0.046, 0.05, 0.047])) == pytest.approx(0.001)
    assert analysis.quantization_step(np.array([0.0, 0.0])) == 0.0
    s = analysis.paired_stats(np.array([-0.001] * 5))
    assert s["sd"] == pytest.approx(0.001 / np.sqrt(6)) and 0 < s["p"] < 0.05 and np.isfinite(s["effect_size"])
    zero = analysis.paired_stats(np.zeros(5))
    assert zero["ci"] == 0 and zero["p"] == 1.0 and zero["effect_size"] == 0.0


def test_holm_is_the_step_down_correction():
    adjusted = analysis.holm(np.array([0.01, 0.04, 0.03, 0.005]))
    # sorted 0.005, 0.01, 0.03, 0.04 times 4, 3, 2, 1 = 0.02, 0.03, 0.06, 0.04, made monotone
    assert adjusted == pytest.approx([0.03, 0.06, 0.06, 0.02])
    with_untested = analysis.holm(np.array([0.01, np.nan, 0.02]))  # an untested level is no test
    assert with_untested[[0, 2]] == pytest.approx([0.02, 0.02]) and np.isnan(with_untested[1])
    assert analysis.holm(np.array([0.9, 0.4])) == pytest.approx([0.9, 0.8])  # 0.4 x 2, then 0.9 x 1


@pytest.mark.parametrize("lo, hi, direction, word", [
    (-0.05, -0.02, "lower", "beyond the margin"), (-0.03, -0.005, "lower", "significant, within the margin"),
    (-0.008, -0.002, "lower", "significant, within the margin"), (-0.008, 0.05, "lower", "inside the margin"),
    (-0.03, 0.005, "lower", "inconclusive"), (0.002, 0.03, "lower", "significant the other way"),
    (0.02, 0.05, "higher", "beyond the margin"), (-0.03, -0.005, "higher", "significant the other way"),
    (-0.05, 0.008, "higher", "inside the margin"), (-0.008, 0.008, "match", "inside the margin"),
    (-0.008, 0.012, "match", "inconclusive"), (0.002, 0.008, "match", "significant, within the margin"),
    (-0.05, -0.02, "match", "beyond the margin"), (float("nan"), float("nan"), "lower", "inconclusive")])
def test_evidence_classes_against_zero_and_the_margin(lo, hi, direction, word):
    assert analysis.evidence(lo, hi, 0.01, direction) == word
    assert word in analysis.EVIDENCE


def test_evidence_of_a_match_reads_as_the_equivalence_test():
    """The 95% interval reaches past the margin, the 90% one does not: a match, so "inside the margin"."""
    assert analysis.evidence(-0.011, 0.011, 0.01, "match", within=0.009) == "inside the margin"
    assert analysis.evidence(-0.011, 0.011, 0.01, "match", within=0.0101) == "inconclusive"
    assert analysis.evidence(-0.011, 0.011, 0.01, "match") == "inconclusive"


def test_evidence_refuses_an_unknown_direction():
    with pytest.raises(ValueError, match="direction"):
        analysis.evidence(-0.1, 0.1, 0.01, "smaller")
