"""Many models in lockstep: K same-architecture models trained as one vectorized model.

Small networks leave a large GPU mostly idle. ``train_many`` stacks K models' parameters
(``torch.func.stack_module_state``), runs forward and backward for all of them with
``torch.func.vmap`` over ``functional_call``, and applies SGD to the stacked tensors. Each
model keeps everything that makes it a separate run: its own seed's data order and
augmentation (its own generator, drawn in the same order as :func:`pgcore.train.train`),
its own mask, momentum and weight decay. On CPU in float32 the result equals K separate
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
from .data import Data, augment_batch
from .pruning import Mask
from .train import TrainResult, evaluate, generator, lr_at


def _write_back(models: Sequence[nn.Module], params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor]) -> None:
    """Copy the stacked state into each model (for evaluation, callbacks and the caller)."""
    with torch.no_grad():
        for k, model in enumerate(models):
            for name, p in model.named_parameters():
                p.copy_(params[name][k])
            for name, b in model.named_buffers():
                b.copy_(buffers[name][k])


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
    masks = list(masks) if masks is not None else [None] * K
    template = models[0]
    device = data.x_train.device
    for m in models:
        m.train()
    params, buffers = stack_module_state(list(models))
    names = list(params)
    masked = sorted(set().union(*[set(m or {}) for m in masks]))
    mask_stack = {}
    for name in masked:
        ones = torch.ones_like(params[name][0], dtype=torch.bool)
        mask_stack[name] = torch.stack([(m or {}).get(name, ones).to(device) for m in masks]).to(params[name].dtype)
    momentum = {n: torch.zeros_like(p) for n, p in params.items()}
    gens = [generator(s, stream) for s in seeds]
    n = len(data.y_train)
    steps = math.ceil(n / cfg.batch_size)

    def loss_one(p: dict[str, torch.Tensor], b: dict[str, torch.Tensor], x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(functional_call(template, (p, b), (x,)), y)

    batched_loss = vmap(loss_one, in_dims=(0, 0, 0, 0), randomness="error")
    histories: list[list[dict[str, float]]] = [[] for _ in range(K)]
    results: list[tuple[dict, torch.Tensor]] = [({}, torch.zeros(0))] * K

    def callback(epoch: int) -> None:
        if on_epoch_end is not None:
            _write_back(models, params, buffers)
            for k, m in enumerate(models):
                on_epoch_end(k, epoch, m)

    callback(start_epoch)
    bar = tqdm(range(start_epoch, cfg.epochs), desc=f"{desc} x{K}", leave=False, disable=not progress)
    for epoch in bar:
        orders = torch.stack([torch.randperm(n, generator=g) for g in gens]).to(device)
        running = torch.zeros(K, device=device)
        lr = cfg.lr
        for step in range(steps):
            lr = constant_lr if constant_lr is not None else lr_at(epoch + step / steps, cfg)
            idx = orders[:, step * cfg.batch_size:(step + 1) * cfg.batch_size]
            x, y = data.x_train[idx], data.y_train[idx]
            if data.augment:
                x = torch.stack([augment_batch(x[k], gens[k]) for k in range(K)])
            losses = batched_loss(params, buffers, x, y)
            grads = torch.autograd.grad(losses.sum(), [params[nm] for nm in names])
            with torch.no_grad():
                _sgd_step(params, names, list(grads), momentum, mask_stack, lr, cfg)
            running += losses.detach()
        done = epoch + 1
        callback(done)
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            _write_back(models, params, buffers)
            for k, m in enumerate(models):
                metrics, example_loss = evaluate(m, data)
                record = {"epoch": done, "lr": lr, "minibatch_loss": (running[k] / steps).item()}
                record.update({f"{src}_{key}": v for src, mm in metrics.items() for key, v in mm.items()})
                histories[k].append(record)
                results[k] = (metrics, example_loss)
    _write_back(models, params, buffers)
    out = []
    for k, m in enumerate(models):
        if not histories[k]:
            results[k] = evaluate(m, data)
        out.append(TrainResult(histories[k], *results[k]))
    return out


def _sgd_step(params: dict[str, torch.Tensor], names: list[str], grads: list[torch.Tensor],
              momentum: dict[str, torch.Tensor], masks: dict[str, torch.Tensor], lr: float, cfg: TrainConfig) -> None:
    """``torch.optim.SGD`` (momentum, dampening 0, weight decay, optional Nesterov) on stacked
    tensors, with masked gradients and masked weights, as :func:`pgcore.train.train_epoch` does."""
    for name, g in zip(names, grads):
        p = params[name]
        if name in masks:
            g = g * masks[name]
        if cfg.weight_decay:
            g = g.add(p, alpha=cfg.weight_decay)
        if cfg.momentum:
            buf = momentum[name]
            buf.mul_(cfg.momentum).add_(g)
            g = g.add(buf, alpha=cfg.momentum) if cfg.nesterov else buf
        p.sub_(g, alpha=lr)
        if name in masks:
            p.mul_(masks[name])
