"""A whole study on a Dask cluster, and the store under concurrency.

Real engines throughout: a LocalCluster of worker processes, `pgcore` processes started at
once on one run, SIGKILL. The study is the smoke profile shrunk (2 levels, 2 epochs, 1,000
examples) so that the module stays within a minute or two on two cores.
"""

from __future__ import annotations

import copy
import ctypes
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import pytest
import yaml

from pgcore import compute
from pgcore.config import ConfigError, load_yaml
from pgcore.explore import EXPLORABLE
from pgcore.plans import levels_of
from pgcore.store import Run
from pgcore.figures import FIGURES
from pgcore.study import Need, Study

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HANG = 600  # seconds after which a stuck subprocess counts as hung (never a speed limit)


def shrunk_smoke() -> dict:
    """params/smoke.yaml with 2 levels (figure 4's too), 2 epochs and 1,000 examples."""
    p = load_yaml(REPO / "params" / "smoke.yaml")
    p["prune"]["levels"], p["train"]["epochs"], p["data"]["num_samples"] = 2, 2, 1000
    p["noise_levels"] = 2
    if p.get("stretched_levels"):
        p["stretched_levels"] = 1
    return p


def finals(root: Path) -> dict[str, dict]:
    """Every stored level's final metrics, by path relative to the store."""
    return {str(p.relative_to(root)): json.loads(p.read_text())["final"]
            for p in sorted(root.glob("*-*/seed*/level_*.json"))}


