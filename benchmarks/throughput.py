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

Both train the same model with the same 50%-sparse mask on the same data: generated MNIST-1D for the
MLP and the `mnist1d` profile's 1D CNN, synthetic CIFAR-shaped tensors for ResNet-20, and for ``lenet``
(LeNet-300-100, ``params/paper-lenet.yaml``'s recipe: batch 128, SGD lr 0.1, no momentum, no weight decay;
the output layer left dense as that profile does) the real MNIST when it is in ``--data-dir`` (``pgcore
download mnist``), else 60,000 MNIST-shaped random uint8 images; ``--lenet-n`` caps the training images
(default all on a GPU, 12,800 on a CPU). The baseline sees the same images through per-sample
torchvision transforms. One warm-up epoch is excluded; CUDA timings are synchronized; each number is the
median of ``--repeats`` measurements. Prints images/s and the ratio, and writes a CSV (column ``data`` says
which data each workload used).

For every lenet variant the achieved GFLOP/s is also reported (column ``gflops``): training costs
6 FLOPs per weight per image (2 forward, 4 backward), counted dense over the three linear layers,
6 x 266,200 FLOPs per image. On a CPU the lenet variants run at pgcore's training thread count
(:data:`pgcore.protocols.CPU_THREADS`, one thread), and the same run measures one thread's sgemm peak
(2048 x 2048 fp32 matmul for about a second; row ``sgemm peak (1 thread)``); column ``of_peak`` is
achieved / peak. On CUDA there is no peak row and ``of_peak`` is empty. Both columns are empty for the
other workloads.

    python benchmarks/throughput.py --out build/throughput.csv
    python benchmarks/throughput.py --only lenet --data-dir data
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

from pgcore import config, models, pruning
from pgcore.batched import Ensemble
from pgcore.config import DataConfig, ModelConfig, TrainConfig, at_least
from pgcore.data import _STATS, Data, DataNotFoundError, load, torchvision_arrays
from pgcore.protocols import CPU_THREADS, fixed_threads, resolve_device
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


MNIST_TRAIN_N = 60000


def _subset(data: Data, n: int, dev: torch.device) -> Data:
    """The first ``n`` training examples of ``data``, everything on ``dev``."""
    return dataclasses.replace(
        data, x_train=data.x_train[:n].to(dev), y_train=data.y_train[:n].to(dev),
        y_train_clean=data.y_train_clean[:n].to(dev), noisy=data.noisy[:n].to(dev), x_val=data.x_val.to(dev),
        y_val=data.y_val.to(dev), x_test=data.x_test.to(dev), y_test=data.y_test.to(dev))


