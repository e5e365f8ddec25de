"""Top-improved examples (TIE): do the training examples pruning fits better carry its gain? A dense model is
retrained without the ``fraction`` most improved (training loss at level 0 minus at level k) and one without as many
random ones; if they matter, leaving them out costs more test accuracy."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import torch

from . import data as data_mod
from .config import RunConfig, from_dict, override
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
    """One seed's two dense retrainings at one level: without the top-improved examples, without as many random."""
    gain = improvement(imp_run, level)
    top = top_improved(gain, fraction)
    return [from_dict(override(imp_run.cfg.to_dict(), {"protocol": "train", "data.exclude": exclude}),
                      seed=imp_run.cfg.seed)
            for exclude in (top, random_subset(len(gain), len(top), imp_run.cfg.seed))]


def run_tie(imp_runs: list[Run], level: int, fraction: float, *, root: str | Path | None = None,
            device: str | torch.device = "auto", progress: bool = True) -> pd.DataFrame:
    """The tidy frame of :func:`tie_configs`' retrainings (run if missing) for each IMP run, with columns
    ``removed`` (``top-improved`` | ``random``) and ``tie_level``."""
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
            exclude = list(cfg.data.exclude)
            frames.append(stored.frame().assign(
                removed=removed, tie_level=level, tie_sparsity=imp_run.load_metrics(level)["sparsity"],
                removed_count=len(exclude), mean_improvement_removed=float(gain[exclude].mean())))
    return pd.concat(frames, ignore_index=True)
