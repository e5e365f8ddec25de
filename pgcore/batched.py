"""Lockstep training: K same-architecture models as one vectorized model, so small networks fill a large GPU.
Results equal K separate runs only to float tolerance, so the execution mode is part of a run's hash."""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from .config import TrainConfig
from .data import Data
from .pruning import Mask
from .train import MaskedStep, TrainResult, autocast, fit

__all__ = ["Ensemble", "train_many"]


class Ensemble:
    """K models' stacked parameters, trained by ``vmap`` over ``functional_call``: a :class:`pgcore.train.Learner`."""

    def __init__(self, models: Sequence[nn.Module], masks: Sequence[Mask | None] | None, cfg: TrainConfig):
        self.models, self.cfg, self.K = list(models), cfg, len(models)
        masks = list(masks) if masks is not None else [None] * self.K
        template = self.models[0]
        for m in self.models:
            m.train()
        self.params, self.buffers = stack_module_state(self.models)
        self.names = list(self.params)
        stacked = []
        for i, name in enumerate(self.names):
            if any(name in (m or {}) for m in masks):
                ones = torch.ones_like(self.params[name][0], dtype=torch.bool)
                stacked.append((i, torch.stack([(m or {}).get(name, ones).to(ones.device) for m in masks])))
        self.update = MaskedStep([self.params[n] for n in self.names], cfg, stacked)

        def loss_one(p, b, x, y):
            return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

        self._loss = vmap(loss_one, in_dims=(0, 0, 0, 0), randomness="error")

    def step(self, lr: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.update.set_lr(lr)
        with autocast(self.cfg, x.device):
            losses = self._loss(self.params, self.buffers, x, y)
        self.update(torch.autograd.grad(losses.sum(), self.update.params))
        return losses.detach()

    @torch.no_grad()
    def sync(self) -> None:
        """Copy the stacked state into each model (for evaluation, callbacks and the caller)."""
        for k, model in enumerate(self.models):
            for name, p in model.named_parameters():
                p.copy_(self.params[name][k])
            for name, b in model.named_buffers():
                b.copy_(self.buffers[name][k])


def train_many(models: Sequence[nn.Module], data: Data, cfg: TrainConfig, *, seeds: Sequence[int], stream: int = 0,
               masks: Sequence[Mask | None] | None = None, start_epoch: int = 0, constant_lr: float | None = None,
               on_epoch_end: Callable[[int, int, nn.Module], None] | None = None, progress: bool = True,
               desc: str = "train") -> list[TrainResult]:
    """Train ``models`` in place in lockstep, as :func:`pgcore.train.train` would with ``seeds[k]``, ``masks[k]``."""
    if not models:
        return []
    return fit(Ensemble(models, masks, cfg), data, cfg, seeds=seeds, stream=stream, start_epoch=start_epoch,
               constant_lr=constant_lr, on_epoch_end=on_epoch_end, progress=progress, desc=f"{desc} x{len(models)}")
