"""The paper's protocols: iterative magnitude pruning and its controls.

- ``imp``: train dense (level 0), then at each level prune ``rate`` of the surviving
  weights (by magnitude, or at random for the size-reduction control) and retrain by
  learning-rate rewinding (``lrr``: keep weights, replay the whole schedule), weight
  rewinding (``rewind``: reset survivors to their epoch-``rewind_epoch`` values, train the
  rest of the schedule) or fine-tuning (``finetune``: train at the schedule's final lr).
- ``extended_dense``: the same repeated learning-rate cycles with no pruning, so level k
  has trained exactly as many epochs as LRR level k.
- ``train``: one dense run (level 0 only); with ``data.exclude`` it trains without chosen
  examples (the top-improved-examples control).
- ``reinit``: level k takes the mask of the matching ``imp`` run's level k, puts it on a
  fresh random initialization (the same one at every level, different from the IMP
  init) and trains one schedule: same sparsity and mask as IMP, none of its extra
  training time (the size-reduction control).
- ``extended_oneshot``: level k takes the ``extended_dense`` model after k cycles, prunes
  it by magnitude in one shot to IMP level k's sparsity and retrains one schedule, so it
  has both of pruning's ingredients, extended training time ((k+1) schedules) and size
  reduction, without iterative pruning.

``reinit`` and ``extended_oneshot`` read their source run from the store and run it
first if it is missing, so runs are shared between figures rather than repeated.

Every level is stored as soon as it finishes; a rerun skips finished runs and resumes an
interrupted one from its last finished level, with the same numbers as an uninterrupted run.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import data as data_mod
from . import models, pruning
from .config import RunConfig, from_dict, override
from .store import Run, frame, provenance
from .batched import train_many
from .train import TrainResult, final_lr, generator, train


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; use device=cpu or auto")
    return dev


def deterministic_kernels(dev: torch.device) -> None:
    """Same config and seed give the same numbers on the same machine: no autotuned kernels."""
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True


def init_model(cfg: RunConfig, data: data_mod.Data, stream: int = 0) -> torch.nn.Module:
    """The seed's initial model (``stream`` > 0: another, independent initialization);
    the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed if stream == 0 else cfg.seed * 1_000_003 + stream)
        return models.build(cfg.model, data.input_shape, data.num_classes)


REINIT_STREAM = 1  # the reinit control's initialization


def num_levels(cfg: RunConfig) -> int:
    return 0 if cfg.protocol == "train" else cfg.prune.levels


def source_config(cfg: RunConfig) -> RunConfig | None:
    """The run a protocol builds on (``reinit``: IMP's masks; ``extended_oneshot``: the
    extended dense models), or None."""
    if cfg.protocol == "reinit":
        return cfg.replace(protocol="imp")
    if cfg.protocol == "extended_oneshot":
        return cfg.replace(protocol="extended_dense")
    return None


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


