"""Speed settings: bf16 autocast and torch.compile keep the training semantics (masks stay zero)."""

import copy
import dataclasses
import warnings

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
    with pytest.warns(RuntimeWarning) as caught:
        res = T.train(model, data, cfg.train, seed=0, mask=mask, progress=False)
    messages = [str(w.message) for w in caught]
    assert any(m.startswith("torch.compile failed") for m in messages), messages
    assert any(m.startswith("torch.compile of the optimizer step failed") for m in messages), messages
    ref = T.train(eager_model, data, dataclasses.replace(cfg.train, compile=False), seed=0, mask=mask, progress=False)
    for src in ("train", "val", "test"):
        assert res.final[src] == ref.final[src]


def test_compiled_step_equals_eager_and_keeps_masks(tiny_params, monkeypatch):
    """The compiled path (model and masked optimizer step, lr as a tensor) traced by Dynamo.

    The ``aot_eager`` backend runs the same captured graphs as inductor without generating
    C++, which keeps this test fast; a failure to trace would fall back with a warning,
    which this test turns into an error."""
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend="aot_eager"))
    train = {"momentum": 0.9, "weight_decay": 1e-2, "nesterov": True}
    cfg, data, model, mask = _setup(tiny_params, compile=True, **train)
    ref_cfg, _, ref_model, _ = _setup(tiny_params, **train)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        res = T.train(model, data, cfg.train, seed=0, mask=mask, progress=False)
    ref = T.train(ref_model, data, ref_cfg.train, seed=0, mask=mask, progress=False)
    params = dict(model.named_parameters())
    assert all((params[n][~m] == 0).all() for n, m in mask.items())
    for p, q in zip(model.parameters(), ref_model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    assert res.final["train"]["loss"] == pytest.approx(ref.final["train"]["loss"], rel=1e-5)
    assert [h["lr"] for h in res.history] == [h["lr"] for h in ref.history]


def test_compiled_step_is_compiled_once_for_all_levels(tiny_params, monkeypatch):
    """A new model and optimizer state at every level must reuse the compiled update: guards
    on object identity would recompile each level and, past Dynamo's limit, silently run eagerly."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real_compile(fn, backend=counting_backend))
    torch._dynamo.reset()
    cfg, data, _, _ = _setup(tiny_params, compile=True, momentum=0.9)
    for level in range(12):
        torch.manual_seed(level)
        model = models.build(cfg.model, data.input_shape, data.num_classes)
        dense = pruning.dense_mask(model)
        mask = pruning.prune(pruning.random_scores(dense, torch.Generator().manual_seed(level)), dense, 0.05 + 0.05 * level)
        step = T.MaskedStep(model, cfg.train, mask)
        for i in range(3):
            step.zero_grad()
            model(data.x_train[:64]).sum().backward()
            step.set_lr(0.1 / (i + 1))
            step()
        assert float(step.lr) == pytest.approx(0.1 / 3)
    assert len(graphs) == 1, f"the update was compiled {len(graphs)} times for 12 levels"
