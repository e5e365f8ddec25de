"""Protocols as plans: what each level is, shared runs trained once, seeds from named streams,
stale numbers detected."""

import json

import pytest
import torch

from pgcore import plans, protocols, provenance, pruning, seeds
from pgcore import train as T
from pgcore.config import from_dict, override
from pgcore.protocols import run, run_seeds
from pgcore.store import Run, StaleResultError

from conftest import run_cli


def _count_trainings(monkeypatch):
    calls = []
    real = T.fit

    def counting(learner, *a, **k):
        calls.append(len(learner.models))
        return real(learner, *a, **k)

    monkeypatch.setattr(T, "fit", counting)
    return calls


def test_shared_dense_run_is_trained_once_and_referenced(tiny_params, tmp_path, monkeypatch):
    calls = _count_trainings(monkeypatch)
    L = tiny_params["prune"]["levels"]
    for protocol in ("train", "imp", "extended_dense", "extended_oneshot", "pai"):
        run(from_dict(override(tiny_params, {"protocol": protocol, "prune.method": "magnitude"})), tmp_path, "cpu",
            progress=False)
    # one dense run, then L trained levels each for imp, extended_dense, extended_oneshot and pai
    assert len(calls) == 1 + 4 * L
    dense = Run(from_dict(override(tiny_params, {"protocol": "train"})), tmp_path)
    for protocol in ("imp", "extended_dense", "extended_oneshot", "pai"):
        r = Run(from_dict(override(tiny_params, {"protocol": protocol})), tmp_path)
        level0 = json.loads((r.path / "level_000.json").read_text())
        assert level0["reference"]["level"] == 0 and level0["final"] == dense.load_metrics(0)["final"]
        assert not (r.path / "level_000.pt").exists()
        assert torch.equal(r.load_checkpoint(0)["state"]["out.weight"], dense.load_checkpoint(0)["state"]["out.weight"])


def test_plans_say_what_each_level_is(tiny_cfg):
    T_ = tiny_cfg.train.epochs
    assert plans.plan(tiny_cfg, 0).reuse == "dense"
    lrr = plans.plan(tiny_cfg, 2)
    assert (lrr.weights, lrr.mask, lrr.lr, lrr.epochs_total) == ("previous", "prune", "schedule", 3 * T_)
    rw = plans.plan(tiny_cfg.replace(prune=tiny_cfg.prune.__class__(retrain="rewind", rewind_epoch=1)), 2)
    assert (rw.weights, rw.start_epoch, rw.epochs_total) == ("rewind", 1, T_ + 2 * (T_ - 1))
    ft = plans.plan(tiny_cfg.replace(prune=tiny_cfg.prune.__class__(retrain="finetune")), 1)
    assert ft.lr == "final"
    st = plans.plan(tiny_cfg.replace(protocol="extended_stretched"), 3)
    assert (st.weights, st.epochs, st.epochs_total) == ("init", 4 * T_, 4 * T_)
    oneshot = plans.plan(tiny_cfg.replace(protocol="extended_oneshot"), 2)
    assert (oneshot.weights, oneshot.source_level, oneshot.mask) == ("source", 1, "oneshot")
    assert plans.levels_of(tiny_cfg.replace(protocol="train")) == [0]


def test_finetuning_trains_at_the_constant_final_learning_rate(tiny_params, tmp_path):
    r = run(from_dict(override(tiny_params, {"prune.retrain": "finetune", "train.epochs": 4})), tmp_path, "cpu", progress=False)
    final = T.final_lr(r.cfg.train)
    for level in (1, 2, 3):
        lrs = [h["lr"] for h in r.load_metrics(level)["history"]]
        assert lrs == [final] * len(lrs) and final < r.cfg.train.lr / 2


@pytest.mark.parametrize("method", ["snip", "magnitude", "random"])
def test_pruning_at_initialization_masks_the_initial_weights(tiny_params, tmp_path, method):
    cfg = from_dict(override(tiny_params, {"protocol": "pai", "prune.method": method}))
    r = run(cfg, tmp_path, "cpu", progress=False)
    data = protocols.data_mod.load(cfg.data)
    init = protocols.init_model(cfg, data)
    for level in (1, 3):
        m = r.load_metrics(level)
        assert m["sparsity"] == pytest.approx((1 - 0.8 ** level), abs=2e-3)
        assert m["epochs_total"] == cfg.train.epochs  # one schedule: no extra training time
    mask = r.load_checkpoint(2)["mask"]
    dense = pruning.dense_mask(init)
    if method == "magnitude":
        expected = pruning.prune(pruning.magnitude_scores(init, dense), dense, plans.sparsity_at(cfg, 2))
        assert all(torch.equal(expected[n], mask[n]) for n in mask)
    if method == "snip":
        magnitude = pruning.prune(pruning.magnitude_scores(init, dense), dense, plans.sparsity_at(cfg, 2))
        assert any(not torch.equal(magnitude[n], mask[n]) for n in mask), "SNIP must rank by |g*w|, not |w|"