class _Runner:
    """One seed's run, level by level: :meth:`prepare` sets up the model for a level (prune,
    rewind, reinitialize ...), training happens outside (alone or in lockstep with other
    seeds), :meth:`finish` stores the level."""

    def __init__(self, cfg: RunConfig, store: Run, dev: torch.device, data: data_mod.Data, source: Run | None):
        self.cfg, self.store, self.dev, self.data, self.source = cfg, store, dev, data, source
        p = cfg.prune
        self.model = init_model(cfg, data).to(dev)
        self.mask = pruning.dense_mask(self.model, p.prunable, p.ignore)
        self.rewind_state: dict[str, torch.Tensor] | None = None
        self.epochs_total = 0
        done = store.finished_levels()
        if done != list(range(len(done))):
            raise RuntimeError(f"{store.path} has levels {done}, not a contiguous run from 0; "
                               f"delete the stray level files to recompute them")
        self.next_level = len(done)
        if self.next_level > 0:  # resume from the last finished level
            ckpt = store.load_checkpoint(self.next_level - 1, map_location=dev)
            self.model.load_state_dict(ckpt["state"])
            self.mask = {n: m.to(dev) for n, m in ckpt["mask"].items()}
            self.rewind_state = ckpt.get("rewind")
            self.epochs_total = store.load_metrics(self.next_level - 1)["epochs_total"]
        self.last_level = num_levels(cfg)
        self.start_epoch, self.constant_lr, self.tic = 0, None, 0.0

    @property
    def finished(self) -> bool:
        return self.next_level > self.last_level

    def keeps_rewind_point(self) -> bool:
        p = self.cfg.prune
        return self.next_level == 0 and self.cfg.protocol == "imp" and p.retrain == "rewind"

    def on_epoch_end(self, epoch: int, model: torch.nn.Module) -> None:
        if epoch == self.cfg.prune.rewind_epoch and self.keeps_rewind_point():
            self.rewind_state = _state(model)

    def prepare(self) -> None:
        """Set up the model, mask and schedule for ``next_level``."""
        cfg, p, t, dev, level = self.cfg, self.cfg.prune, self.cfg.train, self.dev, self.next_level
        self.tic = time.perf_counter()
        self.start_epoch, self.constant_lr = 0, None
        if cfg.protocol == "reinit":
            self.model = init_model(cfg, self.data, REINIT_STREAM).to(dev)
            self.mask = {n: m.to(dev) for n, m in self.source.load_checkpoint(level, map_location=dev)["mask"].items()}
            self.epochs_total = 0
        elif level > 0 and cfg.protocol == "extended_oneshot":
            self.model.load_state_dict(self.source.load_checkpoint(level - 1, map_location=dev)["state"])
            dense = pruning.dense_mask(self.model, p.prunable, p.ignore)
            self.mask = pruning.prune(pruning.magnitude_scores(self.model, dense), dense, 1 - (1 - p.rate) ** level, p.scope)
            self.epochs_total = self.source.load_metrics(level - 1)["epochs_total"]
        elif level > 0 and cfg.protocol == "imp":
            if p.method == "magnitude":
                scores = pruning.magnitude_scores(self.model, self.mask)
            else:
                scores = pruning.random_scores(self.mask, generator(cfg.seed, 500_000 + level))
            self.mask = pruning.prune(scores, self.mask, p.rate, p.scope)
            if p.retrain == "rewind":
                self.model.load_state_dict(self.rewind_state)
                self.start_epoch = p.rewind_epoch
            elif p.retrain == "finetune":
                self.constant_lr = final_lr(t)
        pruning.apply(self.model, self.mask)

    def finish(self, result: TrainResult, batched: int = 1) -> dict[str, Any]:
        """Store the level just trained; returns its metrics."""
        level, t = self.next_level, self.cfg.train
        self.epochs_total += t.epochs - self.start_epoch
        metrics = {
            "level": level, "sparsity": pruning.sparsity(self.mask), "layer_sparsity": pruning.layer_sparsity(self.mask),
            "epochs_trained": t.epochs - self.start_epoch, "epochs_total": self.epochs_total,
            "final": result.final, "history": result.history, "wall_s": time.perf_counter() - self.tic,
            "models_in_lockstep": batched, "provenance": provenance(self.dev),
        }
        checkpoint = {"state": _state(self.model), "mask": {n: m.cpu() for n, m in self.mask.items()},
                      "rewind": self.rewind_state, "per_example_loss": result.per_example_loss}
        self.store.save_level(level, metrics, checkpoint)
        self.next_level += 1
        if self.finished:
            self.store.mark_done()
        return metrics


def run(cfg: RunConfig, root: str | Path | None = None, device: str | torch.device = "auto",
        progress: bool = True, data: data_mod.Data | None = None) -> Run:
    """Run (or finish, or just find) one protocol for one seed; returns its stored :class:`Run`."""
    return run_lockstep([cfg], root, device, progress, data, lockstep=False)[0]


def run_lockstep(cfgs: Sequence[RunConfig], root: str | Path | None = None, device: str | torch.device = "auto",
                 progress: bool = True, data: data_mod.Data | None = None, lockstep: bool = True) -> list[Run]:
    """Run several configs that differ only in their seed. With ``lockstep``, the seeds that
    are at the same level train together as one vectorized model (:func:`pgcore.batched.train_many`);
    without it, one after the other (:func:`pgcore.train.train`). Each seed is stored as its own
    run either way, resumes on its own, and can be read by the other mode."""
    stores = [Run(c, root) for c in cfgs]
    todo = [(c, s) for c, s in zip(cfgs, stores) if not s.is_done()]
    if not todo:
        return stores
    if len({c.hash() for c, _ in todo}) > 1:
        raise ValueError("run_lockstep runs the seeds of one config; these configs differ in more than the seed")
    dev = resolve_device(device)
    deterministic_kernels(dev)
    if data is None:
        data = data_mod.load(todo[0][0].data, dev)
    sources: list[Run | None] = [None] * len(todo)
    if source_config(todo[0][0]) is not None:
        sources = run_lockstep([source_config(c) for c, _ in todo], root, dev, progress, data, lockstep)
    runners = []
    for (c, s), src in zip(todo, sources):
        s.open(dev)
        runners.append(_Runner(c, s, dev, data, src))
    if not lockstep:
        for r in runners:
            _run_alone(r, progress)
        return stores
    first = min(r.next_level for r in runners)
    last = max(r.last_level for r in runners)
    cfg0 = runners[0].cfg
    levels = tqdm(range(first, last + 1), desc=f"{cfg0.protocol} seeds {[r.cfg.seed for r in runners]}",
                  disable=not progress, initial=first, total=last + 1)
    for level in levels:
        active = [r for r in runners if r.next_level == level]
        for r in active:
            r.prepare()
        # Runners at the same level share the schedule (start epoch, constant lr) by construction.
        groups: dict[tuple, list[_Runner]] = {}
        for r in active:
            groups.setdefault((r.start_epoch, r.constant_lr), []).append(r)
        for (start_epoch, constant_lr), group in groups.items():
            results = train_many([r.model for r in group], data, cfg0.train, seeds=[r.cfg.seed for r in group],
                                 stream=level, masks=[r.mask for r in group], start_epoch=start_epoch,
                                 constant_lr=constant_lr, progress=progress, desc=f"level {level}",
                                 on_epoch_end=lambda k, epoch, m, g=group: g[k].on_epoch_end(epoch, m))
            for r, res in zip(group, results):
                r.finish(res, batched=len(group))
    return stores


