"""Figures label the whole sparsity range their curves cover."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from pgcore import plots  # noqa: E402


def _frame(levels: int) -> pd.DataFrame:
    return pd.DataFrame([{"seed": s, "level": k, "sparsity": 1 - 0.8 ** k, "epochs_total": k + 1, "source": "test",
                          "error": 0.1 + 0.001 * s, "loss": 0.1, "accuracy": 0.9} for k in range(levels + 1) for s in range(2)])


def testremaining_axis_labels_down_to_the_sparsest_curve():
    """A 30-level noise curve (0.12% remaining) drawn with a 20-level one: the labels reach
    below 1% remaining, whichever curve is drawn last."""
    for order in ((30, 20), (20, 30)):
        fig, ax = plt.subplots()
        for levels in order:
            plots.curve(_frame(levels), ax)
        labels = [float(t.get_text()) for t in ax.get_xticklabels()]
        assert max(labels) == 100 and min(labels) <= 0.2 and 0.5 in labels
        plt.close(fig)
