"""Each claim's verdict from synthetic frames: every branch, with numbers that could be wrong."""

import numpy as np
import pandas as pd
import pytest

from pgcore import claims


def frame(test, val=None, train_loss=None, noisy_acc=None, seeds=4, spread=0.002):
    """Tidy rows for ``seeds`` seeds; per-level means given, each seed and level off by a fixed
    pseudo-random amount of size ``spread`` (so paired differences have a spread too)."""
    val = test if val is None else val
    rows = []
    for seed in range(seeds):
        for level, t in enumerate(test):
            jitter = spread * np.sin(7.3 * seed + 3.1 * level + 0.5)
            base = {"seed": seed, "level": level, "sparsity": 1 - 0.8 ** level, "epochs_total": level + 1}
            rows.append({**base, "source": "test", "error": t + jitter, "loss": t, "accuracy": 1 - t - jitter})
            rows.append({**base, "source": "val", "error": val[level] + jitter, "loss": val[level], "accuracy": 1 - val[level]})
            tl = train_loss[level] if train_loss else 0.1
            rows.append({**base, "source": "train", "error": tl, "loss": tl + jitter, "accuracy": 1 - tl})
            if noisy_acc:
                rows.append({**base, "source": "train_noisy", "error": 1 - noisy_acc[level] - jitter, "loss": 1.0,
                             "accuracy": noisy_acc[level] + jitter})
    return pd.DataFrame(rows)


def test_pruning_improves_test_error_every_branch():
    assert claims.pruning_improves_test_error(frame([0.10, 0.08, 0.12])).status == "reproduced"
    v = claims.pruning_improves_test_error(frame([0.10, 0.08, 0.12], spread=0.05))
    assert v.status == "not significant" and v.numbers["level"] == 1
    # validation picks the dense model: no evidence either way
    assert claims.pruning_improves_test_error(frame([0.10, 0.11, 0.12])).status == "not significant"
    # chosen on validation: level 2 is best on test but worst on validation
    v = claims.pruning_improves_test_error(frame([0.10, 0.12, 0.05], val=[0.10, 0.09, 0.20]))
    assert v.numbers["level"] == 1 and v.status == "not reproduced" and v.numbers["diff"] == pytest.approx(0.02, abs=0.003)


def test_pruning_improves_training_every_branch():
    assert claims.pruning_improves_training(frame([0.1] * 3, train_loss=[0.1, 0.05, 0.2])).status == "reproduced"
    assert claims.pruning_improves_training(frame([0.1] * 3, train_loss=[0.1, 0.2, 0.3])).status == "not reproduced"
    v = claims.pruning_improves_training(frame([0.1] * 3, train_loss=[0.1, 0.099, 0.2], spread=0.05))
    assert v.status == "not significant"


def test_training_time_explains_gain_every_branch():
    imp = frame([0.10, 0.08, 0.12])
    assert claims.training_time_explains_gain(imp, frame([0.10, 0.08, 0.07])).status == "reproduced"
    # matched within the margin, but extended training does not gain on the dense model itself
    flat_imp = frame([0.10, 0.0999, 0.12], val=[0.10, 0.09, 0.12])
    v = claims.training_time_explains_gain(flat_imp, frame([0.10, 0.0999, 0.10], spread=0.003))
    assert v.status == "not significant" and v.numbers["p_equivalence"] < 0.05
    assert claims.training_time_explains_gain(imp, frame([0.10, 0.10, 0.10])).status == "not reproduced"
    noisy_ext = frame([0.10, 0.085, 0.10], spread=0.05)
    assert claims.training_time_explains_gain(imp, noisy_ext).status == "not significant"
    assert claims.training_time_explains_gain(frame([0.10, 0.12]), imp).status == "not significant"  # no gain to explain


def test_noise_claim_needs_lower_degradation_and_memorization():
    clean = frame([0.05, 0.05, 0.06])
    good = frame([0.30, 0.25, 0.20], noisy_acc=[1.0, 0.9, 0.2])
    v = claims.pruning_regularizes_noise(good, clean, 0.4)
    assert v.status == "reproduced"
    assert v.numbers["degradation_dense"] == pytest.approx(0.25) and v.numbers["degradation_pruned"] == pytest.approx(0.14)
    worse = frame([0.30, 0.28, 0.40], val=[0.30, 0.29, 0.4], noisy_acc=[1.0, 1.0, 0.2])
    assert claims.pruning_regularizes_noise(worse, clean, 0.4).status in ("not reproduced", "not significant")


def test_noise_claim_never_calls_an_interval_with_zero_significant():
    """The old notebook said "significantly worse" when the interval included zero."""
    clean = frame([0.05, 0.05, 0.05])
    unclear = frame([0.30, 0.29, 0.35], noisy_acc=[1.0, 0.5, 0.2], spread=0.08)
    v = claims.pruning_regularizes_noise(unclear, clean, 0.2)
    assert v.status == "not significant" and "significantly" not in v.summary


def test_size_controls_every_branch():
    imp = frame([0.10, 0.08, 0.09])
    assert claims.size_alone_falls_short(imp, {"random": frame([0.10, 0.12, 0.13])}).status == "reproduced"
    assert claims.size_alone_falls_short(imp, {"random": frame([0.10, 0.06, 0.13])}).status == "not reproduced"
    mixed = {"random": frame([0.10, 0.12, 0.13]), "reinit": frame([0.10, 0.081, 0.13], spread=0.05)}
    assert claims.size_alone_falls_short(imp, mixed).status == "not significant"


