"""One training run: SGD with momentum and weight decay under a learning-rate schedule.

The hot loop is plain: index a shuffled batch out of the on-device dataset, augment it
as a whole, step, and keep pruned weights at exactly zero (their gradients are masked,
so momentum and weight decay never move them, and they are re-zeroed after the step).
Nothing in the loop waits for the device: the running loss stays a device tensor until
the epoch's evaluation. On a GPU, image models use channels_last; ``train.precision=bf16``
runs forward and backward under bfloat16 autocast and ``train.compile`` uses torch.compile.
"""

from __future__ import annotations

import contextlib
import math
import warnings
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn
import torch.nn.functional as F
from tqdm.auto import tqdm

from .config import TrainConfig
from .data import Data, augmentation_draws, crop_flip
from .pruning import Mask

EVAL_BATCH = 2048
SOURCES = ("train", "train_clean", "train_noisy", "val", "test")


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


def generator(seed: int, stream: int) -> torch.Generator:
    """CPU generator for one training call; ``stream`` separates levels of one run."""
    return torch.Generator().manual_seed(int(seed) * 1_000_003 + int(stream))


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
    if len(loss) == 0:
        return {"loss": float("nan"), "accuracy": float("nan")}
    return {"loss": loss.mean().item(), "accuracy": correct.float().mean().item()}


def evaluate(model: nn.Module, data: Data) -> tuple[dict[str, dict[str, float]], torch.Tensor]:
    """Loss and accuracy on every metric source, and the per-example training losses.

    Training examples are scored against the labels they were trained with, so
    ``train_noisy`` accuracy is memorization of the noisy labels.
    """
    tr_loss, tr_correct = per_example(model, data.x_train, data.y_train)
    clean = ~data.noisy
    metrics = {
        "train": _stats(tr_loss, tr_correct),
        "train_clean": _stats(tr_loss[clean], tr_correct[clean]),
        "train_noisy": _stats(tr_loss[data.noisy], tr_correct[data.noisy]),
        "val": _stats(*per_example(model, data.x_val, data.y_val)),
        "test": _stats(*per_example(model, data.x_test, data.y_test)),
    }
    return metrics, tr_loss.detach().cpu()


@dataclass
class TrainResult:
    history: list[dict[str, float]]  # one record per evaluation
    final: dict[str, dict[str, float]]  # every source's loss/accuracy after the last epoch
    per_example_loss: torch.Tensor  # final training loss of each example (CPU), with its training label


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.SGD:
    return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                           nesterov=cfg.nesterov and cfg.momentum > 0, weight_decay=cfg.weight_decay)


def autocast(cfg: TrainConfig, device: torch.device) -> contextlib.AbstractContextManager:
    """bfloat16 autocast when ``cfg.precision == "bf16"``, else nothing."""
    if cfg.precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


class CompiledOrEager(nn.Module):
    """``torch.compile(model)`` that falls back to the eager model, with one warning, if
    compiling or running the compiled graph fails (no compiler, unsupported op). Parameters
    are the model's own, so masks and the optimizer see no difference."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.compiled: Callable | None = torch.compile(model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.compiled is not None:
            try:
                return self.compiled(x)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                warnings.warn(f"torch.compile failed ({type(e).__name__}: {str(e)[:200]}); training eagerly", RuntimeWarning)
                self.compiled = None
        return self.model(x)


@torch.no_grad()
def masked_sgd(params: list[torch.Tensor], grads: list[torch.Tensor], bufs: list[torch.Tensor],
               masks: list[torch.Tensor], masked: tuple[int, ...], lr: torch.Tensor | float,
               momentum: float, weight_decay: float, nesterov: bool) -> None:
    """``torch.optim.SGD``'s update (dampening 0) on lists of tensors, with the gradients and
    weights at positions ``masked`` multiplied by ``masks``; ``bufs`` are the momentum buffers
    (zeros at the start). A plain function of tensors, so one compiled graph serves every level
    (no guards on object identity); lockstep training applies it to stacked tensors."""
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
    """The update after ``backward``: zero the pruned weights' gradients, take the SGD step,
    re-zero the pruned weights.

    Eagerly this is ``torch.optim.SGD`` with two fused ``foreach`` multiplies. With
    ``compile=True`` the whole update is one ``torch.compile``d function of tensors
    (:func:`masked_sgd`; its graph is reused by every later level): the learning rate lives in a device
    tensor that :meth:`set_lr` fills in place, so the schedule changes it without recompiling
    or syncing. If compiling or running fails, it warns once and runs the same function eagerly.
    """

    def __init__(self, model: nn.Module, cfg: TrainConfig, mask: Mask | None = None):
        self.cfg = cfg
        self.params = list(model.parameters())
        masked = masked_params(model, mask)
        self.masks = [m for _, m in masked]
        self.masked_params = [p for p, _ in masked]
        self.compiled = cfg.compile
        if self.compiled:
            index = {id(p): i for i, p in enumerate(self.params)}
            self.masked = tuple(index[id(p)] for p in self.masked_params)
            self.bufs = [torch.zeros_like(p) for p in self.params]
            self.lr = torch.tensor(float(cfg.lr), device=self.params[0].device)
            self.update: Callable = torch.compile(masked_sgd)
        else:
            self.opt = make_optimizer(model, cfg)

    def set_lr(self, lr: float) -> None:
        if self.compiled:
            self.lr.fill_(lr)
        else:
            for group in self.opt.param_groups:
                group["lr"] = lr

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def __call__(self) -> None:
        if self.compiled:
            cfg = self.cfg
            args = (self.params, [p.grad for p in self.params], self.bufs, self.masks, self.masked, self.lr,
                    cfg.momentum, cfg.weight_decay, cfg.nesterov and cfg.momentum > 0)
            try:
                return self.update(*args)
            except Exception as e:  # noqa: BLE001 - any compiler failure means: run eagerly
                if self.update is masked_sgd:
                    raise
                warnings.warn(f"torch.compile of the optimizer step failed ({type(e).__name__}: {str(e)[:200]}); "
                              "stepping eagerly", RuntimeWarning)
                self.update = masked_sgd
                return masked_sgd(*args)
        with torch.no_grad():
            if self.masks:
                torch._foreach_mul_([p.grad for p in self.masked_params], self.masks)
            self.opt.step()
            if self.masks:
                torch._foreach_mul_(self.masked_params, self.masks)


def masked_params(model: nn.Module, mask: Mask | None) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(parameter, float mask) pairs on the parameters' device and dtype."""
    params = dict(model.named_parameters())
    return [(params[n], m.to(device=params[n].device, dtype=params[n].dtype)) for n, m in (mask or {}).items()]