def _run_alone(r: _Runner, progress: bool) -> None:
    levels = tqdm(range(r.next_level, r.last_level + 1), desc=f"{r.cfg.protocol} seed {r.cfg.seed}",
                  disable=not progress, initial=r.next_level, total=r.last_level + 1)
    for level in levels:
        r.prepare()
        result = train(r.model, r.data, r.cfg.train, seed=r.cfg.seed, stream=level, mask=r.mask,
                       start_epoch=r.start_epoch, constant_lr=r.constant_lr,
                       on_epoch_end=r.on_epoch_end if r.keeps_rewind_point() else None,
                       progress=progress, desc=f"level {level}")
        m = r.finish(result)
        levels.set_postfix(sparsity=f"{m['sparsity']:.3f}", test_err=f"{1 - result.final['test']['accuracy']:.3f}")


@dataclass
class Experiment:
    """Several seeds of one config: their runs and their tidy results."""

    runs: list[Run] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """One row per seed x level x metric source."""
        return frame(self.runs)

    def history(self) -> pd.DataFrame:
        return pd.concat([r.history() for r in self.runs], ignore_index=True)


def run_seeds(params: Mapping[str, Any] | RunConfig, seeds: Sequence[int] | None = None, *,
              protocol: str | None = None, root: str | Path | None = None, device: str | torch.device = "auto",
              progress: bool = True, lockstep: bool | str = "auto") -> Experiment:
    """Run a config (a :class:`RunConfig` or plain nested data such as a parameter file) for
    every seed, reusing whatever the store already holds. The config is validated for all
    seeds before any training starts, and the dataset is loaded once for all of them.

    ``lockstep``: train the seeds together as one vectorized model (True), one after the
    other (False), or ``auto``: together on a GPU, one after the other on the CPU, where
    vectorizing gains little and the sequential numbers are the reference."""
    if isinstance(params, RunConfig):
        base = params.to_dict()
    else:
        base = copy.deepcopy(dict(params))
    if protocol is not None:
        base["protocol"] = protocol
    if seeds is None:
        seeds = base.get("seeds", [base.get("seed", 0)])
    if isinstance(seeds, int) or not len(seeds):
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    cfgs = [from_dict(base, seed=int(s)) for s in seeds]
    runs = [Run(c, root) for c in cfgs]
    todo = [(c, r) for c, r in zip(cfgs, runs) if not r.is_done()]
    if todo:
        dev = resolve_device(device)
        if lockstep == "auto":
            lockstep = dev.type == "cuda" and len(todo) > 1
        elif not isinstance(lockstep, bool):
            raise ValueError(f"lockstep must be True, False or 'auto', got {lockstep!r}")
        run_lockstep([c for c, _ in todo], root, dev, progress, lockstep=lockstep)
    return Experiment(runs)


@dataclass
class Study:
    """The runs one figure needs, around one base config: ``study.frame("extended_dense",
    {"data.noisy_fraction": 0.1})`` runs (or reads from the store) that protocol for every
    seed and returns its tidy frame. Every notebook builds one from its parameter cell."""

    params: dict[str, Any]
    seeds: Sequence[int]
    root: str | Path | None = None
    device: str | torch.device = "auto"
    progress: bool = True
    lockstep: bool | str = "auto"

    @classmethod
    def from_parameters(cls, ns: Mapping[str, Any]) -> "Study":
        """From a notebook's parameter variables (``data``, ``model``, ``train``, ``prune``,
        ``seeds``, and optionally ``store_dir``, ``device``, ``progress``)."""
        missing = [k for k in ("data", "model", "train", "prune", "seeds") if k not in ns]
        if missing:
            raise KeyError(f"parameters lack {missing}; see params/smoke.yaml for the full set")
        return cls(params={k: ns[k] for k in ("data", "model", "train", "prune")}, seeds=list(ns["seeds"]),
                   root=ns.get("store_dir"), device=ns.get("device", "auto"), progress=bool(ns.get("progress", True)),
                   lockstep=ns.get("lockstep", "auto"))

    def run(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None) -> Experiment:
        return run_seeds(override(self.params, changes or {}), self.seeds, protocol=protocol, root=self.root,
                         device=self.device, progress=self.progress, lockstep=self.lockstep)

    def frame(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self.run(protocol, changes).frame()