def snapshot(root: Path) -> dict[str, tuple[int, int, int]]:
    """Every file in the run directories: inode, size and modification time."""
    out = {}
    for p in sorted(root.glob("*-*/seed*/*")):
        st = p.stat()
        out[str(p.relative_to(root))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


@pytest.fixture(scope="module")
def params() -> dict:
    return shrunk_smoke()


@pytest.fixture(scope="module")
def sequential_store(params, tmp_path_factory) -> Path:
    """The study computed need by need in this process: the reference."""
    root = tmp_path_factory.mktemp("sequential")
    study = Study.from_dict(params, root=root, progress=False)
    for need in study.expand():
        study.train(need)
    return root


@pytest.fixture(scope="module")
def cluster():
    """A LocalCluster of 2 worker processes, shared by the tests here."""
    c = compute.local_cluster(2, dashboard="127.0.0.1:0")
    yield c
    c.client.close()
    c.client.cluster.close()


class WorkerKiller(threading.Thread):
    """Kills the worker process of the first task caught mid-run: level 1 of its run stored,
    the run not done, so the worker is training level 2 and holds the run's lock."""

    def __init__(self, cluster: compute.Cluster, targets: dict[str, Path]):
        super().__init__(daemon=True)
        self.cluster, self.targets, self.stop = cluster, targets, threading.Event()
        self.killed: dict | None = None

    def run(self) -> None:
        client = self.cluster.client
        pids = client.run(os.getpid)
        while not self.stop.is_set() and self.killed is None:
            for worker, keys in client.processing().items():
                for key in keys:
                    run_dir = self.targets.get(str(key).rsplit("-", 1)[0])
                    if run_dir and (run_dir / "level_001.json").exists() and not (run_dir / "done.json").exists():
                        os.kill(pids[worker], signal.SIGKILL)
                        self.killed = {"key": key, "run": run_dir,
                                       "levels": sorted(p.name for p in run_dir.glob("level_*.json"))}
                        return
            time.sleep(0.005)


def multilevel_runs(study: Study) -> dict[str, Path]:
    """Task name -> run directory, for every task that trains one run of 3 levels."""
    out = {}
    for task in compute.tasks(study, study.expand(), lockstep=False):
        if task.need.protocol != "tie":
            cfg = study.config(task.need.protocol, task.need.changes, task.seeds[0])
            if levels_of(cfg)[-1] == 2:
                out[task.name] = Run(cfg, study.root).path
    return out


@pytest.fixture(scope="module")
def cluster_store(params, cluster, tmp_path_factory):
    """The study computed on the cluster, with one worker killed mid-run."""
    root = tmp_path_factory.mktemp("cluster")
    study = Study.from_dict(params, root=root, progress=False)
    killer = WorkerKiller(cluster, multilevel_runs(study))
    killer.start()
    try:
        summary = compute.compute_study(study, cluster, progress=False, out=lambda line: None)
    finally:
        killer.stop.set()
        killer.join()
    return root, summary, killer.killed


def test_cluster_study_equals_sequential_bit_for_bit(cluster_store, sequential_store):
    root, summary, _ = cluster_store
    assert summary.failed == [] and summary.skipped == []
    ours, reference = finals(root), finals(sequential_store)
    assert len(reference) > 50  # every level of every run of the study
    assert sorted(ours) == sorted(reference)
    different = [k for k in reference if ours[k] != reference[k]]
    assert different == []
    # Every run of the study was trained exactly once, here, by the cluster.
    assert len(summary.trained) == len({str(Path(k).parent) for k in reference})


def test_worker_killed_mid_run_is_rerun_and_resumes_to_the_same_numbers(cluster_store, sequential_store):
    root, summary, killed = cluster_store
    assert killed is not None, "no task was caught mid-run"
    assert killed["levels"] == ["level_000.json", "level_001.json"]  # level 2 was in progress
    assert summary.failed == []
    run_dir = killed["run"]
    assert (run_dir / "done.json").exists()
    rel = run_dir.relative_to(root)
    for level in range(3):
        name = f"level_{level:03d}.json"
        assert json.loads((run_dir / name).read_text())["final"] == \
            json.loads((sequential_store / rel / name).read_text())["final"]


def test_plan_after_compute_shows_nothing_left(cluster_store, params, tmp_path):
    root, _, _ = cluster_store
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(params))
    out = subprocess.run([BIN / "pgcore", "plan", path, "--store", root], capture_output=True, text=True, timeout=HANG)
    assert out.returncode == 0, out.stderr
    last = out.stdout.strip().splitlines()[-1]
    n = int(last.split()[0])
    assert last == f"{n} runs in {root}: {n} done"
    # Figure 7's retrainings are runs like any other, their paths known before their IMP run exists.
    assert "tie(data.leave_out=top-improved, data.leave_out_fraction=0.1, data.leave_out_level=2)" in out.stdout


@pytest.mark.parametrize("notebook", ["05_size_controls"])
def test_notebook_under_papermill_after_compute_trains_nothing(cluster_store, params, notebook, tmp_path):
    root, _, _ = cluster_store
    nb_params = dict(copy.deepcopy(params), figures_dir=str(tmp_path / "figures"))
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(nb_params))
    before = snapshot(root)
    env = {**{k: v for k, v in os.environ.items() if k != "PGCORE_NOTEBOOK_COMPUTE"}, "PGCORE_STORE": str(root),
           "PGCORE_PLAIN_PROGRESS": "1"}
    out = subprocess.run([BIN / "papermill", "--log-level", "WARNING", "-k", "pgcore", "--cwd", REPO / "notebooks",
                          "-p", "params", path, REPO / "notebooks" / f"{notebook}.ipynb", tmp_path / "out.ipynb"],
                         capture_output=True, text=True, env=env, timeout=HANG)
    assert out.returncode == 0, out.stderr[-3000:]
    assert list((tmp_path / "figures").glob("*.png")), "the notebook saved no figure"
    assert snapshot(root) == before  # no run directory or level file added or rewritten


