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
from .train import final_lr, generator, train


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; use device=cpu or auto")
    return dev


def _deterministic(dev: torch.device) -> None:
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


def run(cfg: RunConfig, root: str | Path | None = None, device: str | torch.device = "auto",
        progress: bool = True, data: data_mod.Data | None = None) -> Run:
    """Run (or finish, or just find) one protocol for one seed; returns its stored :class:`Run`."""
    store = Run(cfg, root)
    if store.is_done():
        return store
    dev = resolve_device(device)
    _deterministic(dev)
    store.open(dev)
    if data is None:
        data = data_mod.load(cfg.data, dev)
    source_cfg = source_config(cfg)
    source = run(source_cfg, root, dev, progress, data) if source_cfg is not None else None
    model = init_model(cfg, data).to(dev)
    p, t = cfg.prune, cfg.train
    mask = pruning.dense_mask(model, p.prunable, p.ignore)
    rewind_state: dict[str, torch.Tensor] | None = None
    epochs_total = 0

    done = store.finished_levels()
    expected = list(range(len(done)))
    if done != expected:
        raise RuntimeError(f"{store.path} has levels {done}, not a contiguous run from 0; "
                           f"delete the stray level files to recompute them")
    start = len(done)
    if start > 0:  # resume from the last finished level
        ckpt = store.load_checkpoint(start - 1, map_location=dev)
        model.load_state_dict(ckpt["state"])
        mask = {n: m.to(dev) for n, m in ckpt["mask"].items()}
        rewind_state = ckpt.get("rewind")
        epochs_total = store.load_metrics(start - 1)["epochs_total"]

    def keep_rewind_point(epoch: int, m: torch.nn.Module) -> None:
        nonlocal rewind_state
        if epoch == p.rewind_epoch:
            rewind_state = _state(m)

    last = num_levels(cfg)
    levels = tqdm(range(start, last + 1), desc=f"{cfg.protocol} seed {cfg.seed}", disable=not progress,
                  initial=start, total=last + 1)
    for level in levels:
        tic = time.perf_counter()
        start_epoch, constant_lr = 0, None
        rewinding = level == 0 and cfg.protocol == "imp" and p.retrain == "rewind"
        on_epoch_end = keep_rewind_point if rewinding else None
        if cfg.protocol == "reinit":
            model = init_model(cfg, data, REINIT_STREAM).to(dev)
            mask = {n: m.to(dev) for n, m in source.load_checkpoint(level, map_location=dev)["mask"].items()}
            pruning.apply(model, mask)
        elif level > 0 and cfg.protocol == "extended_oneshot":
            model.load_state_dict(source.load_checkpoint(level - 1, map_location=dev)["state"])
            dense = pruning.dense_mask(model, p.prunable, p.ignore)
            mask = pruning.prune(pruning.magnitude_scores(model, dense), dense, 1 - (1 - p.rate) ** level, p.scope)
            epochs_total = source.load_metrics(level - 1)["epochs_total"]
            pruning.apply(model, mask)
        elif level > 0 and cfg.protocol == "imp":
            if p.method == "magnitude":
                scores = pruning.magnitude_scores(model, mask)
            else:
                scores = pruning.random_scores(mask, generator(cfg.seed, 500_000 + level))
            mask = pruning.prune(scores, mask, p.rate, p.scope)
            if p.retrain == "rewind":
                model.load_state_dict(rewind_state)
                start_epoch = p.rewind_epoch
            elif p.retrain == "finetune":
                constant_lr = final_lr(t)
            pruning.apply(model, mask)
        result = train(model, data, t, seed=cfg.seed, stream=level, mask=mask, start_epoch=start_epoch,
                       constant_lr=constant_lr, on_epoch_end=on_epoch_end, progress=progress,
                       desc=f"level {level}")
        epochs_total = (0 if cfg.protocol == "reinit" else epochs_total) + t.epochs - start_epoch
        metrics = {
            "level": level, "sparsity": pruning.sparsity(mask), "layer_sparsity": pruning.layer_sparsity(mask),
            "epochs_trained": t.epochs - start_epoch, "epochs_total": epochs_total,
            "final": result.final, "history": result.history, "wall_s": time.perf_counter() - tic,
            "provenance": provenance(dev),
        }
        checkpoint = {"state": _state(model), "mask": {n: m.cpu() for n, m in mask.items()},
                      "rewind": rewind_state, "per_example_loss": result.per_example_loss}
        store.save_level(level, metrics, checkpoint)
        levels.set_postfix(sparsity=f"{metrics['sparsity']:.3f}", test_err=f"{1 - result.final['test']['accuracy']:.3f}")
    store.mark_done()
    return store


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
              progress: bool = True) -> Experiment:
    """Run a config (a :class:`RunConfig` or plain nested data such as a parameter file) for
    every seed, reusing whatever the store already holds. The config is validated for all
    seeds before any training starts, and the dataset is loaded once for all of them."""
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
        loaded = data_mod.load(cfgs[0].data, dev)  # seeds share the data config
        for c, _ in todo:
            run(c, root, dev, progress, data=loaded)
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

    @classmethod
    def from_parameters(cls, ns: Mapping[str, Any]) -> "Study":
        """From a notebook's parameter variables (``data``, ``model``, ``train``, ``prune``,
        ``seeds``, and optionally ``store_dir``, ``device``, ``progress``)."""
        missing = [k for k in ("data", "model", "train", "prune", "seeds") if k not in ns]
        if missing:
            raise KeyError(f"parameters lack {missing}; see params/smoke.yaml for the full set")
        return cls(params={k: ns[k] for k in ("data", "model", "train", "prune")}, seeds=list(ns["seeds"]),
                   root=ns.get("store_dir"), device=ns.get("device", "auto"), progress=bool(ns.get("progress", True)))

    def run(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None) -> Experiment:
        return run_seeds(override(self.params, changes or {}), self.seeds, protocol=protocol, root=self.root,
                         device=self.device, progress=self.progress)

    def frame(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self.run(protocol, changes).frame()
