import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from pgcore import cli, protocols
from pgcore.config import from_dict
from pgcore.store import CorruptResultError, Run


def _final(run: Run) -> list[dict]:
    return [run.load_metrics(level)["final"] for level in run.finished_levels()]


def test_same_config_and_seed_give_identical_metrics(tiny_cfg, tmp_path):
    a = protocols.run(tiny_cfg, tmp_path / "a", "cpu", progress=False)
    b = protocols.run(tiny_cfg, tmp_path / "b", "cpu", progress=False)
    assert _final(a) == _final(b)
    assert a.history().equals(b.history())
    other = protocols.run(tiny_cfg.replace(seed=1), tmp_path / "a", "cpu", progress=False)
    assert _final(other) != _final(a)


def test_imp_levels_record_sparsity_epochs_and_layer_sparsity(tiny_cfg, tmp_path):
    run = protocols.run(tiny_cfg, tmp_path, "cpu", progress=False)
    df = run.frame()
    levels = sorted(df.level.unique())
    assert levels == [0, 1, 2, 3]
    for level in levels:
        m = run.load_metrics(level)
        assert m["sparsity"] == pytest.approx((1 - 0.8 ** level), abs=2e-3)
        assert m["epochs_total"] == 2 * (level + 1)
        assert set(m["layer_sparsity"]) == {"hidden.0.weight", "hidden.1.weight", "out.weight"}
        assert m["provenance"]["torch"] == torch.__version__
    assert set(df.source) == {"train", "train_clean", "train_noisy", "val", "test"}
    ckpt = run.load_checkpoint(3)
    assert ckpt["per_example_loss"].shape == (720,)  # 1000 generated: 800 train, 10% of it to validation
    for n, m in ckpt["mask"].items():
        assert torch.all(ckpt["state"][n][~m] == 0)


def test_finished_run_is_reused_not_recomputed(tiny_cfg, tmp_path):
    run = protocols.run(tiny_cfg, tmp_path, "cpu", progress=False)
    stamp = [(p.name, p.stat().st_mtime_ns) for p in sorted(run.path.iterdir())]
    again = protocols.run(tiny_cfg, tmp_path, "cpu", progress=False)
    assert [(p.name, p.stat().st_mtime_ns) for p in sorted(again.path.iterdir())] == stamp


KILLER = textwrap.dedent("""
    import os, signal, sys
    from pgcore import protocols, store
    from pgcore.config import from_dict
    import json
    params = json.loads(sys.argv[1])
    original = store._atomic_write
    def write_then_die(path, payload):
        original(path, payload)
        # Die like a killed job: right after level 2's checkpoint, before its metrics.
        if path.name == "level_002.pt":
            os.kill(os.getpid(), signal.SIGKILL)
    store._atomic_write = write_then_die
    protocols.run(from_dict(params), sys.argv[2], "cpu", progress=False)
""")


@pytest.mark.parametrize("retrain", ["lrr", "rewind"])
def test_resume_after_kill_gives_identical_curve(tiny_params, tmp_path, retrain):
    tiny_params["prune"].update(levels=4, retrain=retrain, rewind_epoch=1 if retrain == "rewind" else 0)
    cfg = from_dict(tiny_params)
    killed = subprocess.run([sys.executable, "-c", KILLER, json.dumps(tiny_params), str(tmp_path / "killed")],
                            capture_output=True, text=True)
    assert killed.returncode == -9, killed.stderr
    partial = Run(cfg, tmp_path / "killed")
    assert partial.finished_levels() == [0, 1] and not partial.is_done()
    assert (partial.path / "level_002.pt").exists()  # orphan checkpoint without metrics
    before = [(partial.path / f"level_00{k}.json").read_bytes() for k in (0, 1)]

    resumed = protocols.run(cfg, tmp_path / "killed", "cpu", progress=False)
    straight = protocols.run(cfg, tmp_path / "straight", "cpu", progress=False)
    assert resumed.is_done() and resumed.finished_levels() == [0, 1, 2, 3, 4]
    assert [(partial.path / f"level_00{k}.json").read_bytes() for k in (0, 1)] == before  # not recomputed
    assert _final(resumed) == _final(straight)
    for level in range(5):
        a, b = resumed.load_checkpoint(level), straight.load_checkpoint(level)
        for n in a["state"]:
            assert torch.equal(a["state"][n], b["state"][n]), (level, n)


