"""Do the committed verdicts depend on the CPU's instruction set?

Float results differ between CPU kernels (AVX-512, AVX2, the portable default): additions
happen in other orders, and single seeds move by a fraction of a point, the size of the
effects measured. For each kernel set named, this script pins ``ATEN_CPU_CAPABILITY`` (read
when torch starts, so every step runs in a subprocess), computes the runs of the chosen
figures with ``pgcore compute`` into a store of its own, executes the same figure notebooks
that ``make figures`` runs (papermill) with that store and a figures folder of their own, and
compares their verdicts with the committed ones (``figures/<profile>/*_verdicts.csv``, made
by the native kernels):

    python scripts/isa_check.py params/small.yaml [--capabilities default avx2] [--figures fig1 ... fig9]

(On a CPU whose native kernels are AVX2, ``--capabilities default`` alone covers all three
sets there are; AVX-512 needs a CPU that has it.) Needs ``make setup`` (the notebook kernel).

Writes ``figures/<profile>/isa_check.csv`` (figure, claim, kernels, status, numbers); rows of
figures not rerun are kept from the previous file. Not a unit test: it trains every run the
figures need once per instruction set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from figures_readme import differing  # scripts/ is on the path when this file runs
from pgcore.figures import FIGURES as TABLE

FIGURES = tuple(f for f, entry in TABLE.items() if entry.make is not None)  # the figures that have verdicts
BIN = Path(sys.executable).parent


def rerun(params: str, cap: str, figures: list[str], prefix: str) -> pd.DataFrame:
    """Compute and draw ``figures`` under ATEN_CPU_CAPABILITY=cap; their verdict rows."""
    out = Path(f"{prefix}-{cap}")
    figs, executed = out / "figures", out / "executed"
    executed.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "ATEN_CPU_CAPABILITY": cap, "PGCORE_STORE": str(out.resolve()), "PGCORE_PLAIN_PROGRESS": "1"}
    p = out / "params.yaml"
    subprocess.run([BIN / "pgcore", "params", params, "--set", f"figures_dir={figs.resolve()}", "--out", p],
                   env=env, check=True)
    # The runs, then each figure's notebook as soon as its runs are done (what `make figures` runs).
    subprocess.run([BIN / "pgcore", "compute", p, "--figures", *figures, "--dashboard", "none", "--notebooks",
                    executed], env=env, check=True)
    return verdict_rows(figs, figures, cap)


def verdict_rows(folder: Path, figures: list[str], kernels: str) -> pd.DataFrame:
    paths = [p for f in figures for p in sorted(folder.glob(f"{f}_*_verdicts.csv"))]
    frames = [pd.read_csv(p).assign(kernels=kernels) for p in paths]  # one column added per file: no fragmenting
    return pd.concat(frames, ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("params")
    ap.add_argument("--capabilities", nargs="+", default=["default", "avx2"], choices=["default", "avx2", "avx512"],
                    help="ATen's kernel sets (ATEN_CPU_CAPABILITY) to recompute under")
    ap.add_argument("--store-prefix", default="build/isa", help="each kernel set's store is <prefix>-<kernels>")
    ap.add_argument("--figures", nargs="+", default=list(FIGURES), choices=FIGURES,
                    help="the figures whose runs are recomputed and whose verdicts are compared")
    args = ap.parse_args()
    profile = Path(args.params).stem
    committed = Path("figures") / profile
    if not Path(args.params).is_file():
        ap.error(f"parameter file {args.params} does not exist")
    if not committed.is_dir():
        ap.error(f"{committed} does not exist: the native verdicts come from `make figures PROFILE={profile}`")
    native = f"native ({torch.backends.cpu.get_cpu_capability()})"
    rows = [verdict_rows(committed, args.figures, native)]
    rows += [rerun(args.params, cap, args.figures, args.store_prefix) for cap in args.capabilities]
    table = pd.concat(rows, ignore_index=True)
    path = committed / "isa_check.csv"
    if path.exists():  # keep the rows of figures not rerun this time
        old = pd.read_csv(path)
        table = pd.concat([old[~old.figure.isin(table.figure)], table], ignore_index=True) if "figure" in old else table
    table = table.sort_values(["figure", "claim", "kernels"], kind="stable")
    table.to_csv(path, index=False, float_format="%.6g")
    shown = [c for c in ("figure", "claim", "kernels", "status", "evidence", "diff", "ci") if c in table]
    print(table[shown].to_string(index=False))
    print(differing(table))  # the sentence the figure READMEs print under their kernel table


if __name__ == "__main__":
    main()