def test_seed_streams_are_distinct_and_stable():
    values = {(s, stream, i): seeds.derive(s, stream, i) for s in range(3) for stream in seeds.STREAMS for i in range(3)}
    assert len(set(values.values())) == len(values)
    assert seeds.derive(0, "init") == seeds.derive(0, "init")
    with pytest.raises(ValueError, match="unknown random stream"):
        seeds.derive(0, "dropout")


def test_reinit_initialization_differs_from_every_imp_stream(tiny_cfg):
    data = protocols.data_mod.load(tiny_cfg.data)
    a, b = protocols.init_model(tiny_cfg, data), protocols.init_model(tiny_cfg, data, "reinit")
    assert not torch.equal(a.out.weight, b.out.weight)
    assert seeds.derive(0, "reinit") not in {seeds.derive(0, "order", k) for k in range(100)}


def test_stale_numerics_are_reported_and_can_be_accepted(tiny_cfg, tmp_path):
    r = run(tiny_cfg, tmp_path, "cpu", progress=False)
    cfg_path = r.path / "config.json"
    stored = json.loads(cfg_path.read_text())
    stored["numerics"] = "000000000000"
    cfg_path.write_text(json.dumps(stored))
    with pytest.raises(StaleResultError, match="computed by other code.*pgcore accept"):
        run_seeds(tiny_cfg, [0], root=tmp_path, device="cpu", progress=False)
    assert r.accept_numerics() == "000000000000"
    assert run_seeds(tiny_cfg, [0], root=tmp_path, device="cpu", progress=False).runs[0].path == r.path
    assert json.loads(cfg_path.read_text())["accepted_from"] == ["000000000000"]


def test_levels_left_without_config_json_are_adopted_only_if_this_code_computed_them(tiny_cfg, tmp_path):
    r = run(tiny_cfg, tmp_path, "cpu", progress=False)
    (r.path / "config.json").unlink()  # as `pgcore repair` leaves a run whose config.json was bad
    js = r.path / "level_001.json"
    record = json.loads(js.read_text())
    record["provenance"]["numerics"] = "000000000000"
    js.write_text(json.dumps(record))
    with pytest.raises(StaleResultError, match=r"has no config.json and its levels were computed by other code "
                                               r"\(numerics digests .*000000000000.*; delete "):
        run_seeds(tiny_cfg, [0], root=tmp_path, device="cpu", progress=False)
    assert not (r.path / "config.json").exists()  # nothing adopted
    record["provenance"]["numerics"] = provenance.numerics_digest()
    js.write_text(json.dumps(record))
    assert run_seeds(tiny_cfg, [0], root=tmp_path, device="cpu", progress=False).runs[0].path == r.path
    assert r.is_done() and json.loads((r.path / "config.json").read_text())["numerics"] == provenance.numerics_digest()


def _forge_old_digest(run_dir):
    path = run_dir / "config.json"
    stored = json.loads(path.read_text())
    stored["numerics"] = "000000000000"
    path.write_text(json.dumps(stored))


def test_accept_check_recomputes_first_levels_and_accepts_only_identical_numbers(tiny_cfg, tmp_path, capsys):
    store = tmp_path / "s"
    good = run(tiny_cfg, store, "cpu", progress=False)
    other = run(tiny_cfg.replace(seed=1), store, "cpu", progress=False)
    for r in (good, other):
        _forge_old_digest(r.path)
    rc, out, err = run_cli(capsys, "accept", "--all", "--store", store, "--check", "1")
    assert rc == 0, err
    assert "levels 0-1 of seed 0 reproduced bit for bit" in out and out.count("accepted (computed by code") == 2
    run_seeds(tiny_cfg, [0, 1], root=store, device="cpu", progress=False)  # usable again
    # Numbers this code does not compute (as if the training code had changed) are not accepted.
    _forge_old_digest(good.path)
    js = good.path / "level_001.json"
    record = json.loads(js.read_text())
    record["final"]["test"]["loss"] += 1e-6
    js.write_text(json.dumps(record))
    rc, out, _ = run_cli(capsys, "accept", str(good.path), "--check", "1")
    assert rc == 1 and "not accepted: this code computes other numbers (level 1 final)" in out
    with pytest.raises(StaleResultError):
        good.check_numerics()


def test_accept_check_recomputes_the_stored_levels_of_a_level_subset(tiny_params, tmp_path, capsys):
    store = tmp_path / "s"
    some = run(from_dict(override(tiny_params, {"protocol": "pai", "prune.at_levels": [2, 3]})), store, "cpu",
               progress=False)
    _forge_old_digest(some.path)
    rc, out, err = run_cli(capsys, "accept", str(some.path), "--check", "1")
    assert rc == 0, err
    assert "levels 0, 2 of seed 0 reproduced bit for bit" in out


