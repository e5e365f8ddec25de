"""Cold wall time of whole studies on a local Dask cluster, 1 worker vs 2 (or more), in one run.

Cases (each from an empty store; the time counts starting the cluster, computing, closing it):

- ``smoke``: every run of ``params/smoke.yaml``'s figures.
- ``<profile> slice``: the ``imp`` and ``extended_dense`` needs of ``--profile`` (default
  ``small``) with 2 seeds and 5 levels, and the dense runs they build on.

On a CPU every run trains with one thread (``pgcore.protocols.CPU_THREADS``: the thread count
changes the bits of results), so one worker uses one core and W workers use W.
For each case and worker count: tasks, runs trained, wall time, runs per minute, the work (sum
of the tasks' own times) and the critical path (the longest chain of tasks that wait for each
other, from the same task times). With W workers a study cannot take less than
``max(critical path, work / W)``: that is how the projection to more cores or GPUs is made.

    python benchmarks/study.py                         # smoke + small slice, 1 and 2 workers
    python benchmarks/study.py --workers 1 2 --out build/study.csv

Writes one CSV row per case and worker count (with the machine, load and torch version).
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import tempfile
import time
from pathlib import Path

import torch

from pgcore import compute
from pgcore.config import at_least, load_yaml
from pgcore.protocols import CPU_THREADS
from pgcore.study import Need, Study

REPO = Path(__file__).resolve().parent.parent


def cases(profile: str) -> list[tuple[str, dict, list[Need] | None]]:
    """(name, parameters, needs or None for every figure)."""
    smoke = load_yaml(REPO / "params" / "smoke.yaml")
    sliced = load_yaml(REPO / "params" / f"{profile}.yaml")
    sliced["seeds"] = [0, 1]
    sliced["prune"]["levels"] = 5
    return [("smoke", smoke, None), (f"{profile} slice", sliced, [Need("imp"), Need("extended_dense")])]


def critical_path(study: Study, needs: list[Need], records: list[dict]) -> float:
    """The longest chain of waiting tasks, by the tasks' own times."""
    seconds = {r["task"]: r.get("wall_s", 0.0) for r in records}
    graph = compute.tasks(study, study.expand(needs=needs), lockstep=False)
    finish: dict[str, float] = {}
    for task, deps in graph.items():  # those a task waits for come first
        finish[task.name] = max((finish[d.name] for d in deps), default=0.0) + seconds.get(task.name, 0.0)
    return max(finish.values(), default=0.0)


def measure(name: str, params: dict, needs: list[Need] | None, workers: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as store:
        study = Study.from_dict(params, root=store, progress=False, lockstep=False)
        load = os.getloadavg()[0]
        tic = time.perf_counter()
        cluster = compute.local_cluster(workers, dashboard=":0", threads=threads)
        try:
            summary = compute.compute_study(study, cluster, needs=needs, progress=False, out=lambda line: None)
        finally:
            cluster.client.close()
            cluster.client.cluster.close()
        wall = time.perf_counter() - tic
        if summary.failed or summary.skipped:
            raise RuntimeError("\n".join(summary.lines()))
        full = study.expand(needs=needs) if needs else study.expand()
        work = sum(r.get("wall_s", 0.0) for r in summary.records)
        return {"case": name, "workers": workers, "train_threads": CPU_THREADS if not torch.cuda.is_available() else "gpu",
                "tasks": summary.tasks, "runs": len(summary.trained), "wall_s": round(wall, 1),
                "runs_per_min": round(len(summary.trained) / wall * 60, 1), "work_s": round(work, 1),
                "critical_path_s": round(critical_path(study, full, summary.records), 1),
                "cores": compute.CPU_COUNT, "load_avg_1min_before": round(load, 2), "cpu": platform.processor() or
                platform.machine(), "torch": torch.__version__, "date": time.strftime("%Y-%m-%d %H:%M")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workers", type=at_least(1), nargs="+", default=[1, 2], help="worker counts (default 1 2)")
    ap.add_argument("--profile", default="small", choices=sorted(p.stem for p in (REPO / "params").glob("*.yaml")),
                    help="the profile a slice is taken from (default small)")
    ap.add_argument("--only", choices=["smoke", "slice"], help="one case only")
    ap.add_argument("--out", default="build/study.csv")
    args = ap.parse_args()
    rows = []
    for name, params, needs in cases(args.profile):
        if args.only and not name.endswith(args.only):
            continue
        for w in args.workers:
            row = measure(name, params, needs, w, max(1, compute.CPU_COUNT // w))
            rows.append(row)
            print(", ".join(f"{k}={v}" for k, v in row.items()), flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    print(f"wrote {out}")


if __name__ == "__main__":  # worker processes are spawned: they must not run this again
    main()
