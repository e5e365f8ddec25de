"""The controls behind figures 3-7: reinit, extended + one-shot, left-out examples, TIE."""


import pandas as pd
import pytest
import torch

from pgcore import analysis, protocols, pruning
from pgcore import data as data_mod
from pgcore.config import ConfigError, from_dict, override
from pgcore.protocols import run
from pgcore.study import Need, Study
from pgcore.store import Run


def _run(params, protocol, tmp_path, seed=0):
    return run(from_dict(override(params, {"protocol": protocol}), seed=seed), tmp_path, "cpu", progress=False)


def test_reinit_puts_imp_masks_on_a_fresh_init_for_one_schedule(tiny_params, tmp_path):
    reinit = _run(tiny_params, "reinit", tmp_path)
    imp = Run(reinit.cfg.replace(protocol="imp"), tmp_path)
    assert imp.is_done(), "reinit runs its IMP source first"
    for level in range(tiny_params["prune"]["levels"] + 1):
        a, b = reinit.load_checkpoint(level), imp.load_checkpoint(level)
        assert all(torch.equal(a["mask"][n], b["mask"][n]) for n in b["mask"])
        assert reinit.load_metrics(level)["epochs_total"] == tiny_params["train"]["epochs"]
        for n, m in a["mask"].items():
            assert (a["state"][n][~m] == 0).all()
    # a fresh initialization: even the dense level differs from IMP's dense model
    assert not torch.equal(reinit.load_checkpoint(0)["state"]["hidden.0.weight"], imp.load_checkpoint(0)["state"]["hidden.0.weight"])


def test_extended_oneshot_prunes_extended_dense_models_once_by_magnitude(tiny_params, tmp_path):
    both = _run(tiny_params, "extended_oneshot", tmp_path)
    ext = Run(both.cfg.replace(protocol="extended_dense"), tmp_path)
    imp = _run(tiny_params, "imp", tmp_path)
    epochs = tiny_params["train"]["epochs"]
    for level in range(1, tiny_params["prune"]["levels"] + 1):
        m = both.load_metrics(level)
        assert m["epochs_total"] == (level + 1) * epochs == imp.load_metrics(level)["epochs_total"]
        assert m["sparsity"] == pytest.approx(imp.load_metrics(level)["sparsity"], abs=1e-3)
        # the mask is exactly a one-shot magnitude prune of the extended dense model after `level` cycles
        model_state = ext.load_checkpoint(level - 1)["state"]
        dense = {n: torch.ones_like(v, dtype=torch.bool) for n, v in both.load_checkpoint(level)["mask"].items()}
        scores = {n: model_state[n].abs() for n in dense}
        expected = pruning.prune(scores, dense, 1 - 0.8 ** level, "global")
        got = both.load_checkpoint(level)["mask"]
        assert all(torch.equal(expected[n], got[n]) for n in got)


def test_excluded_examples_leave_the_training_set_and_keep_their_labels(tiny_params):
    full = data_mod.load(from_dict(tiny_params).data)
    noisy = override(tiny_params, {"data.noisy_fraction": 0.3})
    full_noisy = data_mod.load(from_dict(noisy).data)
    cut = data_mod.load(from_dict(override(noisy, {"data.exclude": [0, 5, 7]})).data)
    assert len(cut.y_train) == len(full.y_train) - 3
    keep = torch.ones(len(full.y_train), dtype=torch.bool)
    keep[[0, 5, 7]] = False
    assert torch.equal(cut.y_train, full_noisy.y_train[keep]) and torch.equal(cut.noisy, full_noisy.noisy[keep])
    assert torch.equal(cut.x_test, full.x_test)
    with pytest.raises(ValueError, match="outside the"):
        data_mod.load(from_dict(override(tiny_params, {"data.exclude": [10**6]})).data)
    with pytest.raises(ConfigError, match="distinct"):
        from_dict(override(tiny_params, {"data.exclude": [1, 1]}))


def test_exclude_changes_the_hash_only_when_used(tiny_params):
    base = from_dict(tiny_params)
    assert "exclude" not in base.science_dict()["data"]
    assert from_dict(override(tiny_params, {"data.exclude": [3]})).hash() != base.hash()


