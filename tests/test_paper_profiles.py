"""The paper profiles match the authors' framework (OpenLTH) and run on tiny files in the real
on-disk formats of CIFAR-10, CIFAR-100 and MNIST."""

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pgcore import models, pruning
from pgcore.config import from_dict, load_yaml, override
from pgcore.protocols import run

ROOT = Path(__file__).resolve().parent.parent
PAPER = ["paper", "paper-vgg16", "paper-lenet", "paper-cifar100"]


@pytest.mark.parametrize("name, shape, classes, prunable, dense", [
    # ResNet-20: every conv and linear weight, fc included (64 x 10 = 640 of them)
    ("resnet20", (3, 32, 32), 10, 270_896, ()),
    ("vgg16", (3, 32, 32), 10, 14_710_464, ("fc.weight",)),
    ("lenet_300_100", (1, 28, 28), 10, 784 * 300 + 300 * 100, ("fc3.weight",)),
])
def test_prunable_weights_are_what_openlth_prunes(name, shape, classes, prunable, dense):
    cfg = from_dict({"model": {"name": name}})
    assert cfg.prune.ignore == dense
    model = models.build(cfg.model, shape, classes)
    mask = pruning.dense_mask(model, cfg.prune.prunable, cfg.prune.ignore)
    assert sum(m.numel() for m in mask.values()) == prunable
    if name == "resnet20":
        assert mask["fc.weight"].numel() == 640


def test_openlth_initialization_for_the_papers_models():
    torch.manual_seed(0)
    model = models.build("resnet20", (3, 32, 32), 10)
    bn = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(0 <= m.weight.min() and m.weight.max() < 1 and (m.bias == 0).all() for m in bn)
    assert len({round(m.weight.mean().item(), 3) for m in bn}) > 1, "uniform, not PyTorch's ones"
    fc = model.fc.weight
    assert fc.std().item() == pytest.approx((2 / 64) ** 0.5, rel=0.15)  # kaiming-normal, fan_in 64
    lenet = models.build("lenet_300_100", (1, 28, 28), 10)
    assert lenet.fc1.weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.05)


@pytest.mark.parametrize("profile", PAPER)
def test_paper_profiles_validate_and_carve_a_validation_split(profile):
    params = load_yaml(ROOT / "params" / f"{profile}.yaml")
    assert params["profile"] == profile
    for seed in params["seeds"]:
        cfg = from_dict(params, seed=seed)
    total = 60_000 if cfg.data.name == "mnist" else 50_000
    assert round(cfg.data.val_fraction * total) == 5000
    assert "ignore" not in params["prune"], "the output-layer rule is the model's own"


def _cifar(root: Path, name: str, n: int = 4) -> None:
    rng = np.random.default_rng(0)
    if name == "cifar10":
        folder = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": "labels" for i in range(1, 6)} | {"test_batch": "labels"}
        meta = ("batches.meta", {"label_names": [f"c{i}" for i in range(10)]})
        classes = 10
    else:
        folder = root / "cifar-100-python"
        files = {"train": "fine_labels", "test": "fine_labels"}
        meta = ("meta", {"fine_label_names": [f"c{i}" for i in range(100)]})
        classes = 100
    folder.mkdir(parents=True)
    for fname, key in files.items():
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
                         key: rng.integers(0, classes, n).tolist()}, f)
    with open(folder / meta[0], "wb") as f:
        pickle.dump(meta[1], f)


def _mnist(root: Path, n: int = 20) -> None:
    """The real MNIST/raw idx files (magic 2051 images, 2049 labels), uncompressed."""
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "t10k"):
        with open(raw / f"{split}-images-idx3-ubyte", "wb") as f:
            f.write(struct.pack(">IIII", 2051, n, 28, 28) + rng.integers(0, 256, n * 784, dtype=np.uint8).tobytes())
        with open(raw / f"{split}-labels-idx1-ubyte", "wb") as f:
            f.write(struct.pack(">II", 2049, n) + rng.integers(0, 10, n, dtype=np.uint8).tobytes())


@pytest.mark.parametrize("profile", PAPER)
def test_each_paper_profile_runs_one_level_on_tiny_real_format_files(profile, tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    # Tiny files cannot match the md5 sums of the real archives; everything else is torchvision's code.
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda path, md5=None: os.path.exists(path))
    params = load_yaml(ROOT / "params" / f"{profile}.yaml")
    name = params["data"]["name"]
    _mnist(tmp_path) if name == "mnist" else _cifar(tmp_path, name)
    if name == "mnist":  # tiny files are not the originals: their own checksums stand in for the recorded ones
        import pgcore.data as data_mod
        raw = tmp_path / "MNIST" / "raw"
        monkeypatch.setattr(data_mod, "MNIST_SHA256", {f: data_mod.sha256_file(raw / f) for f in data_mod.MNIST_SHA256})
    small = {"data.data_dir": str(tmp_path), "data.download": False, "train.epochs": 1, "train.batch_size": 8,
             "train.milestones": [], "prune.levels": 1}
    if params["model"]["name"] != "lenet_300_100":
        small["model.width"] = 4  # toy size: a quarter (VGG: a sixteenth) of the channels
    cfg = from_dict(override(params, small), seed=0)
    # the profile's own validation check counts the real dataset's size, not the tiny one
    r = run(cfg, tmp_path / "store", "cpu", progress=False)
    assert r.load_metrics(1)["sparsity"] == pytest.approx(0.2, abs=1e-3)
    shape, classes = ((1, 28, 28), 10) if name == "mnist" else ((3, 32, 32), 100 if name == "cifar100" else 10)
    expected = pruning.prunable_names(models.build(cfg.model, shape, classes), ignore=cfg.prune.ignore)
    assert sorted(r.load_checkpoint(1)["mask"]) == sorted(expected)