def test_accept_all_goes_past_a_run_cut_before_its_first_level(tiny_cfg, tmp_path, capsys):
    """A seed killed while training level 0 leaves config.json and no level: accept --check uses a seed that has
    levels, and accepts the empty one too (it holds no number to check)."""
    store = tmp_path / "s"
    seed1 = run(tiny_cfg.replace(seed=1), store, "cpu", progress=False)
    empty = seed1.path.parent / "seed0"
    empty.mkdir()
    (empty / "config.json").write_text((seed1.path / "config.json").read_text().replace('"seed": 1', '"seed": 0'))
    for d in (seed1.path, empty):
        _forge_old_digest(d)
    rc, out, err = run_cli(capsys, "accept", "--all", "--store", store, "--check", "1")
    assert rc == 0, err
    assert "levels 0-1 of seed 1 reproduced bit for bit" in out and out.count("accepted (computed by code") == 2


def test_numerics_digest_ignores_docstrings_but_not_statements():
    src = '"""doc"""\ndef f(x):\n    """doc"""\n    return x + 1  # a comment\n'
    reworded = src.replace("doc", "other words").replace("# a comment", "")
    changed = src.replace("x + 1", "x + 2")
    assert provenance.syntax(src) == provenance.syntax(reworded) and provenance.syntax(src) != provenance.syntax(changed)
    assert len(provenance.numerics_digest()) == 12


def test_a_run_grows_when_more_levels_are_asked_for(tiny_params, tmp_path):
    short = run(from_dict(override(tiny_params, {"prune.levels": 2})), tmp_path, "cpu", progress=False)
    assert short.finished_levels() == [0, 1, 2] and short.is_done()
    long = run(from_dict(override(tiny_params, {"prune.levels": 4})), tmp_path, "cpu", progress=False)
    assert long.path == short.path and long.finished_levels() == [0, 1, 2, 3, 4]
    straight = run(from_dict(override(tiny_params, {"prune.levels": 4})), tmp_path / "b", "cpu", progress=False)
    assert [long.load_metrics(k)["final"] for k in range(5)] == [straight.load_metrics(k)["final"] for k in range(5)]
    assert sorted(short.frame().level.unique()) == [0, 1, 2]  # a shorter config reads only its levels


def test_diverged_training_stops_before_anything_is_stored(tiny_params, tmp_path):
    cfg = from_dict(override(tiny_params, {"train.lr": 1.0e4}))
    with pytest.raises(T.DivergedError, match="diverged at level 0, epoch 1"):
        run(cfg, tmp_path, "cpu", progress=False)
    dense = Run(cfg.replace(protocol="train"), tmp_path)
    assert dense.finished_levels() == [] and not dense.is_done()


def test_cpu_runs_use_a_fixed_thread_count_so_bits_do_not_depend_on_the_caller(tiny_cfg, tmp_path):
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        a = run(tiny_cfg, tmp_path / "a", "cpu", progress=False)
        torch.set_num_threads(1)
        b = run(tiny_cfg, tmp_path / "b", "cpu", progress=False)
        assert torch.get_num_threads() == 1  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert [a.load_metrics(k)["checkpoint_sha256"] for k in range(4)] == [b.load_metrics(k)["checkpoint_sha256"] for k in range(4)]


def test_an_all_list_or_a_docstring_does_not_change_the_numerics_digest():
    from pgcore.provenance import syntax

    plain = syntax("def f(x):\n    return x + 1\n")
    assert syntax('"""Doc."""\n__all__ = ["f"]\n\n\ndef f(x):\n    """Doc."""\n    return x + 1\n') == plain
    assert syntax("def f(x):\n    return x + 2\n") != plain


def test_accept_check_goes_past_top_improved_runs(tiny_params, tmp_path, capsys):
    """A top-improved run at level 1 is recomputed with its IMP run to level 1; one at a deeper level than --check
    is accepted without recomputing its IMP run that deep, and says so."""
    from pgcore.study import Study

    store = tmp_path / "s"
    study = Study(tiny_params, seeds=[0], root=store, device="cpu", progress=False, compute=True)
    for level in (1, 2):
        study.run("tie", {"data.leave_out": "top-improved", "data.leave_out_fraction": 0.1,
                          "data.leave_out_level": level})
    for d in store.glob("*/seed0"):
        _forge_old_digest(d)
    rc, out, err = run_cli(capsys, "accept", "--all", "--store", store, "--check", "1")
    assert rc == 0, err
    assert "not recomputed (it builds on IMP level 2, beyond --check 1" in out
    assert out.count("reproduced bit for bit") == len(list(store.glob("*-*"))) - 1
