"""Nothing invalid is ever marked finished, and every mistake a user can make gets one line.

The command line runs in-process (``cli.main``) where that is enough, and as a real
subprocess where a signal, a full disk or a missing network is involved.
"""

import contextlib
import copy
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import yaml

from pgcore.config import ConfigError, check_overrides, from_dict, load_yaml, set_value
from pgcore.store import CorruptResultError, Run, find_runs, read_json, write_json
from conftest import one_error_line as _one_error_line, run_cli as _pgcore  # noqa: E402

PGCORE = [sys.executable, "-m", "pgcore.cli"]


def _write_params(path: Path, params: dict, **top) -> Path:
    path.write_text(yaml.safe_dump({**copy.deepcopy(params), "progress": False, "seeds": [0], **top}))
    return path




def _imp_run(store: Path, seed: int = 0) -> Path:
    return next(store.glob(f"imp-*/seed{seed}"))


def _record(run_dir: Path) -> dict[int, tuple]:
    """Per level: the final metrics and the checkpoint checksum."""
    out = {}
    for js in sorted(run_dir.glob("level_*.json")):
        m = read_json(js)
        out[int(js.stem.split("_")[1])] = (m["final"], m["checkpoint_sha256"])
    return out


@pytest.fixture
def params_file(tmp_path, tiny_params):
    return _write_params(tmp_path / "tiny.yaml", tiny_params)


@pytest.fixture
def finished(tmp_path, params_file, capsys):
    """A finished tiny IMP run (levels 0..3) and what each of its levels holds."""
    store = tmp_path / "store"
    rc, _, err = _pgcore(capsys, "run", params_file, "--store", store)
    assert rc == 0, err
    return store, _imp_run(store), _record(_imp_run(store))


# -- divergence and strict JSON --------------------------------------------------------------

def test_diverged_run_exits_2_naming_the_level_and_stores_nothing(tmp_path, params_file, capsys):
    store = tmp_path / "store"
    rc, _, err = _pgcore(capsys, "run", params_file, "--store", store, "--set", "train.lr=1.0e+4")
    line = _one_error_line(err)
    assert rc == 2 and "diverged" in line and "level 0" in line
    assert not list(store.rglob("level_*.json")) and not list(store.rglob("done.json"))


def test_infinite_learning_rate_is_refused_before_training(tmp_path, params_file, capsys):
    rc, _, err = _pgcore(capsys, "run", params_file, "--store", tmp_path / "s", "--set", "train.lr=.inf")
    assert rc == 2 and "train.lr must be a finite positive number, got inf" in _one_error_line(err)
    assert not (tmp_path / "s").exists()


def test_nan_is_never_written_and_a_stored_nan_is_reported(finished, capsys):
    store, run_dir, _ = finished
    target = run_dir / "nan.json"
    with pytest.raises(ValueError, match="NaN or infinity"):
        write_json(target, {"loss": float("nan")})
    assert not target.exists()
    js = run_dir / "level_002.json"  # as an older version stored a diverged loss
    js.write_text(js.read_text().replace('"loss": ', '"loss": NaN, "was": ', 1))
    rc, _, err = _pgcore(capsys, "show", run_dir)
    assert rc == 2 and "level_002.json is corrupt (it holds NaN" in _one_error_line(err)


# -- finished runs are checked ---------------------------------------------------------------

@pytest.mark.parametrize("damaged, level", [("level_003.pt", 3), ("config.json", None)])
def test_truncated_file_of_finished_run_stops_what_reads_it_and_verify_names_it(finished, params_file, capsys,
                                                                               damaged, level):
    """Status is cheap (file names and config.json); a checkpoint is verified when it is loaded
    (here by growing the run from its last level), by `pgcore show` and by `pgcore verify`."""
    store, run_dir, _ = finished
    path = run_dir / damaged
    path.write_bytes(path.read_bytes()[:100])
    for argv in (["run", params_file, "--store", store, "--set", "prune.levels=4"], ["show", run_dir]):
        rc, _, err = _pgcore(capsys, *argv)
        line = _one_error_line(err)
        assert rc == 2 and damaged in line and f"pgcore repair {run_dir}" in line, line
    rc, out, _ = _pgcore(capsys, "verify", "--all", "--store", store)
    assert rc == 1 and f"{path}" in out and f"pgcore repair {run_dir}" in out
    assert "checked 2 run(s)" in out and "1 with problems" in out  # the train run imp builds on is fine
    if level is not None:
        assert f"drop level {level} and later" in out


