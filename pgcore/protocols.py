"""Carrying out protocols: each level of each seed is a :class:`pgcore.plans.LevelPlan` turned into a model, a
mask and a training call. Levels are stored as they finish, so a rerun resumes with the same numbers; each run
trains under its own lock, so two processes that reach the same run never both train it."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import pandas as pd
import torch

from . import data as data_mod
from . import models, pruning
from .batched import train_many
from .config import RunConfig, from_dict, is_import_path
from .plans import LevelPlan, levels_of, plan, source_config, stretched
from .progress import bar
from .seeds import derive, generator
from .provenance import provenance
from .store import Run, frame
from .train import TrainResult, final_lr, train

__all__ = ["resolve_device", "deterministic_kernels", "fixed_threads", "init_model", "scores", "improvement",
           "top_improved", "random_subset", "left_out", "run", "OwnModelError", "OtherDataError", "check_own_model",
           "check_data", "run_lockstep", "Experiment", "choose_execution", "run_seeds"]


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``auto`` picks CUDA when available, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device '{device}' requested but CUDA is not available; use device=cpu or auto")
    return dev


def deterministic_kernels(dev: torch.device) -> None:
    """On CUDA, deterministic algorithms only: the same config and seed give the same numbers on one machine."""
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.backends.cudnn.benchmark = False
        torch.backends.cudnn.deterministic = True
        torch.use_deterministic_algorithms(True)


# CPU runs use one intra-op thread: the thread count changes how BLAS splits its sums, so the bits of every
# result. Parallelism comes from running runs side by side (``pgcore compute``), which scales to many cores.
CPU_THREADS = 1


@contextlib.contextmanager
def fixed_threads(dev: torch.device):
    """Train with :data:`CPU_THREADS` threads on the CPU (restored afterwards)."""
    before = torch.get_num_threads()
    if dev.type == "cpu":
        torch.set_num_threads(CPU_THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def init_model(cfg: RunConfig, data: data_mod.Data, stream: str = "init") -> torch.nn.Module:
    """The seed's initial model (``stream="reinit"``: the reinit control's); the global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive(cfg.seed, stream))
        return models.build(cfg.model, data.input_shape, data.num_classes)


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}


SALIENCY_BATCH = 1024  # examples a saliency score (SNIP) is measured on


def scores(kind: str, model: torch.nn.Module, mask: pruning.Mask, cfg: RunConfig, data: data_mod.Data,
           level: int) -> dict[str, torch.Tensor]:
    """How a plan ranks weights: ``magnitude``, ``random`` (stream ``prune``) or ``snip`` (stream ``saliency``)."""
    if kind == "magnitude":
        return pruning.magnitude_scores(model, mask)
    if kind == "random":
        return pruning.random_scores(mask, generator(cfg.seed, "prune", level))
    n = len(data.y_train)
    idx = torch.randperm(n, generator=generator(cfg.seed, "saliency", level))[:SALIENCY_BATCH].to(data.x_train.device)
    return pruning.snip_scores(model, mask, data.x_train[idx], data.y_train[idx])


def improvement(imp_run: Run, level: int) -> torch.Tensor:
    """Per-example training loss at IMP level 0 minus at ``level`` (positive: lower after pruning)."""
    before = imp_run.load_checkpoint(0)["per_example_loss"]
    after = imp_run.load_checkpoint(level)["per_example_loss"]
    if before.shape != after.shape or before.numel() == 0:
        raise ValueError(f"{imp_run.path}: per-example losses of levels 0 and {level} do not match")
    return before - after


def top_improved(improvement: torch.Tensor, fraction: float) -> list[int]:
    """Indices of the ``round(fraction * n)`` most improved examples (ties by index)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the fraction of examples left out must be in (0, 1), got {fraction}")
    k = int(round(fraction * len(improvement)))
    return sorted(torch.sort(-improvement, stable=True).indices[:k].tolist())


def random_subset(n: int, k: int, seed: int) -> list[int]:
    """``k`` of ``n`` indices drawn from the seed's ``subset`` stream."""
    return sorted(torch.randperm(n, generator=generator(seed, "subset"))[:k].tolist())


def left_out(cfg: RunConfig, imp_run: Run, n: int) -> tuple[list[int], dict[str, Any]]:
    """The training examples ``cfg.data.leave_out`` names (of ``n``), and what to record of them."""
    d = cfg.data
    k = int(round(d.leave_out_fraction * n))
    if d.leave_out == "random":
        return random_subset(n, k, cfg.seed), {"kind": "random", "count": k}
    gain = improvement(imp_run, d.leave_out_level)
    chosen = top_improved(gain, d.leave_out_fraction)
    return chosen, {"kind": "top-improved", "count": len(chosen), "level": d.leave_out_level,
                    "sparsity": imp_run.load_metrics(d.leave_out_level)["sparsity"],
                    "mean_improvement": float(gain[chosen].mean())}


