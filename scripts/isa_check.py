"""Do the committed verdicts depend on the CPU's instruction set?

Float results differ between CPU kernels (AVX-512, AVX2, the portable default): additions
happen in other orders, and single seeds move by a fraction of a point, the size of the
effects measured. This script recomputes the runs behind figures 1-4 of a profile (IMP, clean and noisy, and extended dense training) with
``ATEN_CPU_CAPABILITY`` pinned to each of ``default`` and ``avx2`` (each in its own store,
in a subprocess, since the setting is read when torch starts) and compares their verdicts
with those of the native kernels (the main store):

    python scripts/isa_check.py params/small.yaml [--capabilities default avx2] [--workers 2] [--figures fig1 fig2 fig3]

(On a CPU whose native kernels are AVX2, ``--capabilities default`` alone covers all three
sets there are; AVX-512 needs a CPU that has it.)

Writes ``figures/<profile>/isa_check.csv`` (claim, kernels, status, numbers). Not a unit
test: it trains the IMP runs of figures 1-4 once per instruction set.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd

WORKER = """
import sys, torch
from pgcore.study import Study
from pgcore import protocols
torch.set_num_threads(1)
study = Study.from_file(sys.argv[1], root=sys.argv[2], progress=False)
part, parts = int(sys.argv[3]), int(sys.argv[4])
pairs = [(n, s) for n in study.needs(sys.argv[5].split(",")) for s in study.seeds
         if n.protocol in ("train", "imp") or (n.protocol == "extended_dense" and not n.changes)]
for need, seed in pairs[part::parts] + pairs:
    for cfg in study.runs(need, seed):
        protocols.run(cfg, study.root, "cpu", progress=False)
"""


def verdicts(params: str, root: str | None, figures: tuple[str, ...] = ("fig1", "fig2", "fig3", "fig4")) -> list[dict]:
    from pgcore import claims
    from pgcore.study import Study

    study = Study.from_file(params, root=root, progress=False)
    imp, ext = study.frame("imp"), study.frame("extended_dense")
    rows = [claims.pruning_improves_test_error(imp), claims.pruning_improves_training(imp),
            claims.training_time_explains_gain(imp, ext, "replayed cycles")]
    clean = study.frame("imp", study.noise_changes(0.0)["imp"]) if "fig4" in figures else None
    for f in study.params.get("noise_fractions", []) if "fig4" in figures else []:
        rows.append(claims.pruning_regularizes_noise(study.frame("imp", study.noise_changes(f)["imp"]), clean, f))
    return [v.row() for v in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("params")
    ap.add_argument("--capabilities", nargs="+", default=["default", "avx2"])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--store-prefix", default="build/isa")
    ap.add_argument("--figures", nargs="+", default=["fig1", "fig2", "fig3", "fig4"], choices=["fig1", "fig2", "fig3", "fig4"],
                    help="the figures whose runs are recomputed and whose verdicts are compared")
    args = ap.parse_args()
    rows = []
    for cap in args.capabilities:
        store = f"{args.store_prefix}-{cap}"
        env = {**os.environ, "ATEN_CPU_CAPABILITY": cap}
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, args.params, store, str(i), str(args.workers),
                                   ",".join(args.figures)], env=env)
                 for i in range(args.workers)]
        if any(p.wait() for p in procs):
            sys.exit(f"training under ATEN_CPU_CAPABILITY={cap} failed")
        out = subprocess.run([sys.executable, "-c", "import json, sys; sys.path.insert(0, 'scripts'); from isa_check import "
                              f"verdicts; print(json.dumps(verdicts({args.params!r}, {store!r}, {tuple(args.figures)!r}), default=float))"],
                             env=env, capture_output=True, text=True, check=True)
        rows += [{**r, "kernels": cap} for r in pd.read_json(__import__("io").StringIO(out.stdout)).to_dict("records")]
    import torch

    native = f"native ({torch.backends.cpu.get_cpu_capability()})"
    rows += [{**r, "kernels": native} for r in verdicts(args.params, None, tuple(args.figures))]
    table = pd.DataFrame(rows)
    profile = Path(args.params).stem
    path = Path("figures") / profile / "isa_check.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(path, index=False, float_format="%.6g")
    print(table[["claim", "kernels", "status", "level", "diff", "ci"]].to_string(index=False))
    same = table.groupby("claim").status.nunique().eq(1)
    print("verdicts identical across instruction sets:", dict(same))


if __name__ == "__main__":
    main()
