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


def test_best_sparsity_is_chosen_on_validation_and_reported_on_test():
    df = _frame(val=[0.30, 0.20, 0.25], test=[0.30, 0.28, 0.10])
    c = analysis.compare_to_dense(df)
    assert c["best_level"] == 1 and c["selected_on"] == "val"  # not level 2, the best on test
    assert c["diff_mean"] == pytest.approx(-0.02)
    assert c["diff_ci"] == pytest.approx(0.0, abs=1e-12)
    assert analysis.significance(c["diff_mean"], c["diff_ci"]) == "lower"


def test_choosing_on_test_must_be_asked_for_explicitly():
    df = _frame(val=[float("nan")] * 3, test=[0.30, 0.35, 0.40])
    with pytest.raises(analysis.NoValidationError, match="val_fraction"):
        analysis.compare_to_dense(df)
    c = analysis.compare_to_dense(df, select_on="test")
    assert c["best_level"] == 0 and c["selected_on"] == "test"
    assert c["diff_mean"] == 0.0


@pytest.mark.parametrize("mean, ci, word", [(-0.02, 0.01, "lower"), (0.02, 0.01, "higher"), (-0.02, 0.03, "same"),
                                            (0.01, 0.01, "same"), (-0.02, float("nan"), "undetermined")])
def test_one_rule_for_significance(mean, ci, word):
    assert analysis.significance(mean, ci) == word


def test_equivalence_is_two_one_sided_tests():
    from scipy import stats

    d = np.array([0.001, -0.002, 0.0005, 0.0015, -0.001])
    ok, p = analysis.equivalence(d, margin=0.005)
    se = d.std(ddof=1) / np.sqrt(5)
    expected = max(stats.t.sf((d.mean() + 0.005) / se, 4), stats.t.cdf((d.mean() - 0.005) / se, 4))
    assert ok and p == pytest.approx(expected) and p < 0.05
    # the same differences against a margin they do not clear
    assert analysis.equivalence(d, margin=0.001)[0] is False
    # shifted to most of the margin: the 90% interval reaches past it
    assert analysis.equivalence(d + 0.0045, margin=0.005)[0] is False
    assert analysis.equivalence(np.array([0.001]), margin=0.005) == (False, pytest.approx(float("nan"), nan_ok=True))