class _Seed:
    """One seed's run, level by level: :meth:`start` sets a level up, it trains outside, :meth:`finish` stores it.
    Its run directory is opened (created or checked) first; a run with every level stored is marked done."""

    def __init__(self, cfg: RunConfig, store: Run, dev: torch.device, data: data_mod.Data, source: Run | None):
        store.open(dev)
        self.cfg, self.store, self.dev, self.data, self.source = cfg, store, dev, data, source
        self.left_out: dict[str, Any] | None = None
        if cfg.data.leave_out:  # top-improved examples (or the random control): a dense run on the rest
            chosen, self.left_out = left_out(cfg, source, len(data.y_train))
            self.data = data.without(chosen)
        self.model = init_model(cfg, data).to(dev)
        self.dense = pruning.dense_mask(self.model, cfg.prune.prunable, cfg.prune.ignore)
        self.mask, self.rewind_state = self.dense, None
        done = store.finished_levels()  # a chain's are contiguous from 0, or an error names the missing level
        self.todo = [k for k in levels_of(cfg) if k not in done]  # the levels left, in order
        if done:  # resume from the last finished level
            self._load(store.load_checkpoint(done[-1], map_location=dev))
        if self.finished:  # every level stored (e.g. after its config.json was repaired)
            store.mark_done()

    def _load(self, ckpt: dict[str, Any]) -> None:
        self.model.load_state_dict(ckpt["state"])
        self.mask = {n: m.to(self.dev) for n, m in ckpt["mask"].items()}
        self.rewind_state = ckpt.get("rewind")

    @property
    def finished(self) -> bool:
        return not self.todo

    @property
    def next_level(self) -> int | None:
        return self.todo[0] if self.todo else None

    def start(self, p: LevelPlan) -> None:
        """The model and mask the level trains: its starting weights and its mask, per the plan."""
        self.tic = time.perf_counter()
        cfg = self.cfg
        if p.mask == "prune":  # ranked on the previous level's trained weights
            ranked = scores(p.scores, self.model, self.mask, cfg, self.data, p.level)
            self.mask = pruning.prune(ranked, self.mask, cfg.prune.rate, cfg.prune.scope)
        if p.weights in ("init", "reinit"):
            self.model = init_model(cfg, self.data, p.weights).to(self.dev)
        elif p.weights == "rewind":
            self.model.load_state_dict(self.rewind_state)
        elif p.weights == "source":
            self.model.load_state_dict(self.source.load_checkpoint(p.source_level, map_location=self.dev)["state"])
        if p.mask == "dense":
            self.mask = self.dense
        elif p.mask == "source":
            src = self.source.load_checkpoint(p.source_level, map_location=self.dev)["mask"]
            self.mask = {n: src.get(n, m).to(self.dev) for n, m in self.dense.items()}
        elif p.mask == "oneshot":  # ranked on the starting weights
            ranked = scores(p.scores, self.model, self.dense, cfg, self.data, p.level)
            self.mask = pruning.prune(ranked, self.dense, p.sparsity, cfg.prune.scope) if p.sparsity > 0 else self.dense
        pruning.apply(self.model, self.mask)

    def on_epoch_end(self, p: LevelPlan, epoch: int, model: torch.nn.Module) -> None:
        if epoch == p.rewind_at:
            self.rewind_state = _state(model)

    def finish(self, p: LevelPlan, result: TrainResult, batched: int) -> None:
        """Store the level just trained."""
        metrics = {
            "level": p.level, "sparsity": pruning.sparsity(self.mask),
            "layer_sparsity": pruning.layer_sparsity(self.mask),
            "epochs_trained": p.epochs - p.start_epoch, "epochs_total": p.epochs_total, "plan": dataclasses.asdict(p),
            "final": result.final, "history": result.history, "wall_s": time.perf_counter() - self.tic,
            "execution": self.cfg.execution, "models_in_lockstep": batched, "provenance": provenance(self.dev),
            "data_sha256": self.data.digest, **({"left_out": self.left_out} if self.left_out else {}),
        }
        checkpoint = {"state": _state(self.model), "mask": {n: m.cpu() for n, m in self.mask.items()},
                      "rewind": self.rewind_state, "per_example_loss": result.per_example_loss}
        self.store.save_level(p.level, metrics, checkpoint)
        self._advance()

    def adopt(self, p: LevelPlan, dense: Run) -> None:
        """The level is the seed's dense run: store a reference to it and continue from it."""
        self.store.save_reference(p.level, dense, 0, plan=dataclasses.asdict(p))
        self._load(dense.load_checkpoint(0, map_location=self.dev))
        self.mask = self.dense
        self._advance()

    def _advance(self) -> None:
        self.todo.pop(0)
        if self.finished:
            self.store.mark_done()


