"""Speed settings: bf16 autocast and torch.compile keep the training semantics (masks stay zero)."""

import copy
import dataclasses

import pytest
import torch

from pgcore import models, pruning
from pgcore import train as T
from pgcore.config import ConfigError, from_dict, override
from pgcore.data import load


def _setup(tiny_params, **train):
    cfg = from_dict(override(tiny_params, {f"train.{k}": v for k, v in train.items()}))
    data = load(cfg.data)
    torch.manual_seed(0)
    model = models.build(cfg.model, data.input_shape, data.num_classes)
    mask = pruning.dense_mask(model)
    mask = pruning.prune(pruning.magnitude_scores(model, mask), mask, 0.5)
    pruning.apply(model, mask)
    return cfg, data, model, mask


def test_bf16_autocast_trains_and_keeps_masks(tiny_params):
    cfg, data, model, mask = _setup(tiny_params, precision="bf16")
    ref_cfg, _, ref_model, _ = _setup(tiny_params)
    res = T.train(model, data, cfg.train, seed=0, mask=mask, progress=False)
    ref = T.train(ref_model, data, ref_cfg.train, seed=0, mask=mask, progress=False)
    params = dict(model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in mask.items())
    assert all(p.dtype == torch.float32 for p in model.parameters()), "weights stay fp32 under autocast"
    assert torch.isfinite(torch.tensor(res.final["train"]["loss"]))
    assert res.final["train"]["loss"] != ref.final["train"]["loss"], "bf16 must actually change the arithmetic"
    assert res.final["train"]["loss"] == pytest.approx(ref.final["train"]["loss"], rel=0.1)
    assert cfg.hash() != ref_cfg.hash()


def test_speed_settings_are_validated_and_absent_from_default_hashes(tiny_params):
    with pytest.raises(ConfigError, match="precision"):
        from_dict(override(tiny_params, {"train.precision": "fp8"}))
    with pytest.raises(ConfigError, match="compile"):
        from_dict(override(tiny_params, {"train.compile": "yes"}))
    d = from_dict(tiny_params).science_dict()["train"]
    assert "precision" not in d and "compile" not in d


def test_compile_failure_falls_back_to_eager_with_a_warning(tiny_params, monkeypatch):
    cfg, data, model, mask = _setup(tiny_params, compile=True)
    eager_model = copy.deepcopy(model)

    def broken_compile(m, *a, **k):
        def run(x):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    with pytest.warns(RuntimeWarning, match="torch.compile failed"):
        res = T.train(model, data, cfg.train, seed=0, mask=mask, progress=False)
    ref = T.train(eager_model, data, dataclasses.replace(cfg.train, compile=False), seed=0, mask=mask, progress=False)
    for src in ("train", "val", "test"):
        assert res.final[src] == ref.final[src]
