import pytest
import torch

from pgcore import models, pruning
from pgcore.config import TrainConfig
from pgcore.data import load
from pgcore.config import DataConfig
from pgcore.train import train


def _model(seed=0):
    torch.manual_seed(seed)
    return models.build("mlp", (40,), 10, width=64, depth=2)


@pytest.mark.parametrize("scope", ["global", "layerwise"])
@pytest.mark.parametrize("method", ["magnitude", "random"])
def test_sparsity_after_k_levels_is_one_minus_point8_to_the_k(scope, method):
    model = _model()
    mask = pruning.dense_mask(model)
    g = torch.Generator().manual_seed(0)
    for k in range(1, 13):
        scores = pruning.magnitude_scores(model, mask) if method == "magnitude" else pruning.random_scores(mask, g)
        new = pruning.prune(scores, mask, 0.2, scope)
        assert not any((new[n] & ~mask[n]).any() for n in mask), "a pruned weight came back"
        mask = new
        assert pruning.sparsity(mask) == pytest.approx((1 - 0.8 ** k), abs=2e-3)
        if scope == "layerwise":
            for s in pruning.layer_sparsity(mask).values():
                assert s == pytest.approx((1 - 0.8 ** k), abs=0.05)


def test_global_magnitude_removes_exactly_the_smallest_weights():
    model = _model()
    mask = pruning.dense_mask(model)
    new = pruning.prune(pruning.magnitude_scores(model, mask), mask, 0.2)
    params = dict(model.named_parameters())
    kept = torch.cat([params[n].detach().abs()[new[n]] for n in new])
    removed = torch.cat([params[n].detach().abs()[~new[n]] for n in new])
    assert removed.max() <= kept.min()
    total = sum(m.numel() for m in mask.values())
    assert len(removed) == round(0.2 * total)


def test_prunable_set_is_configurable():
    model = models.build("resnet20", (3, 32, 32), 10)
    names = pruning.prunable_names(model)
    assert "fc.weight" in names and "conv.weight" in names
    assert not any("bn" in n or n.endswith("bias") for n in names)
    assert "fc.weight" not in pruning.prunable_names(model, ignore=["fc.weight"])
    assert pruning.prunable_names(model, kinds=["linear"]) == ["fc.weight"]
    with pytest.raises(ValueError, match="not prunable weights"):
        pruning.prunable_names(model, ignore=["fc.bias"])


def test_pruned_weights_stay_exactly_zero_through_training():
    data = load(DataConfig(num_samples=500), "cpu")
    model = _model()
    mask = pruning.dense_mask(model)
    for _ in range(5):  # 67% sparse
        mask = pruning.prune(pruning.magnitude_scores(model, mask), mask, 0.2)
    pruning.apply(model, mask)
    # Momentum and weight decay would move a zero weight whose gradient is not masked.
    cfg = TrainConfig(epochs=3, batch_size=32, lr=0.5, momentum=0.9, weight_decay=1e-2)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    train(model, data, cfg, seed=0, mask=mask, progress=False)
    params = dict(model.named_parameters())
    for n, m in mask.items():
        assert torch.all(params[n][~m] == 0), f"{n}: pruned weights moved"
        assert not torch.equal(params[n][m], before[n][m]), f"{n}: surviving weights did not train"


def test_bad_rate_is_rejected():
    model = _model()
    mask = pruning.dense_mask(model)
    with pytest.raises(ValueError, match="rate"):
        pruning.prune(pruning.magnitude_scores(model, mask), mask, 1.0)