def _train_group(group: list[_Seed], p: LevelPlan, lockstep: bool, progress: bool) -> list[TrainResult]:
    """Train the seeds of ``group`` (all at the same plan) for the level, alone or in lockstep."""
    cfg = stretched(group[0].cfg.train, p.epochs)
    kwargs = dict(stream=p.level, start_epoch=p.start_epoch, progress=progress, desc=f"level {p.level}",
                  constant_lr=final_lr(cfg) if p.lr == "final" else None)
    if lockstep:
        return train_many([s.model for s in group], group[0].data, cfg, seeds=[s.cfg.seed for s in group],
                          masks=[s.mask for s in group], **kwargs,
                          on_epoch_end=lambda k, epoch, m: group[k].on_epoch_end(p, epoch, m))
    (s,) = group
    return [train(s.model, s.data, cfg, seed=s.cfg.seed, mask=s.mask, **kwargs,
                  on_epoch_end=lambda epoch, m: s.on_epoch_end(p, epoch, m))]


def _level(group: list[_Seed], dense: dict[int, Run], lockstep: bool, progress: bool) -> None:
    """Carry out the next level of every seed in ``group`` (all at the same level)."""
    p = plan(group[0].cfg, group[0].next_level)
    if p.reuse == "dense":
        for s in group:
            s.adopt(p, dense[s.cfg.seed])
        return
    for s in group:
        s.start(p)
    for s, result in zip(group, _train_group(group, p, lockstep, progress)):
        s.finish(p, result, batched=len(group) if lockstep else 1)


def run(cfg: RunConfig, root: str | Path | None = None, device: str | torch.device = "auto",
        progress: bool = True, data: data_mod.Data | None = None) -> Run:
    """Run (or finish, or just find) one protocol for one seed; returns its stored :class:`Run`."""
    return run_lockstep([cfg], root, device, progress, data, lockstep=cfg.execution == "lockstep")[0]


class OwnModelError(ValueError):
    """A researcher's model cannot be built or does not give one logit per class."""


class OtherDataError(ValueError):
    """A stored run was trained on other data than the data its config names here."""


def check_own_model(cfg: RunConfig, data: data_mod.Data, dev: torch.device) -> None:
    """A researcher's model (an import path) built and run on a few real training examples before anything trains
    or is stored; one line saying how pgcore calls it when it fails."""
    if not is_import_path(cfg.model.name):
        return
    sizes = "".join(f", {k}={v}" for k, v in (("width", cfg.model.width), ("depth", cfg.model.depth)) if v is not None)
    how = (f"pgcore builds it as {cfg.model.name}({data.input_shape}, {data.num_classes}{sizes}), i.e. (input_shape "
           f"without the batch dimension, num_classes), and expects model(x) of a batch of N to return N x "
           f"{data.num_classes} logits")
    x = data.x_train[:4]
    try:
        model = init_model(cfg, data).to(dev).eval()
        with torch.no_grad():
            out = model(x)
    except Exception as e:  # noqa: BLE001 -- whatever the researcher's code raises, said in one line
        raise OwnModelError(f"{cfg.model.name} failed ({type(e).__name__}: {e}); {how}") from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (len(x), data.num_classes):
        raise OwnModelError(f"{cfg.model.name} returned {shape} for a batch of {len(x)}; {how}")


def check_data(run: Run, digest: str) -> None:
    """Refuse a stored run whose levels were trained on other data than ``digest`` (a run stored before data
    digests were recorded is not checked; its numerics digest already asks for `pgcore accept`)."""
    levels = run.finished_levels()
    recorded = run.load_metrics(levels[-1]).get("data_sha256") if levels else None
    if recorded is not None and recorded != digest:
        raise OtherDataError(f"{run.path} was trained on other data (sha256 {recorded[:12]}, the data here "
                             f"{digest[:12]}); point data.data_dir at the data it was trained on, or delete it to "
                             f"train it anew")