def mnist_data(data_dir: str, n: int | None, dev: torch.device) -> tuple[Data, np.ndarray, np.ndarray, str]:
    """MNIST for the lenet workload: the real training set from ``data_dir`` (through
    :func:`pgcore.data.load`) when it is there, else 60,000 random uint8 images of MNIST's shape.
    Returns pgcore Data (normalized, on ``dev``), the same first ``n`` images as raw uint8 N x 1 x 28 x 28
    arrays with their labels (for the baseline), and a description of the source."""
    try:
        data = load(DataConfig(name="mnist", data_dir=data_dir), "cpu")
        x_u8, y, *_ = torchvision_arrays("mnist", Path(data_dir).expanduser(), False)
        source = f"mnist (real, {data_dir})"
    except DataNotFoundError:
        rng = np.random.default_rng(0)
        x_u8 = rng.integers(0, 256, size=(MNIST_TRAIN_N, 1, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, size=MNIST_TRAIN_N).astype(np.int64)
        mean, std = _STATS["mnist"][0][0], _STATS["mnist"][1][0]
        x = torch.as_tensor(x_u8).float().div(255).sub(mean).div(std)
        yt = torch.as_tensor(y)
        data = Data("mnist-shaped", x, yt, yt, torch.zeros(len(yt), dtype=torch.bool), x[:0], yt[:0], x[:0], yt[:0],
                    10, augment=False)
        source = f"mnist-shaped random uint8 (no MNIST in {data_dir})"
    n = min(n or len(y), len(y))
    return _subset(data, n, dev), x_u8[:n], y[:n], source


class _MnistDataset(torch.utils.data.Dataset):
    """MNIST the torchvision way: a PIL image per sample, ToTensor, Normalize (no augmentation)."""

    def __init__(self, x_u8: np.ndarray, y: np.ndarray):
        from torchvision import transforms

        self.x, self.y = x_u8, y
        self.t = transforms.Compose([transforms.ToTensor(), transforms.Normalize(*_STATS["mnist"])])

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        from PIL import Image

        return self.t(Image.fromarray(self.x[i, 0])), int(self.y[i])


def linear_weights(model: torch.nn.Module) -> int:
    """Weights of the model's linear layers, counted dense (one multiply-add each per image, forward)."""
    return sum(m.weight.numel() for m in model.modules() if isinstance(m, torch.nn.Linear))


def sgemm_peak(n: int = 2048, seconds: float = 1.0, threads: int = CPU_THREADS) -> float:
    """GFLOP/s of square fp32 matmuls (2n^3 FLOPs each) on the CPU at ``threads`` threads, repeated
    for about ``seconds`` after one warm-up; the thread count is restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        g = torch.Generator().manual_seed(0)
        a, b = torch.randn(n, n, generator=g), torch.randn(n, n, generator=g)
        c = torch.empty(n, n)
        torch.mm(a, b, out=c)  # warm-up
        reps, tic = 0, time.perf_counter()
        while True:
            torch.mm(a, b, out=c)
            reps += 1
            elapsed = time.perf_counter() - tic
            if elapsed >= seconds:
                return 2 * n**3 * reps / elapsed / 1e9
    finally:
        torch.set_num_threads(before)


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


def _half_mask(model: torch.nn.Module, ignore: tuple[str, ...] = ()) -> pruning.Mask:
    mask = pruning.dense_mask(model, ignore=ignore)
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


def variants_of(build, base_model, loader, data: Data, mask, dev, epochs: int, cfg: TrainConfig, k: int,
                compile_too: bool) -> dict:
    """The variants compared on one workload, each a function that times it: the baseline, pgcore
    eager (fp32, bf16), compiled (unless ``compile_too`` is False) and K models in lockstep. Every
    single-model variant starts from ``base_model``'s weights."""
    model, state = build().to(dev), base_model.state_dict()

    def fresh():
        model.load_state_dict(state)
        return model

    bf16 = dataclasses.replace(cfg, precision="bf16")
    configs = {"pgcore": cfg, "pgcore bf16": bf16}
    if compile_too:
        configs.update({"pgcore compile": dataclasses.replace(cfg, compile=True),
                        "pgcore bf16+compile": dataclasses.replace(bf16, compile=True)})
    out = {"baseline": lambda: bench_baseline(fresh(), loader, mask, dev, epochs, cfg)}
    out.update({name: lambda c=c: bench_pgcore(fresh(), data, mask, dev, epochs, c) for name, c in configs.items()})
    out[f"pgcore x{k}"] = lambda: bench_lockstep(build, mask, data, dev, epochs, cfg, k)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=at_least(1), default=2, help="timed epochs per measurement (after one warm-up)")
    ap.add_argument("--mnist1d-epochs", type=at_least(1), default=None,
                    help="timed epochs for mlp and cnn1d (default 10 x --epochs: an MNIST-1D epoch is 4,000 examples)")
    ap.add_argument("--cifar-n", type=at_least(1), default=None,
                    help="CIFAR-shaped images (default 50000 on GPU, 2560 on CPU)")
    ap.add_argument("--workers", type=at_least(0), default=min(4, os.cpu_count() or 1),
                    help="DataLoader workers for the baseline")
    ap.add_argument("--lenet-n", type=at_least(1), default=None,
                    help="MNIST training images for lenet (default all on GPU, 12800 on CPU)")
    ap.add_argument("--data-dir", default="data", help="where MNIST lives (`pgcore download mnist`); else random MNIST-shaped data")
    ap.add_argument("--only", choices=["mlp", "cnn1d", "lenet", "resnet20"], default=None)
    ap.add_argument("--models", type=at_least(1), default=None,
                    help="K for the lockstep variant (default 8 on GPU, 4 on CPU)")
    ap.add_argument("--repeats", type=at_least(1), default=3, help="measurements per variant; the median is reported")
    ap.add_argument("--no-compile", action="store_true", help="leave out the torch.compile variants")
    ap.add_argument("--out", default="build/throughput.csv")
    args = ap.parse_args()
    try:
        dev = resolve_device(args.device)
    except RuntimeError as e:  # an unknown device, or CUDA absent
        ap.error(f"--device {args.device}: {e}")
    k = args.models or (8 if dev.type == "cuda" else 4)
    cfg = TrainConfig(batch_size=128, lr=0.05)
    rows = []

    def compare(workload: str, variants: dict, data: str, flops: float | None = None, peak: float | None = None) -> None:
        """Measure the variants in turn, ``--repeats`` rounds, so drift in the machine's speed
        hits all of them alike; record the medians. ``flops``: training FLOPs per image (adds GFLOP/s);
        ``peak``: GFLOP/s to compare them with."""
        runs = {name: [] for name in variants}
        for _ in range(args.repeats):
            for name, measure in variants.items():
                runs[name].append(measure())
        base = float(np.median(runs["baseline"]))
        for name, values in runs.items():
            record(workload, name, float(np.median(values)), base, data, flops, peak)

    def record(workload, variant, ips, base, data, flops=None, peak=None):
        gflops = ips * flops / 1e9 if flops else None
        row = {"workload": workload, "variant": variant, "images_per_s": round(ips, 1),
               "speedup_vs_baseline": round(ips / base, 2), "gflops": "" if gflops is None else round(gflops, 3),
               "of_peak": "" if gflops is None or not peak else round(gflops / peak, 4)}
        rows.append(dict(row, **common(data)))
        line = f"{workload:10s} {variant:21s} {ips:12.1f} img/s   x{ips / base:5.2f} vs baseline"
        if gflops is not None:
            line += f"   {gflops:8.2f} GFLOP/s"
            if peak:
                line += f"  {gflops / peak:6.1%} of peak"
        print(line, flush=True)

    def common(data: str) -> dict:
        return {"data": data, "device": str(dev),
                "device_name": torch.cuda.get_device_name(dev) if dev.type == "cuda" else platform.processor() or platform.machine(),
                "torch": torch.__version__, "threads": torch.get_num_threads()}

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
            e = args.mnist1d_epochs or args.epochs * 10  # an MNIST-1D epoch is 4,000 examples: time enough of them
            variants = variants_of(build, base_model, loader, data, mask, dev, e, cfg, k, not args.no_compile)
            compare(workload, variants, data.name)

    if args.only in (None, "lenet"):
        n = args.lenet_n or (None if dev.type == "cuda" else 12800)
        lcfg = TrainConfig(batch_size=128, lr=0.1, momentum=0.0, weight_decay=0.0, schedule="constant")
        data, x_u8, y, source = mnist_data(args.data_dir, n, dev)
        spec = ModelConfig(name="lenet_300_100")
        build = lambda: models.build(spec, (1, 28, 28), 10)  # noqa: E731
        torch.manual_seed(0)
        base_model = build().to(dev)
        mask = _half_mask(base_model, config.DENSE_BY_DEFAULT.get(spec.name, ()))
        flops = 6 * linear_weights(base_model)  # 6 x 266,200
        loader = torch.utils.data.DataLoader(_MnistDataset(x_u8, y), batch_size=lcfg.batch_size, shuffle=True,
                                             num_workers=args.workers, pin_memory=dev.type == "cuda",
                                             persistent_workers=args.workers > 0)

        variants = variants_of(build, base_model, loader, data, mask, dev, args.epochs, lcfg, k, not args.no_compile)
        threads = (f"; CPU variants at {CPU_THREADS} thread{'s' if CPU_THREADS > 1 else ''} as pgcore trains "
                   f"(pgcore.protocols.CPU_THREADS)" if dev.type == "cpu" else "")
        print(f"lenet: LeNet-300-100 on {source}, {len(y)} training images, batch 128, SGD lr 0.1, "
              f"{flops:,} training FLOPs per image{threads}", flush=True)
        with fixed_threads(dev):
            peak = None
            if dev.type == "cpu":
                peak = sgemm_peak(threads=CPU_THREADS)
                label = f"sgemm peak ({CPU_THREADS} thread{'s' if CPU_THREADS > 1 else ''})"
                rows.append(dict({"workload": "lenet", "variant": label, "images_per_s": "", "speedup_vs_baseline": "",
                                  "gflops": round(peak, 3), "of_peak": 1.0}, **common(source)))
                print(f"{'lenet':10s} {label:21s} {'':12s}                           {peak:8.2f} GFLOP/s", flush=True)
            compare("lenet", variants, source, flops, peak)

    if args.only in (None, "resnet20"):
        n = args.cifar_n or (50000 if dev.type == "cuda" else 2560)
        data, x_u8, y = cifar_shaped(n, dev)
        torch.manual_seed(0)
        base_model = models.build("resnet20", (3, 32, 32), 10).to(dev)
        mask = _half_mask(base_model)
        loader = torch.utils.data.DataLoader(_ImageDataset(x_u8, y), batch_size=cfg.batch_size, shuffle=True,
                                             num_workers=args.workers, pin_memory=dev.type == "cuda",
                                             persistent_workers=args.workers > 0)
        build = lambda: models.build("resnet20", (3, 32, 32), 10)  # noqa: E731
        variants = variants_of(build, base_model, loader, data, mask, dev, args.epochs, cfg, k, not args.no_compile)
        compare("resnet20", variants, "cifar-shaped random")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
