"""Every random number in pgcore comes from one function and a named stream.

A run's seed never feeds a generator directly: :func:`derive` hashes (stream name, seed,
index) into a 63-bit seed, so two purposes never share a random stream, whatever the seed
or level. The streams:

===============  =================================================================
``init``         a model's initial weights (the seed's own initialization)
``reinit``       the fresh initialization of the ``reinit`` control
``order``        the shuffle of the training set, one per (level, epoch sequence)
``augment``      random crops and flips, one per level
``prune``        random pruning scores (the random-pruning controls), one per level
``saliency``     the batch a saliency score (SNIP) is measured on
``subset``       random subsets of training examples (the TIE control)
``noise``        which training labels are noisy and their new class (``data.noise_seed``)
``split``        the validation split and offline train/test splits (``data.data_seed``)
===============  =================================================================
"""

from __future__ import annotations

import hashlib

import torch

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
