"""A whole study at once: every run its figures need, spread over Dask workers.

:func:`plan` lists the runs a parameter file's notebooks read (:meth:`Study.needs` and the runs
they build on), each once, with what the store already holds. :func:`compute_study` trains
what is missing on a Dask cluster: this machine's cores or GPUs (:func:`local_cluster`), a
SLURM cluster (:func:`slurm_cluster`) or any running scheduler. The notebooks then only read.

How the work is cut: one task per need and seed when seeds train one after the other, one
task per need (all seeds together) when they train in lockstep on a GPU. A task waits for the
tasks of the needs it builds on (:func:`pgcore.study.depends_on`). Results travel only
through the store: a task trains into it and returns a small status record. Since every
level is stored as soon as it finishes and every run trains under its own lock, a worker that
dies loses at most the level in progress; its task is rerun elsewhere and resumes there with
the numbers of an uninterrupted run. An error inside a task is deterministic (training is), so
it is reported, with a traceback file under ``<store>/failures/``, not retried; tasks that
build on a failed one are skipped, and everything else finishes.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import shutil
import sys
import time
import traceback
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

from dask.system import CPU_COUNT  # the cores this process may use (affinity and cgroup limits)

from .config import ConfigError
from .plans import last_level
from .progress import bar
from .store import Run, default_root, recording_writes
from .study import FIGURES, Need, Study, depends_on

RETRIES = 3  # times a task is rerun after its worker died (killed, out of memory, walltime)
TASK_DURATION = "1h"  # what the scheduler assumes a task takes before it has timed one (it is a training)
DASHBOARD = "127.0.0.1:8787"  # the scheduler's dashboard: this machine only, unless asked (--dashboard)
SLURM_DEFAULTS = {"partition": None, "account": None, "walltime": "01:00:00", "cores": 1, "memory": "4GB",
                  "gpus": 0, "jobs": 2}


# -- tasks -------------------------------------------------------------------------------
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
    """Every task and the tasks it waits for, in an order where those come first. A need whose
    runs another need already covers (the same runs, as many levels or fewer) gets no task."""
    twin = _twins(study, needs)
    groups = [tuple(study.seeds)] if lockstep else [(s,) for s in study.seeds]
    out: dict[Task, list[Task]] = {}
    for need in needs:
        if twin[need] != need:
            continue
        for seeds in groups:
            deps = [Task(twin[d], seeds) for d in depends_on(study, need)]
            out[Task(need, seeds)] = list(dict.fromkeys(deps))
    return out


def _twins(study: Study, needs: Sequence[Need]) -> dict[Need, Need]:
    """For each need, the need whose task trains its runs: itself, or an earlier need with the
    same runs (the number of levels is not part of a run's identity, so e.g. figure 4's
    ``imp`` to ``noise_levels`` is figure 1's ``imp`` run, grown)."""
    by_runs: dict[tuple[str, ...], Need] = {}
    twin: dict[Need, Need] = {}
    for need in needs:
        paths = study.run_paths(need, study.seeds[0])
        if paths is None:  # its runs are not known yet: nothing to share
            twin[need] = need
            continue
        key = tuple(paths)
        first = by_runs.setdefault(key, need)
        if first != need and _levels(study, need) > _levels(study, first):
            by_runs[key] = need  # the one with more levels trains; the other's runs are its prefix
            twin.update({n: need for n, t in twin.items() if t == first})
            twin[first] = need
        twin[need] = by_runs[key]
    return twin


def _levels(study: Study, need: Need) -> int:
    return last_level(study.config(need.protocol, need.changes))


def run_task(params: dict[str, Any], need: Need, seeds: Sequence[int], root: str, device: str, lockstep: bool,
             threads: int | None, after: Sequence[dict[str, Any]] = ()) -> dict[str, Any]:
    """Train (or find) one task's runs on a worker; returns a small status record. ``after``:
    the records of the tasks it builds on (if one did not finish, this one is skipped);
    ``threads``: torch threads for this worker, so that workers x threads = cores."""
    name = Task(need, tuple(seeds)).name
    record: dict[str, Any] = {"task": name, "need": need.label(), "seeds": list(seeds), "trained": [], "reused": [],
                              "worker": _worker_name()}
    blocked = [a for a in after if a["status"] != "ok"]
    if blocked:
        return {**record, "status": "skipped", "message": f"builds on {blocked[0]['task']}, which {blocked[0]['status']}"}
    tic = time.perf_counter()
    try:
        import torch

        if threads:
            torch.set_num_threads(threads)
        study = Study.from_dict({**params, "seeds": list(seeds)}, root=root, device=device, progress=False,
                                lockstep=lockstep)
        record["runs"] = [str(Run(cfg, root).path) for s in seeds for cfg in study.runs(need, s)]
        with recording_writes() as written:
            study.compute(need)
        trained, reused = split_runs(_done_runs(study, need), written)
    except Exception as e:  # noqa: BLE001 -- reported with its traceback; the study goes on
        path = _write_failure(Path(root), name, need, seeds, params, traceback.format_exc())
        return {**record, "status": "failed", "message": f"{type(e).__name__}: {e}", "traceback": str(path)}
    return {**record, "status": "ok", "trained": trained, "reused": reused, "wall_s": time.perf_counter() - tic}


def split_runs(done: Iterable[str], written: Iterable[Path]) -> tuple[list[str], list[str]]:
    """The finished runs of a task as (trained, reused): trained are those this process stored
    a level (or done.json) of; the others it found finished, by an earlier command or by
    another process while it waited for the run's lock."""
    mine = {str(p) for p in written}
    done = set(done)
    return sorted(done & mine), sorted(done - mine)


def _done_runs(study: Study, need: Need) -> set[str]:
    return {str(Run(cfg, study.root).path) for s in study.seeds for cfg in study.runs(need, s)
            if Run(cfg, study.root).is_done()}


def _worker_name() -> str | None:
    try:
        from distributed import get_worker

        return str(get_worker().name)
    except (ImportError, ValueError):
        return None


def failure_path(root: Path, task_name: str) -> Path:
    """Where a failed task's traceback goes: ``<store>/failures/<task>.txt``."""
    safe = re.sub(r"[^A-Za-z0-9_.=,-]+", "_", task_name).strip("_")
    return root / "failures" / f"{safe}.txt"


def _write_failure(root: Path, name: str, need: Need, seeds: Sequence[int], params: Mapping[str, Any],
                   tb: str) -> Path:
    import yaml

    path = failure_path(root, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    base = {k: v for k, v in params.items() if k in ("data", "model", "train", "prune")}
    path.write_text(f"task: {name}\nneed: {need.label()}\nseeds: {list(seeds)}\n"
                    f"changes: {dict(need.changes)}\nbase config:\n{yaml.safe_dump(base, sort_keys=True)}\n{tb}")
    return path


# -- clusters ----------------------------------------------------------------------------
@dataclass
class Cluster:
    """A Dask client and what tasks need to know about its workers."""

    client: Any
    kind: str
    workers: int | None  # None: whatever the scheduler has
    threads: int | None  # torch threads per worker; None: leave torch's default
    gpus: bool
    dashboard: str | None = None  # its link (and a note if the port asked for was taken); None: no dashboard

    def describe(self) -> str:
        n = "its" if self.workers is None else str(self.workers)
        per = f", {self.threads} torch thread(s) each" if self.threads else ""
        return f"{self.kind} cluster, {n} worker(s){' (one GPU each)' if self.gpus else ''}{per}"


def visible_gpus() -> list[str]:
    """The CUDA devices this machine shows, as CUDA_VISIBLE_DEVICES names them."""
    import torch

    if not torch.cuda.is_available():
        return []
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [d.strip() for d in listed.split(",") if d.strip()][: torch.cuda.device_count()]
    return [str(i) for i in range(torch.cuda.device_count())]


def dashboard_address(value: str | None) -> str | None:
    """``--dashboard`` as Dask's address: ``HOST:PORT`` as given (``0.0.0.0:8787`` opens it to
    the network), a bare ``PORT`` on 127.0.0.1, ``none`` (or None) for no dashboard."""
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
    """Scheduler options for a dashboard at ``address``; None: no dashboard (the scheduler's
    bare HTTP server, health checks only, then listens on this machine only)."""
    if address is None:
        return {"dashboard": False, "dashboard_address": "127.0.0.1:0"}
    return {"dashboard": True, "dashboard_address": address}


@contextlib.contextmanager
def _taken_port_quiet() -> Iterator[None]:
    """No raw 'Port 8787 is already in use' warning from distributed while a cluster starts:
    :func:`_dashboard_link` says in one line which port the dashboard got."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
        yield


def _dashboard_link(client: Any, address: str | None) -> str | None:
    """Where the dashboard of a cluster started here listens, noting a port that was taken."""
    if address is None:
        return None
    host, asked = address.rsplit(":", 1)
    port = client.scheduler_info().get("services", {}).get("dashboard")
    if host in ("", "0.0.0.0", "[::]") or port is None:
        link = client.dashboard_link
    else:
        link = f"http://{host}:{port}/status"
    return link if int(asked) in (0, port) else f"{link} (port {asked} was in use)"


def local_cluster(workers: int | None = None, dashboard: str | None = DASHBOARD, threads: int | None = None) -> Cluster:
    """This machine: one worker process per GPU, each seeing only its own device, or without
    GPUs one worker per core (``workers``: fewer). Every worker runs one task at a time with
    cores / workers torch threads (``threads``: another number); training on a CPU itself uses
    :data:`pgcore.protocols.CPU_THREADS`, so that results do not depend on the core count, and
    the cores are used by running runs side by side. The dashboard listens on ``dashboard``
    (:func:`dashboard_address`; default this machine only)."""
    from distributed import Client, LocalCluster, Nanny, Scheduler, SpecCluster

    gpus = visible_gpus()
    options = _scheduler_dashboard(dashboard)
    with _taken_port_quiet():
        if gpus:
            gpus = gpus[:workers] if workers else gpus
            threads = threads or max(1, CPU_COUNT // len(gpus))
            specs = {f"gpu{d}": {"cls": Nanny, "options": {"nthreads": 1, "env": {"CUDA_VISIBLE_DEVICES": d}}}
                     for d in gpus}
            cluster = SpecCluster(workers=specs, scheduler={"cls": Scheduler, "options": options},
                                  silence_logs=logging.ERROR, name="pgcore")
            n = len(gpus)
        else:
            n = workers or CPU_COUNT
            threads = threads or max(1, CPU_COUNT // n)
            cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True,
                                   dashboard_address=options["dashboard_address"], scheduler_kwargs=options,
                                   silence_logs=logging.ERROR)
        client = Client(cluster)
    return Cluster(client, "local", n, threads, bool(gpus), _dashboard_link(client, dashboard))


def slurm_options(params: Mapping[str, Any], flags: Mapping[str, Any]) -> dict[str, Any]:
    """SLURM job settings: the defaults, then the parameter file's ``cluster:`` section, then
    flags given on the command line."""
    section = params.get("cluster") or {}
    if not isinstance(section, Mapping):
        raise ConfigError(f"the parameter file's cluster: must be a mapping such as {{partition: gpu, walltime: "
                          f"'04:00:00'}}, got {section!r}")
    unknown = sorted(set(section) - set(SLURM_DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown key cluster.{unknown[0]}; known: {', '.join(SLURM_DEFAULTS)}")
    opts = {**SLURM_DEFAULTS, **section, **{k: v for k, v in flags.items() if v is not None}}
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
    """How long a worker lives and the spread of that across workers: it leaves a few minutes
    before its job's walltime (its task is rerun elsewhere, resuming from the last stored level)
    and adapt() submits a job to replace it; the spread keeps workers from leaving together."""
    total = walltime_seconds(walltime)
    margin = min(300, total // 5)
    return total - margin, min(240, margin // 2)


def slurm_cluster(opts: Mapping[str, Any], root: Path, dashboard: str | None = DASHBOARD) -> Cluster:
    """A ``dask_jobqueue.SLURMCluster``: one worker per job, running this checkout's Python on
    ``opts['cores']`` cores (one task at a time, torch on every core), adapting between one
    job and ``opts['jobs']``; workers leave before their walltime and are replaced."""
    if shutil.which("sbatch") is None:
        raise ConfigError("--cluster slurm needs SLURM's sbatch on the PATH (none found); run on a login node, or "
                          "use --cluster local or a scheduler address")
    from dask_jobqueue import SLURMCluster
    from distributed import Client

    life, stagger = lifetime(opts["walltime"])
    directives = ["--gres=gpu:1"] if int(opts["gpus"]) else []
    logs = root / "slurm-logs"
    logs.mkdir(parents=True, exist_ok=True)
    with _taken_port_quiet():
        cluster = SLURMCluster(
            queue=opts["partition"], account=opts["account"], cores=1, job_cpu=int(opts["cores"]), processes=1,
            memory=str(opts["memory"]), walltime=str(opts["walltime"]), python=sys.executable,
            job_extra_directives=directives, log_directory=str(logs), job_name="pgcore",
            job_script_prologue=[f"export PGCORE_STORE={root}", f"cd {Path.cwd()}"],
            worker_extra_args=["--lifetime", f"{life}s", "--lifetime-stagger", f"{stagger}s"],
            scheduler_options=_scheduler_dashboard(dashboard))
        client = Client(cluster)
    cluster.adapt(minimum_jobs=1, maximum_jobs=int(opts["jobs"]))
    return Cluster(client, "slurm", int(opts["jobs"]), int(opts["cores"]), bool(int(opts["gpus"])),
                   _dashboard_link(client, dashboard))


def scheduler_cluster(address: str) -> Cluster:
    """A running Dask scheduler (``tcp://host:8786``); its workers should have ``--nthreads 1``."""
    from distributed import Client

    try:
        client = Client(address, timeout="15s")
    except (OSError, TimeoutError) as e:
        raise ConfigError(f"no Dask scheduler answers at {address} ({e}); start one with `dask scheduler`, or use "
                          f"--cluster local") from None
    client.wait_for_workers(1, timeout=600)
    counts = client.run(_cuda_devices)
    return Cluster(client, address, None, None, any(counts.values()), client.dashboard_link)


def _given(client: Any) -> Cluster:
    """A cluster handed in: as it is, or a client's, with torch threads split over the cores
    when its workers run on this machine (a local cluster)."""
    if isinstance(client, Cluster):
        return client
    from distributed import LocalCluster

    gpus = any(client.run(_cuda_devices).values())
    n = len(client.scheduler_info()["workers"])
    threads = max(1, CPU_COUNT // n) if isinstance(client.cluster, LocalCluster) and n else None
    return Cluster(client, "given", n or None, threads, gpus, client.dashboard_link)


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count()


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


_SHUTDOWN_NOISE = ("distributed.worker", "distributed.core", "distributed.nanny", "distributed.comm",
                   "distributed.batched")


def _quiet_logs() -> None:
    """Silence what a closing cluster logs about its own lost connections (a worker's
    heartbeat failing as the scheduler goes: a traceback, and nothing wrong)."""
    for name in _SHUTDOWN_NOISE:
        logging.getLogger(name).setLevel(logging.CRITICAL)


def close_cluster(c: Cluster) -> None:
    """Close a cluster opened here, and its client, without shutdown tracebacks."""
    owner = c.client.cluster
    levels = {name: logging.getLogger(name).level for name in _SHUTDOWN_NOISE}
    try:
        if owner is not None:  # its workers are ours: quiet them too
            with contextlib.suppress(Exception):
                c.client.run(_quiet_logs)
        _quiet_logs()
        c.client.close()
        if owner is not None:
            owner.close()
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


# -- running a study ---------------------------------------------------------------------
@dataclass
class Summary:
    """What a compute did: runs trained and reused, tasks failed and skipped."""

    trained: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    tasks: int = 0
    wall_s: float = 0.0
    records: list[dict[str, Any]] = field(default_factory=list)  # one per task, as it returned

    def lines(self) -> list[str]:
        head = (f"{self.tasks} tasks in {self.wall_s:.1f} s: {len(self.trained)} runs trained, {len(self.reused)} "
                f"reused, {len(self.failed)} task(s) failed, {len(self.skipped)} skipped")
        out = [head]
        for f in self.failed:
            runs = f" (run {', '.join(f['runs'])})" if f.get("runs") else ""
            where = f"; traceback: {f['traceback']}" if f.get("traceback") else ""
            out.append(f"  failed {f['task']}{runs}: {f['message']}{where}")
        for s in self.skipped:
            out.append(f"  skipped {s['task']}: {s['message']}")
        return out


def compute_study(study: Study, client: Any = None, *, figures: Iterable[str] = FIGURES,
                  needs: Iterable[Need] | None = None, cluster: str = "local", workers: int | None = None,
                  slurm: Mapping[str, Any] | None = None, retries: int = RETRIES, progress: bool = True,
                  out: Callable[[str], None] = print, dashboard: str | None = DASHBOARD) -> Summary:
    """Compute every run ``study``'s figures need (or only ``needs`` and what they build on)
    on a Dask cluster and return what happened. ``client``: a :class:`Cluster` or a
    ``distributed.Client`` to use (its workers should run one task at a time); without one, a
    cluster is opened by name (:func:`open_cluster`) and closed at the end."""
    import dask
    import distributed  # noqa: F401 -- its config defaults must be loaded before one is set below

    root = Path(study.root) if study.root is not None else default_root()
    study = dataclasses.replace(study, root=root.resolve(), progress=False)
    # A worker that dies mid-task has its task rerun up to `retries` times; this is the
    # scheduler's setting, so it holds for the clusters opened here (their scheduler runs here).
    # Every task trains for minutes to hours: told so, the scheduler spreads tasks that become
    # ready together over idle workers, instead of queueing them all on the worker that holds the
    # (tiny) record of the task they build on while another worker sits idle.
    wanted = study.expand(figures, needs)
    with dask.config.set({"distributed.scheduler.allowed-failures": retries,
                          "distributed.scheduler.unknown-task-duration": TASK_DURATION}):
        if client is not None:
            return _submit_all(study, _given(client), wanted, retries, progress, out)
        with open_cluster(cluster, workers, study.params, slurm, study.root, dashboard) as c:
            return _submit_all(study, c, wanted, retries, progress, out)


def _submit_all(study: Study, cluster: Cluster, needs: list[Need], retries: int, progress: bool,
                out: Callable[[str], None]) -> Summary:
    """Submit every task with the futures of those it builds on; gather their records."""
    from distributed import as_completed

    tic = time.perf_counter()
    import torch

    lockstep = study.lockstep_on(torch.device("cuda" if cluster.gpus else "cpu"))
    study = dataclasses.replace(study, lockstep=lockstep)
    graph = tasks(study, needs, lockstep)
    out(f"computing {len(graph)} tasks on a {cluster.describe()}; seeds {'in lockstep' if lockstep else 'one by one'}; "
        f"store {study.root}")
    if cluster.dashboard:
        out(f"dashboard: {cluster.dashboard}")
    futures: dict[Task, Any] = {}
    for task, deps in graph.items():
        futures[task] = cluster.client.submit(
            run_task, study.params, task.need, task.seeds, str(study.root), str(study.device), lockstep,
            cluster.threads, [futures[d] for d in deps], key=f"{task.name}-{uuid.uuid4().hex[:8]}", pure=False,
            retries=retries)
    summary = Summary(tasks=len(graph))
    names = {f.key: t.name for t, f in futures.items()}
    with bar(total=len(graph), desc="tasks", unit="task", disable=not progress, dynamic_ncols=True) as b:
        for future in as_completed(list(futures.values())):
            record = _record(future, names)
            _tally(summary, record)
            b.update()
    summary.trained, summary.reused = sorted(set(summary.trained)), sorted(set(summary.reused) - set(summary.trained))
    summary.wall_s = time.perf_counter() - tic
    return summary


def _record(future: Any, names: Mapping[str, str]) -> dict[str, Any]:
    """A finished task's record; a task lost with its workers (more deaths than retries)
    becomes a failure, and so do the tasks that waited for it."""
    if future.status == "finished":
        return future.result()
    name = names[future.key]
    if future.status == "cancelled":
        return {"task": name, "status": "failed", "trained": [], "reused": [],
                "message": "cancelled: the scheduler lost it (cluster shut down?); run the same command to go on"}
    e = future.exception()
    cause = getattr(e, "task", None)
    if cause is not None and cause != future.key:
        return {"task": name, "status": "skipped", "trained": [], "reused": [],
                "message": f"builds on {names.get(cause, cause)}, whose workers died"}
    return {"task": name, "status": "failed", "trained": [], "reused": [], "message": f"{type(e).__name__}: {e}"}


def _tally(summary: Summary, record: dict[str, Any]) -> None:
    summary.records.append(record)
    summary.trained += record["trained"]
    summary.reused += record["reused"]
    if record["status"] == "failed":
        summary.failed.append(record)
    elif record["status"] == "skipped":
        summary.skipped.append(record)