def test_missing_middle_level_is_an_error_naming_it(finished, params_file, capsys):
    store, run_dir, _ = finished
    for p in run_dir.glob("level_001.*"):
        p.unlink()
    rc, _, err = _pgcore(capsys, "run", params_file, "--store", store)
    assert rc == 2 and "level 1 is missing but level 3 is stored" in _one_error_line(err)
    with pytest.raises(CorruptResultError, match="level 1 is missing but level 3 is stored"):
        find_runs(run_dir)[0].frame()


@pytest.mark.parametrize("damage", ["truncate level_002.pt", "delete level_001", "delete level_003",
                                    "truncate config.json"])
def test_repair_then_run_recomputes_identical_levels(finished, params_file, capsys, damage):
    store, run_dir, before = finished
    action, name = damage.split()
    if action == "truncate":
        (run_dir / name).write_bytes((run_dir / name).read_bytes()[:50])
    else:
        for p in run_dir.glob(f"{name}.*"):
            p.unlink()
    rc, out, err = _pgcore(capsys, "repair", run_dir)
    assert rc == 0, err
    if damage == "delete level_003":  # nothing invalid is left, only an unfinished run
        assert "nothing to repair" in out and not Run(find_runs(run_dir)[0].cfg, store).is_done()
    rc, _, err = _pgcore(capsys, "run", params_file, "--store", store)
    assert rc == 0, err
    assert _record(run_dir) == before
    assert _pgcore(capsys, "verify", run_dir)[0] == 0


def test_repair_from_level_drops_that_level_and_later(finished, capsys):
    _, run_dir, _ = finished
    rc, out, _ = _pgcore(capsys, "repair", run_dir, "--from-level", "2")
    assert rc == 0 and "recomputes from level 2" in out
    assert sorted(p.name for p in run_dir.glob("level_*.json")) == ["level_000.json", "level_001.json"]
    assert not (run_dir / "done.json").exists()


def test_run_filed_under_another_hash_is_reported_and_left_alone(finished, capsys):
    store, run_dir, _ = finished
    moved = store / "imp-000000000000"
    run_dir.parent.rename(moved)
    rc, out, _ = _pgcore(capsys, "verify", "--all", "--store", store)
    assert rc == 1 and f"{moved / 'seed0'} was written by another version of pgcore" in out
    files = sorted(moved.glob("seed0/*"))
    rc, out, _ = _pgcore(capsys, "repair", moved / "seed0")
    assert rc == 1 and "not repaired" in out and sorted(moved.glob("seed0/*")) == files  # left as it was


# -- config files ----------------------------------------------------------------------------