@pytest.mark.parametrize("figure", sorted(FIGURES))
def test_every_notebook_reads_exactly_its_declared_runs_and_trains_nothing(cluster_store, params, figure, tmp_path,
                                                                           monkeypatch):
    """Each registered figure's notebook, its code run in this process after `pgcore compute`, reads the runs
    its entry in the figure table declares, and writes none."""
    import matplotlib

    matplotlib.use("Agg")
    root, _, _ = cluster_store
    read: set[str] = set()
    original = Run.frame
    monkeypatch.setattr(Run, "frame", lambda self: read.add(str(self.path)) or original(self))
    monkeypatch.setenv("PGCORE_STORE", str(root))
    monkeypatch.delenv("PGCORE_NOTEBOOK_COMPUTE", raising=False)  # read only, as a notebook does by default
    monkeypatch.chdir(REPO / "notebooks")
    path = REPO / "notebooks" / f"{FIGURES[figure].notebook}.ipynb"
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    mine = tmp_path / "study.yaml"
    mine.write_text(yaml.safe_dump({**params, "figures_dir": str(tmp_path / "figures")}))
    ns = {"params": str(mine), "overrides": {}, "compute": False}
    before = snapshot(root)
    for cell in cells[1:]:
        exec(compile("".join(cell["source"]), f"{path.name}", "exec"), ns)  # noqa: S102 -- the notebook's own code
    study = Study.from_dict(params, root=root, progress=False)
    needs = [n for n in study.needs([figure]) if n.protocol != "train"]  # the dense runs: read through references
    declared = {p for n in needs for seed in study.seeds for p in study.run_paths(n, seed)}
    if figure == "explore":  # the explorer also shows whatever else the store holds of figures 1-6, read only
        assert declared <= read <= set(study.plan(EXPLORABLE).run)
    else:
        assert read == declared
    assert snapshot(root) == before  # no run directory or level file added or rewritten


def test_failed_run_is_reported_and_the_rest_finish(params, cluster, tmp_path, capsys):
    root = tmp_path / "store"
    study = Study.from_dict(params, root=root, progress=False)
    need = next(n for n in study.needs(["fig1"]) if dict(n.changes).get("prune.retrain") == "finetune")
    broken = Run(study.config(need.protocol, need.changes, 0), root).path
    broken.mkdir(parents=True)
    (broken / "config.json").write_text("{not json")
    summary = compute.compute_study(study, cluster, figures=["fig1"], progress=False, out=lambda line: None)
    assert [f["task"] for f in summary.failed] == [f"{need.label()}/seed0"]
    failure = summary.failed[0]
    assert "CorruptResultError" in failure["message"] and str(broken) in failure["message"]
    assert failure["runs"] == [str(broken)]
    said = capsys.readouterr().out.splitlines()  # at once, as the task ended: the line the summary repeats
    assert summary.lines()[1] in said and said.index(summary.lines()[1]) == 0
    text = Path(failure["traceback"]).read_text()
    assert Path(failure["traceback"]).parent == root / "failures"
    assert "Traceback" in text and "changes: {'prune.retrain': 'finetune'}" in text and "prune:" in text
    left = study.plan(["fig1"])
    assert left[left.state != "done"].run.tolist() == [str(broken)]
    assert len(summary.trained) == len(left) - 1


class Crowding(threading.Thread):
    """The most tasks the scheduler held on one worker at once, and whether every worker was busy at once."""

    def __init__(self, cluster: compute.Cluster):
        super().__init__(daemon=True)
        self.client, self.stop, self.most, self.all_busy = cluster.client, threading.Event(), 0, False

    def run(self) -> None:
        while not self.stop.is_set():
            held = [len(keys) for keys in self.client.processing().values()]
            self.most = max([self.most, *held])
            self.all_busy |= len(held) > 1 and min(held) > 0
            time.sleep(0.005)


