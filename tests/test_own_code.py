"""A researcher's own model and dataset, named by import path (tests/own_code.py), run through
every protocol, every figure's runs and every claim without a change to pgcore; their source
is part of the run's hash."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pandas as pd
import pytest

from pgcore import claims
from pgcore.config import ConfigError, from_dict, override
from pgcore.data import load
from pgcore.protocols import run
from pgcore.study import Study

OWN = {"data": {"name": "own_code:blobs", "val_fraction": 0.2},
       "model": {"name": "own_code:WideMLP", "width": 24},
       "train": {"epochs": 2, "batch_size": 64, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "schedule": "cosine"},
       "prune": {"levels": 2, "rate": 0.3}}


def own_study(root) -> Study:
    params = {**OWN, "seeds": [0, 1], "progress": False, "variants": {"rewind": {"retrain": "rewind"}},
              "noise_fractions": [0.2], "noise_levels": 2, "stretched_levels": 1, "pai_methods": ["snip", "random"],
              "tie_fraction": 0.1, "tie_levels": "all", "recipes": {"paper": {"momentum": 0.0, "schedule": "constant"}}}
    return Study.from_dict(params, root=root, device="cpu", progress=False)


def test_every_figure_and_claim_runs_on_own_model_and_data(tmp_path):
    study = own_study(tmp_path)
    for need in study.expand():
        study.compute(need)
    assert set(study.plan().state) == {"done"}
    imp, ext = study.frame("imp"), study.frame("extended_dense")
    assert sorted(imp.level.unique()) == [0, 1, 2] and (imp.run.str.len() == 12).all()
    noisy = study.frame("imp", study.noise_changes(0.2)["imp"])
    controls = {"random": study.frame("imp", {"prune.method": "random"}), "reinit": study.frame("reinit")}
    tie = pd.concat([study.tie(k) for k in study.tie_levels()], ignore_index=True)
    verdicts = [
        claims.pruning_improves_test_error(imp), claims.pruning_improves_training(imp),
        claims.training_time_explains_gain(imp, ext, "replayed cycles"),
        claims.pruning_regularizes_noise(noisy, study.frame("imp", study.noise_changes(0.0)["imp"]), 0.2),
        claims.size_alone_falls_short(imp, controls),
        claims.both_factors_reproduce_pruning(imp, study.frame("extended_oneshot"), ext, controls["reinit"]),
        claims.improved_examples_matter(tie, imp),
        claims.gain_shrinks_when_dense_is_trained_well(
            {"own": imp, "paper": study.frame("imp", dict(study.recipe_changes("paper")))}),
    ]
    assert all(v.status and v.summary for v in verdicts)


def test_own_dataset_is_split_and_checked(tmp_path):
    data = load(from_dict(OWN).data)
    assert data.num_classes == 4 and data.input_shape == (16,)
    assert len(data.y_train) == 320 and len(data.y_val) == 80 and len(data.y_test) == 200
    with pytest.raises(TypeError, match="must return four tensors"):
        load(from_dict(override(OWN, {"data.name": "own_code:not_tensors"})).data)


def test_hash_covers_the_source_of_own_code(tmp_path, monkeypatch):
    (tmp_path / "mine.py").write_text("from own_code import WideMLP as Net\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    cfg = from_dict(override(OWN, {"model.name": "mine:Net"}))
    first = run(cfg, tmp_path / "store", "cpu", progress=False)
    assert cfg.science_dict()["code"]["mine:Net"] and first.is_done()
    assert run(from_dict(override(OWN, {"model.name": "mine:Net"})), tmp_path / "store", "cpu", progress=False).path == first.path
    before = cfg.hash()
    (tmp_path / "mine.py").write_text("from own_code import WideMLP as Net  # edited\n")
    importlib.reload(sys.modules["mine"])
    assert from_dict(override(OWN, {"model.name": "mine:Net"})).hash() != before


@pytest.mark.parametrize("name, message", [("own_code:Missing", "cannot import 'own_code:Missing'"),
                                           ("no_such_module:Net", "cannot import 'no_such_module:Net'"),
                                           ("own_code:torch", "is not callable"),
                                           ("lenet-300", "unknown model 'lenet-300'")])
def test_a_bad_model_name_is_one_clear_error(name, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(override(OWN, {"model.name": name}))


def test_store_commands_say_when_own_code_does_not_import(tmp_path):
    stored = run(from_dict({**OWN, "protocol": "train"}), tmp_path / "store", "cpu", progress=False)
    # Asked to import the own code (a store command does not otherwise), where tests/ (own_code.py) is not importable.
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"} | {"PGCORE_IMPORT_OWN_CODE": "1"}
    proc = subprocess.run([sys.executable, "-m", "pgcore.cli", "verify", "--all", "--store", str(tmp_path / "store")],
                          cwd=tmp_path, env=env, capture_output=True, text=True)
    assert proc.returncode == 1, proc.stderr
    assert f"{stored.path} was computed by your own data code, which does not import here" in proc.stdout
    assert "PYTHONPATH" in proc.stdout and "delete" not in proc.stdout  # the run is fine: nothing to delete