def test_corrupt_files_are_reported_not_used(tiny_cfg, tmp_path):
    run = protocols.run(tiny_cfg, tmp_path, "cpu", progress=False)
    pt = run.path / "level_001.pt"
    pt.write_bytes(pt.read_bytes()[:-100])
    with pytest.raises(CorruptResultError, match="level_001.pt does not match the checksum"):
        run.load_checkpoint(1)
    js = run.path / "level_002.json"
    js.write_text(js.read_text()[:50])
    with pytest.raises(CorruptResultError, match="level_002.json is corrupt"):
        run.frame()
    # Resuming from a corrupt last level fails loudly instead of training on bad weights.
    (run.path / "done.json").unlink()
    (run.path / "level_003.json").unlink()
    with pytest.raises(CorruptResultError):
        protocols.run(tiny_cfg, tmp_path, "cpu", progress=False)


def test_extended_dense_matches_lrr_epochs_without_pruning(tiny_cfg, tmp_path):
    imp = protocols.run(tiny_cfg, tmp_path, "cpu", progress=False).frame()
    ext = protocols.run(tiny_cfg.replace(protocol="extended_dense"), tmp_path, "cpu", progress=False).frame()
    assert (ext.sparsity == 0).all()
    key = ["level", "epochs_total"]
    assert imp[key].drop_duplicates().values.tolist() == ext[key].drop_duplicates().values.tolist()
    # Level 0 is the same dense training in both protocols.
    a = imp[imp.level == 0].sort_values("source").error.to_numpy()
    b = ext[ext.level == 0].sort_values("source").error.to_numpy()
    np.testing.assert_array_equal(a, b)  # NaN == NaN here: no noisy examples in either


@pytest.mark.parametrize("prune", [
    {"retrain": "rewind", "rewind_epoch": 1},
    {"retrain": "finetune"},
    {"method": "random"},
    {"method": "random", "scope": "layerwise"},
])
def test_retraining_variants_and_random_control_run(tiny_params, tmp_path, prune):
    tiny_params["prune"].update(prune)
    run = protocols.run(from_dict(tiny_params), tmp_path, "cpu", progress=False)
    ms = [run.load_metrics(k) for k in run.finished_levels()]
    trained = 1 if prune.get("retrain") == "rewind" else 2
    assert [m["epochs_trained"] for m in ms] == [2] + [trained] * 3
    assert ms[-1]["sparsity"] == pytest.approx((1 - 0.8 ** 3), abs=2e-3)


def test_rewinding_restores_survivors_to_the_rewind_point(tiny_params, tmp_path):
    tiny_params["prune"].update(retrain="rewind", rewind_epoch=0, levels=1)
    tiny_params["train"]["epochs"] = 1
    cfg = from_dict(tiny_params)
    run = protocols.run(cfg, tmp_path, "cpu", progress=False)
    init = protocols.init_model(cfg, protocols.data_mod.load(cfg.data))
    assert all(torch.equal(run.load_checkpoint(0)["rewind"][n], v) for n, v in init.state_dict().items())


def test_cli_run_and_show(tmp_path, capsys, tiny_params):
    import yaml

    tiny_params["seeds"] = [0, 1]
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(tiny_params))
    store = tmp_path / "cli-store"
    assert cli.main(["run", str(path), "--set", "prune.levels=1", "--store", str(store), "--no-progress", "--lockstep", "on"]) == 0
    out = capsys.readouterr().out
    assert "seed0" in out and "seed1" in out and "test_err" in out
    exp_dir = next(store.glob("imp-*"))
    assert cli.main(["show", str(exp_dir)]) == 0
    shown = capsys.readouterr().out
    assert "seeds [0, 1]" in shown and "complete: [True, True]" in shown


def test_cli_rejects_bad_input_before_training(tmp_path, capsys):
    path = tmp_path / "bad.yaml"
    path.write_text("data: {name: cifar11}\n")
    assert cli.main(["run", str(path), "--store", str(tmp_path / "s")]) == 2
    assert "unknown dataset 'cifar11'" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()
    assert cli.main(["run", str(tmp_path / "nope.yaml")]) == 2
    assert "cannot read config file" in capsys.readouterr().err


def test_every_cli_command_is_in_the_readme():
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    assert len(commands) >= 9 and [c for c in commands if f"pgcore {c}" not in readme] == []
