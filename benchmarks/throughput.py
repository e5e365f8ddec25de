"""Training throughput: a plain PyTorch baseline and pgcore, side by side in one run.

(a) ``baseline``: what most pruning code does (OpenLTH-style): a torch Dataset with per-sample
    torchvision transforms, a DataLoader, fp32, masks re-applied to ``weight.data`` after each step.
(b) ``pgcore``: the engine's own training loop (``pgcore.train.batches`` + ``Single``): data resident on the
    device, batched on-device augmentation, masked gradients.
(b') ``pgcore bf16``: the same with ``train.precision: bf16`` (bfloat16 autocast).
(b'') ``pgcore compile`` and ``pgcore bf16+compile``: with ``train.compile: true`` (the model and the
    masked optimizer step through torch.compile; compilation happens in the warm-up epoch).
(c) ``pgcore xK``: K models in lockstep (``pgcore.batched.Ensemble``, torch.func vmap), each with its
    own mask and data order; throughput counts the images of all K models.

Both train the same model with the same 50%-sparse mask on the same synthetic data (CIFAR-shaped
tensors for ResNet-20, generated MNIST-1D for the MLP and the `small` profile's 1D CNN). One warm-up epoch is excluded; CUDA timings
are synchronized; each number is the median of ``--repeats`` measurements. Prints images/s and the ratio, and writes a CSV.

    python benchmarks/throughput.py --out build/throughput.csv
"""

from __future__ import annotations

import argparse
import dataclasses
import csv
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from pgcore import models, pruning
from pgcore.batched import Ensemble
from pgcore.config import DataConfig, TrainConfig
from pgcore.data import Data, load
from pgcore.protocols import resolve_device
from pgcore.seeds import generator
from pgcore.train import Single, batches


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def cifar_shaped(n: int, dev: torch.device) -> tuple[Data, np.ndarray, np.ndarray]:
    """Random uint8 images of CIFAR-10's shape: as pgcore Data (normalized, on device) and as raw arrays."""
    rng = np.random.default_rng(0)
    x_u8 = rng.integers(0, 256, size=(n, 32, 32, 3), dtype=np.uint8)
    y = rng.integers(0, 10, size=n).astype(np.int64)
    x = torch.as_tensor(x_u8).permute(0, 3, 1, 2).float().div(255).sub(0.5).div(0.25).to(dev)
    yt = torch.as_tensor(y).to(dev)
    empty_x, empty_y = x[:0], yt[:0]
    data = Data("cifar-shaped", x, yt, yt, torch.zeros(n, dtype=torch.bool, device=dev), empty_x, empty_y,
                empty_x, empty_y, 10, augment=True)
    return data, x_u8, y


class _ImageDataset(torch.utils.data.Dataset):
    def __init__(self, x_u8: np.ndarray, y: np.ndarray):
        from torchvision import transforms

        self.x, self.y = x_u8, y
        self.t = transforms.Compose([transforms.RandomCrop(32, padding=4), transforms.RandomHorizontalFlip(),
                                     transforms.ToTensor(), transforms.Normalize((0.5,) * 3, (0.25,) * 3)])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.t(Image.fromarray(self.x[i])), int(self.y[i])


def _half_mask(model: torch.nn.Module) -> pruning.Mask:
    mask = pruning.dense_mask(model)
    for _ in range(3):  # 48.8% sparse
        mask = pruning.prune(pruning.magnitude_scores(model, mask), mask, 0.2)
    pruning.apply(model, mask)
    return mask


def bench_baseline(model, loader, mask, dev, epochs: int, cfg: TrainConfig) -> float:
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    params = dict(model.named_parameters())
    masks = {n: m.to(dev).float() for n, m in mask.items()}
    model.train()
    seen, tic = 0, 0.0
    for epoch in range(epochs + 1):  # epoch 0 is warm-up
        if epoch == 1:
            _sync(dev)
            tic, seen = time.perf_counter(), 0
        for x, y in loader:
            x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                for n, m in masks.items():
                    params[n].data *= m
            seen += len(y)
    _sync(dev)
    return seen / (time.perf_counter() - tic)


def _epochs(learner, data: Data, cfg: TrainConfig, dev, epochs: int, k: int) -> float:
    """Images per second of ``epochs`` epochs of pgcore's loop (one batch iterator, one update),
    after one untimed warm-up epoch (and compilation)."""
    orders, augments = [generator(i, "order") for i in range(k)], [generator(i, "augment") for i in range(k)]
    for epoch in range(-1, epochs):
        if epoch == 0:
            _sync(dev)
            tic = time.perf_counter()
        for lr, x, y in batches(data, cfg, max(epoch, 0), orders, augments):
            learner.step(lr, x, y)
    _sync(dev)
    return k * epochs * len(data.y_train) / (time.perf_counter() - tic)


def bench_pgcore(model, data: Data, mask, dev, epochs: int, cfg: TrainConfig) -> float:
    return _epochs(Single(model, cfg, mask), data, cfg, dev, epochs, 1)