def test_a_ready_task_starts_on_an_idle_worker_not_queued_behind_a_busy_one(params, cluster, tmp_path):
    """Several tasks build on one seed's dense run. Handed to Dask with that run's future, they were queued on the
    worker holding its record, and the last ones waited there while the other worker sat idle (work stealing left
    them). Each is now submitted when a worker is free for it."""
    small = copy.deepcopy(params)
    small["seeds"], small["prune"]["levels"] = [0], 1
    study = Study.from_dict(small, root=tmp_path, progress=False)
    crowding = Crowding(cluster)
    crowding.start()
    try:
        summary = compute.compute_study(study, cluster, figures=["fig1"], progress=False, out=lambda line: None)
    finally:
        crowding.stop.set()
        crowding.join()
    assert not summary.failed and not summary.skipped
    assert crowding.most == 1, f"a worker held {crowding.most} tasks at once"
    assert crowding.all_busy


def test_tasks_wait_for_what_they_build_on(params):
    study = Study.from_dict(params, progress=False)
    graph = compute.tasks(study, study.expand(), lockstep=False)
    order = list(graph)
    for task, deps in graph.items():
        for dep in deps:
            assert order.index(dep) < order.index(task)
            assert dep.seeds == task.seeds
    names = {t.name: [d.name for d in deps] for t, deps in graph.items()}
    assert names["reinit/seed1"] == ["imp/seed1"]
    assert names["extended_oneshot/seed0"] == ["extended_dense/seed0", "train/seed0"]
    f = params["noise_fractions"][0]
    assert names[f"imp(data.noisy_fraction={f}, prune.levels=2)/seed0"] == [f"train(data.noisy_fraction={f})/seed0"]
    assert names["tie(data.leave_out=top-improved, data.leave_out_fraction=0.1, data.leave_out_level=1)/seed0"] == ["imp/seed0"]
    # figure 4's imp to noise_levels (here = levels) is figure 1's imp run: no second task
    assert sum(n.startswith("imp(prune.levels=2)") for n in names) == 0
    lockstep = compute.tasks(study, study.expand(), lockstep=True)
    assert {t.seeds for t in lockstep} == {(0, 1)} and len(lockstep) == len(graph) // 2


def test_slurm_settings_come_from_flags_then_file_then_defaults():
    params = {"cluster": {"partition": "gpu", "walltime": "02:00:00", "gpus": 1}}
    opts = compute.slurm_options(params, {"walltime": "1-00:00:00", "memory": None})
    assert (opts["partition"], opts["walltime"], opts["gpus"], opts["memory"]) == ("gpu", "1-00:00:00", 1, "4GB")
    assert compute.walltime_seconds("1-02:03:04") == 93784
    assert compute.lifetime("01:00:00") == (3300, 150)  # leaves 5 minutes early, spread over 2.5
    with pytest.raises(compute.ConfigError, match="walltime '90' is not SLURM's"):
        compute.slurm_options({}, {"walltime": "90"})
    with pytest.raises(compute.ConfigError, match="unknown key cluster.queue"):
        compute.slurm_options({"cluster": {"queue": "x"}}, {})
    with pytest.raises(compute.ConfigError, match="must be 0 or 1"):
        compute.slurm_options({"cluster": {"gpus": 4}}, {})


def test_unknown_cluster_is_one_line(tmp_path):
    out = subprocess.run([BIN / "pgcore", "compute", REPO / "params" / "smoke.yaml", "--store", tmp_path,
                          "--cluster", "nonsense"], capture_output=True, text=True, timeout=HANG)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "pgcore: error: unknown cluster 'nonsense'; use local, slurm or a scheduler address such as tcp://host:8786"]
    assert not list(tmp_path.glob("*-*"))


# -- the store under concurrency ---------------------------------------------------------
TINY_RUN = {"data": {"name": "mnist1d", "num_samples": 1000, "val_fraction": 0.1},
            "model": {"name": "mlp", "width": 32, "depth": 2},
            "train": {"epochs": 2, "batch_size": 64, "lr": 0.1}, "prune": {"levels": 4}, "seeds": [0]}
IN_MOVED_TO = 0x80  # inotify: a file renamed into the directory (how the store writes every file)