def train_epoch(model: nn.Module, step: MaskedStep, data: Data, cfg: TrainConfig, epoch: int,
                g: torch.Generator, constant_lr: float | None = None) -> tuple[torch.Tensor, float]:
    """One pass over the shuffled training set; returns (summed minibatch loss on device, last lr)."""
    device = data.x_train.device
    n = len(data.y_train)
    steps = math.ceil(n / cfg.batch_size)
    order = torch.randperm(n, generator=g).to(device)
    shifts = [t.to(device) for t in augmentation_draws(n, cfg.batch_size, g)] if data.augment else []
    running = torch.zeros((), device=device)
    lr = cfg.lr
    amp = autocast(cfg, device)
    for i in range(steps):
        lr = constant_lr if constant_lr is not None else lr_at(epoch + i / steps, cfg)
        step.set_lr(lr)
        batch = slice(i * cfg.batch_size, (i + 1) * cfg.batch_size)
        idx = order[batch]
        x, y = data.x_train[idx], data.y_train[idx]
        if shifts:
            x = crop_flip(x, *(t[batch] for t in shifts))
        with amp:
            loss = F.cross_entropy(model(x), y)
        step.zero_grad()
        loss.backward()
        step()
        running += loss.detach()
    return running, lr


def train(
    model: nn.Module,
    data: Data,
    cfg: TrainConfig,
    *,
    seed: int,
    stream: int = 0,
    mask: Mask | None = None,
    start_epoch: int = 0,
    constant_lr: float | None = None,
    on_epoch_end: Callable[[int, nn.Module], None] | None = None,
    progress: bool = True,
    desc: str = "train",
) -> TrainResult:
    """Train ``model`` in place from ``start_epoch`` to ``cfg.epochs`` of the schedule.

    ``constant_lr`` replaces the schedule (fine-tuning). ``on_epoch_end(epoch, model)`` is
    called before training and after each epoch with the number of epochs completed. The
    history has one record per evaluation: epoch, learning rate, mean minibatch loss and
    every source's loss/accuracy; the last epoch is always evaluated.
    """
    g = generator(seed, stream)
    step = MaskedStep(model, cfg, mask)
    if data.x_train.is_cuda and data.x_train.dim() == 4:
        model.to(memory_format=torch.channels_last)
    step_model = CompiledOrEager(model) if cfg.compile else model
    steps = math.ceil(len(data.y_train) / cfg.batch_size)
    history: list[dict[str, float]] = []
    metrics, example_loss = {}, torch.zeros(0)
    if on_epoch_end is not None:
        on_epoch_end(start_epoch, model)
    model.train()
    bar = tqdm(range(start_epoch, cfg.epochs), desc=desc, leave=False, disable=not progress)
    for epoch in bar:
        running, lr = train_epoch(step_model, step, data, cfg, epoch, g, constant_lr)
        done = epoch + 1
        if on_epoch_end is not None:
            on_epoch_end(done, model)
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            metrics, example_loss = evaluate(model, data)
            record = {"epoch": done, "lr": lr, "minibatch_loss": (running / steps).item()}
            record.update({f"{src}_{k}": v for src, m in metrics.items() for k, v in m.items()})
            history.append(record)
            bar.set_postfix(loss=f"{record['train_loss']:.3f}", test_acc=f"{record['test_accuracy']:.3f}")
    if not history:  # nothing left to train (start_epoch == epochs): still report where we are
        metrics, example_loss = evaluate(model, data)
    return TrainResult(history, metrics, example_loss)