def bench_lockstep(build, mask, data: Data, dev, epochs: int, cfg: TrainConfig, k: int) -> float:
    ms = []
    for i in range(k):
        torch.manual_seed(i)
        m = build().to(dev)
        pruning.apply(m, mask)
        ms.append(m)
    return _epochs(Ensemble(ms, [mask] * k, cfg), data, cfg, dev, epochs, k)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=2, help="timed epochs per measurement (after one warm-up)")
    ap.add_argument("--cifar-n", type=int, default=None, help="CIFAR-shaped images (default 50000 on GPU, 2560 on CPU)")
    ap.add_argument("--workers", type=int, default=min(4, os.cpu_count() or 1), help="DataLoader workers for the baseline")
    ap.add_argument("--only", choices=["mlp", "cnn1d", "resnet20"], default=None)
    ap.add_argument("--models", type=int, default=None, help="K for the lockstep variant (default 8 on GPU, 4 on CPU)")
    ap.add_argument("--repeats", type=int, default=3, help="measurements per variant; the median is reported")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    ap.add_argument("--out", default="build/throughput.csv")
    args = ap.parse_args()
    dev = resolve_device(args.device)
    k = args.models or (8 if dev.type == "cuda" else 4)
    cfg = TrainConfig(batch_size=128, lr=0.05)
    bf16 = dataclasses.replace(cfg, precision="bf16")
    compiled = {} if args.no_compile else {"pgcore compile": dataclasses.replace(cfg, compile=True),
                                           "pgcore bf16+compile": dataclasses.replace(bf16, compile=True)}
    rows = []

    def compare(workload: str, variants: dict) -> None:
        """Measure the variants in turn, ``--repeats`` rounds, so drift in the machine's speed
        hits all of them alike; record the medians."""
        runs = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, measure in variants.items():
                runs[name].append(measure())
        base = float(np.median(runs["baseline"]))
        for name, values in runs.items():
            record(workload, name, float(np.median(values)), base)

    def record(workload, variant, ips, base):
        rows.append({"workload": workload, "variant": variant, "images_per_s": round(ips, 1),
                     "speedup_vs_baseline": round(ips / base, 2), "device": str(dev),
                     "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
                     "torch": torch.__version__, "threads": torch.get_num_threads()})
        print(f"{workload:10s} {variant:20s} {ips:12.1f} img/s   x{ips / base:5.2f} vs baseline", flush=True)

    if args.only in (None, "mlp", "cnn1d"):
        data = load(DataConfig(name="mnist1d"), dev)
        ds = torch.utils.data.TensorDataset(data.x_train.cpu(), data.y_train.cpu())
        loader = torch.utils.data.DataLoader(ds, batch_size=cfg.batch_size, shuffle=True, num_workers=0,
                                             pin_memory=dev.type == "cuda")
        workloads = {"mlp512": dict(name="mlp", width=512), "cnn1d64": dict(name="cnn1d", width=64)}
        for workload, spec in workloads.items():
            if args.only not in (None, spec["name"]):
                continue
            build = lambda spec=spec: models.build(spec["name"], data.input_shape, 10, width=spec["width"])  # noqa: E731
            torch.manual_seed(0)
            base_model = build().to(dev)
            mask = _half_mask(base_model)
            m = build().to(dev)
            e = args.epochs * 10  # an MNIST-1D epoch is 4,000 examples: time enough of them

            def fresh(model=m, state=base_model.state_dict()):
                model.load_state_dict(state)
                return model

            variants = {"baseline": lambda: bench_baseline(fresh(), loader, mask, dev, e, cfg),
                        "pgcore": lambda: bench_pgcore(fresh(), data, mask, dev, e, cfg),
                        "pgcore bf16": lambda: bench_pgcore(fresh(), data, mask, dev, e, bf16)}
            variants.update({name: lambda c=c: bench_pgcore(fresh(), data, mask, dev, e, c) for name, c in compiled.items()})
            variants[f"pgcore x{k}"] = lambda: bench_lockstep(build, mask, data, dev, e, cfg, k)
            compare(workload, variants)

    if args.only in (None, "resnet20"):
        n = args.cifar_n or (50000 if dev.type == "cuda" else 2560)
        data, x_u8, y = cifar_shaped(n, dev)
        torch.manual_seed(0)
        base_model = models.build("resnet20", (3, 32, 32), 10).to(dev)
        mask = _half_mask(base_model)
        loader = torch.utils.data.DataLoader(_ImageDataset(x_u8, y), batch_size=cfg.batch_size, shuffle=True,
                                             num_workers=args.workers, pin_memory=dev.type == "cuda",
                                             persistent_workers=args.workers > 0)
        m = models.build("resnet20", (3, 32, 32), 10).to(dev)
        build = lambda: models.build("resnet20", (3, 32, 32), 10)  # noqa: E731

        def fresh_resnet(model=m, state=base_model.state_dict()):
            model.load_state_dict(state)
            return model

        e = args.epochs
        variants = {"baseline": lambda: bench_baseline(fresh_resnet(), loader, mask, dev, e, cfg),
                    "pgcore": lambda: bench_pgcore(fresh_resnet(), data, mask, dev, e, cfg),
                    "pgcore bf16": lambda: bench_pgcore(fresh_resnet(), data, mask, dev, e, bf16)}
        variants.update({name: lambda c=c: bench_pgcore(fresh_resnet(), data, mask, dev, e, c) for name, c in compiled.items()})
        variants[f"pgcore x{k}"] = lambda: bench_lockstep(build, mask, data, dev, e, cfg, k)
        compare("resnet20", variants)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
