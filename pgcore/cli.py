"""Command line: ``pgcore run``, ``pgcore show``, ``pgcore download``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from .config import PROTOCOLS, ConfigError, from_dict, load_yaml, set_value
from .store import CorruptResultError

EPILOG = """examples:
  pgcore run params/small.yaml                      # IMP with LR rewinding, every seed in the file
  pgcore run params/small.yaml --set train.epochs=5 --set seeds=[0]
  pgcore run params/small.yaml --protocol extended_dense
  pgcore show results/imp-<hash>                    # all seeds of a run, mean over seeds
  pgcore download cifar10 --data-dir data           # fetch a torchvision dataset (needs a network)

Results are stored under $PGCORE_STORE (default: results/ in the checkout). A finished run is
reused, an interrupted one resumes from its last finished level."""


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


def cmd_run(args: argparse.Namespace) -> int:
    from .protocols import run_seeds

    params = load_yaml(args.config)
    for assignment in args.set or []:
        set_value(params, assignment)
    if args.protocol:
        params["protocol"] = args.protocol
    seeds = args.seeds if args.seeds else params.get("seeds", [params.get("seed", 0)])
    # Validate every seed's config before any training starts.
    for s in seeds:
        from_dict(params, seed=s)
    lockstep = {"auto": "auto", "on": True, "off": False}[args.lockstep]
    exp = run_seeds(params, seeds, root=args.store, device=args.device, progress=not args.no_progress, lockstep=lockstep)
    print(f"results ({len(exp.runs)} seed(s)):")
    for r in exp.runs:
        print(f"  {r.path}")
    with pd.option_context("display.width", 120, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(_table(exp.frame()).to_string(index=False))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from .store import Run, find_run, frame, read_json

    path = Path(args.run)
    if path.is_dir() and not (path / "config.json").exists():
        runs = [Run(from_dict(read_json(p / "config.json")["config"]), root=path.parent)
                for p in sorted(path.glob("seed*")) if (p / "config.json").exists()]
        if not runs:
            raise FileNotFoundError(f"{path} holds no runs (no seed*/config.json)")
    else:
        runs = [find_run(args.run, args.store)]
    cfg = runs[0].cfg
    print(f"{cfg.protocol} run {cfg.hash()}: {cfg.data.name} / {cfg.model.name}, seeds "
          f"{[r.cfg.seed for r in runs]}, complete: {[r.is_done() for r in runs]}")
    print("config: " + ", ".join(f"{k}={v}" for k, v in cfg.science_dict().items() if isinstance(v, dict)))
    df = frame(runs)
    if df.empty:
        print("no finished level yet")
        return 0
    with pd.option_context("display.width", 120, "display.max_columns", 20, "display.float_format", "{:.4f}".format):
        print(_table(df).to_string(index=False))
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .data import download

    path = download(args.dataset, args.data_dir)
    print(f"{args.dataset} is in {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pgcore", description="Pruning's effect on generalization: run and inspect experiments.",
                                epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run a protocol from a config/parameter YAML file, for each of its seeds",
                       description="Run a protocol (" + ", ".join(PROTOCOLS) + ") for each seed; prints where results are and a summary.")
    r.add_argument("config", help="YAML file with sections data/model/train/prune (e.g. params/small.yaml)")
    r.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a value, e.g. train.epochs=10 (repeatable)")
    r.add_argument("--protocol", choices=PROTOCOLS, help="override the file's protocol (default imp)")
    r.add_argument("--seeds", type=int, nargs="+", help="seeds to run (default: the file's seeds)")
    r.add_argument("--store", help="results directory (default $PGCORE_STORE or results/)")
    r.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default auto)")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")
    r.add_argument("--lockstep", choices=["auto", "on", "off"], default="auto",
                   help="train the seeds together as one vectorized model (default auto: on a GPU only)")
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("show", help="print the summary table of a stored run",
                       description="Print a stored run's per-level summary (mean over its seeds).")
    s.add_argument("run", help="run directory (…/imp-<hash> or …/imp-<hash>/seed0) or a hash prefix")
    s.add_argument("--store", help="results directory to search for a hash (default $PGCORE_STORE or results/)")
    s.set_defaults(func=cmd_show)
    d = sub.add_parser("download", help="fetch a torchvision dataset into a data directory (needs a network)")
    d.add_argument("dataset", choices=["mnist", "cifar10", "cifar100", "svhn"])
    d.add_argument("--data-dir", default="data")
    d.set_defaults(func=cmd_download)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except (ConfigError, FileNotFoundError, ValueError, CorruptResultError) as e:
        print(f"pgcore: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
