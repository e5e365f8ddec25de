"""Every random number comes from one function, :func:`derive`, hashing (stream, seed, index) into a 63-bit seed,
so two purposes never share a random stream. :data:`STREAMS`: ``init``/``reinit`` (weights), ``order`` (shuffles),
``augment``, ``prune`` (random scores), ``saliency`` (SNIP), ``subset`` (TIE), ``noise`` (labels), ``split``."""

from __future__ import annotations

import hashlib

import torch

__all__ = ["derive", "generator"]

STREAMS = ("init", "reinit", "order", "augment", "prune", "saliency", "subset", "noise", "split")


def derive(seed: int, stream: str, index: int = 0) -> int:
    """A 63-bit seed for ``stream`` of ``seed`` (``index``: the level, or another counter)."""
    if stream not in STREAMS:
        raise ValueError(f"unknown random stream '{stream}'; streams: {', '.join(STREAMS)}")
    digest = hashlib.sha256(f"pgcore:{stream}:{int(seed)}:{int(index)}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


def generator(seed: int, stream: str, index: int = 0) -> torch.Generator:
    """A CPU generator for one stream (drawn on the CPU so numbers do not depend on the device)."""
    return torch.Generator().manual_seed(derive(seed, stream, index))
