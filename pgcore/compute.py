"""A whole study at once: every run its figures need, one task per need and seed (or all seeds in lockstep on a GPU),
trained on a Dask cluster. Results travel only through the store (each level stored as it finishes, each run under its
own lock), so a task whose worker died is rerun elsewhere and resumes. An error inside a task is deterministic: it is
reported (traceback under ``<store>/failures/``), not retried, and only the tasks that build on it are skipped."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import logging
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import torch
import yaml
from dask.system import CPU_COUNT  # the cores this process may use (affinity and cgroup limits)

from .config import ConfigError, check_study
from .plans import levels_of, plan
from .progress import bar, set_total
from .protocols import CPU_THREADS
from .store import CorruptResultError, Run, default_root, recording_writes
from .figures import FIGURES
from .study import Need, Study, depends_on

__all__ = ["Task", "tasks", "run_task", "Notebooks", "run_notebook", "Cluster", "dashboard_address", "dashboard_link",
           "local_cluster", "slurm_options", "walltime_seconds", "lifetime", "slurm_cluster", "try_job_script",
           "scheduler_cluster", "open_cluster", "close_cluster", "Summary", "Trainings", "compute_study"]

RETRIES = 3  # times a task is rerun after its worker died (killed, out of memory, walltime)
LOCALHOST = "127.0.0.1"  # where a local cluster's scheduler and workers listen: no other machine can reach them
DASHBOARD = "127.0.0.1:8787"  # the scheduler's dashboard: this machine only, unless asked (--dashboard)
SLURM_DEFAULTS = {"partition": None, "account": None, "walltime": "01:00:00", "cores": 1, "memory": "4GB",
                  "gpus": 0, "jobs": 2}


@dataclass(frozen=True)
class Task:
    """One unit of work on a worker: a need for some seeds (one, or all in lockstep)."""

    need: Need
    seeds: tuple[int, ...]

    @property
    def name(self) -> str:
        seeds = f"seed{self.seeds[0]}" if len(self.seeds) == 1 else "seeds" + "-".join(map(str, self.seeds))
        return f"{self.need.label()}/{seeds}"


def tasks(study: Study, needs: Sequence[Need], lockstep: bool) -> dict[Task, list[Task]]:
    """Every task and the tasks it waits for, those first. Needs with the same runs (levels are not part of a run's
    identity) share one task: that of the first one asking for the most levels."""
    same: dict[Any, list[Need]] = {}
    for need in needs:
        same.setdefault(tuple(study.run_paths(need, study.seeds[0])), []).append(need)
    twin = {}
    for group in same.values():  # e.g. figure 4's imp to noise_levels is figure 1's imp, grown
        trainer = max(group, key=lambda n: len(levels_of(study.config(n.protocol, n.changes))))
        # it trains for every figure of the group: their notebooks wait for it
        figures = tuple(dict.fromkeys(f for n in group for f in n.figures))
        twin.update(dict.fromkeys(group, dataclasses.replace(trainer, figures=figures)))
    groups = [tuple(study.seeds)] if lockstep else [(s,) for s in study.seeds]
    return {Task(twin[need], seeds): list(dict.fromkeys(Task(twin[d], seeds) for d in depends_on(study, need)))
            for need in needs if twin[need] == need for seeds in groups}


def run_task(params: dict[str, Any], need: Need, seeds: Sequence[int], root: str, device: str, lockstep: bool,
             threads: int | None, after: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Train (or find) one task's runs on a worker and return a small status record. ``after``: the records of the
    tasks it builds on; ``threads``: torch threads, so that workers x threads = cores."""
    name = Task(need, tuple(seeds)).name
    record: dict[str, Any] = {"task": name, "need": need.label(), "seeds": list(seeds), "trained": [], "reused": []}
    first = next((a for a in after if a["status"] != "ok"), None)
    if first:
        return {**record, "status": "skipped", "message": f"builds on {first['task']}, which {first['status']}"}
    tic = time.perf_counter()
    try:
        if threads:
            torch.set_num_threads(threads)
        study = Study.from_dict({**params, "seeds": list(seeds)}, root=root, device=device, progress=False,
                                lockstep=lockstep)
        runs = [Run(study.config(need.protocol, need.changes, s), root) for s in seeds]
        record["runs"] = [str(run.path) for run in runs]
        with recording_writes() as written:
            study.train(need)
        # Trained: the runs this process stored a level of; reused: those found done (by an earlier command, or by
        # another process while this one waited for the run's lock).
        mine = {str(p) for p in written}
        done = {str(run.path) for run in runs if run.is_done()}
    except Exception as e:  # noqa: BLE001 -- reported with its traceback; the study goes on
        path = Path(root) / "failures" / f"{re.sub(r'[^A-Za-z0-9_.=,-]+', '_', name).strip('_')}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        base = {k: v for k, v in params.items() if k in ("data", "model", "train", "prune")}
        path.write_text(f"task: {name}\nneed: {need.label()}\nseeds: {list(seeds)}\nchanges: {dict(need.changes)}\n"
                        f"base config:\n{yaml.safe_dump(base, sort_keys=True)}\n{traceback.format_exc()}")
        return {**record, "status": "failed", "message": f"{type(e).__name__}: {e}", "traceback": str(path)}
    return {**record, "status": "ok", "trained": sorted(done & mine), "reused": sorted(done - mine),
            "wall_s": time.perf_counter() - tic}


