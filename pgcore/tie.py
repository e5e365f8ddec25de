"""Top-improved examples (TIE): which training examples does pruning fit better, and do
they carry the generalization gain?

From an IMP run, the improvement of a training example at level k is its final training
loss in the dense model (level 0) minus its loss at level k (positive: pruning lowered it).
For each level, a dense model is trained without the top ``fraction`` of examples by
improvement; the control leaves out a random subset of the same size (one subset per seed,
the same at every level, so one control run serves every level). If the improved examples
matter for generalization, leaving them out should cost more test accuracy than leaving
out random ones (the paper: "for each sparsity pruning reaches, we train two dense models").
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from . import data as data_mod
from .config import RunConfig, from_dict
from .protocols import resolve_device, run
from .seeds import generator
from .store import Run


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
    """``k`` of ``n`` indices drawn from the seed's ``subset`` stream."""
    return sorted(torch.randperm(n, generator=generator(seed, "subset"))[:k].tolist())


def tie_configs(imp_run: Run, level: int, fraction: float) -> list[RunConfig]:
    """The two dense retrainings for one seed at one level: without the top-improved examples,
    and without a random subset of the same size."""
    gain = improvement(imp_run, level)
    top = top_improved(gain, fraction)
    out = []
    for exclude in (top, random_subset(len(gain), len(top), imp_run.cfg.seed)):
        base = imp_run.cfg.to_dict()
        base.update(protocol="train")
        base["data"]["exclude"] = exclude
        out.append(from_dict(base, seed=imp_run.cfg.seed))
    return out


def run_tie(imp_runs: list[Run], level: int, fraction: float, *, root: str | Path | None = None,
            device: str | torch.device = "auto", progress: bool = True) -> pd.DataFrame:
    """For each seed of an IMP experiment, the dense retrainings of :func:`tie_configs` (run
    if missing). Returns their tidy frame (column ``removed``: ``top-improved`` | ``random``;
    ``tie_level``: the level whose improvement chose the examples)."""
    dev = resolve_device(device)
    full: data_mod.Data | None = None
    frames = []
    for imp_run in imp_runs:
        gain = improvement(imp_run, level)
        for removed, cfg in zip(("top-improved", "random"), tie_configs(imp_run, level, fraction)):
            stored = Run(cfg, root)
            if not stored.is_done():
                if full is None:  # every run here shares the IMP run's data, less its own exclusions
                    full = data_mod.load(imp_run.cfg.data, dev)
                stored = run(cfg, root, dev, progress, data=full.without(cfg.data.exclude))
            f = stored.frame()
            f["removed"] = removed
            f["tie_level"] = level
            f["tie_sparsity"] = imp_run.load_metrics(level)["sparsity"]
            f["removed_count"] = len(cfg.data.exclude)
            f["mean_improvement_removed"] = float(gain[list(cfg.data.exclude)].mean())
            frames.append(f)
    return pd.concat(frames, ignore_index=True)
