"""Many models in lockstep: K same-architecture models trained as one vectorized model.

Small networks leave a large GPU mostly idle. ``train_many`` stacks K models' parameters
(``torch.func.stack_module_state``), runs forward and backward for all of them with
``torch.func.vmap`` over ``functional_call``, and applies SGD to the stacked tensors. Each
model keeps everything that makes it a separate run: its own seed's data order and
augmentation (its own generator, drawn in the same order as :func:`pgcore.train.train`),
its own mask, momentum and weight decay; the update is :func:`pgcore.train.masked_sgd` on the stacked tensors. On CPU in float32 the result equals K separate
calls of :func:`pgcore.train.train` to float tolerance (the order of floating-point
additions inside vectorized kernels differs), which the tests check.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import Data, augmentation_draws, crop_flip
from .pruning import Mask
from .train import TrainResult, autocast, evaluate, generator, lr_at, masked_sgd


def _write_back(models: Sequence[nn.Module], params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> None:
    """Copy the stacked state into each model (for evaluation, callbacks and the caller)."""
    with torch.no_grad():
        for k, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][k])
            for name, b in model.named_buffers():
                b.copy_(buffers[name][k])


class Ensemble:
    """K same-architecture models as stacked tensors, trained one epoch at a time."""

    def __init__(self, models: Sequence[nn.Module], masks: Sequence[Mask | None] | None, cfg: TrainConfig,
                 device: torch.device | str):
        self.models, self.cfg, self.K = list(models), cfg, len(models)
        masks = list(masks) if masks is not None else [None] * self.K
        self.template = self.models[0]
        for m in self.models:
            m.train()
        self.params, self.buffers = stack_module_state(self.models)
        self.names = list(self.params)
        self.masks = {}
        for name in sorted(set().union(*[set(m or {}) for m in masks])):
            ones = torch.ones_like(self.params[name][0], dtype=torch.bool)
            stacked = torch.stack([(m or {}).get(name, ones).to(device) for m in masks])
            self.masks[name] = stacked.to(self.params[name].dtype)
        self.momentum = [torch.zeros_like(p) for p in self.params.values()]
        self._masked = tuple(i for i, name in enumerate(self.names) if name in self.masks)
        self._mask_list = [self.masks[self.names[i]] for i in self._masked]

        def loss_one(p, b, x, y):
            return F.cross_entropy(functional_call(self.template, (p, b), (x,)), y)

        self._loss = vmap(loss_one, in_dims=(0, 0, 0, 0), randomness="error")

    def train_epoch(self, data: Data, epoch: int, gens: Sequence[torch.Generator],
                    constant_lr: float | None = None) -> tuple[torch.Tensor, float]:
        """One pass over the training set for every model (each in its own generator's
        order); returns (summed minibatch loss per model, on device; last lr)."""
        cfg, device = self.cfg, data.x_train.device
        n = len(data.y_train)
        steps = math.ceil(n / cfg.batch_size)
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        # each model's crops and flips, drawn from its own generator as train_epoch draws them
        shifts = ([torch.stack(t).to(device) for t in zip(*(augmentation_draws(n, cfg.batch_size, g) for g in gens))]
                  if data.augment else [])
        running = torch.zeros(self.K, device=device)
        lr = cfg.lr
        for step in range(steps):
            lr = constant_lr if constant_lr is not None else lr_at(epoch + step / steps, cfg)
            batch = slice(step * cfg.batch_size, (step + 1) * cfg.batch_size)
            idx = orders[:, batch]
            x, y = data.x_train[idx], data.y_train[idx]
            if shifts:
                flat = crop_flip(x.flatten(0, 1), *(t[:, batch].flatten() for t in shifts))
                x = flat.view(x.shape)
            with autocast(cfg, device):
                losses = self._loss(self.params, self.buffers, x, y)
            params = [self.params[nm] for nm in self.names]
            grads = torch.autograd.grad(losses.sum(), params)
            masked_sgd(params, list(grads), self.momentum, self._mask_list, self._masked, lr,
                       cfg.momentum, cfg.weight_decay, cfg.nesterov and cfg.momentum > 0)
            running += losses.detach()
        return running, lr

    def write_back(self) -> None:
        """Copy the stacked state into each model (for evaluation, callbacks and the caller)."""
        _write_back(self.models, self.params, self.buffers)


def train_many(
    models: Sequence[nn.Module],
    data: Data,
    cfg: TrainConfig,
    *,
    seeds: Sequence[int],
    stream: int = 0,
    masks: Sequence[Mask | None] | None = None,
    start_epoch: int = 0,
    constant_lr: float | None = None,
    on_epoch_end: Callable[[int, int, nn.Module], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> list[TrainResult]:
    """Train ``models`` (same class and shapes) in place, in lockstep, as :func:`pgcore.train.train`
    would train each with ``seed=seeds[k]`` and ``mask=masks[k]``. ``on_epoch_end(k, epoch, model)``
    is called for every model before training and after each epoch. Returns one result per model."""
    K = len(models)
    if K == 0:
        return []
    if len(seeds) != K:
        raise ValueError(f"train_many needs one seed per model: {K} models, {len(seeds)} seeds")
    ens = Ensemble(models, masks, cfg, data.x_train.device)
    gens = [generator(s, stream) for s in seeds]
    steps = math.ceil(len(data.y_train) / cfg.batch_size)
    histories: list[list[dict[str, float]]] = [[] for _ in range(K)]
    results: list[tuple[dict, torch.Tensor]] = [({}, torch.zeros(0))] * K

    def callback(epoch: int) -> None:
        if on_epoch_end is not None:
            ens.write_back()
            for k, m in enumerate(models):
                on_epoch_end(k, epoch, m)

    callback(start_epoch)
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{desc} x{K}", leave=False, disable=not progress)
    for epoch in bar:
        running, lr = ens.train_epoch(data, epoch, gens, constant_lr)
        done = epoch + 1
        callback(done)
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            ens.write_back()
            for k, m in enumerate(models):
                metrics, example_loss = evaluate(m, data)
                record = {"epoch": done, "lr": lr, "minibatch_loss": (running[k] / steps).item()}
                record.update({f"{src}_{key}": v for src, mm in metrics.items() for key, v in mm.items()})
                histories[k].append(record)
                results[k] = (metrics, example_loss)
    ens.write_back()
    out = []
    for k, m in enumerate(models):
        if not histories[k]:
            results[k] = evaluate(m, data)
        out.append(TrainResult(histories[k], *results[k]))
    return out

