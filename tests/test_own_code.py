"""A researcher's own model and dataset, named by import path (tests/own_code.py), run through
every protocol, every figure's runs and every claim without a change to pgcore; their source
is part of the run's hash."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import matplotlib
import pytest
import torch

import own_code

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from pgcore.config import ConfigError, from_dict, override
from pgcore.data import load
from pgcore.protocols import run
from pgcore.figures import FIGURES
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
        study.train(need)
    assert set(study.plan().state) == {"done"}
    imp = study.frame("imp")
    assert sorted(imp.level.unique()) == [0, 1, 2] and (imp.run.str.len() == 12).all()
    verdicts = []
    for name, entry in FIGURES.items():
        if entry.make is not None:
            made = entry.make(study.params, study.frames(name), study.title)
            verdicts += list(made.verdicts.values() if isinstance(made.verdicts, dict) else made.verdicts)
            plt.close(made.fig)
    assert len(verdicts) >= 9
    assert all(v.status and v.summary for v in verdicts)


def test_own_dataset_is_split_and_checked(tmp_path):
    data = load(from_dict(OWN).data)
    assert data.num_classes == 4 and data.input_shape == (16,)
    assert len(data.y_train) == 320 and len(data.y_val) == 80 and len(data.y_test) == 200
    with pytest.raises(ValueError, match=r"expects four tensors \(x_train, y_train, x_test, y_test\)"):
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


class _SevenLogits(torch.nn.Module):
    def __init__(self, input_shape, num_classes):
        super().__init__()
        self.fc = torch.nn.Linear(16, 7)

    def forward(self, x):
        return self.fc(x)


class _NoSizes(torch.nn.Module):
    def __init__(self):
        super().__init__()


def _int32_blobs(data_seed):
    x_train, y_train, x_test, y_test = own_code.blobs(data_seed)
    return x_train, y_train.int(), x_test, y_test.int()


def _datasets(data_seed):
    x_train, y_train, x_test, y_test = own_code.blobs(data_seed)
    return torch.utils.data.TensorDataset(x_train, y_train), torch.utils.data.TensorDataset(x_test, y_test)


@pytest.mark.parametrize("model, message", [
    ("test_own_code:_SevenLogits", r"returned \(4, 7\) for a batch of 4; pgcore builds it as "
                                   r"test_own_code:_SevenLogits\(\(16,\), 4\)"),
    ("test_own_code:_NoSizes", r"failed \(TypeError: .*takes 1 positional argument.*\); pgcore builds it as"),
])
def test_a_wrong_model_is_refused_before_anything_is_stored(tmp_path, model, message):
    from pgcore.protocols import OwnModelError
    cfg = from_dict({"data": {"name": "own_code:blobs"}, "model": {"name": model}, "train": {"epochs": 1},
                     "protocol": "imp", "prune": {"levels": 1}}, seed=0)
    with pytest.raises(OwnModelError, match=message):
        run(cfg, root=tmp_path / "store", device="cpu", progress=False)
    assert not (tmp_path / "store").exists()


@pytest.mark.parametrize("dataset", ["test_own_code:_int32_blobs", "test_own_code:_datasets"])
def test_integer_labels_are_cast_and_datasets_are_stacked(dataset):
    d = load(from_dict({"data": {"name": dataset}}, seed=0).data, "cpu")
    reference = load(from_dict({"data": {"name": "own_code:blobs"}}, seed=0).data, "cpu")
    assert d.y_train.dtype == torch.int64 and torch.equal(d.y_train, reference.y_train)
    assert torch.equal(d.x_test, reference.x_test) and d.digest == reference.digest
