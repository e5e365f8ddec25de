"""One training loop (:func:`fit`) for K models (K = 1: :func:`train`; K > 1: :mod:`pgcore.batched`): SGD with
momentum and weight decay under a schedule. Pruned weights stay exactly zero; the loop syncs with the device once
per epoch, to stop a diverged run (:class:`DivergedError`) before anything of it is stored."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

import torch
from torch import nn
import torch.nn.functional as F

from .config import TrainConfig
from .data import Data, augmentation_draws, crop_flip
from .progress import bar
from .pruning import Mask
from .seeds import generator

__all__ = ["lr_at", "final_lr", "per_example", "evaluate", "TrainResult", "autocast", "CompiledOrEager",
           "DivergedError", "masked_sgd", "MaskedStep", "Learner", "Single", "batches", "record", "fit", "train"]

EVAL_BATCH = 2048


def lr_at(epoch: float, cfg: TrainConfig) -> float:
    """Learning rate at a (fractional) epoch of the schedule: warm-up, then step/cosine/constant."""
    if cfg.warmup_epochs > 0 and epoch < cfg.warmup_epochs:
        return cfg.lr * epoch / cfg.warmup_epochs
    if cfg.schedule == "constant":
        return cfg.lr
    if cfg.schedule == "step":
        return cfg.lr * cfg.gamma ** sum(epoch >= m for m in cfg.milestones)
    # cosine from the end of warm-up to the end of training
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-12)
    progress = min(max((epoch - cfg.warmup_epochs) / span, 0.0), 1.0)
    return cfg.lr * 0.5 * (1.0 + math.cos(math.pi * progress))


def final_lr(cfg: TrainConfig) -> float:
    """The learning rate at the start of the schedule's last epoch (what fine-tuning trains at)."""
    return lr_at(cfg.epochs - 1, cfg)


@torch.no_grad()
def per_example(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-example cross-entropy and correctness, in eval mode, without augmentation."""
    was_training = model.training
    model.eval()
    losses, correct = [], []
    for i in range(0, len(y), EVAL_BATCH):
        out = model(x[i:i + EVAL_BATCH]).float()
        losses.append(F.cross_entropy(out, y[i:i + EVAL_BATCH], reduction="none"))
        correct.append(out.argmax(1) == y[i:i + EVAL_BATCH])
    model.train(was_training)
    if not losses:
        return torch.zeros(0, device=x.device), torch.zeros(0, dtype=torch.bool, device=x.device)
    return torch.cat(losses), torch.cat(correct)


def _stats(loss: torch.Tensor, correct: torch.Tensor) -> dict[str, float]:
    if len(loss) == 0:  # e.g. no noisy examples: no number (None, since JSON has no NaN)
        return {"loss": None, "accuracy": None}
    return {"loss": loss.mean().item(), "accuracy": correct.float().mean().item()}


def evaluate(model: nn.Module, data: Data) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """Loss and accuracy on every metric source, and the per-example training losses; training examples are
    scored against the labels they were trained with, so ``train_noisy`` accuracy is memorization."""
    loss, correct = per_example(model, data.x_train, data.y_train)
    metrics = {"train": _stats(loss, correct), "train_clean": _stats(loss[~data.noisy], correct[~data.noisy]),
               "train_noisy": _stats(loss[data.noisy], correct[data.noisy]),
               "val": _stats(*per_example(model, data.x_val, data.y_val)),
               "test": _stats(*per_example(model, data.x_test, data.y_test))}
    return metrics, loss.detach().cpu()


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # one record per evaluation
    final: dict[str, dict[str, float]]  # every source's loss/accuracy after the last epoch
    per_example_loss: torch.Tensor  # final training loss of each example (CPU), with its training label


def autocast(cfg: TrainConfig, device: torch.device) -> torch.autocast:
    """bfloat16 autocast when ``cfg.precision == "bf16"``, else a disabled one (nothing changes)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cfg.precision == "bf16")


class CompiledOrEager:
    """``torch.compile(fn)`` that falls back to ``fn`` itself, with one warning, if compiling or running the
    compiled graph fails; a model's parameters are its own either way, so masks and the optimizer see no difference."""

    def __init__(self, fn: Callable, failed: str = "torch.compile failed", then: str = "training eagerly"):
        self.fn, self.failed, self.then = fn, failed, then
        self.compiled: Callable | None = torch.compile(fn)

    def __call__(self, *args):
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                warnings.warn(f"{self.failed} ({type(e).__name__}: {str(e)[:200]}); {self.then}", RuntimeWarning)
                self.compiled = None
        return self.fn(*args)


class DivergedError(RuntimeError):
    """Training produced a non-finite loss or weight; nothing of the level is stored."""


