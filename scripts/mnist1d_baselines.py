"""Dense MNIST-1D baselines and the over-parameterization sweep behind the `small` profile.

Trains dense models with pgcore's own trainer (protocol `train`) and prints/writes a table:
parameters, final training error and loss, test error (mean ± 95% CI over seeds).

    python scripts/mnist1d_baselines.py --seeds 0 1 2 --out figures/mnist1d_baselines.csv
"""

from __future__ import annotations

import argparse
import time

import pandas as pd

from pgcore import analysis, models
from pgcore.config import at_least, from_dict
from pgcore.data import load
from pgcore.protocols import run_seeds

# (label, model section, data section). The first two are MNIST-1D's reference models at its
# standard 4000/1000 split; the rest sweep width at the `small` profile's split.
GRID = [
    ("mlp 100x2 (reference)", {"name": "mlp", "width": 100, "depth": 2}, {"val_fraction": 0.0}),
    ("cnn1d 64ch (reference)", {"name": "cnn1d", "width": 64}, {"val_fraction": 0.0}),
    *[(f"mlp {w}x2", {"name": "mlp", "width": w, "depth": 2}, {"val_fraction": 0.1}) for w in (32, 64, 128, 256, 512)],
    *[(f"cnn1d {c}ch", {"name": "cnn1d", "width": c}, {"val_fraction": 0.1}) for c in (16, 32, 64)],
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=at_least(0), nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=at_least(1), default=40)
    ap.add_argument("--out", default=None, help="CSV path for the table")
    args = ap.parse_args()
    rows = []
    for label, model, data in GRID:
        params = {"protocol": "train", "data": {"name": "mnist1d", **data}, "model": model,
                  "train": {"epochs": args.epochs, "lr": 0.1, "batch_size": 128, "weight_decay": 5e-4}}
        cfg = from_dict(params)
        d = load(cfg.data)
        n_params = models.count_parameters(models.build(cfg.model, d.input_shape, d.num_classes))
        tic = time.perf_counter()
        df = run_seeds(params, args.seeds, progress=False).frame()
        test, train = df[df.source == "test"], df[df.source == "train"]
        rows.append({"model": label, "params": n_params, "train_examples": len(d.y_train),
                     "train_err": train.error.mean(), "train_loss": train.loss.mean(),
                     "test_err": test.error.mean(), "test_err_ci95": analysis.ci95(test.error.to_numpy()),
                     "test_acc": 1 - test.error.mean(), "seeds": len(test), "wall_s": time.perf_counter() - tic})
        print(pd.DataFrame(rows[-1:]).to_string(index=False, header=len(rows) == 1, float_format="{:.4f}".format), flush=True)
    table = pd.DataFrame(rows)
    if args.out:
        table.to_csv(args.out, index=False)


if __name__ == "__main__":
    main()
