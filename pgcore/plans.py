"""What each protocol does at each level, as plain data: one function ``(cfg, level) -> LevelPlan`` per protocol,
which executors (:mod:`pgcore.protocols`) only carry out. Level k has sparsity 1 - (1 - rate)^k where it prunes;
T is one schedule (``train.epochs``); a level 0 that is the seed's dense ``train`` run says so (``reuse="dense"``)."""

from __future__ import annotations

import dataclasses
from typing import Any

from .config import PROTOCOLS, RunConfig

__all__ = ["LevelPlan", "sparsity_at", "dense", "imp", "extended_dense", "extended_stretched", "reinit",
           "extended_oneshot", "pai", "tie", "plan", "levels_of", "source_config", "stretched"]


@dataclasses.dataclass(frozen=True)
class LevelPlan:
    """One level of one protocol: its starting weights, its mask, the part of the schedule it trains."""

    level: int
    weights: str = "init"  # init | reinit (fresh) | previous (level as trained) | rewind | source (source_level)
    mask: str = "dense"  # dense | prune (rate of previous survivors) | oneshot (dense to sparsity) | source
    scores: str = "magnitude"  # ranks weights: prune ranks trained weights, oneshot the starting ones
    sparsity: float = 0.0
    source_level: int | None = None
    start_epoch: int = 0  # trains from start_epoch to epochs of the schedule
    epochs: int = 0
    lr: str = "schedule"  # or "final": the schedule's final rate throughout (fine-tuning)
    rewind_at: int | None = None  # keep the weights after this many epochs as the rewind point
    epochs_total: int = 0  # epochs trained in total once the level is done
    reuse: str | None = None  # "dense": the level is exactly the seed's dense run


def sparsity_at(cfg: RunConfig, level: int) -> float:
    return 1.0 - (1.0 - cfg.prune.rate) ** level


def dense(cfg: RunConfig, level: int = 0) -> LevelPlan:
    """The seed's dense run: one schedule from the initialization (``train``; ``data.exclude`` leaves examples out)."""
    T = cfg.train.epochs
    return LevelPlan(0, epochs=T, epochs_total=T, reuse=None if cfg.protocol == "train" else "dense")


def imp(cfg: RunConfig, level: int) -> LevelPlan:
    """Iterative pruning: remove ``rate`` of level k-1's survivors (``prune.method``), retrain by LR rewinding
    (``lrr``), weight rewinding to ``rewind_epoch`` (``rewind``) or T epochs at the final rate (``finetune``)."""
    p, T = cfg.prune, cfg.train.epochs
    if level == 0:
        if p.retrain == "rewind":  # the dense run again, keeping its rewind point
            return LevelPlan(0, epochs=T, epochs_total=T, rewind_at=p.rewind_epoch)
        return dense(cfg)
    start = p.rewind_epoch if p.retrain == "rewind" else 0
    return LevelPlan(level, weights="rewind" if p.retrain == "rewind" else "previous", mask="prune", scores=p.method,
                     sparsity=sparsity_at(cfg, level), start_epoch=start, epochs=T,
                     lr="final" if p.retrain == "finetune" else "schedule", epochs_total=T + level * (T - start))


def extended_dense(cfg: RunConfig, level: int) -> LevelPlan:
    """The dense model after k+1 replayed schedules: LRR level k's training time without its size reduction."""
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="previous", epochs=T, epochs_total=(level + 1) * T)


def extended_stretched(cfg: RunConfig, level: int) -> LevelPlan:
    """The other reading of extended training: one schedule stretched over (k+1)·T epochs from the initialization."""
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="init", epochs=(level + 1) * T, epochs_total=(level + 1) * T)


def reinit(cfg: RunConfig, level: int) -> LevelPlan:
    """IMP level k's mask on an independent fresh initialization, one schedule: no extra training time."""
    T = cfg.train.epochs
    return LevelPlan(level, weights="reinit", mask="source", source_level=level, sparsity=sparsity_at(cfg, level),
                     epochs=T, epochs_total=T)


def extended_oneshot(cfg: RunConfig, level: int) -> LevelPlan:
    """``extended_dense`` after k schedules, pruned once by magnitude to IMP level k's sparsity, one schedule."""
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="source", source_level=level - 1, mask="oneshot", scores="magnitude",
                     sparsity=sparsity_at(cfg, level), epochs=T, epochs_total=(level + 1) * T)


def pai(cfg: RunConfig, level: int) -> LevelPlan:
    """Pruning at initialization (``snip``, ``magnitude`` or ``random``) to level k's sparsity, one schedule."""
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="init", mask="oneshot", scores=cfg.prune.method,
                     sparsity=sparsity_at(cfg, level), epochs=T, epochs_total=T)


def tie(cfg: RunConfig, level: int) -> LevelPlan:
    """The dense model for one schedule without the examples ``data.leave_out`` names: the most improved from the
    source IMP run's level 0 to ``data.leave_out_level`` (top-improved examples), or as many random ones."""
    T = cfg.train.epochs
    return LevelPlan(0, source_level=cfg.data.leave_out_level, epochs=T, epochs_total=T)


# What each protocol does at a level (its source run, levels and hashed settings: config.PROTOCOLS).
PLANS = {"imp": imp, "extended_dense": extended_dense, "extended_stretched": extended_stretched, "train": dense,
         "reinit": reinit, "extended_oneshot": extended_oneshot, "pai": pai, "tie": tie}


def plan(cfg: RunConfig, level: int) -> LevelPlan:
    """What level ``level`` of ``cfg``'s protocol is."""
    return PLANS[cfg.protocol](cfg, level)


def levels_of(cfg: RunConfig) -> list[int]:
    """The levels a run of ``cfg`` stores, in order: 0 to ``prune.levels``, or level 0 and ``prune.at_levels``."""
    if not PROTOCOLS[cfg.protocol]["levels"]:
        return [0]
    return [0, *cfg.prune.at_levels] if cfg.prune.at_levels else list(range(cfg.prune.levels + 1))


def source_config(cfg: RunConfig) -> RunConfig | None:
    """The config of the run ``cfg`` builds on (its source protocol's, on all the training examples), or None."""
    src = PROTOCOLS[cfg.protocol]["source"]
    if src is None:
        return None
    data = dataclasses.replace(cfg.data, leave_out="", leave_out_fraction=0.0, leave_out_level=0)
    return dataclasses.replace(cfg, protocol=src, data=data, prune=dataclasses.replace(cfg.prune, at_levels=()))


def stretched(train: Any, epochs: int) -> Any:
    """``train`` (a TrainConfig) stretched to ``epochs`` epochs: milestones, warm-up and eval interval scale."""
    f = epochs / train.epochs
    if f == 1:
        return train
    return dataclasses.replace(train, epochs=epochs, milestones=tuple(int(round(m * f)) for m in train.milestones),
                               warmup_epochs=train.warmup_epochs * f,
                               eval_every=max(1, int(round(train.eval_every * f))))

