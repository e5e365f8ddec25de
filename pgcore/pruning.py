"""Masks (prunable weight name -> bool tensor) and unstructured pruning: magnitude, random or SNIP scores, global or
layerwise. Pruning removes a fraction of the survivors, so level k at rate r has sparsity 1 - (1 - r)^k."""

from __future__ import annotations

from typing import Iterable

import torch
from torch import nn

__all__ = ["prunable_names", "dense_mask", "prune", "magnitude_scores", "random_scores", "apply", "sparsity",
           "layer_sparsity", "snip_scores"]

Mask = dict[str, torch.Tensor]

_KINDS = {"conv": (nn.Conv1d, nn.Conv2d, nn.Conv3d), "linear": (nn.Linear,)}


def prunable_names(model: nn.Module, kinds: Iterable[str] = ("conv", "linear"),
                   ignore: Iterable[str] = ()) -> list[str]:
    """Names of the weight tensors of the module kinds in ``kinds``, minus ``ignore``."""
    types = tuple(t for k in kinds for t in _KINDS[k])
    ignore = set(ignore)
    names = [f"{mod_name}.weight" if mod_name else "weight"
             for mod_name, mod in model.named_modules() if isinstance(mod, types)]
    unknown = ignore - set(names)
    if unknown:
        raise ValueError(f"prune.ignore names {sorted(unknown)}, which are not prunable weights of this model; "
                         f"prunable: {names}")
    return [n for n in names if n not in ignore]


def dense_mask(model: nn.Module, kinds: Iterable[str] = ("conv", "linear"), ignore: Iterable[str] = ()) -> Mask:
    params = dict(model.named_parameters())
    return {n: torch.ones_like(params[n], dtype=torch.bool) for n in prunable_names(model, kinds, ignore)}


def prune(scores: dict[str, torch.Tensor], mask: Mask, rate: float, scope: str = "global") -> Mask:
    """Remove the ``rate`` fraction of surviving weights with the lowest ``scores``, ranked together (``global``)
    or per tensor (``layerwise``): exactly ``round(rate * survivors)``, ties broken by position."""
    if not 0.0 < rate < 1.0:
        raise ValueError(f"pruning rate must be in (0, 1), got {rate}")
    if scope == "layerwise":
        return {n: prune({n: scores[n]}, {n: mask[n]}, rate, "global")[n] for n in mask}
    if scope != "global":
        raise ValueError(f"unknown pruning scope '{scope}' (global | layerwise)")
    names = list(mask)
    flat = torch.cat([torch.where(mask[n], scores[n].float(), torch.inf).flatten() for n in names])
    alive = int(sum(int(mask[n].sum()) for n in names))
    n_prune = int(round(rate * alive))
    keep = torch.ones_like(flat, dtype=torch.bool)
    # Stable sort: equal scores are pruned in index order, so the result is deterministic.
    keep[torch.sort(flat, stable=True).indices[:n_prune]] = False
    parts = keep.split([mask[n].numel() for n in names])
    return {n: part.view_as(mask[n]) & mask[n] for n, part in zip(names, parts)}


def magnitude_scores(model: nn.Module, mask: Mask) -> dict[str, torch.Tensor]:
    params = dict(model.named_parameters())
    return {n: params[n].detach().abs() for n in mask}


def random_scores(mask: Mask, generator: torch.Generator) -> dict[str, torch.Tensor]:
    return {n: torch.rand(m.shape, generator=generator).to(m.device) for n, m in mask.items()}


@torch.no_grad()
def apply(model: nn.Module, mask: Mask) -> None:
    """Zero the pruned weights in place."""
    params = dict(model.named_parameters())
    for n, m in mask.items():
        params[n].mul_(m)


def sparsity(mask: Mask) -> float:
    """Fraction of prunable weights that are pruned."""
    total = sum(m.numel() for m in mask.values())
    alive = sum(int(m.sum()) for m in mask.values())
    return 1.0 - alive / total if total else 0.0


def layer_sparsity(mask: Mask) -> dict[str, float]:
    return {n: 1.0 - int(m.sum()) / m.numel() for n, m in mask.items()}


def snip_scores(model: nn.Module, mask: Mask, x: torch.Tensor, y: torch.Tensor) -> dict[str, torch.Tensor]:
    """SNIP's saliency |dL/dw ⊙ w| (Lee et al. 2019) on (x, y), on a copy so BatchNorm statistics stay untouched."""
    import copy
    import torch.nn.functional as F
    probe = copy.deepcopy(model).train()
    params = dict(probe.named_parameters())
    loss = F.cross_entropy(probe(x), y)
    grads = torch.autograd.grad(loss, [params[n] for n in mask])
    return {n: (g * params[n]).detach().abs() for n, g in zip(mask, grads)}
