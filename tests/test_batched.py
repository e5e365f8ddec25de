"""K models in lockstep (torch.func) give the numbers of K separate runs, to float tolerance."""

import copy

import pytest
import torch

from pgcore import models, pruning
from pgcore import train as T
from pgcore.batched import train_many
from pgcore.config import TrainConfig, from_dict, override
from pgcore.data import Data
from pgcore.protocols import run_seeds
from pgcore.store import Run


def _images(n=96, classes=4, seed=0):
    """A tiny CIFAR-shaped dataset (3x8x8) with augmentation on: exercises crop/flip and BatchNorm."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 8, 8, generator=g)
    y = torch.randint(0, classes, (n,), generator=g)
    return Data(name="synthetic", x_train=x, y_train=y, y_train_clean=y, noisy=torch.zeros(n, dtype=torch.bool),
                x_val=x[:16], y_val=y[:16], x_test=x[:32], y_test=y[:32], num_classes=classes, augment=True)


def _mnist1d(tiny_params):
    from pgcore.data import load

    return load(from_dict(tiny_params).data)


@pytest.mark.parametrize("kind", ["mlp", "resnet"])
def test_train_many_matches_separate_runs(kind, tiny_params):
    if kind == "mlp":
        data = _mnist1d(tiny_params)
        build = lambda: models.build("mlp", data.input_shape, data.num_classes, width=32, depth=2)  # noqa: E731
        cfg = TrainConfig(epochs=2, batch_size=64, lr=0.1, momentum=0.9, weight_decay=1e-3, nesterov=True)
    else:
        data = _images()
        build = lambda: models.build("resnet20", data.input_shape, data.num_classes, width=4)  # noqa: E731
        cfg = TrainConfig(epochs=2, batch_size=32, lr=0.05, momentum=0.9, weight_decay=5e-4, schedule="step", milestones=(1,))
    seeds = [0, 1, 2]
    start, masks = [], []
    for s in seeds:
        torch.manual_seed(s)
        m = build()
        mask = pruning.dense_mask(m, ("conv", "linear"), ())
        mask = pruning.prune(pruning.magnitude_scores(m, mask), mask, 0.2 * (s + 1))  # a different mask per model
        pruning.apply(m, mask)
        start.append(m)
        masks.append(mask)
    alone = [copy.deepcopy(m) for m in start]
    together = [copy.deepcopy(m) for m in start]
    ref = [T.train(m, data, cfg, seed=s, stream=2, mask=mk, progress=False) for m, s, mk in zip(alone, seeds, masks)]
    got = train_many(together, data, cfg, seeds=seeds, stream=2, masks=masks, progress=False)
    for a, b, ra, rb, mask in zip(alone, together, ref, got, masks):
        for (name, pa), pb in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.allclose(pa.float(), pb.float(), atol=1e-4, rtol=1e-4), name
        params = dict(b.named_parameters())
        assert all((params[n][~m] == 0).all() for n, m in mask.items()), "pruned weights must stay exactly zero"
        assert len(ra.history) == len(rb.history)
        for src in ("train", "test"):
            assert rb.final[src]["loss"] == pytest.approx(ra.final[src]["loss"], rel=1e-4, abs=1e-5)
        assert torch.allclose(ra.per_example_loss, rb.per_example_loss, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("retrain", ["lrr", "rewind"])
def test_lockstep_protocol_equals_sequential(tiny_params, tmp_path, retrain):
    params = override(tiny_params, {"prune.retrain": retrain, "prune.rewind_epoch": 1})
    seq = run_seeds(params, [0, 1], root=tmp_path / "seq", device="cpu", progress=False, lockstep=False).frame()
    lock = run_seeds(params, [0, 1], root=tmp_path / "lock", device="cpu", progress=False, lockstep=True)
    df = lock.frame()
    assert seq[["seed", "level", "source", "sparsity", "epochs_total"]].equals(df[["seed", "level", "source", "sparsity", "epochs_total"]])
    assert (seq.loss - df.loss).abs().max() < 1e-4
    assert Run(lock.runs[0].cfg, tmp_path / "lock").load_metrics(1)["models_in_lockstep"] == 2


def test_lockstep_resumes_seeds_at_different_levels(tiny_params, tmp_path):
    params = override(tiny_params, {"prune.retrain": "rewind", "prune.rewind_epoch": 1})  # level 0 trained by imp itself
    full = run_seeds(params, [0, 1], root=tmp_path / "a", device="cpu", progress=False, lockstep=True).frame()
    # seed 0 was interrupted after level 1; seed 1 never started
    part = run_seeds(params, [0], root=tmp_path / "b", device="cpu", progress=False, lockstep=True).runs[0]
    for level in (2, 3):
        (part.path / f"level_{level:03d}.json").unlink()
    (part.path / "done.json").unlink()
    resumed = run_seeds(params, [0, 1], root=tmp_path / "b", device="cpu", progress=False, lockstep="auto")
    df = resumed.frame()
    assert all(r.is_done() for r in resumed.runs) and resumed.runs[0].cfg.execution == "lockstep"
    assert (full.loss - df.loss).abs().max() < 1e-4
    assert resumed.runs[1].load_metrics(0)["models_in_lockstep"] == 1  # seed 1 alone until it catches up
    assert resumed.runs[0].load_metrics(2)["models_in_lockstep"] == 2


def test_lockstep_and_sequential_runs_never_share_a_directory(tiny_params, tmp_path):
    seq = run_seeds(tiny_params, [0], root=tmp_path, device="cpu", progress=False, lockstep=False).runs[0]
    lock = run_seeds(tiny_params, [0], root=tmp_path, device="cpu", progress=False, lockstep=True).runs[0]
    assert seq.path != lock.path and lock.load_metrics(1)["execution"] == "lockstep"
    # auto continues the mode the store already holds instead of starting over in another one
    again = run_seeds(tiny_params, [0, 1], root=tmp_path / "fresh", device="cpu", progress=False, lockstep=False)
    assert run_seeds(tiny_params, [0, 1], root=tmp_path / "fresh", device="cpu", progress=False).runs[0].path == again.runs[0].path
