"""Lockstep training: K same-architecture models as one vectorized model, so small networks fill a large GPU.
Results equal K separate runs only to float tolerance, so the execution mode is part of a run's hash."""

from __future__ import annotations

from typing import Any, Sequence

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
        self.models, self.cfg = list(models), cfg
        masks = [m or {} for m in masks or [None] * len(self.models)]
        for m in self.models:
            m.train()
        self.params, self.buffers = stack_module_state(self.models)
        stacked = []  # (index, the K models' masks) of each parameter some model masks; unmasked in a model: ones
        for i, (name, p) in enumerate(self.params.items()):
            if any(name in m for m in masks):
                ones = torch.ones_like(p[0], dtype=torch.bool)
                stacked.append((i, torch.stack([m.get(name, ones).to(ones.device) for m in masks])))
        self.update = MaskedStep(list(self.params.values()), cfg, stacked)
        template = self.models[0]

        def loss_one(p, b, x, y):
            return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

        self._loss = vmap(loss_one, randomness="error")

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


def train_many(models: Sequence[nn.Module], data: Data, cfg: TrainConfig, *, seeds: Sequence[int],
               masks: Sequence[Mask | None] | None = None, desc: str = "train", **kwargs: Any) -> list[TrainResult]:
    """Train ``models`` in place in lockstep, as :func:`pgcore.train.train` would with ``seeds[k]``, ``masks[k]``;
    the other keywords as :func:`pgcore.train.fit` takes them."""
    if not models:
        return []
    return fit(Ensemble(models, masks, cfg), data, cfg, seeds=seeds, desc=f"{desc} x{len(models)}", **kwargs)
