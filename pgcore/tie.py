"""Top-improved examples (TIE): which training examples does pruning fit better, and do
they carry the generalization gain?

From an IMP run, the improvement of a training example is its final training loss in the
dense model (level 0) minus its loss at a pruned level (positive: pruning lowered it).
The top ``fraction`` of examples by improvement is removed from the training set and a
dense model is trained without them; the control removes a random subset of the same
size. If the improved examples matter for generalization, removing them should cost more
test accuracy than removing random ones.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from . import data as data_mod
from .config import from_dict
from .protocols import resolve_device, run
from .store import Run
from .train import generator

RANDOM_STREAM = 700_000  # the random-removal control's subset


def improvement(imp_run: Run, level: int, base_level: int = 0) -> torch.Tensor:
    """Per-example training loss at ``base_level`` minus at ``level`` (positive = lower after pruning)."""
    before = imp_run.load_checkpoint(base_level)["per_example_loss"]
    after = imp_run.load_checkpoint(level)["per_example_loss"]
    if before.shape != after.shape or before.numel() == 0:
        raise ValueError(f"{imp_run.path}: per-example losses of levels {base_level} and {level} do not match")
    return before - after


def top_improved(improvement: torch.Tensor, fraction: float) -> list[int]:
    """Indices of the ``round(fraction * n)`` most improved examples (ties by index)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"TIE fraction must be in (0, 1), got {fraction}")
    k = int(round(fraction * len(improvement)))
    order = torch.sort(-improvement, stable=True).indices
    return sorted(order[:k].tolist())


def random_subset(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``n`` indices drawn with the seed's own generator stream."""
    return sorted(torch.randperm(n, generator=generator(seed, RANDOM_STREAM))[:k].tolist())


def pick_level(imp: pd.DataFrame, best: int) -> int:
    """The pruned level whose examples are compared: ``best`` (chosen on validation) when it
    is a pruned level; if the dense model itself was best, the level with the lowest mean
    training loss, where pruning improved training the most."""
    if best > 0:
        return best
    train = imp[(imp.source == "train") & (imp.level > 0)].groupby("level")["loss"].mean()
    return int(train.idxmin())


def run_tie(imp_runs: list[Run], level: int, fraction: float, *, root: str | Path | None = None,
            device: str | torch.device = "auto", progress: bool = True) -> pd.DataFrame:
    """Train, for each seed of an IMP experiment, a dense model without that seed's top
    ``fraction`` improved examples and one without a random subset of the same size.
    Returns the tidy frame of both (column ``removed``: ``top-improved`` | ``random``)."""
    dev = resolve_device(device)
    full: data_mod.Data | None = None
    frames = []
    for imp_run in imp_runs:
        gain = improvement(imp_run, level)
        top = top_improved(gain, fraction)
        for removed, exclude in (("top-improved", top),
                                 ("random", random_subset(len(gain), len(top), imp_run.cfg.seed))):
            base = imp_run.cfg.to_dict()
            base["protocol"] = "train"
            base["data"]["exclude"] = exclude
            cfg = from_dict(base, seed=imp_run.cfg.seed)
            stored = Run(cfg, root)
            if not stored.is_done():
                if full is None:  # every run here shares the IMP run's data, less its own exclusions
                    full = data_mod.load(imp_run.cfg.data, dev)
                stored = run(cfg, root, dev, progress, data=full.without(exclude))
            f = stored.frame()
            f["removed"] = removed
            f["removed_count"] = len(exclude)
            f["mean_improvement_removed"] = float(gain[exclude].mean())
            frames.append(f)
    return pd.concat(frames, ignore_index=True)
