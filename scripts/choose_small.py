"""How the `small` profile's training settings were chosen: dense LeNet-300-100 on the
mnist5k subset under a few standard SGD recipes, 3 seeds each, ranked by *validation* error
(test error is reported, never used to choose). Writes figures/small/settings.csv.

    python scripts/choose_small.py [--store DIR] [--seeds 0 1 2]

The candidates are the recipes a researcher would try first for this model: OpenLTH's own
LeNet schedule (lr 0.1, constant, no momentum or weight decay, 40 epochs), the same at 100
epochs (the sparse-double-descent paper's setting is 160), a cosine schedule, and SGD with
momentum 0.9 and weight decay 5e-4 (the probe in PAPER.md). Only the dense model is trained:
the choice is made before any pruning is seen.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd

from pgcore import analysis
from pgcore.config import at_least, override
from pgcore.protocols import run_seeds

BASE = {"data": {"name": "mnist5k", "val_fraction": 0.1}, "model": {"name": "lenet_300_100"},
        "train": {"batch_size": 128, "eval_every": 10}, "prune": {"levels": 0}}
CANDIDATES = {
    "openlth: lr 0.1 constant, 40 ep": {"train.lr": 0.1, "train.schedule": "constant", "train.momentum": 0.0,
                                        "train.weight_decay": 0.0, "train.epochs": 40},
    "lr 0.1 constant, 100 ep": {"train.lr": 0.1, "train.schedule": "constant", "train.momentum": 0.0,
                                "train.weight_decay": 0.0, "train.epochs": 100},
    "lr 0.1 cosine, 40 ep": {"train.lr": 0.1, "train.schedule": "cosine", "train.momentum": 0.0,
                             "train.weight_decay": 0.0, "train.epochs": 40},
    "lr 0.05 cosine, momentum 0.9, wd 5e-4, 40 ep": {"train.lr": 0.05, "train.schedule": "cosine", "train.momentum": 0.9,
                                                     "train.weight_decay": 5e-4, "train.epochs": 40},
    "lr 0.1 cosine, momentum 0.9, wd 5e-4, 40 ep": {"train.lr": 0.1, "train.schedule": "cosine", "train.momentum": 0.9,
                                                    "train.weight_decay": 5e-4, "train.epochs": 40},
    "lr 0.05 cosine, momentum 0.9, wd 5e-4, 100 ep": {"train.lr": 0.05, "train.schedule": "cosine", "train.momentum": 0.9,
                                                      "train.weight_decay": 5e-4, "train.epochs": 100},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--store", default=None)
    ap.add_argument("--seeds", type=at_least(0), nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default="figures/small/settings.csv")
    args = ap.parse_args()
    rows = []
    for name, changes in CANDIDATES.items():
        df = run_seeds(override(BASE, changes), args.seeds, protocol="train", root=args.store, device="cpu",
                       progress=False, lockstep=False).frame()
        row = {"recipe": name, **{k.split(".")[1]: v for k, v in changes.items()}, "seeds": df.seed.nunique()}
        for source in ("train", "val", "test"):
            err = df[df.source == source].error.to_numpy()
            row[f"{source}_error"], row[f"{source}_error_ci"] = err.mean(), analysis.ci95(err)
        rows.append(row)
        print(f"{name:48s} val {row['val_error']:.4f} ± {row['val_error_ci']:.4f}  (test {row['test_error']:.4f})")
    table = pd.DataFrame(rows).sort_values("val_error")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out, index=False, float_format="%.5f")
    print(f"chosen on validation: {table.iloc[0].recipe}  -> {args.out}")


if __name__ == "__main__":
    main()
