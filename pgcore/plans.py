"""What each protocol does at each level, as plain data.

A protocol is one function ``plan(cfg, level) -> LevelPlan``. The plan says where the level's
weights come from, how its mask is made, which part of which schedule it trains and how many
epochs the model has then trained in total. Executors (:mod:`pgcore.protocols`, sequential or
in lockstep, on any worker) only carry plans out; they know nothing of protocols.

The protocols of the paper (level k has sparsity 1 - (1 - rate)^k where it prunes; T is one
training run of ``train.epochs`` epochs):

- ``imp``: iterative pruning. Level 0 is the dense run; level k removes ``rate`` of level
  k-1's surviving weights (``prune.method``: ``magnitude``, or ``random`` for the
  size-reduction control) and retrains by learning-rate rewinding (``lrr``: keep the weights,
  replay the schedule), weight rewinding (``rewind``: survivors back to their epoch-
  ``rewind_epoch`` values, train the rest of the schedule) or fine-tuning (``finetune``: T
  epochs at the schedule's final learning rate).
- ``extended_dense``: the dense model trained for k+1 replayed schedules, no pruning: the
  training time of LRR level k without its size reduction (our reading of the paper).
- ``extended_stretched``: the other reading: one schedule stretched over (k+1)·T epochs,
  from the initialization (an assumption, offered beside ``extended_dense``).
- ``train``: one dense run (level 0 only); ``data.exclude`` leaves examples out (TIE).
- ``reinit``: IMP level k's mask on an independent fresh initialization, one schedule: the
  same mask and sparsity without IMP's extra training time.
- ``extended_oneshot``: ``extended_dense`` after k schedules, pruned once by magnitude to IMP
  level k's sparsity and retrained one schedule: extended training and size reduction
  together without iterative pruning (our reading of the paper's "augmented training").
- ``pai``: pruning at initialization: a mask chosen on the initial weights (``prune.method``:
  ``snip`` = |g ⊙ w|, ``magnitude`` or ``random``) at level k's sparsity, trained one
  schedule: size reduction with neither IMP's training time nor its trained weights.

Every protocol whose level 0 is the plain dense run says so (``reuse="dense"``): that level
is the seed's ``train`` run, stored once and referenced.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import PROTOCOLS, RunConfig


@dataclass(frozen=True)
class LevelPlan:
    """One level of one protocol.

    - ``weights``: where training starts: ``init`` (the seed's initialization), ``reinit``
      (an independent fresh initialization), ``previous`` (this run's previous level as
      trained), ``rewind`` (this run's rewind point) or ``source`` (the source run's level
      ``source_level``).
    - ``mask``: ``dense``; ``prune`` (remove ``rate`` of the previous level's survivors,
      ranked by ``scores`` of the previous level's trained weights); ``oneshot`` (from dense
      to ``sparsity`` at once, ranked by ``scores`` of the starting weights); ``source`` (the
      source run's mask at ``source_level``).
    - ``epochs``: the schedule's length; training runs from ``start_epoch`` to it, at the
      schedule's rate (``lr="schedule"``) or at its final rate (``lr="final"``).
    - ``rewind_at``: keep the weights after this many epochs as the run's rewind point.
    - ``epochs_total``: epochs trained in total once the level is done.
    - ``reuse``: ``dense`` when the level is exactly the seed's dense run (not retrained).
    """

    level: int
    weights: str = "init"
    mask: str = "dense"
    scores: str = "magnitude"
    sparsity: float = 0.0
    source_level: int | None = None
    start_epoch: int = 0
    epochs: int = 0
    lr: str = "schedule"
    rewind_at: int | None = None
    epochs_total: int = 0
    reuse: str | None = None


def sparsity_at(cfg: RunConfig, level: int) -> float:
    return 1.0 - (1.0 - cfg.prune.rate) ** level


def dense(cfg: RunConfig, level: int = 0) -> LevelPlan:
    """The seed's dense run: one schedule from the initialization."""
    T = cfg.train.epochs
    return LevelPlan(0, epochs=T, epochs_total=T, reuse=None if cfg.protocol == "train" else "dense")


def imp(cfg: RunConfig, level: int) -> LevelPlan:
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
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="previous", epochs=T, epochs_total=(level + 1) * T)


def extended_stretched(cfg: RunConfig, level: int) -> LevelPlan:
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="init", epochs=(level + 1) * T, epochs_total=(level + 1) * T)


def reinit(cfg: RunConfig, level: int) -> LevelPlan:
    T = cfg.train.epochs
    return LevelPlan(level, weights="reinit", mask="source", source_level=level, sparsity=sparsity_at(cfg, level),
                     epochs=T, epochs_total=T)


def extended_oneshot(cfg: RunConfig, level: int) -> LevelPlan:
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="source", source_level=level - 1, mask="oneshot", scores="magnitude",
                     sparsity=sparsity_at(cfg, level), epochs=T, epochs_total=(level + 1) * T)


def pai(cfg: RunConfig, level: int) -> LevelPlan:
    T = cfg.train.epochs
    if level == 0:
        return dense(cfg)
    return LevelPlan(level, weights="init", mask="oneshot", scores=cfg.prune.method,
                     sparsity=sparsity_at(cfg, level), epochs=T, epochs_total=T)


# What each protocol does at a level (its source run, levels and hashed settings: config.PROTOCOLS).
PLANS = {"imp": imp, "extended_dense": extended_dense, "extended_stretched": extended_stretched, "train": dense,
         "reinit": reinit, "extended_oneshot": extended_oneshot, "pai": pai}


def plan(cfg: RunConfig, level: int) -> LevelPlan:
    """What level ``level`` of ``cfg``'s protocol is."""
    return PLANS[cfg.protocol](cfg, level)


def last_level(cfg: RunConfig) -> int:
    return cfg.prune.levels if PROTOCOLS[cfg.protocol]["levels"] else 0


def source_protocol(cfg: RunConfig) -> str | None:
    return PROTOCOLS[cfg.protocol]["source"]


def stretched(train: Any, epochs: int) -> Any:
    """``train`` (a TrainConfig) with its schedule stretched to ``epochs`` epochs: milestones,
    warm-up and evaluation interval scale with it."""
    import dataclasses

    f = epochs / train.epochs
    if f == 1:
        return train
    return dataclasses.replace(train, epochs=epochs, milestones=tuple(int(round(m * f)) for m in train.milestones),
                               warmup_epochs=train.warmup_epochs * f, eval_every=max(1, int(round(train.eval_every * f))))