def test_top_improved_and_random_subsets():
    gain = torch.tensor([0.1, 5.0, -1.0, 3.0, 0.0, 2.0, 0.5, 0.2, 0.3, 4.0])
    assert protocols.top_improved(gain, 0.3) == [1, 3, 9]
    r = protocols.random_subset(10, 3, seed=0)
    assert r == protocols.random_subset(10, 3, seed=0) and len(set(r)) == 3
    assert r != protocols.random_subset(10, 3, seed=1)
    with pytest.raises(ValueError):
        protocols.top_improved(gain, 1.5)


def _tie(level=None, kind="top-improved"):
    changes = {"data.leave_out": kind, "data.leave_out_fraction": 0.1}
    return {**changes, "data.leave_out_level": level} if level else changes


def test_tie_runs_build_on_their_imp_run_and_leave_out_the_top_improved(tiny_params, tmp_path):
    """A top-improved run is keyed by its IMP run's config, level and fraction (its path is known before the IMP run
    exists), trains the IMP run first, and leaves out exactly the examples whose loss improved most."""
    study = Study(tiny_params, seeds=[0, 1], root=tmp_path, device="cpu", progress=False, compute=True)
    assert study.run_paths(Need("tie", tuple(sorted(_tie(2).items()))), 0)[0].startswith(str(tmp_path / "tie-"))
    top = study.run("tie", _tie(2))
    imp = study.run("imp")
    assert all(r.is_done() for r in imp.runs)  # built on first, as a source
    n_train = len(data_mod.load(from_dict(tiny_params).data).y_train)
    for stored, imp_run in zip(top.runs, imp.runs):
        left = stored.load_metrics(0)["left_out"]
        gain = protocols.improvement(imp_run, 2)
        assert left["count"] == round(0.1 * n_train) and left["level"] == 2
        assert left["mean_improvement"] == pytest.approx(float(gain.sort(descending=True).values[:left["count"]].mean()))
        assert len(stored.load_checkpoint(0)["per_example_loss"]) == n_train - left["count"]
    # the random control is one subset per seed, the same at every level: one run serves them all
    rand = study.run("tie", _tie(kind="random"))
    assert [r.load_metrics(0)["left_out"] for r in rand.runs] == [{"kind": "random", "count": left["count"]}] * 2
    assert study.run("tie", _tie(1)).runs[0].path != top.runs[0].path
    with pytest.raises(ConfigError, match="leave_out_level must be an IMP level"):
        study.config("tie", _tie(99))
    with pytest.raises(ConfigError, match="only it does"):
        study.config("imp", _tie(1))


def _rows(values_a, values_b):
    rows = []
    for seed, (a, b) in enumerate(zip(values_a, values_b)):
        for level, (va, vb) in enumerate(zip(a, b)):
            rows.append({"seed": seed, "level": level, "sparsity": 1 - 0.8 ** level, "epochs_total": level + 1,
                         "source": "test", "error": va, "loss": vb})
    return pd.DataFrame(rows)


def test_paired_by_level_and_vs_dense():
    a = _rows([[0.3, 0.2, 0.5], [0.31, 0.21, 0.5], [0.32, 0.22, 0.52]], [[0] * 3] * 3)
    b = _rows([[0.3, 0.3, 0.5], [0.31, 0.31, 0.49], [0.32, 0.32, 0.50]], [[0] * 3] * 3)
    out = analysis.paired_by_level(a, b).set_index("level")
    assert out.loc[1, "diff"] == pytest.approx(-0.1) and out.loc[1, "diff"] + out.loc[1, "diff_ci"] < 0
    assert out.loc[0, "diff"] == 0 and out.loc[0, "n"] == 3
    dense = analysis.vs_dense(a, "error", "test").set_index("level")
    assert dense.loc[0, "diff"] == 0 and dense.loc[2, "diff"] - dense.loc[2, "diff_ci"] > 0


def test_override_and_notebook_parameters(tiny_params, tmp_path, monkeypatch):
    """A notebook reads its parameter file through the checked loader (a key given twice is refused, as by the CLI),
    applies its dotted overrides, and only reads unless asked to compute."""
    import yaml

    monkeypatch.delenv("PGCORE_NOTEBOOK_COMPUTE", raising=False)  # make test asks nbval's notebooks to compute
    changed = override(tiny_params, {"data.noisy_fraction": 0.2, "prune.method": "random"})
    assert changed["data"]["noisy_fraction"] == 0.2 and "noisy_fraction" not in tiny_params["data"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**tiny_params, "seeds": [3], "progress": False}))
    s = Study.from_notebook({"params": str(path), "overrides": {"train.epochs": 1}})
    assert s.seeds == [3] and s.config("imp").train.epochs == 1 and not s.compute and s.source == str(path)
    path.write_text(path.read_text() + "seeds: [4]\n")
    with pytest.raises(ConfigError, match="seeds"):
        Study.from_notebook({"params": str(path)})
    with pytest.raises(ConfigError, match="profile must be a plain name"):
        Study.from_notebook({"profile": "../../escape"})
    with pytest.raises(ConfigError, match=r"seeds, train are keys of a parameter file: give the file itself, "
                                          r"papermill -p params <file> \(not -f <file>\)"):
        Study.from_notebook({"profile": "smoke", "seeds": [0], "train": {"epochs": 1}})