def run_lockstep(cfgs: Sequence[RunConfig], root: str | Path | None = None, device: str | torch.device = "auto",
                 progress: bool = True, data: data_mod.Data | None = None, lockstep: bool = True) -> list[Run]:
    """Run configs that differ only in their seed, sequentially or in lockstep, each stored as its own run;
    the runs a protocol builds on (its source run, the dense run its level 0 reuses) are run first. Stored runs
    are used only when computed by this code on the same data; own code is checked before anything is stored."""
    cfgs = [c.replace(execution="lockstep" if lockstep else "sequential") for c in cfgs]
    stores = [Run(c, root) for c in cfgs]
    digest = data.digest if data is not None else data_mod.source_digest(cfgs[0].data)
    for s in stores:
        s.check_numerics()
        check_data(s, digest)
    todo = [(c, s) for c, s in zip(cfgs, stores) if not s.is_done()]
    if not todo:
        return stores
    if len({c.hash() for c, _ in todo}) > 1:
        raise ValueError("run_lockstep runs the seeds of one config; these configs differ in more than the seed")
    dev = resolve_device(device)
    deterministic_kernels(dev)
    cfg0 = todo[0][0]
    data = data_mod.load(cfg0.data, dev) if data is None else data
    check_own_model(cfg0, data, dev)
    sources: list[Run | None] = [None] * len(todo)
    if source_config(cfg0) is not None:
        sources = run_lockstep([source_config(c) for c, _ in todo], root, dev, progress, data, lockstep)
    dense: dict[int, Run] = {}
    if plan(cfg0, 0).reuse == "dense" and any(not s.finished_levels() for _, s in todo):
        dense_cfgs = [c.replace(protocol="train", prune=dataclasses.replace(c.prune, at_levels=())) for c, _ in todo]
        dense = {r.cfg.seed: r for r in run_lockstep(dense_cfgs, root, dev, progress, data, lockstep)}
    with contextlib.ExitStack() as held:
        held.enter_context(fixed_threads(dev))
        for _, s in sorted(todo, key=lambda t: str(t[1].path)):  # one order everywhere: no deadlock
            held.enter_context(s.lock())
        # another process may have finished some seeds while this one waited for their locks
        seeds = [_Seed(c, s, dev, data, src) for (c, s), src in zip(todo, sources) if not s.is_done()]
        _execute([s for s in seeds if not s.finished], dense, lockstep, progress)
    return stores


def _execute(seeds: list[_Seed], dense: dict[int, Run], lockstep: bool, progress: bool) -> None:
    """Train the levels the seeds have left: each seed on its own, or all together level by level in lockstep
    (where each seed leaves out its own examples, as ``tie`` does, they train on their own)."""
    if any(s.data is not seeds[0].data for s in seeds):
        lockstep = False
    for group in [seeds] if lockstep and seeds else [[s] for s in seeds]:
        levels, every = sorted({k for s in group for k in s.todo}), {k for s in group for k in levels_of(s.cfg)}
        names = f"seed {group[0].cfg.seed}" if len(group) == 1 else f"seeds {[s.cfg.seed for s in group]}"
        for level in bar(levels, desc=f"{group[0].cfg.protocol} {names}", disable=not progress,
                         initial=len(every) - len(levels), total=len(every)):
            active = [s for s in group if s.next_level == level]
            if active:
                _level(active, dense, lockstep, progress)


@dataclasses.dataclass
class Experiment:
    """Several seeds of one config: their runs and their tidy results."""

    runs: list[Run] = dataclasses.field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """One row per seed x level x metric source."""
        return frame(self.runs)

    def history(self) -> pd.DataFrame:
        return pd.concat([r.history() for r in self.runs], ignore_index=True)


def choose_execution(cfgs: Sequence[RunConfig], root: str | Path | None, dev: torch.device,
                     lockstep: bool | str) -> bool:
    """``lockstep`` resolved: ``auto`` continues the mode the store already holds these runs in, else lockstep
    on a GPU with several seeds, sequential on the CPU (where vectorizing gains little)."""
    if isinstance(lockstep, bool):
        return lockstep
    if lockstep != "auto":
        raise ValueError(f"lockstep must be True, False or 'auto', got {lockstep!r}")
    for mode in ("sequential", "lockstep"):
        if any(Run(c.replace(execution=mode), root).path.exists() for c in cfgs):
            return mode == "lockstep"
    return dev.type == "cuda" and len(cfgs) > 1


def run_seeds(params: Mapping[str, Any] | RunConfig, seeds: Sequence[int] | None = None, *,
              protocol: str | None = None, root: str | Path | None = None, device: str | torch.device = "auto",
              progress: bool = True, lockstep: bool | str = "auto") -> Experiment:
    """Run a config (a :class:`RunConfig` or nested data such as a parameter file) for every seed, reusing what
    the store holds; every seed is validated before training. ``lockstep``: :func:`choose_execution`."""
    base = params.to_dict() if isinstance(params, RunConfig) else copy.deepcopy(dict(params))
    if protocol is not None:
        base["protocol"] = protocol
    if seeds is None:
        seeds = base.get("seeds", [base.get("seed", 0)])
    if isinstance(seeds, int) or not len(seeds):
        raise ValueError(f"seeds must be a non-empty list of integers, got {seeds!r}")
    cfgs = [from_dict(base, seed=int(s)) for s in seeds]
    dev = resolve_device(device)
    mode = choose_execution(cfgs, root, dev, lockstep)
    return Experiment(run_lockstep(cfgs, root, dev, progress, lockstep=mode))