class Renames:
    """Counts files renamed into a directory (Linux inotify), so every write of a store file
    is seen, however close two writes come."""

    def __init__(self, directory: Path):
        self.libc = ctypes.CDLL(None, use_errno=True)
        self.fd = self.libc.inotify_init1(os.O_NONBLOCK)
        if self.libc.inotify_add_watch(self.fd, str(directory).encode(), IN_MOVED_TO) < 0:
            raise OSError(ctypes.get_errno(), f"inotify cannot watch {directory}")

    def names(self) -> list[str]:
        out, buf = [], b""
        while True:
            try:
                buf += os.read(self.fd, 65536)
            except BlockingIOError:
                break
        offset = 0
        while offset < len(buf):
            _, _, _, length = struct.unpack_from("iIII", buf, offset)
            out.append(buf[offset + 16: offset + 16 + length].rstrip(b"\0").decode())
            offset += 16 + length
        os.close(self.fd)
        return out


def _pgcore_run(config: Path, store: Path) -> subprocess.Popen:
    return subprocess.Popen([BIN / "pgcore", "run", config, "--store", store, "--no-progress"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def _wait_until_idle(procs: list[subprocess.Popen]) -> None:
    """Until every process sleeps (no CPU used in two half-second windows): waiting for a lock."""
    deadline, quiet = time.monotonic() + HANG, 0
    while time.monotonic() < deadline:
        before = [_cpu_ticks(p.pid) for p in procs]
        time.sleep(0.5)
        assert all(p.poll() is None for p in procs), "a process ended while the run's lock was held"
        quiet = quiet + 1 if all(_cpu_ticks(p.pid) - b <= 2 for p, b in zip(procs, before)) else 0
        if quiet == 2:
            return
    raise TimeoutError("the processes never settled to wait for the lock")


@pytest.fixture
def tiny_run(tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY_RUN))
    study = Study.from_dict(TINY_RUN, root=tmp_path / "store", progress=False, lockstep=False)
    return config, Run(study.config("imp").replace(execution="sequential"), tmp_path / "store")


@pytest.mark.slow
def test_two_processes_on_one_run_train_it_once(tiny_run):
    config, run = tiny_run
    run.path.mkdir(parents=True)
    renames = Renames(run.path)
    with run.lock():  # both processes start and queue at the run's lock, then race for it
        procs = [_pgcore_run(config, run.root), _pgcore_run(config, run.root)]
        _wait_until_idle(procs)
    outs = [p.communicate(timeout=HANG) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [o[1][-2000:] for o in outs]
    written = renames.names()
    # Every file of the run written exactly once (level 0 is a reference to the dense run: no .pt).
    expected = ["config.json", "done.json", "level_000.json"] + [f"level_{k:03d}.{e}" for k in range(1, 5)
                                                                for e in ("json", "pt")]
    assert sorted(written) == sorted(expected)
    assert outs[0][0] == outs[1][0]  # both print the same run and the same numbers
    assert run.is_done()


@pytest.mark.slow
def test_killed_lock_holder_does_not_block_the_next(tiny_run, tmp_path):
    config, run = tiny_run
    first = _pgcore_run(config, run.root)
    reference = _pgcore_run(config, tmp_path / "reference")  # uninterrupted, meanwhile
    deadline = time.monotonic() + HANG
    while not (run.path / "level_001.json").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()[1][-2000:]
        time.sleep(0.01)
    first.send_signal(signal.SIGKILL)  # mid-run, holding the run's lock
    first.wait()
    assert not run.is_done() and Path(f"{run.path}.lock").exists()
    second = subprocess.run([BIN / "pgcore", "run", config, "--store", run.root, "--no-progress"],
                            capture_output=True, text=True, timeout=HANG)
    assert second.returncode == 0, second.stderr[-2000:]
    assert run.is_done()
    _, err = reference.communicate(timeout=HANG)
    assert reference.returncode == 0, err[-2000:]
    assert finals(run.root) == finals(tmp_path / "reference")


# -- the dashboard ---------------------------------------------------------------------------
def _listening(port: int) -> set[str]:
    """The addresses this process listens on at ``port``."""
    import psutil

    return {c.laddr.ip for c in psutil.Process().net_connections(kind="tcp")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def test_dashboard_listens_on_this_machine_only_and_a_taken_port_is_one_line(capfd):
    taken = socket.socket()
    try:
        taken.bind(("127.0.0.1", 8787))  # the default port, taken (if nothing here had it already)
        taken.listen()
    except OSError:
        pass
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        c = compute.local_cluster(1)
    try:
        port = c.client.scheduler_info()["services"]["dashboard"]
        assert port != 8787 and _listening(port) == {"127.0.0.1"}
        assert c.dashboard == f"http://127.0.0.1:{port}/status (port 8787 was in use)"
        assert not [w for w in caught if "already in use" in str(w.message)]
    finally:
        compute.close_cluster(c)
        taken.close()
    assert "Traceback" not in capfd.readouterr().err


def test_dashboard_option():
    assert compute.dashboard_address("none") is None and compute.dashboard_address("None") is None
    assert compute.dashboard_address("0.0.0.0:8787") == "0.0.0.0:8787"  # opened deliberately
    assert compute.dashboard_address("8788") == "127.0.0.1:8788"
    with pytest.raises(ConfigError, match="--dashboard must be HOST:PORT"):
        compute.dashboard_address("http://x")
    options = compute._scheduler_dashboard(None)  # no dashboard; health checks on this machine only
    assert options == {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    assert compute.DASHBOARD == "127.0.0.1:8787"


# -- what a compute says it did ---------------------------------------------------------------
def test_a_run_another_process_finished_meanwhile_counts_as_reused(tmp_path, monkeypatch):
    params = {**copy.deepcopy(TINY_RUN), "prune": {"levels": 1}}
    params["train"]["epochs"] = 1
    need = Need("train")
    other = tmp_path / "other"  # what the other process trains while this one waits for the run's lock
    first = compute.run_task(params, need, [0], str(other), "cpu", False, None)
    assert first["status"] == "ok" and first["trained"] == first["runs"] and first["reused"] == []
    root = tmp_path / "store"
    lock = Run.lock

    def finished_while_waiting(run: Run, timeout: float = -1):
        if not run.path.exists():
            shutil.copytree(other / run.path.relative_to(root), run.path)
        return lock(run, timeout)

    monkeypatch.setattr(Run, "lock", finished_while_waiting)
    second = compute.run_task(params, need, [0], str(root), "cpu", False, None)
    assert second["status"] == "ok", second
    same_run = str(root / Path(first["runs"][0]).relative_to(other))
    assert second["trained"] == [] and second["reused"] == second["runs"] == [same_run]
    summary = compute.Summary([second])
    assert summary.lines()[0].endswith("0 runs trained, 1 reused, 0 task(s) failed, 0 skipped")


def test_a_shared_run_is_trained_for_every_figure_that_reads_it():
    """Figure 4's IMP to noise_levels is figure 1's IMP run, grown: the one task training it counts for every figure
    that reads the run, so each figure's notebook waits for it (at smoke noise_levels > prune.levels)."""
    study = Study.from_dict(load_yaml(REPO / "params" / "smoke.yaml"), progress=False)
    graph = compute.tasks(study, study.expand(), lockstep=False)
    by_path = {}
    for task in graph:
        for path in study.run_paths(task.need, task.seeds[0]):
            by_path.setdefault(path, set()).update(task.need.figures)
    for figure in FIGURES:
        for need in study.needs([figure]):
            for path in study.run_paths(need, study.seeds[0]):
                assert figure in by_path[path], (figure, need.label())