@torch.no_grad()
def masked_sgd(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
               masks: list[torch.Tensor], masked: tuple[int, ...], lr: torch.Tensor | float,
               momentum: float, weight_decay: float, nesterov: bool) -> None:
    """``torch.optim.SGD``'s update (dampening 0), gradients and weights at ``masked`` multiplied by ``masks``.
    A pure function of tensors, so one compiled graph serves every level and lockstep's stacked tensors."""
    if masked:
        torch._foreach_mul_([grads[i] for i in masked], masks)
    if weight_decay:
        grads = torch._foreach_add(grads, params, alpha=weight_decay)
    if momentum:
        torch._foreach_mul_(bufs, momentum)
        torch._foreach_add_(bufs, grads)
        grads = torch._foreach_add(grads, bufs, alpha=momentum) if nesterov else bufs
    torch._foreach_add_(params, torch._foreach_mul(grads, -lr))
    if masked:
        torch._foreach_mul_([params[i] for i in masked], masks)


class MaskedStep:
    """:func:`masked_sgd` on a list of parameters, eager or compiled (falling back to eager with a warning);
    compiled, the learning rate is a device tensor filled in place, so the schedule never recompiles or syncs.
    ``mask``: a model's :data:`Mask`, or (index in the parameter list, mask) pairs."""

    def __init__(self, model_or_params: nn.Module | Sequence[torch.Tensor], cfg: TrainConfig,
                 mask: Mask | Sequence[tuple[int, torch.Tensor]] | None = None):
        if isinstance(model_or_params, nn.Module):
            index = {n: i for i, (n, _) in enumerate(model_or_params.named_parameters())}
            model_or_params, mask = model_or_params.parameters(), [(index[n], m) for n, m in (mask or {}).items()]
        self.params, pairs = list(model_or_params), list(mask or [])
        self.masked = tuple(i for i, _ in pairs)
        self.masks = [m.to(device=self.params[i].device, dtype=self.params[i].dtype) for i, m in pairs]
        self.settings = (cfg.momentum, cfg.weight_decay, cfg.nesterov and cfg.momentum > 0)  # masked_sgd's last three
        self.bufs = [torch.zeros_like(p) for p in self.params]
        self.lr: torch.Tensor | float = (torch.tensor(float(cfg.lr), device=self.params[0].device) if cfg.compile
                                         else cfg.lr)
        self.update: Callable = CompiledOrEager(masked_sgd, "torch.compile of the optimizer step failed",
                                                       "stepping eagerly") if cfg.compile else masked_sgd

    def set_lr(self, lr: float) -> None:
        if isinstance(self.lr, torch.Tensor):
            self.lr.fill_(lr)
        else:
            self.lr = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self, grads: Sequence[torch.Tensor] | None = None) -> None:
        grads = [p.grad for p in self.params] if grads is None else list(grads)
        self.update(self.params, grads, self.bufs, self.masks, self.masked, self.lr, *self.settings)