@dataclass(frozen=True)
class Notebooks:
    """Run each figure's notebook (papermill, kernel ``kernel``) on the parameter file ``params`` as soon as that
    figure's runs are done, writing the executed notebook into ``out``."""

    params: str
    out: str
    kernel: str = "pgcore"


def run_notebook(figure: str, nbs: Notebooks, root: str, after: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Figure ``figure``'s notebook, executed on a worker once the tasks it reads (``after``) have ended."""
    from .provenance import project_dir

    record: dict[str, Any] = {"task": f"notebook {figure}", "need": "notebook", "seeds": [], "trained": [],
                              "reused": []}
    blocked = [a for a in after if a["status"] != "ok"]
    if blocked:
        return {**record, "status": "skipped", "message": f"reads {blocked[0]['task']}, which {blocked[0]['status']}"}
    import papermill

    nb = project_dir() / "notebooks" / f"{FIGURES[figure].notebook}.ipynb"
    out = Path(nbs.out) / nb.name
    try:
        papermill.execute_notebook(str(nb), str(out), kernel_name=nbs.kernel, cwd=str(nb.parent), progress_bar=False,
                                   parameters={"params": nbs.params, "overrides": {"store_dir": root}})
    except Exception as e:  # noqa: BLE001 -- reported; the other figures go on
        last = (str(e).strip().splitlines() or [type(e).__name__])[-1]
        return {**record, "status": "failed", "message": f"{last} (see {out})"}
    return {**record, "status": "ok", "message": str(out)}


@dataclass
class Cluster:
    """A Dask client and what tasks need to know about its workers."""

    client: Any
    kind: str
    workers: int | None  # None: whatever the scheduler has
    threads: int | None  # torch threads per worker; None: leave torch's default
    gpus: bool
    dashboard: str | None = None  # its link (and a note if the port asked for was taken); None: no dashboard


def dashboard_address(value: str | None) -> str | None:
    """``--dashboard`` as Dask's address: ``HOST:PORT`` as given, a bare ``PORT`` on 127.0.0.1,
    ``none`` (or None) for no dashboard."""
    if value is None or value.strip().lower() == "none":
        return None
    value = value.strip()
    if value.isdigit():
        return f"127.0.0.1:{value}"
    if not re.fullmatch(r"(\[[0-9A-Fa-f:]+\]|[\w.-]*):\d{1,5}", value):
        raise ConfigError(f"--dashboard must be HOST:PORT (127.0.0.1:8787, or 0.0.0.0:8787 to open it to the "
                          f"network) or none, got {value!r}")
    return value


def _scheduler_dashboard(address: str | None) -> dict[str, Any]:
    """Scheduler options for a dashboard at ``address``; None: none (the scheduler's bare HTTP server, for health
    checks only, then listens on this machine only)."""
    return {"dashboard": address is not None, "dashboard_address": "127.0.0.1:0" if address is None else address}


EVERY_INTERFACE = ("", "0", "0.0.0.0", "::", "[::]", "*")  # hosts that listen on every network interface
_LOOPBACK = re.compile(r"127(\.\d{1,3}){3}|localhost|::1|\[::1\]")


def dashboard_link(host: str, port: int, asked: int) -> str:
    """The dashboard's link as one line: where it really listens, a port that was taken instead of the one ``asked``,
    and a warning when it is open beyond this machine (it has no authentication)."""
    from distributed.utils import get_ip

    everywhere = host in EVERY_INTERFACE
    link = f"http://{get_ip() if everywhere else host}:{port}/status"
    if everywhere:
        link += f", listening on every network interface ({'0.0.0.0' if host in ('', '0', '*') else host}:{port})"
    if asked not in (0, port):
        link += f" (port {asked} was in use)"
    if not _LOOPBACK.fullmatch(host):
        link += (f"; warning: open to the network without authentication, anyone who reaches this machine sees it "
                 f"(--dashboard 127.0.0.1:{port} and an SSH tunnel keep it private)")
    return link


def _start(make: Callable[[], Any], dashboard: str | None) -> tuple[Any, str | None]:
    """A client of a cluster started here, and its dashboard's link (:func:`dashboard_link`, instead of
    distributed's raw 'Port 8787 is already in use' warning)."""
    from distributed import Client

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
        client = Client(make())
    port = client.scheduler_info().get("services", {}).get("dashboard")
    if dashboard is None or port is None:
        return client, None
    host, asked = dashboard.rsplit(":", 1)
    return client, dashboard_link(host, port, int(asked))


def local_cluster(workers: int | None = None, dashboard: str | None = DASHBOARD, threads: int | None = None) -> Cluster:
    """This machine: one worker process per GPU (seeing only its own), or without GPUs one per core (``workers``:
    fewer), each running one task at a time with cores / workers torch threads (``threads``: another number).
    Results do not depend on the count: a run on a CPU uses :data:`pgcore.protocols.CPU_THREADS`."""
    from distributed import LocalCluster, Nanny, Scheduler, SpecCluster

    listed = [d.strip() for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    gpus = (listed or [str(i) for i in range(torch.cuda.device_count())])[: torch.cuda.device_count()]
    options = _scheduler_dashboard(dashboard)
    if gpus:
        gpus = gpus[: workers or None]
        n = len(gpus)
        # On this machine only, as LocalCluster does (its scheduler takes any client that reaches it).
        specs = {f"gpu{d}": {"cls": Nanny, "options": {"nthreads": 1, "host": LOCALHOST,
                                                       "env": {"CUDA_VISIBLE_DEVICES": d}}} for d in gpus}
        make = partial(SpecCluster, workers=specs, silence_logs=logging.ERROR, name="pgcore",
                       scheduler={"cls": Scheduler, "options": {**options, "host": LOCALHOST}})
    else:
        n = workers or CPU_COUNT
        make = partial(LocalCluster, n_workers=n, threads_per_worker=1, processes=True,
                       dashboard_address=options["dashboard_address"], scheduler_kwargs=options,
                       silence_logs=logging.ERROR)
    # Started with Ctrl-C ignored, the worker processes leave it to this one, which shuts them down (they would print
    # their own tracebacks: dask/distributed#1925).
    main = threading.current_thread() is threading.main_thread()  # the only thread that may set a handler
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN) if main else None
    try:
        client, link = _start(make, dashboard)
    finally:
        if main:
            signal.signal(signal.SIGINT, previous)
    return Cluster(client, "local", n, threads or max(1, CPU_COUNT // n), bool(gpus), link)


def slurm_options(params: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """SLURM job settings: the defaults, then the parameter file's ``cluster:`` section (checked by
    :func:`pgcore.config.check_study`), then flags given on the command line."""
    section = check_study({"cluster": params.get("cluster")})["cluster"] or {}
    opts = {**SLURM_DEFAULTS, **section, **{k: v for k, v in flags.items() if v is not None}}
    check_study({"cluster": opts})  # the flags too
    if int(opts["gpus"]) not in (0, 1):
        raise ConfigError(f"cluster.gpus is per job and must be 0 or 1 (got {opts['gpus']}); for more GPUs ask "
                          f"for more jobs (cluster.jobs), each of which holds one")
    walltime_seconds(opts["walltime"])  # checked here, before any job is submitted
    return opts


def walltime_seconds(walltime: str) -> int:
    """SLURM's ``[D-]HH:MM:SS`` (or ``MM:SS``) in seconds."""
    m = re.fullmatch(r"(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)", str(walltime).strip())
    if not m:
        raise ConfigError(f"walltime '{walltime}' is not SLURM's [D-]HH:MM:SS, e.g. 04:00:00")
    d, h, mnt, s = (int(x or 0) for x in m.groups())
    return ((d * 24 + h) * 60 + mnt) * 60 + s


def lifetime(walltime: str) -> tuple[int, int]:
    """A worker's lifetime and its spread: it leaves a few minutes before its job's walltime (its task resumes
    elsewhere) and adapt() replaces it; the spread keeps workers from leaving together."""
    total = walltime_seconds(walltime)
    margin = min(300, total // 5)
    return total - margin, min(240, margin // 2)


def slurm_cluster(opts: Mapping[str, Any], root: Path, dashboard: str | None = DASHBOARD) -> Cluster:
    """A ``dask_jobqueue.SLURMCluster`` of one worker per job (``opts['cores']`` cores, one task at a time), adapting
    between one job and ``opts['jobs']``. Its scheduler is private: it listens on the address the workers are given,
    with TLS, and takes only clients holding the temporary certificate made for this cluster (its workers, this
    process). The job script is tried with ``sbatch --test-only`` before any job is submitted."""
    if shutil.which("sbatch") is None:
        raise ConfigError("--cluster slurm needs SLURM's sbatch on the PATH (none found); run on a login node, or "
                          "use --cluster local or a scheduler address")
    from dask_jobqueue import SLURMCluster
    from distributed.security import Security
    from distributed.utils import get_ip

    try:
        security = Security.temporary()  # a key and certificate in memory, for this cluster only
    except ImportError:
        raise ConfigError("--cluster slurm needs the cryptography package for its private scheduler (TLS with "
                          "temporary certificates): pip install cryptography") from None
    life, stagger = lifetime(opts["walltime"])
    logs = root / "slurm-logs"
    if re.search(r'["\\\n]', str(logs)):
        raise ConfigError(f"the store path {root} holds a quote, backslash or newline, which a SLURM job script "
                          f"cannot carry; use another store (--store DIR)")
    logs.mkdir(parents=True, exist_ok=True)
    sbatch_logs = str(logs).replace("%", "%%")  # sbatch reads %J and the like in these paths; quoted for spaces
    client, link = _start(partial(
        SLURMCluster, job_cls=_quoted_job(), queue=opts["partition"], account=opts["account"], cores=1,
        job_cpu=int(opts["cores"]), processes=1, memory=str(opts["memory"]), walltime=str(opts["walltime"]),
        python=shlex.quote(sys.executable), job_name="pgcore",
        job_extra_directives=[f'-e "{sbatch_logs}/pgcore-%J.err"', f'-o "{sbatch_logs}/pgcore-%J.out"',
                              *(["--gres=gpu:1"] if int(opts["gpus"]) else [])],
        job_script_prologue=[f"export PGCORE_STORE={shlex.quote(str(root))}", f"cd {shlex.quote(str(Path.cwd()))}"],
        worker_extra_args=["--lifetime", f"{life}s", "--lifetime-stagger", f"{stagger}s", "--no-dashboard"],
        security=security, shared_temp_directory=str(logs),  # the workers' copy of the credentials (mode 0600)
        scheduler_options={"host": get_ip(), **_scheduler_dashboard(dashboard)}), dashboard)
    c = Cluster(client, "slurm", int(opts["jobs"]), int(opts["cores"]), bool(int(opts["gpus"])), link)
    try:
        try_job_script(client.cluster.job_script())
    except BaseException:
        close_cluster(c)
        raise
    client.cluster.adapt(minimum_jobs=1, maximum_jobs=int(opts["jobs"]))
    return c


def _quoted_job() -> type:
    """dask-jobqueue's SLURM job, with the credentials' paths quoted on the worker's command line (which it joins
    unquoted), so that a store path with spaces works."""
    from dask_jobqueue.slurm import SLURMJob

    class QuotedSLURMJob(SLURMJob):
        def __init__(self, *args: Any, security: Any = None, **kwargs: Any):
            if security is not None:
                security = copy.copy(security)
                for field in ("tls_ca_file", "tls_worker_cert", "tls_worker_key"):
                    setattr(security, field, shlex.quote(getattr(security, field)))
            super().__init__(*args, security=security, **kwargs)

    return QuotedSLURMJob


def try_job_script(script: str) -> None:
    """Refuse a job script that SLURM would reject (unknown partition or account, a bad directive, more than a node
    has) with SLURM's own words, before any job is submitted: a rejected job would leave a study waiting for
    workers that never come."""
    try:  # sbatch reads the script from stdin when no file is named
        proc = subprocess.run(["sbatch", "--test-only"], input=script, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        raise ConfigError("sbatch --test-only did not answer in 60 s; is SLURM's controller up (sinfo)?") from None
    if proc.returncode != 0:
        said = [line.removeprefix("sbatch: error: ").strip() for line in proc.stderr.splitlines() if line.strip()]
        raise ConfigError(f"SLURM refuses the worker job: {'; '.join(dict.fromkeys(said)) or proc.returncode}; check "
                          f"--partition, --account, --walltime, --memory, --cores and --gpus (or the parameter file's "
                          f"cluster: section)")


def scheduler_cluster(address: str) -> Cluster:
    """A running Dask scheduler (``tcp://host:8786``); its workers should have ``--nthreads 1``."""
    from distributed import Client

    try:
        client = Client(address, timeout="15s")
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"no Dask scheduler answers at {address} ({e}); start one with `dask scheduler`, or use "
                          f"--cluster local") from None
    client.wait_for_workers(1, timeout=600)
    return dataclasses.replace(_given(client), kind=address, workers=None)  # workers: however many join


def _given(client: Any) -> Cluster:
    """A cluster handed in, or a client's, with torch threads split over the cores when its workers run on this
    machine (a local cluster)."""
    if isinstance(client, Cluster):
        return client
    from distributed import LocalCluster

    gpus = any(client.run(torch.cuda.device_count).values())
    n = len(client.scheduler_info()["workers"])
    threads = max(1, CPU_COUNT // n) if isinstance(client.cluster, LocalCluster) and n else None
    return Cluster(client, "given", n or None, threads, gpus, client.dashboard_link)


@contextlib.contextmanager
def open_cluster(cluster: str = "local", workers: int | None = None, params: Mapping[str, Any] | None = None,
                 slurm: Mapping[str, Any] | None = None, root: Path | None = None,
                 dashboard: str | None = DASHBOARD) -> Iterator[Cluster]:
    """A cluster by name: ``local``, ``slurm`` or a scheduler address; closed on exit."""
    if cluster == "local":
        c = local_cluster(workers, dashboard)
    elif cluster == "slurm":
        opts = slurm_options(params or {}, {**(slurm or {}), **({"jobs": workers} if workers else {})})
        c = slurm_cluster(opts, root or default_root(), dashboard)
    elif re.fullmatch(r"(tcp|tls|inproc|ws|wss|ucx)://\S+|[\w.-]+:\d+", cluster):
        c = scheduler_cluster(cluster)
    else:
        raise ConfigError(f"unknown cluster '{cluster}'; use local, slurm or a scheduler address such as "
                          f"tcp://host:8786")
    try:
        yield c
    finally:
        close_cluster(c)


def close_cluster(c: Cluster) -> None:
    """Close a cluster opened here, and its client, without the tracebacks of lost connections (nothing wrong)."""
    owner = c.client.cluster
    if owner is not None:  # its workers are ours: quiet them too
        with contextlib.suppress(Exception):
            c.client.run(logging.disable, logging.CRITICAL)
    before = logging.root.manager.disable  # restored after, as the caller had it
    logging.disable(logging.CRITICAL)
    try:
        c.client.close()
        if owner is not None:
            owner.close()
    finally:
        logging.disable(before)


@dataclass
class Summary:
    """What a compute did, from one record per task (as :func:`run_task` returns it) and the levels it trained."""

    records: list[dict[str, Any]]
    wall_s: float = 0.0
    levels: int = 0
    study: Study | None = None  # the study as computed (its execution mode decided for the cluster's device)

    def __post_init__(self) -> None:
        self.tasks = len(self.records)
        self.trained = sorted({run for r in self.records for run in r["trained"]})
        self.reused = sorted({run for r in self.records for run in r["reused"]} - set(self.trained))
        self.failed = [r for r in self.records if r["status"] == "failed"]
        self.skipped = [r for r in self.records if r["status"] == "skipped"]

    def lines(self) -> list[str]:
        ran = sum(r.get("need") == "notebook" and r["status"] == "ok" for r in self.records)
        notebooks = f", {ran} notebook(s) run" if any(r.get("need") == "notebook" for r in self.records) else ""
        out = [f"{self.tasks} tasks in {self.wall_s:.1f} s ({self.levels} levels trained): {len(self.trained)} runs "
               f"trained, {len(self.reused)} reused{notebooks}, {len(self.failed)} task(s) failed, "
               f"{len(self.skipped)} skipped"]
        for f in self.failed:
            runs = f" (run {', '.join(f['runs'])})" if f.get("runs") else ""
            where = f"; traceback: {f['traceback']}" if f.get("traceback") else ""
            out.append(f"  failed {f['task']}{runs}: {f['message']}{where}")
        return out + [f"  skipped {s['task']}: {s['message']}" for s in self.skipped]


def _stored(run: Run) -> set[int]:
    """The levels ``run`` has stored; none for a run its task will find corrupt, and report."""
    try:
        return set(run.finished_levels())
    except (CorruptResultError, FileNotFoundError):
        return set()


class Trainings:
    """The levels a compute has to train (a level 0 that is the seed's dense run is stored as a reference to it, not
    trained), counted in the store as they are written: what the progress bar shows. A task that fails or is skipped
    takes the levels it left untrained out of the total."""

    def __init__(self, study: Study, graph: Mapping[Task, Sequence[Task]]):
        self.graph, self.ended = graph, set()
        self.runs = {task: [Run(study.config(task.need.protocol, task.need.changes, seed), study.root)
                            for seed in task.seeds] for task in graph}
        # run directory -> its levels to train (counted before any task starts), and how many of those are stored now
        self.todo = {str(run.path): [k for k in sorted(set(levels_of(run.cfg)) - _stored(run))
                                     if plan(run.cfg, k).reuse != "dense"]
                     for runs in self.runs.values() for run in runs}
        self.stored = dict.fromkeys(self.todo, 0)

    def _count(self, runs: Iterable[Run]) -> None:
        for run in runs:
            have = _stored(run)
            self.stored[str(run.path)] = sum(k in have for k in self.todo[str(run.path)])

    def poll(self) -> None:
        """Count the levels stored meanwhile by the tasks that may be running (those whose dependencies ended)."""
        for task, runs in self.runs.items():
            if task not in self.ended and all(d in self.ended for d in self.graph[task]):
                self._count(runs)

    def end(self, task: Task) -> None:
        """``task`` has ended: count its levels."""
        self.ended.add(task)
        self._count(self.runs[task])

    @property
    def done(self) -> int:
        return sum(self.stored.values())

    @property
    def total(self) -> int:
        going = {str(run.path) for task, runs in self.runs.items() if task not in self.ended for run in runs}
        return sum(len(levels) if path in going else self.stored[path] for path, levels in self.todo.items())


POLL_S = 1.0  # how often the progress bar counts the levels stored


def compute_study(study: Study, client: Any = None, *, figures: Iterable[str] = tuple(FIGURES),
                  needs: Iterable[Need] | None = None, cluster: str = "local", workers: int | None = None,
                  slurm: Mapping[str, Any] | None = None, retries: int = RETRIES, progress: bool = True,
                  out: Callable[[str], None] = print, dashboard: str | None = DASHBOARD,
                  notebooks: Notebooks | None = None) -> Summary:
    """Compute every run ``study``'s figures need (or only ``needs`` and what they build on) on a Dask cluster:
    ``client`` (a :class:`Cluster` or a ``distributed.Client`` whose workers run one task at a time), or one opened
    by name (:func:`open_cluster`) and closed at the end. Each task is submitted once what it builds on has ended and
    a worker is free for it (:func:`_run`); the progress bar counts the levels trained (:class:`Trainings`)."""
    import dask
    import distributed  # noqa: F401 -- loads its config defaults, before one is set below

    root = (Path(study.root) if study.root is not None else default_root()).resolve()
    wanted = study.expand(figures, needs)
    opened = (contextlib.nullcontext(_given(client)) if client is not None
              else open_cluster(cluster, workers, study.params, slurm, root, dashboard))
    # The scheduler's setting, so that it holds for clusters opened here.
    with dask.config.set({"distributed.scheduler.allowed-failures": retries}), opened as c:
        tic = time.perf_counter()
        # How seeds train, decided once for the cluster's device: the study as the workers will build it.
        study = dataclasses.replace(study, root=root, progress=False, device="cuda" if c.gpus else "cpu")
        lockstep = study.execution == "lockstep"
        graph = tasks(study, wanted, lockstep)
        count = Trainings(study, graph)
        # On a CPU every run trains on CPU_THREADS threads, whatever torch's setting on the worker (results do not
        # depend on the number of workers).
        per = " (one GPU each)" if c.gpus else f"; each run trains on {CPU_THREADS} CPU thread{'s' * (CPU_THREADS > 1)}"
        out(f"computing {len(graph)} tasks ({count.total} levels to train) on a {c.kind} cluster, "
            f"{'its' if c.workers is None else c.workers} worker(s){per}; seeds "
            f"{'in lockstep' if lockstep else 'one by one'}; store {study.root}")
        if c.dashboard:
            out(f"dashboard: {c.dashboard}")
        records = _run(c, study, graph, lockstep, retries, figures, notebooks, count, progress)
        return Summary(records, time.perf_counter() - tic, count.done, study)


def _run(c: Cluster, study: Study, graph: Mapping[Task, Sequence[Task]], lockstep: bool, retries: int,
         figures: Iterable[str], notebooks: Notebooks | None, count: Trainings, progress: bool) -> list[dict[str, Any]]:
    """Every task's record. A task is submitted once the tasks it builds on have ended (their records are its
    ``after``) and a worker is free for it, earlier figures' tasks first; each figure's notebook (with ``notebooks``)
    once that figure's tasks have ended, before any waiting training. (Given the futures it builds on, Dask would queue
    a task on the worker holding their results, and its work stealing leaves a queued long task there while another
    worker sits idle.) The progress bar counts the levels stored meanwhile."""
    from distributed import as_completed

    waiting: dict[Any, Sequence[Task]] = {f: [t for t in graph if f in t.need.figures]
                                          for f in figures if notebooks and FIGURES[f].notebook}
    waiting.update(graph)
    ended: dict[Any, dict[str, Any]] = {}
    running: dict[Any, Any] = {}  # future -> its task, or its figure
    finished = as_completed()
    # smoothing=0: the time left from the mean rate so far, steady where levels take about as long as each other
    with bar(total=count.total, desc="levels", unit="level", disable=not progress, dynamic_ncols=True,
             smoothing=0) as b:
        while waiting or running:
            free = (c.workers or len(c.client.scheduler_info()["workers"]) or 1) - len(running)
            for job in [j for j, deps in waiting.items() if all(d in ended for d in deps)][:max(free, 0)]:
                after, name = [ended[d] for d in waiting.pop(job)], getattr(job, "name", f"notebook {job}")
                call = ((run_task, study.params, job.need, job.seeds, str(study.root), str(study.device), lockstep,
                         c.threads) if isinstance(job, Task) else (run_notebook, job, notebooks, str(study.root)))
                f = c.client.submit(*call, after, key=f"{name}-{uuid.uuid4().hex[:8]}", pure=False, retries=retries)
                running[f] = job
                finished.add(f)
            batch = finished.next_batch(block=not progress)
            for future in batch:
                job = running.pop(future)
                ended[job] = _record(future, future.key.rsplit("-", 1)[0])  # the task's name, or "notebook <figure>"
                if ended[job]["status"] == "failed":  # said at once, not only in the summary hours later
                    b.write(Summary([ended[job]]).lines()[1])
                if isinstance(job, Task):
                    count.end(job)
            if progress and not batch:
                time.sleep(POLL_S)
                count.poll()
            set_total(b, count.total)
            b.update(count.done - b.n)
    return list(ended.values())


def _record(future: Any, name: str) -> dict[str, Any]:
    """A finished task's record; a task lost with its workers (more deaths than retries) is a failure, and the tasks
    that build on it are skipped."""
    if future.status == "finished":
        return future.result()
    record = {"task": name, "status": "failed", "trained": [], "reused": []}
    if future.status == "cancelled":
        return {**record, "message": "cancelled: the scheduler lost it (cluster shut down?); run it again to go on"}
    e = future.exception()
    return {**record, "message": f"{type(e).__name__}: {e}"}