def test_both_factors_every_branch():
    imp = frame([0.10, 0.08, 0.09])
    worse = frame([0.10, 0.12, 0.13])
    same = frame([0.10, 0.0801, 0.09], spread=0.003)
    v = claims.both_factors_reproduce_pruning(imp, same, worse, worse)
    assert v.status == "reproduced" and v.numbers["margin"] == pytest.approx(0.005, abs=1e-4)
    assert v.numbers["p_equivalence"] < 0.05
    # not significantly different, but too uncertain to be a match: no longer "reproduced"
    vague = frame([0.10, 0.0801, 0.09], spread=0.02)
    v = claims.both_factors_reproduce_pruning(imp, vague, worse, worse)
    assert v.status == "not significant" and v.numbers["p_equivalence"] > 0.05
    assert claims.both_factors_reproduce_pruning(imp, worse, worse, worse).status == "not reproduced"
    assert claims.both_factors_reproduce_pruning(imp, same, frame([0.1, 0.06, 0.1]), worse).status == "not reproduced"
    assert claims.both_factors_reproduce_pruning(imp, same, same, worse).status == "not significant"


def test_improved_examples_every_branch():
    imp = frame([0.10, 0.08, 0.09])

    def tie(top, rand, spread=0.001):
        rows = []
        for level in (1, 2):
            for seed in range(4):
                j = spread * (seed - 1.5)
                for removed, e in (("top-improved", top + j), ("random", rand - j)):
                    rows.append({"source": "test", "tie_level": level, "seed": seed, "removed": removed, "error": e})
        return pd.DataFrame(rows)

    assert claims.improved_examples_matter(tie(0.12, 0.10), imp).status == "reproduced"
    assert claims.improved_examples_matter(tie(0.09, 0.10), imp).status == "not reproduced"
    assert claims.improved_examples_matter(tie(0.101, 0.10, spread=0.05), imp).status == "not significant"


@pytest.mark.parametrize("best, measured, read_at", [(0, [4, 8], 4), (9, [4, 8, 12], 8), (10, [4, 8, 12], 8),
                                                     (11, [4, 8, 12], 12), (30, [4, 8], 8), (8, [4, 8], 8)])
def test_improved_examples_reads_the_nearest_measured_level(best, measured, read_at):
    """Validation may pick any level; figure 7's retrainings exist only at some (the crash of
    `make figures` on another CPU): the verdict is read at the nearest measured level."""
    test = [0.10] * 31
    val = [0.10] * 31
    val[best] = 0.05
    imp = frame(test, val=val)
    rows = [{"source": "test", "tie_level": k, "seed": s, "removed": r, "error": e + 0.001 * s}
            for k in measured for s in range(4) for r, e in (("top-improved", 0.12), ("random", 0.10))]
    v = claims.improved_examples_matter(pd.DataFrame(rows), imp)
    assert v.numbers["level"] == read_at and v.numbers["best_level"] == best and v.status == "reproduced"
    assert (f"nearest IMP's best level {best}" in v.summary) == (read_at != best)


def test_improved_examples_without_retrainings_says_so():
    v = claims.improved_examples_matter(pd.DataFrame(), frame([0.10, 0.08]))
    assert v.status == "not significant" and "no retraining" in v.summary


def test_verdicts_tabulate_with_their_numbers():
    v = claims.pruning_improves_test_error(frame([0.10, 0.08, 0.12]))
    t = claims.table([v])
    assert t.loc[0, "status"] == "reproduced" and np.isclose(t.loc[0, "diff"], -0.02, atol=0.003)
    assert v.markdown().startswith("**Pruning lowers test error: reproduced.**")


def test_recipe_gain_every_branch():
    """The weaker recipe is the one whose dense model validates worse, whatever its name."""
    weak_big_gain = frame([0.10, 0.07, 0.09], val=[0.10, 0.07, 0.09])
    strong_no_gain = frame([0.05, 0.052, 0.06], val=[0.05, 0.052, 0.06])
    v = claims.gain_shrinks_when_dense_is_trained_well({"tuned": strong_no_gain, "paper": weak_big_gain})
    assert v.status == "reproduced" and v.numbers["weaker"] == "paper" and v.numbers["level_stronger"] == 0
    assert v.numbers["diff"] == pytest.approx(-0.03, abs=0.003)
    strong_big_gain = frame([0.05, 0.02, 0.06], val=[0.05, 0.02, 0.06])
    weak_small_gain = frame([0.10, 0.095, 0.12], val=[0.10, 0.095, 0.12])
    v = claims.gain_shrinks_when_dense_is_trained_well({"a": strong_big_gain, "b": weak_small_gain})
    assert v.status == "not reproduced" and v.numbers["weaker"] == "b"
    same = claims.gain_shrinks_when_dense_is_trained_well({"a": frame([0.10, 0.09], spread=0.02),
                                                           "b": frame([0.05, 0.04], spread=0.001)})
    assert same.status == "not significant"
    assert claims.gain_shrinks_when_dense_is_trained_well({"a": frame([0.1])}).status == "not significant"