class Learner(Protocol):
    """What :func:`fit` trains: K models that take one SGD step on a (K, batch, ...) batch."""

    models: list[nn.Module]

    def step(self, lr: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """One update of every model; returns the K minibatch losses (on the device)."""

    def sync(self) -> None:
        """Make ``models`` hold the current weights (before evaluation and callbacks)."""


class Single:
    """One ``nn.Module`` as a :class:`Learner` (K = 1), optionally compiled."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, mask: Mask | None = None):
        self.models, self.cfg = [model], cfg
        if next(model.parameters()).is_cuda and any(p.dim() == 4 for p in model.parameters()):
            model.to(memory_format=torch.channels_last)
        self.update = MaskedStep(model, cfg, mask)
        self.forward = CompiledOrEager(model) if cfg.compile else model
        model.train()

    def step(self, lr: float, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        self.update.set_lr(lr)
        with autocast(self.cfg, x.device):
            loss = F.cross_entropy(self.forward(x[0]), y[0])
        self.update.zero_grad()
        loss.backward()
        self.update()
        return loss.detach()[None]

    def sync(self) -> None:
        pass  # the model is trained in place


def batches(data: Data, cfg: TrainConfig, epoch: int, orders: Sequence[torch.Generator],
            augments: Sequence[torch.Generator], constant_lr: float | None = None
            ) -> Iterator[tuple[float, torch.Tensor, torch.Tensor]]:
    """One epoch of (lr, x, y) for K models, x and y of shape (K, batch, ...), each model shuffled and augmented
    by its own generators, drawn on the CPU at the start of the epoch and copied to the device once."""
    device, n, b = data.x_train.device, len(data.y_train), cfg.batch_size
    steps = math.ceil(n / b)
    order = torch.stack([torch.randperm(n, generator=g) for g in orders]).to(device)
    shifts = ([torch.stack(t).to(device) for t in zip(*(augmentation_draws(n, b, g) for g in augments))]
              if data.augment else [])
    for i in range(steps):
        lr = constant_lr if constant_lr is not None else lr_at(epoch + i / steps, cfg)
        idx = order[:, i * b:(i + 1) * b]
        x, y = data.x_train[idx], data.y_train[idx]
        if shifts:
            x = crop_flip(x.flatten(0, 1), *(t[:, i * b:(i + 1) * b].flatten() for t in shifts)).view(x.shape)
        yield lr, x, y


def record(epoch: int, lr: float, minibatch_loss: float, metrics: dict[str, dict[str, float]]) -> dict[str, float]:
    """One evaluation's history record: epoch, lr, mean minibatch loss, every source's loss/accuracy."""
    return {"epoch": epoch, "lr": lr, "minibatch_loss": minibatch_loss,
            **{f"{src}_{k}": v for src, m in metrics.items() for k, v in m.items()}}


def _check_finite(losses: torch.Tensor, models: Sequence[nn.Module], epoch: int, where: str, lr: float) -> None:
    bad = [k for k, m in enumerate(models)
           if not torch.isfinite(losses[k]) or not all(torch.isfinite(p).all() for p in m.parameters())]
    if bad:
        which = f" (model {bad} of {len(models)} in lockstep)" if len(models) > 1 else ""
        raise DivergedError(f"training diverged at {where}, epoch {epoch}: non-finite loss or weights{which}; "
                            f"nothing of it was stored; lower train.lr (now {lr:g}) and run again")


def fit(learner: Learner, data: Data, cfg: TrainConfig, *, seeds: Sequence[int], stream: int = 0, start_epoch: int = 0,
        constant_lr: float | None = None, on_epoch_end: Callable[[int, int, nn.Module], None] | None = None,
        progress: bool = True, desc: str = "train") -> list[TrainResult]:
    """Train K models from ``start_epoch`` to ``cfg.epochs``, model k with the streams of ``seeds[k]`` at level
    ``stream``; ``constant_lr`` replaces the schedule (fine-tuning). ``on_epoch_end(k, epochs_done, model)``
    runs before training and after each epoch; the last epoch is always evaluated."""
    models, K = learner.models, len(learner.models)
    if len(seeds) != K:
        raise ValueError(f"one seed per model: {K} models, {len(seeds)} seeds")
    orders = [generator(s, "order", stream) for s in seeds]
    augments = [generator(s, "augment", stream) for s in seeds]
    steps = math.ceil(len(data.y_train) / cfg.batch_size)
    histories: list[list[dict[str, float]]] = [[] for _ in range(K)]
    finals: list[tuple[dict, torch.Tensor] | None] = [None] * K

    def callback(epoch: int) -> None:
        if on_epoch_end is not None:
            learner.sync()
            for k, m in enumerate(models):
                on_epoch_end(k, epoch, m)

    callback(start_epoch)
    for epoch in bar(range(start_epoch, cfg.epochs), desc=desc, leave=False, disable=not progress):
        running, lr = torch.zeros(K, device=data.x_train.device), cfg.lr
        for lr, x, y in batches(data, cfg, epoch, orders, augments, constant_lr):
            running += learner.step(lr, x, y)
        learner.sync()
        _check_finite(running, models, epoch + 1, desc, cfg.lr)
        callback(epoch + 1)
        if (epoch + 1) % cfg.eval_every == 0 or epoch + 1 == cfg.epochs:
            for k, m in enumerate(models):
                finals[k] = evaluate(m, data)
                histories[k].append(record(epoch + 1, lr, (running[k] / steps).item(), finals[k][0]))
    learner.sync()
    # nothing left to train (start_epoch == epochs): still report where the models are
    return [TrainResult(histories[k], *(finals[k] or evaluate(m, data))) for k, m in enumerate(models)]


def train(model: nn.Module, data: Data, cfg: TrainConfig, *, seed: int, mask: Mask | None = None,
          on_epoch_end: Callable[[int, nn.Module], None] | None = None, **kwargs: Any) -> TrainResult:
    """Train one ``model`` in place; ``on_epoch_end(epoch, model)``, and the other keywords (``stream``,
    ``start_epoch``, ``constant_lr``, ``progress``, ``desc``) as :func:`fit` takes them."""
    callback = None if on_epoch_end is None else (lambda k, epoch, m: on_epoch_end(epoch, m))
    return fit(Single(model, cfg, mask), data, cfg, seeds=[seed], on_epoch_end=callback, **kwargs)[0]
