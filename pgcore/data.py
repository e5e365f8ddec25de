"""Datasets as tensors on the device, random label noise, and batched augmentation.

Every dataset is loaded once into a :class:`Data` holding whole tensors on the target
device; training draws batches by indexing them, and image augmentation (random crop
with zero padding, horizontal flip) works on whole batches there. No DataLoader, no PIL.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import DataConfig

# Per-channel normalization of the torchvision image datasets (standard values).
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
}
_IMAGE_AUGMENT = {"cifar10": True, "cifar100": True, "svhn": True, "mnist": False, "mnist1d": False}


class DataNotFoundError(FileNotFoundError):
    """A torchvision dataset is missing from its data directory."""


@dataclass
class Data:
    """One dataset, split and on a device.

    ``y_train`` holds the labels training sees (noisy where ``noisy`` is True);
    ``y_train_clean`` the true labels. Validation and test labels are never noisy.
    """

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    y_train_clean: torch.Tensor
    noisy: torch.Tensor  # bool, one per training example
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    augment: bool

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def without(self, exclude: "Sequence[int]") -> "Data":
        """The same data with the training examples at ``exclude`` left out."""
        if not len(exclude):
            return self
        n = len(self.y_train)
        bad = [i for i in exclude if not 0 <= i < n]
        if bad:
            raise ValueError(f"data.exclude has indices {bad[:5]} outside the {n} training examples")
        keep = torch.ones(n, dtype=torch.bool, device=self.y_train.device)
        keep[torch.as_tensor(list(exclude), device=keep.device)] = False
        return dataclasses.replace(self, x_train=self.x_train[keep], y_train=self.y_train[keep],
                                   y_train_clean=self.y_train_clean[keep], noisy=self.noisy[keep])

    def summary(self) -> str:
        return (f"{self.name}: train {len(self.y_train)} ({int(self.noisy.sum())} noisy), "
                f"val {len(self.y_val)}, test {len(self.y_test)}, input {self.input_shape}, "
                f"{self.num_classes} classes, augment={self.augment}")


def make_mnist1d(num_samples: int = 5000, seed: int = 42) -> dict[str, np.ndarray]:
    """Generate MNIST-1D offline with the ``mnist1d`` package (never its URL download).

    ``num_samples=5000, seed=42`` is the published 4000/1000 split. The generator seeds
    NumPy's global RNG; its state is restored afterwards so callers are unaffected.
    """
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    state = np.random.get_state()
    try:
        ds = make_dataset(args)
    finally:
        np.random.set_state(state)
    return {"x": ds["x"], "y": ds["y"], "x_test": ds["x_test"], "y_test": ds["y_test"]}


def _torchvision(name: str, data_dir: Path, download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
    """Load a torchvision dataset as uint8 NCHW arrays; a clear error when files are missing."""
    import torchvision.datasets as tvd

    def get(train: bool):
        if name == "cifar10":
            return tvd.CIFAR10(str(data_dir), train=train, download=download)
        if name == "cifar100":
            return tvd.CIFAR100(str(data_dir), train=train, download=download)
        if name == "svhn":
            return tvd.SVHN(str(data_dir), split="train" if train else "test", download=download)
        if name == "mnist":
            return tvd.MNIST(str(data_dir), train=train, download=download)
        raise ValueError(name)

    try:
        tr, te = get(True), get(False)
    except RuntimeError as e:
        if "not found" not in str(e).lower() and "corrupted" not in str(e).lower():
            raise
        how = ("downloading failed; check the network" if download else
               f"run `pgcore download {name} --data-dir {data_dir}` (needs a network), "
               f"or set data.download=true, or put the original files there")
        raise DataNotFoundError(f"{name} not found (or corrupted) in data directory '{data_dir}': {how}.") from e

    def arrays(ds):
        if name in ("cifar10", "cifar100"):
            x, y = np.asarray(ds.data).transpose(0, 3, 1, 2), np.asarray(ds.targets)
        elif name == "svhn":
            x, y = np.asarray(ds.data), np.asarray(ds.labels)
        else:  # mnist: N x 28 x 28 uint8 tensor
            x, y = ds.data.numpy()[:, None], ds.targets.numpy()
        return np.ascontiguousarray(x), y.astype(np.int64)

    (xtr, ytr), (xte, yte) = arrays(tr), arrays(te)
    num_classes = 100 if name == "cifar100" else 10
    return xtr, ytr, xte, yte, num_classes


def apply_label_noise(y: torch.Tensor, fraction: float, num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Replace the labels of ``round(fraction * n)`` seeded examples by a different class.

    Returns ``(noisy_labels, is_noisy)``. A noisy example never keeps its true label: the
    new class is drawn uniformly from the other ``num_classes - 1``.
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noisy fraction must be in [0, 1], got {fraction}")
    g = torch.Generator().manual_seed(int(seed))
    n = len(y)
    k = int(round(fraction * n))
    idx = torch.randperm(n, generator=g)[:k]
    shift = torch.randint(1, num_classes, (k,), generator=g)
    y_noisy = y.clone()
    y_noisy[idx] = (y[idx] + shift) % num_classes
    is_noisy = torch.zeros(n, dtype=torch.bool)
    is_noisy[idx] = True
    return y_noisy, is_noisy


def load(cfg: DataConfig, device: str | torch.device = "cpu") -> Data:
    """Load, normalize, split and (optionally) corrupt a dataset; tensors go to ``device``."""
    if cfg.name == "mnist1d":
        ds = make_mnist1d(cfg.num_samples, cfg.data_seed)
        xtr = torch.as_tensor(ds["x"], dtype=torch.float32)
        ytr = torch.as_tensor(ds["y"], dtype=torch.int64)
        xte = torch.as_tensor(ds["x_test"], dtype=torch.float32)
        yte = torch.as_tensor(ds["y_test"], dtype=torch.int64)
        num_classes = 10
    else:
        data_dir = Path(cfg.data_dir).expanduser()
        if not data_dir.exists() and not cfg.download:
            raise DataNotFoundError(
                f"data directory '{data_dir}' does not exist: run `pgcore download {cfg.name} --data-dir {data_dir}` "
                f"(needs a network) or set data.data_dir to where {cfg.name} lives.")
        xtr_u8, ytr_np, xte_u8, yte_np, num_classes = _torchvision(cfg.name, data_dir, cfg.download)
        mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in _STATS[cfg.name])
        xtr = (torch.as_tensor(xtr_u8).float() / 255 - mean) / std
        xte = (torch.as_tensor(xte_u8).float() / 255 - mean) / std
        ytr, yte = torch.as_tensor(ytr_np), torch.as_tensor(yte_np)

    # Validation split, seeded by the data seed so every training seed sees the same split.
    n_val = int(round(cfg.val_fraction * len(ytr)))
    perm = torch.randperm(len(ytr), generator=torch.Generator().manual_seed(cfg.data_seed + 1))
    val_idx, tr_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    xval, yval = xtr[val_idx], ytr[val_idx]
    xtr, ytr = xtr[tr_idx], ytr[tr_idx]

    y_noisy, is_noisy = apply_label_noise(ytr, cfg.noisy_fraction, num_classes, cfg.noise_seed)
    augment = _IMAGE_AUGMENT[cfg.name] if cfg.augment is None else bool(cfg.augment)
    if augment and xtr.dim() != 4:
        raise ValueError(f"data.augment=true needs image data; {cfg.name} has inputs of shape {tuple(xtr.shape[1:])}")
    dev = torch.device(device)
    full = Data(
        name=cfg.name, x_train=xtr.to(dev), y_train=y_noisy.to(dev), y_train_clean=ytr.to(dev),
        noisy=is_noisy.to(dev), x_val=xval.to(dev), y_val=yval.to(dev), x_test=xte.to(dev),
        y_test=yte.to(dev), num_classes=num_classes, augment=augment,
    )
    # Left-out examples go after the noise draw, so the kept ones carry the labels of the full set.
    return full.without(cfg.exclude)


def augmentation_draws(n: int, batch_size: int, generator: torch.Generator, pad: int = 4
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One epoch's crop offsets and flips for ``n`` examples in batches of ``batch_size``:
    (dy, dx, flip), each of length ``n`` in batch order, drawn batch by batch from ``generator``
    (on the CPU, so results do not depend on the device) exactly as :func:`augment_batch` draws
    them. Drawing the epoch at once lets the training loop move them to the device once per
    epoch rather than once per step (each such copy would wait for the device)."""
    dy, dx, flip = [], [], []
    for start in range(0, n, batch_size):
        b = min(batch_size, n - start)
        dy.append(torch.randint(0, 2 * pad + 1, (b,), generator=generator))
        dx.append(torch.randint(0, 2 * pad + 1, (b,), generator=generator))
        flip.append(torch.rand(b, generator=generator) < 0.5)
    if not dy:
        return torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.long), torch.zeros(0, dtype=torch.bool)
    return torch.cat(dy), torch.cat(dx), torch.cat(flip)


def crop_flip(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, pad: int = 4) -> torch.Tensor:
    """Crop each image of an NCHW batch at offset (dy, dx) of its zero-padded copy, then flip the
    ones marked in ``flip`` horizontally; the offsets and flips must be on ``x``'s device."""
    n, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]


def augment_batch(x: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop (zero padding ``pad``) and horizontal flip of a whole NCHW batch, on its device."""
    draws = augmentation_draws(len(x), len(x), generator, pad)
    return crop_flip(x, *(t.to(x.device) for t in draws), pad=pad)


def download(name: str, data_dir: str | Path) -> Path:
    """Fetch a torchvision dataset into ``data_dir`` (needs a network)."""
    if name == "mnist1d":
        raise ValueError("mnist1d is generated offline; nothing to download")
    data_dir = Path(data_dir).expanduser()
    data_dir.mkdir(parents=True, exist_ok=True)
    _torchvision(name, data_dir, download=True)
    return data_dir
