"""No command loses data that is not its own, and every study key is checked before work starts.

Every error a user can cause ends in one line (``pgcore: error: ...``, exit 2); each test also
checks that the files that must survive do.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgcore import cli, compute
from pgcore.config import ConfigError
from pgcore.store import (CorruptResultError, NotARunError, OwnCodeNotImportedError, Run, check_run_dir,
                          find_runs)
from pgcore.study import Study
from conftest import one_error_line as _one_error_line, run_cli as _pgcore  # noqa: E402

HEX = "0123456789ab"




def _files(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` and what it holds."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _foreign(d: Path, config: str = '{"name": "my app"}') -> Path:
    """A directory that is someone else's: a config.json, a done.json and a file of theirs."""
    d.mkdir(parents=True)
    (d / "config.json").write_text(config)
    (d / "done.json").write_text("{}")
    (d / "notes.txt").write_text("mine")
    return d


# -- a trained store, shared (copied) by the tests that need real runs ------------------------

@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A finished tiny IMP run (levels 0..2: level 0 a reference to the dense run)."""
    from conftest import TINY

    root = tmp_path_factory.mktemp("trained")
    params = copy.deepcopy(TINY)
    params["train"]["epochs"], params["prune"]["levels"] = 1, 2
    path = root / "tiny.yaml"
    path.write_text(yaml.safe_dump({**params, "seeds": [0], "progress": False}))
    assert cli.main(["run", str(path), "--store", str(root / "store")]) == 0
    return root / "store"


@pytest.fixture
def store(trained, tmp_path) -> Path:
    copy_ = tmp_path / "store"
    shutil.copytree(trained, copy_)
    return copy_


def _imp(store: Path) -> Path:
    return next(store.glob("imp-*/seed0"))


# -- repair and accept touch only pgcore's runs ------------------------------------------------

def test_repair_refuses_a_directory_that_is_not_pgcores_and_removes_nothing(tmp_path, capsys):
    app = _foreign(tmp_path / "my-app")
    _foreign(app / "seed1")
    lookalike = _foreign(tmp_path / "store" / f"imp-{HEX}" / "seed0")  # pgcore's layout, someone's config
    before = _files(tmp_path)
    for target in (app, app / "seed1", lookalike):
        rc, out, err = _pgcore(capsys, "repair", target)
        line = _one_error_line(err)
        assert rc == 2 and "is not a pgcore run" in line and "leaves it alone" in line, line
        assert "removed" not in out
    assert _files(tmp_path) == before


def test_repair_refuses_an_unreadable_config_beside_files_pgcore_never_writes(tmp_path, capsys):
    run_dir = _foreign(tmp_path / "store" / f"imp-{HEX}" / "seed0", config="{not json")
    before = _files(tmp_path)
    rc, _, err = _pgcore(capsys, "repair", run_dir)
    assert rc == 2 and "holds files pgcore never writes (notes.txt)" in _one_error_line(err)
    assert _files(tmp_path) == before
    (run_dir / "notes.txt").unlink()
    check_run_dir(run_dir)  # now only pgcore's own names: a damaged run, which repair may fix


def test_accept_and_show_refuse_a_directory_that_is_not_pgcores(tmp_path, capsys):
    app = _foreign(tmp_path / "my-app")
    before = _files(tmp_path)
    for command in ("accept", "show"):
        rc, _, err = _pgcore(capsys, command, app)
        line = _one_error_line(err)
        assert rc == 2 and "is not a pgcore run" in line and "repair" not in line, line
    rc, out, _ = _pgcore(capsys, "verify", app)
    assert rc == 1 and "is not a pgcore run" in out and "repair" not in out
    assert _files(tmp_path) == before
    with pytest.raises(NotARunError, match="not a pgcore run"):
        find_runs(app)


def test_repair_of_an_unreadable_config_lists_what_it_removes(store, capsys):
    run_dir = _imp(store)
    (run_dir / "config.json").write_text("{truncated")
    rc, out, err = _pgcore(capsys, "repair", run_dir)
    assert rc == 0, err
    assert f"{run_dir}: its config.json is unreadable; removing done.json, config.json" in out
    assert (run_dir / "level_002.json").exists() and not (run_dir / "config.json").exists()


def test_repair_says_what_it_will_remove_before_removing(store, capsys):
    run_dir = _imp(store)
    rc, out, _ = _pgcore(capsys, "repair", run_dir, "--from-level", "1")
    first, second = out.strip().splitlines()
    assert rc == 0
    assert first == f"{run_dir}: removing done.json, level_002.json, level_001.json, level_002.pt, level_001.pt"
    assert second.startswith(f"{run_dir}: removed done.json, level_002.json") and "from level 1" in second
    assert sorted(p.name for p in run_dir.iterdir()) == ["config.json", "level_000.json"]


def test_a_reference_naming_several_experiments_is_refused(store, capsys):
    shutil.copytree(_imp(store).parent, store / f"imp-{HEX}")  # a second experiment of the same protocol
    before = _files(store)
    for argv in (["repair", "imp", "--from-level", "0"], ["verify", "imp"], ["show", "imp"], ["accept", "imp"]):
        rc, _, err = _pgcore(capsys, *argv, "--store", store)
        assert rc == 2 and "'imp' matches 2 experiments; name one:" in err, err
        assert str(store / f"imp-{HEX}") in err and str(_imp(store).parent) in err
    assert _files(store) == before


def test_repair_refuses_a_negative_level(store, capsys):
    before = _files(store)
    rc, _, err = _pgcore(capsys, "repair", _imp(store), "--from-level", "-1")
    assert rc == 2 and "argument --from-level: must be an integer >= 0, got -1" in _one_error_line(err)
    assert _files(store) == before
    with pytest.raises(ValueError, match="from_level must be a level >= 0"):
        find_runs(_imp(store))[0].to_repair(-1)


@pytest.mark.parametrize("command", ["repair", "verify", "show", "accept"])
def test_an_empty_run_name_is_refused(tmp_path, monkeypatch, capsys, command):
    here = _foreign(tmp_path / "cwd")  # "" would otherwise be the working directory
    monkeypatch.chdir(here)
    before = _files(tmp_path)
    rc, _, err = _pgcore(capsys, command, "")
    assert rc == 2 and "name a run" in _one_error_line(err)
    assert _files(tmp_path) == before


# -- a stored reference stays inside the store ------------------------------------------------

def test_a_reference_leading_outside_the_store_is_corrupt(store, capsys):
    run_dir = _imp(store)
    outside = store.parent / "outside" / "seed0"
    shutil.copytree(next(store.glob("train-*/seed0")), outside)  # a checkpoint that would pass its checksum
    js = run_dir / "level_000.json"
    record = json.loads(js.read_text())
    record["reference"]["path"] = "../outside/seed0"
    js.write_text(json.dumps(record))
    with pytest.raises(CorruptResultError, match=f"result file {js} is corrupt .*not a level of a run in the store"):
        find_runs(run_dir)[0].load_checkpoint(0)
    rc, out, _ = _pgcore(capsys, "verify", run_dir)
    assert rc == 1 and "all valid" not in out and f"{js} is corrupt" in out
    rc, _, err = _pgcore(capsys, "show", run_dir)
    assert rc == 2 and f"pgcore repair {run_dir}" in _one_error_line(err)
    rc, _, err = _pgcore(capsys, "repair", run_dir)
    assert rc == 0, err
    assert (outside / "level_000.pt").exists() and not js.exists()  # the level goes, the outside file stays


def test_a_reference_is_written_only_to_a_run_of_the_same_store(store, tmp_path):
    imp = find_runs(_imp(store))[0]
    elsewhere = Run(imp.cfg, tmp_path / "other")
    with pytest.raises(ValueError, match="is not a run of the store"):
        elsewhere.save_reference(0, find_runs(next(store.glob("train-*/seed0")))[0], 0)
    assert not elsewhere.path.exists()


# -- parameter files ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("train: {epochs: 1}\nmodel: {name: mlp}\ntrain: {epochs: 2}\n", "key 'train' is given twice (line 1 and line 3)"),
    ("data: {name: mnist1d, name: cifar10}\n", "key 'name' is given twice (line 1 and line 1)"),
])
def test_a_key_given_twice_is_refused_with_its_line(tmp_path, capsys, text, message):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    rc, _, err = _pgcore(capsys, "run", path, "--store", tmp_path / "s")
    line = _one_error_line(err)
    assert rc == 2 and str(path) in line and message in line, line
    assert not (tmp_path / "s").exists()


def test_a_file_that_is_not_utf8_is_named(tmp_path, capsys):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# réglages\ntrain: {epochs: 1}\n".encode("latin-1"))
    rc, _, err = _pgcore(capsys, "run", path, "--store", tmp_path / "s")
    line = _one_error_line(err)
    assert rc == 2 and f"config file {path} is not UTF-8 text" in line and "save it as UTF-8" in line


@pytest.fixture
def smoke(tmp_path) -> Path:
    path = tmp_path / "smoke.yaml"
    shutil.copy(Path(__file__).resolve().parent.parent / "params" / "smoke.yaml", path)
    return path


def test_run_refuses_a_seed_given_twice(smoke, tmp_path, capsys):
    rc, _, err = _pgcore(capsys, "run", smoke, "--seeds", "0", "0", "--store", tmp_path / "s")
    assert rc == 2 and "seeds lists 0 more than once" in _one_error_line(err)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("command", ["run", "plan", "compute"])
def test_a_store_that_is_a_file_is_refused(smoke, tmp_path, capsys, command):
    path = tmp_path / "store.txt"
    path.write_text("mine")
    rc, _, err = _pgcore(capsys, command, smoke, "--store", path)
    assert rc == 2 and f"store_dir {path} is a file, not a directory" in _one_error_line(err)
    assert path.read_text() == "mine"


@pytest.mark.parametrize("argv, message", [
    (["--set", "noise_fractions=[1.5]"], "noise_fractions must be a list of label-noise fractions in (0, 1)"),
    (["--set", "tie_levels=[9]"], "tie_levels lists level 9, beyond prune.levels=3"),
    (["--set", "variants={a: {retrian: rewind}}"], "unknown key 'retrian' in variants.a"),
    (["--set", "cluster.cores=four"], "cluster.cores must be an integer >= 1, got 'four'"),
    (["--set", "profile=../../x"], "profile must be a plain name"),
    (["--retries", "-1"], "argument --retries: must be an integer >= 0, got -1"),
    (["--dashboard", "everywhere"], "--dashboard must be HOST:PORT"),
])
def test_compute_checks_every_study_key_before_any_cluster_starts(smoke, tmp_path, capsys, monkeypatch, argv,
                                                                    message):
    def no_cluster(*args, **kwargs):
        raise AssertionError("a cluster was started")

    monkeypatch.setattr(compute, "open_cluster", no_cluster)
    rc, _, err = _pgcore(capsys, "compute", smoke, "--store", tmp_path / "s", *argv)
    assert rc == 2 and message in _one_error_line(err)
    assert not (tmp_path / "s").exists()


def test_papermill_string_seeds_are_parsed(tmp_path):
    from conftest import TINY

    study = Study.from_dict({**TINY, "seeds": "[0, 2]", "tie_levels": "[1, 3]"}, root=tmp_path)
    from pgcore.figures import chosen_levels

    assert study.seeds == [0, 2] and chosen_levels(study.params) == [1, 3]
    with pytest.raises(ConfigError, match="seeds lists 2 more than once"):
        Study.from_dict({**TINY, "seeds": "[2, 2]"})


def test_a_notebook_profile_cannot_write_figures_outside_figures(tmp_path):
    from conftest import TINY

    import yaml

    from pgcore import plots
    from pgcore.notebook import study

    target = plots.figures_dir("../../pgcore-escape")
    mine = tmp_path / "mine.yaml"
    mine.write_text(yaml.safe_dump({**copy.deepcopy(TINY), "seeds": [0], "profile": "../../pgcore-escape"}))
    for ns in ({"profile": "../../pgcore-escape"}, {"params": str(mine)}):
        with pytest.raises(ConfigError, match="profile must be a plain name .* got '../../pgcore-escape'"):
            study(ns)
    assert not target.exists()


@pytest.mark.parametrize("given, expected", [("/data/store", "/data/store-strict"), (None, "results-strict")])
def test_strict_kernels_never_share_a_store_with_native_runs(tmp_path, given, expected):
    """A run's directory does not depend on the kernels, so `make ... STRICT=1` must not read the usual store."""
    root = Path(__file__).resolve().parents[1]
    (tmp_path / "show.mk").write_text("show:\n\t@echo $$PGCORE_STORE\n")
    env = {k: v for k, v in os.environ.items() if k != "PGCORE_STORE"} | ({"PGCORE_STORE": given} if given else {})
    out = subprocess.run(["make", "-s", "-f", "Makefile", "-f", str(tmp_path / "show.mk"), "show", "STRICT=1"],
                         cwd=root, env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert out == expected if given else out == str(root / expected)


# -- a store's files never make pgcore import code ---------------------------------------------

# A module beside the store commands' working directory, as a probe planted it: importing it writes a marker.
EVIL = """from pathlib import Path
Path(__file__).with_name("imported.marker").write_text("pgcore_evil ran")
from own_code import WideMLP as Net
"""


@pytest.fixture
def planted(store, tmp_path) -> tuple[Path, Path]:
    """The IMP run of ``store`` with a config.json naming ``pgcore_evil:Net`` as its model, and a working directory
    holding that module."""
    run_dir = _imp(store)
    stored = json.loads((run_dir / "config.json").read_text())
    stored["config"]["model"]["name"] = "pgcore_evil:Net"
    (run_dir / "config.json").write_text(json.dumps(stored))
    here = tmp_path / "cwd"
    here.mkdir()
    (here / "pgcore_evil.py").write_text(EVIL)
    return run_dir, here


def _pgcore_in(here: Path, *argv, **env) -> subprocess.CompletedProcess:
    """``python -m pgcore.cli <argv>`` run from ``here``, which ``-m`` puts on sys.path, as the probe did."""
    clean = {k: v for k, v in os.environ.items() if k != "PGCORE_IMPORT_OWN_CODE"}
    tests = str(Path(__file__).resolve().parent)  # own_code.py, which the planted module imports
    clean["PYTHONPATH"] = os.pathsep.join(filter(None, [tests, clean.get("PYTHONPATH")]))
    return subprocess.run([sys.executable, "-m", "pgcore.cli", *map(str, argv)], cwd=here, capture_output=True,
                          text=True, env={**clean, **env}, timeout=300)


@pytest.mark.parametrize("argv, rc", [(["verify", "--all"], 1), (["repair", "RUN"], 1), (["show", "RUN"], 2),
                                      (["accept", "--all"], 1), (["accept", "RUN", "--check", "1"], 1)])
def test_a_module_a_store_file_names_is_not_imported_by_store_commands(store, planted, argv, rc):
    run_dir, here = planted
    before = _files(store)
    proc = _pgcore_in(here, *[run_dir if a == "RUN" else a for a in argv], "--store", store)
    assert not (here / "imported.marker").exists()
    assert proc.returncode == rc, proc.stdout + proc.stderr
    said = f"{run_dir}: own code, not imported (model 'pgcore_evil:Net')"
    assert said in proc.stdout + proc.stderr and "PGCORE_IMPORT_OWN_CODE=1" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    if argv[0] == "verify":  # the other runs are still checked, and this one is listed
        assert "checked 2 run(s)" in proc.stdout and "1 own code, not imported (not checked)" in proc.stdout
    assert _files(store) == before


def test_with_the_opt_in_the_module_a_store_file_names_is_imported(store, planted):
    run_dir, here = planted
    proc = _pgcore_in(here, "verify", "--all", "--store", store, PGCORE_IMPORT_OWN_CODE="1")
    assert (here / "imported.marker").read_text() == "pgcore_evil ran"
    assert "not imported" not in proc.stdout and str(run_dir) in proc.stdout  # read, and filed under another hash


def test_reading_a_run_in_python_imports_its_own_code_only_when_asked(store, planted, monkeypatch):
    run_dir, here = planted
    monkeypatch.syspath_prepend(str(here))
    monkeypatch.delenv("PGCORE_IMPORT_OWN_CODE", raising=False)
    for asked in (None, False):
        with pytest.raises(OwnCodeNotImportedError, match="own code, not imported .*PGCORE_IMPORT_OWN_CODE=1"):
            find_runs(run_dir, import_own_code=asked)
    assert not (here / "imported.marker").exists() and "pgcore_evil" not in sys.modules
    with pytest.raises(CorruptResultError, match="filed its config under another hash"):
        find_runs(run_dir, import_own_code=True)  # imported, then found filed under another hash
    assert (here / "imported.marker").exists()
    sys.modules.pop("pgcore_evil")


def test_the_current_directory_is_not_put_on_sys_path(tmp_path, monkeypatch):
    from conftest import TINY
    from pgcore.config import from_dict

    here = tmp_path / "cwd"
    here.mkdir()
    (here / "pgcore_evil.py").write_text(EVIL)
    monkeypatch.chdir(here)
    monkeypatch.setattr(sys, "path", [p for p in sys.path if p not in ("", ".", str(here))])
    before = list(sys.path)
    with pytest.raises(ConfigError, match=r"importable as any Python module, installed or on PYTHONPATH \(one in the "
                                          r"current directory: `PYTHONPATH=. pgcore ...`\)"):
        from_dict({**TINY, "model": {"name": "pgcore_evil:Net"}})
    assert sys.path == before and not (here / "imported.marker").exists()


# -- the smaller refusals ------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["missing", "file"])
def test_verify_all_of_a_store_that_is_not_there_is_an_error(tmp_path, capsys, kind):
    store = tmp_path / "store"
    if kind == "file":
        store.write_text("mine")
    rc, out, err = _pgcore(capsys, "verify", "--all", "--store", store)
    said = "does not exist" if kind == "missing" else "is not a directory"
    assert rc == 2 and f"store {store} {said}" in _one_error_line(err) and "valid" not in out


@pytest.mark.parametrize("assignment, message", [
    ("train=", "override 'train=' has no value after '='"),
    ("train.epochs= ", "override 'train.epochs= ' has no value after '='"),
    ("train=null", "would replace the whole train section with None"),
    ("model=lenet_300_100", "would replace the whole model section with 'lenet_300_100'"),
])
def test_params_refuses_an_override_that_would_drop_settings(smoke, tmp_path, capsys, assignment, message):
    rc, out, err = _pgcore(capsys, "params", smoke, "--set", assignment, "--out", tmp_path / "p.yaml")
    assert rc == 2 and message in _one_error_line(err)
    assert not (tmp_path / "p.yaml").exists()


def test_repair_refuses_a_run_another_process_holds(store, capsys):
    run_dir = _imp(store)
    holder = subprocess.Popen([sys.executable, "-c", "import filelock, sys, time; l = filelock.FileLock(sys.argv[1]); "
                               "l.acquire(); print('held', flush=True); time.sleep(120)",
                               str(run_dir.parent / f"{run_dir.name}.lock")], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = _files(store)
        rc, out, _ = _pgcore(capsys, "repair", run_dir, "--from-level", "1")
        assert rc == 1 and f"{run_dir}: not repaired: {run_dir} is in use: another process holds its lock" in out
        assert _files(store) == before
    finally:
        holder.kill()
        holder.wait()
    rc, out, _ = _pgcore(capsys, "repair", run_dir, "--from-level", "1")
    assert rc == 0 and "removed" in out


def test_a_dashboard_open_beyond_this_machine_says_so():
    everywhere = compute.dashboard_link("0", 8787, 8787)
    assert everywhere.startswith("http://") and "127.0.0.1" not in everywhere.split(",")[0]
    assert "listening on every network interface (0.0.0.0:8787)" in everywhere
    for host in ("", "0.0.0.0", "[::]", "192.0.2.7"):
        assert "; warning: open to the network without authentication" in compute.dashboard_link(host, 8787, 0)
    for host in ("127.0.0.1", "localhost", "[::1]"):
        assert compute.dashboard_link(host, 8790, 8787) == f"http://{host}:8790/status (port 8787 was in use)"


def test_plan_never_opens_a_run_it_does_not_need(store, planted, smoke):
    run_dir, here = planted
    proc = _pgcore_in(here, "plan", smoke, "--store", store)
    assert proc.returncode == 0, proc.stderr
    assert not (here / "imported.marker").exists()


@pytest.mark.parametrize("gpus", [0, 1])
def test_a_local_cluster_listens_on_this_machine_only(monkeypatch, gpus):
    """Its scheduler runs whatever a client sends: nothing but this machine may reach it (with GPUs, too)."""
    import psutil
    import torch

    if gpus:  # the one-worker-per-GPU branch, without a GPU: the worker only sees CUDA_VISIBLE_DEVICES=0
        monkeypatch.setattr(torch.cuda, "device_count", lambda: gpus)
    c = compute.local_cluster(1, dashboard=None)
    try:
        assert c.gpus == bool(gpus)
        me = psutil.Process()
        listening = {s.laddr.ip for p in [me, *me.children(recursive=True)] for s in p.net_connections(kind="tcp")
                     if s.status == psutil.CONN_LISTEN}
    finally:
        compute.close_cluster(c)
    assert listening == {"127.0.0.1"}
