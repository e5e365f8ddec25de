"""Wall time of one full training run at the paper's settings, and what a pruning curve costs.

Trains ResNet-20 with ``params/paper.yaml``'s training schedule (160 epochs, SGD 0.1 ×0.1 at
80/120, batch 128, weight decay 1e-4, evaluation every 10 epochs) through ``pgcore.train.train``
on synthetic tensors of CIFAR-10's shape (50,000 training and 10,000 test images), so no
download is needed, under the same deterministic cuDNN settings as the protocols. Then projects one 20-level IMP curve × 3 seeds (21 trainings per seed)
from the measured time; with ``--lockstep K`` it also times K models in lockstep.

    python benchmarks/full_run.py                                # the paper's 160 epochs (GPU)
    python benchmarks/full_run.py --epochs 1 --train-n 2560      # a quick look on a CPU
    python benchmarks/full_run.py --set train.precision=bf16 --set train.compile=true

Writes a JSON record (config, device, times, projection) to ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from pgcore import models
from pgcore.batched import train_many
from pgcore.config import ConfigError, at_least, from_dict, load_yaml, set_value
from pgcore.protocols import deterministic_kernels, resolve_device
from pgcore.provenance import provenance
from pgcore.train import train

from throughput import _sync, cifar_shaped


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default="params/paper.yaml")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a setting")
    ap.add_argument("--epochs", type=at_least(1), default=None,
                    help="train this many epochs of the schedule (default: all)")
    ap.add_argument("--train-n", type=at_least(1), default=50000)
    ap.add_argument("--test-n", type=at_least(1), default=10000)
    ap.add_argument("--lockstep", type=at_least(0), default=0, help="also time K models in lockstep (K seeds)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--out", default="build/full_run.json")
    args = ap.parse_args()

    try:
        params = load_yaml(args.params)
        for assignment in args.set:
            set_value(params, assignment)
        cfg = from_dict(params)
        dev = resolve_device(args.device)
    except (ConfigError, RuntimeError) as e:  # RuntimeError: an unknown device, or CUDA absent
        ap.error(str(e))
    deterministic_kernels(dev)  # the cuDNN settings the protocols train under
    data = synthetic_cifar(args.train_n, args.test_n, dev)
    epochs = args.epochs or cfg.train.epochs
    runs_per_curve = cfg.prune.levels + 1
    seeds = len(params.get("seeds", [0, 1, 2]))

    def build() -> torch.nn.Module:
        return models.build(cfg.model, data.input_shape, data.num_classes).to(dev)

    # untimed warm-up of both paths on a few batches (allocator, kernels, any compilation)
    warm = synthetic_cifar(min(args.train_n, 4 * cfg.train.batch_size), 64, dev)
    one_epoch = dataclasses.replace(cfg.train, epochs=1)
    train(build(), warm, one_epoch, seed=0, progress=False)
    if args.lockstep:
        train_many([build() for _ in range(args.lockstep)], warm, one_epoch, seeds=list(range(args.lockstep)), progress=False)

    torch.manual_seed(0)
    model = build()
    _sync(dev)
    tic = time.perf_counter()
    res = train(model, data, dataclasses.replace(cfg.train, epochs=epochs), seed=0,
                progress=True, desc="resnet20")
    _sync(dev)
    seconds = time.perf_counter() - tic
    full = seconds * cfg.train.epochs / epochs
    record = {
        "data": "synthetic, CIFAR-10-shaped", "model": dataclasses.asdict(cfg.model),
        "train": dataclasses.asdict(cfg.train), "prune_levels": cfg.prune.levels, "epochs_timed": epochs, "train_n": args.train_n, "test_n": args.test_n,
        "seconds": round(seconds, 2), "seconds_per_epoch": round(seconds / epochs, 3),
        "projected_full_run_s": round(full, 1),
        "projected_curve_x_seeds_s": round(full * runs_per_curve * seeds, 1),
        "final_train_loss": res.final["train"]["loss"], "provenance": provenance(dev),
    }
    print(f"one run on {args.train_n:,} training images: {epochs} epochs in {seconds:.1f} s "
          f"({seconds / epochs:.2f} s/epoch, {args.train_n * epochs / seconds:,.0f} img/s); "
          f"{cfg.train.epochs} epochs: {full / 60:.1f} min")
    print(f"one {cfg.prune.levels}-level IMP curve x {seeds} seeds ({runs_per_curve * seeds} runs), one at a time: "
          f"{record['projected_curve_x_seeds_s'] / 3600:.2f} h")

    if args.lockstep:
        k = args.lockstep
        ms = []
        for i in range(k):
            torch.manual_seed(i)
            ms.append(build())
        _sync(dev)
        tic = time.perf_counter()
        train_many(ms, data, dataclasses.replace(cfg.train, epochs=epochs), seeds=list(range(k)),
                   progress=True, desc="resnet20")
        _sync(dev)
        lock = time.perf_counter() - tic
        lock_full = lock * cfg.train.epochs / epochs
        record.update({"lockstep_models": k, "lockstep_seconds": round(lock, 2),
                       "lockstep_speedup": round(k * seconds / lock, 2),
                       "projected_curve_x_seeds_lockstep_s": round(lock_full * runs_per_curve * -(-seeds // k), 1)})
        print(f"{k} models in lockstep: {lock:.1f} s ({record['lockstep_speedup']:.2f}x the aggregate throughput); "
              f"curve x {seeds} seeds: {record['projected_curve_x_seeds_lockstep_s'] / 3600:.2f} h")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(record, indent=2))
    print(f"wrote {out}")


def synthetic_cifar(train_n: int, test_n: int, dev: torch.device):
    """CIFAR-10-shaped random images: a training set with augmentation and a test set."""
    data, _, _ = cifar_shaped(train_n + test_n, dev)
    return dataclasses.replace(data, x_train=data.x_train[:train_n], y_train=data.y_train[:train_n],
                               y_train_clean=data.y_train[:train_n], noisy=data.noisy[:train_n],
                               x_test=data.x_train[train_n:], y_test=data.y_train[train_n:])


if __name__ == "__main__":
    main()