def test_lockstep_tie_seeds_each_train_without_their_own_examples(tiny_params, tmp_path):
    """Seeds of a top-improved run leave out different examples: in a lockstep study their IMP runs train together,
    but each seed's retraining trains alone, on its own training set (never on the first seed's)."""
    changes = {"data.leave_out": "top-improved", "data.leave_out_fraction": 0.1, "data.leave_out_level": 1}
    tiny_params["prune"]["levels"] = 1
    study = Study(tiny_params, seeds=[0, 1], root=tmp_path, device="cpu", progress=False, compute=True, lockstep=True)
    tie = study.run("tie", changes)
    imp = study.run("imp")
    assert [r.load_metrics(1)["models_in_lockstep"] for r in imp.runs] == [2, 2]
    assert [r.load_metrics(0)["models_in_lockstep"] for r in tie.runs] == [1, 1]
    n_train = len(data_mod.load(from_dict(tiny_params).data).y_train)
    for r in tie.runs:
        kept = n_train - r.load_metrics(0)["left_out"]["count"]
        assert len(r.load_checkpoint(0)["per_example_loss"]) == kept


def test_a_control_trains_only_the_levels_it_is_asked_for_and_grows_to_more(tiny_params, tmp_path):
    """A protocol whose levels are independent stores any set of them: each the same numbers as in the full run."""
    full = _run(tiny_params, "pai", tmp_path / "full")
    some = run(from_dict(override(tiny_params, {"protocol": "pai", "prune.at_levels": [2]})), tmp_path, "cpu",
               progress=False)
    assert some.path.name == "seed0" and some.path.parent.name == full.path.parent.name  # the same run key
    assert some.finished_levels() == [0, 2] and some.is_done() and not some.verify()
    assert list(some.frame().level.unique()) == [0, 2]
    assert some.load_metrics(2)["checkpoint_sha256"] == full.load_metrics(2)["checkpoint_sha256"]
    every = Run(from_dict(override(tiny_params, {"protocol": "pai"})), tmp_path)
    assert not every.is_done()
    run(every.cfg, tmp_path, "cpu", progress=False)  # the missing levels only
    assert every.finished_levels() == [0, 1, 2, 3] and every.load_metrics(2) == some.load_metrics(2)
    assert every.load_metrics(1)["checkpoint_sha256"] == full.load_metrics(1)["checkpoint_sha256"]


@pytest.mark.parametrize("protocol, at, match", [
    ("imp", [2], "a protocol whose levels are independent"),
    ("reinit", [4], "from 1 to prune.levels=3"),
    ("reinit", [2, 1], "increasing levels"),
])
def test_a_level_subset_is_refused_where_it_cannot_hold(tiny_params, protocol, at, match):
    with pytest.raises(ConfigError, match=match):
        from_dict(override(tiny_params, {"protocol": protocol, "prune.at_levels": at}))


def test_control_levels_give_figures_5_and_6_their_controls_at_those_levels_only(tiny_params, tmp_path):
    study = Study.from_dict({**tiny_params, "seeds": [0], "pai_methods": ["snip"], "control_levels": [3, 1]},
                            root=tmp_path)
    plan = study.plan(["fig5", "fig6"])
    controls = plan[plan.need.str.startswith(("reinit", "pai", "extended_oneshot"))]
    assert len(controls) == 3 and (controls.levels == "0/3").all()  # level 0 and levels 1, 3
    assert (plan[plan.need.str.startswith(("imp", "extended_dense"))].levels == "0/4").all()  # chains: every level
    with pytest.raises(ConfigError, match="control_levels lists level 5, beyond prune.levels=3: figures 5 and 6"):
        Study.from_dict({**tiny_params, "seeds": [0], "control_levels": [5]}, root=tmp_path).plan(["fig5"])