@pytest.mark.parametrize("text, message", [
    ("", "is empty"),
    ("# nothing here\n", "is empty"),
    ("seeds: [0]\nprogress: false\n", "has none of the sections data, model, train, prune"),
    ("train: {lr: true}\n", "train.lr must be a number, got True"),
    ("train: {epochs: ten}\n", "train.epochs must be an integer, got 'ten'"),
    ("prune: {prunable: conv}\n", "prune.prunable must be a list, got 'conv'"),
    ("train: 5\n", "section 'train' must be a mapping"),
    ("data: {noisy_fraction: 1.0}\n", "data.noisy_fraction must be in [0, 1), got 1.0: noisy labels are measured"),
    ("data: {num_samples: 1000, val_fraction: 0.9}\n", "only 80 training examples are left"),
])
def test_bad_config_file_gets_one_line_and_trains_nothing(tmp_path, capsys, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    rc, _, err = _pgcore(capsys, "run", path, "--store", tmp_path / "s")
    assert rc == 2 and message in _one_error_line(err)
    assert not (tmp_path / "s").exists()


def test_scientific_notation_and_quoted_numbers_are_numbers(tmp_path):
    path = tmp_path / "sci.yaml"
    path.write_text("train: {lr: '0.1', weight_decay: 5e-4, epochs: '3'}\ndata: {num_samples: 1e3}\n")
    params = load_yaml(path)
    assert params["train"]["weight_decay"] == "5e-4"  # what PyYAML gives
    set_value(params, "train.gamma=1e-1")
    cfg = from_dict(params)
    assert (cfg.train.lr, cfg.train.weight_decay, cfg.train.gamma) == (0.1, 5e-4, 0.1)
    assert (cfg.train.epochs, cfg.data.num_samples) == (3, 1000)
    assert all(type(v) is float for v in (cfg.train.lr, cfg.train.weight_decay, cfg.train.gamma))


# -- the machine: devices, store, disk, network, Ctrl-C --------------------------------------

@pytest.mark.parametrize("device, message", [
    ("gpu0", "unknown device 'gpu0'; use auto, cpu, cuda or cuda:N"),
    ("cuda:99", "device 'cuda:99': "),
])
def test_unusable_device_is_refused_before_training(tmp_path, params_file, capsys, device, message):
    rc, _, err = _pgcore(capsys, "run", params_file, "--store", tmp_path / "s", "--device", device)
    assert rc == 2 and message in _one_error_line(err)
    assert not (tmp_path / "s").exists()


def test_debug_flag_adds_the_traceback(tmp_path, params_file, capsys):
    _, _, err = _pgcore(capsys, "--debug", "run", params_file, "--device", "gpu0")
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("pgcore: error: unknown device")
    _, _, err = _pgcore(capsys, "run", params_file, "--device", "gpu0", "--debug")
    assert "Traceback" in err


@contextlib.contextmanager
def _read_only(path: Path):
    """``path`` read-only for this process: a read-only bind mount as root (permissions do
    not stop root), else mode 0555."""
    if os.geteuid() != 0:
        path.chmod(0o555)
        try:
            yield
        finally:
            path.chmod(0o755)
        return
    if subprocess.run(["mount", "--bind", path, path], capture_output=True).returncode != 0:
        pytest.skip("running as root without permission to mount: cannot make a read-only directory")
    try:
        subprocess.run(["mount", "-o", "remount,bind,ro", path], check=True, capture_output=True)
        yield
    finally:
        subprocess.run(["umount", path], check=True)


def test_read_only_store_reads_finished_runs_and_refuses_new_ones(finished, params_file, capsys):
    store, run_dir, before = finished
    with _read_only(store):
        rc, out, err = _pgcore(capsys, "run", params_file, "--store", store)
        assert rc == 0 and str(run_dir) in out, err
        rc, _, err = _pgcore(capsys, "run", params_file, "--store", store, "--set", "train.epochs=3")
        line = _one_error_line(err)
    assert rc == 2 and f"cannot write {store}" in line and "use a writable store" in line
    assert _record(run_dir) == before


# After FULL_AFTER files, every file the store writes goes to /dev/full: the kernel answers
# the write with ENOSPC, as on a full disk.
FULL_DISK = textwrap.dedent("""
    import os, sys, tempfile
    real, count = tempfile.mkstemp, [0]
    def mkstemp(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        count[0] += 1
        if count[0] > int(os.environ["FULL_AFTER"]):
            os.close(fd)
            fd = os.open("/dev/full", os.O_WRONLY)
        return fd, name
    tempfile.mkstemp = mkstemp
    from pgcore.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_full_disk_gets_one_line_and_keeps_finished_levels(tmp_path, params_file, capsys):
    store = tmp_path / "store"
    env = {**os.environ, "FULL_AFTER": "5"}  # config.json and level 0 of the train run, config.json and levels 0, 1 of imp
    proc = subprocess.run([sys.executable, "-c", FULL_DISK, "run", str(params_file), "--store", str(store)],
                          capture_output=True, text=True, env=env)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and "no space left on the device writing" in line and "run the same command" in line
    assert not list(store.rglob(".*.tmp"))  # no temporary file left behind
    rc, out, _ = _pgcore(capsys, "verify", "--all", "--store", store)
    assert rc == 0 and "all valid" in out
    assert _pgcore(capsys, "run", params_file, "--store", store)[0] == 0


def test_no_network_gets_one_line(tmp_path):
    # A proxy nobody listens on: no request leaves the machine, whatever network it has.
    env = {**os.environ, "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    proc = subprocess.run([*PGCORE, "download", "cifar10", "--data-dir", str(tmp_path / "data")],
                          capture_output=True, text=True, env=env)
    line = _one_error_line(proc.stderr)
    assert proc.returncode == 2 and "cannot download cifar10: no network" in line
    assert f"pgcore download cifar10 --data-dir {tmp_path / 'data'}" in line


# Ctrl-C; SIGTERM from `kill`, `timeout` or a batch job's time limit ends the same way
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_ctrl_c_names_the_level_and_the_same_command_resumes(tmp_path, tiny_params, capsys, signum):
    tiny_params["train"]["epochs"] = 20
    tiny_params["prune"]["levels"] = 30  # far longer than the wait below, even on a loaded machine
    params = _write_params(tmp_path / "long.yaml", tiny_params)
    store = tmp_path / "store"
    # As in a terminal: SIGINT delivered, even if this test process inherited it ignored (some
    # libraries and non-interactive shells ignore it, and children inherit that).
    proc = subprocess.Popen([*PGCORE, "run", str(params), "--store", str(store)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not list(store.glob("imp-*/seed0/level_000.json")) and proc.poll() is None:
        time.sleep(0.01)
    proc.send_signal(signum)
    _, err = proc.communicate()
    line = _one_error_line(err)
    level = int(re.search(r"interrupted at level (\d+) of ", line)[1])
    assert proc.returncode == 130 and "run the same command to resume" in line
    assert len(list(_imp_run(store).glob("level_*.json"))) == level
    assert _pgcore(capsys, "run", params, "--store", store)[0] == 0
    assert find_runs(_imp_run(store))[0].is_done()


@pytest.mark.cluster
def test_ctrl_c_in_a_terminal_ends_compute_with_one_line(tmp_path, tiny_params):
    """A terminal sends Ctrl-C to the whole process group: the local cluster's worker processes leave it to pgcore,
    which shuts them down, instead of printing their own tracebacks."""
    tiny_params["train"]["epochs"], tiny_params["prune"]["levels"] = 20, 30
    params = _write_params(tmp_path / "long.yaml", tiny_params)
    store = tmp_path / "store"
    proc = subprocess.Popen([*PGCORE, "compute", str(params), "--store", str(store), "--figures", "fig1", "--workers",
                             "2", "--dashboard", "none", "--no-progress"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    while not list(store.glob("*/seed0/level_001.json")) and proc.poll() is None:
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGINT)
    _, err = proc.communicate()
    assert proc.returncode == 130
    assert "interrupted; finished work is kept" in _one_error_line(err)


# -- sharing a store, showing every seed, progress ------------------------------------------

def test_result_files_follow_the_umask(tmp_path, params_file, capsys):
    old = os.umask(0o002)
    try:
        assert _pgcore(capsys, "run", params_file, "--store", tmp_path / "store", "--protocol", "train")[0] == 0
    finally:
        os.umask(old)
    files = [p for p in (tmp_path / "store").rglob("*") if p.is_file() and not p.name.endswith(".lock")]
    assert files and {oct(p.stat().st_mode & 0o777) for p in files} == {oct(0o664)}


def test_show_hash_prefix_shows_every_seed(tmp_path, tiny_params, capsys):
    params = _write_params(tmp_path / "two.yaml", tiny_params, seeds=[0, 1])
    store = tmp_path / "store"
    assert _pgcore(capsys, "run", params, "--store", store, "--set", "prune.levels=1")[0] == 0
    prefix = _imp_run(store).parent.name.split("-")[1][:6]
    rc, out, err = _pgcore(capsys, "show", prefix, "--store", store)
    assert rc == 0, err
    assert "seeds [0, 1], complete: [True, True]" in out
    per_seed = out.split("test error per seed:")[1].splitlines()
    assert per_seed[1].split() == ["level", "sparsity", "seed0", "seed1"] and len(per_seed) == 4


def test_progress_false_in_the_file_is_honoured(tmp_path, tiny_params, capsys):
    tiny_params["prune"]["levels"] = 0
    quiet = _write_params(tmp_path / "quiet.yaml", tiny_params)
    _, _, err = _pgcore(capsys, "run", quiet, "--store", tmp_path / "s")
    assert "level 0" not in err
    loud = _write_params(tmp_path / "loud.yaml", tiny_params, progress=True)
    _, _, err = _pgcore(capsys, "run", loud, "--store", tmp_path / "s", "--set", "train.epochs=1")
    assert "level 0" in err
    _, _, err = _pgcore(capsys, "run", loud, "--store", tmp_path / "s", "--set", "train.epochs=3", "--no-progress")
    assert "level 0" not in err


# -- notebook parameters ---------------------------------------------------------------------

def test_notebook_overrides_are_checked_and_applied(tiny_params, tmp_path):
    import yaml

    from pgcore.study import Study

    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump({**tiny_params, "seeds": [0]}))
    s = Study.from_notebook({"params": str(path), "overrides": '{"train.epochs": 3, "data.noisy_fraction": 0.1}'})
    assert s.config("imp").train.epochs == 3 and s.config("imp").data.noisy_fraction == 0.1
    assert check_overrides({"train.lr": "1e-3"}) == {"train.lr": "1e-3"}
    with pytest.raises(ConfigError, match="overrides key 'trian.epochs' must start with a section.*Did you mean 'train'"):
        Study.from_notebook({"params": str(path), "overrides": {"trian.epochs": 3}})


# -- stress: SIGKILL anywhere ----------------------------------------------------------------

# One thread per process, so two killed runs side by side do not slow each other down (and
# every run, the reference included, sums in the same order).
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def _start_training(params: Path, store: Path) -> subprocess.Popen:
    """Start ``pgcore run`` and return once it starts training (its first progress output,
    after the imports and the data) or has ended; its output is drained in the background."""
    proc = subprocess.Popen([*PGCORE, "run", str(params), "--store", str(store)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=ONE_THREAD)
    proc.stderr.read(1)
    threading.Thread(target=proc.stderr.read, daemon=True).start()
    return proc


def _training_time(params: Path, store: Path) -> float:
    """Seconds from the start of training to the last level's results, uninterrupted."""
    proc = _start_training(params, store)
    tic = time.perf_counter()
    while not list(store.glob("imp-*/seed0/done.json")) and proc.poll() is None:
        time.sleep(0.005)
    seconds = time.perf_counter() - tic
    assert proc.wait() == 0
    return seconds


def _kill_randomly(params: Path, store: Path, reference: dict, seconds: float, kills: int,
                   rng: random.Random) -> list[int]:
    """Start ``pgcore run`` again and again and SIGKILL it at a random moment of its training
    (up to ``seconds`` after it begins); whenever a run gets to the end, check it against
    ``reference`` and start over. Returns the number of levels stored at each kill."""
    stored = []
    for _ in range(kills):
        proc = _start_training(params, store)
        time.sleep(rng.uniform(0, seconds))
        proc.kill()
        assert proc.wait() in (0, -signal.SIGKILL)
        if proc.returncode == 0:
            assert _record(_imp_run(store)) == reference
            shutil.rmtree(store)
        else:
            stored.append(len(list(store.glob("imp-*/seed0/level_*.json"))))
    proc = subprocess.run([*PGCORE, "run", str(params), "--store", str(store)], capture_output=True, text=True,
                          env=ONE_THREAD)
    assert proc.returncode == 0, proc.stderr
    assert _record(_imp_run(store)) == reference
    return stored


@pytest.mark.slow
def test_sigkill_at_random_points_ends_identical_to_an_uninterrupted_run(tmp_path, tiny_params):
    tiny_params["prune"]["levels"] = 6
    tiny_params["train"]["epochs"] = 8
    params = _write_params(tmp_path / "stress.yaml", tiny_params, progress=True)
    seconds = _training_time(params, tmp_path / "straight")
    reference = _record(_imp_run(tmp_path / "straight"))
    assert sorted(reference) == list(range(7))
    # Two stores killed side by side, 10 kills each: 20 in all.
    results: list = [None, None]

    def lane(i: int) -> None:
        try:
            results[i] = _kill_randomly(params, tmp_path / f"killed{i}", reference, seconds, 10, random.Random(i))
        except BaseException as e:  # noqa: BLE001 -- reported by the main thread
            results[i] = e

    threads = [threading.Thread(target=lane, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for r in results:
        if isinstance(r, BaseException):
            raise r
    stored = results[0] + results[1]
    assert any(0 < n < 7 for n in stored), stored  # some kills did land in the middle of a run
