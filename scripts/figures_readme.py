"""Write figures/<profile>/README.md from what `make figures` computed: each figure, the
paper's claim, the verdict of pgcore.claims with its numbers, and the machine.

    python scripts/figures_readme.py small
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

FIGURES = [
    ("fig1_pruning_curve", "01_pruning_curve", "Test error vs sparsity under IMP (LRR; weight rewinding and fine-tuning where `variants` are run)"),
    ("fig2_training_loss", "02_training_loss", "Training loss of pruned vs dense models"),
    ("fig3_extended_dense", "03_extended_dense", "Extended dense training vs pruning at matched training time"),
    ("fig4_label_noise", "04_label_noise", "Label noise: degradation, memorization, clean accuracy"),
    ("fig5_size_controls", "05_size_controls", "Size-reduction controls: random pruning, reinit, pruning at init"),
    ("fig6_both_factors", "06_both_factors", "Training time and size reduction together"),
    ("fig7_top_improved_examples", "07_top_improved_examples", "Top-improved examples vs random removal, per sparsity"),
    ("fig9_recipe", "09_recipe", "Not in the paper: IMP's gain over dense under two training recipes"),
]


def main(profile: str, how: str = "") -> None:
    out = Path("figures") / profile
    machine = json.loads((out / "machine.json").read_text())
    lines = [f"# Figures at the `{profile}` profile", "",
             f"Made by `make figures PROFILE={profile}{how}` on {machine['cpu']} ({machine['cpu_capability']} kernels, "
             f"torch {machine['torch']}). Exact numbers vary with the CPU type (its instruction set changes float "
             "rounding); the verdicts should not (see `isa_check.csv` where present). Each figure has its numbers "
             "beside it as a tidy CSV (`<figure>.csv`: profile, procedure, level, sparsity, metric, source, mean, "
             "95% CI, seeds) and its verdicts (`<figure>_verdicts.csv`), computed by `pgcore.claims`.", "",
             "| figure | notebook | verdict (pgcore.claims) |", "|---|---|---|"]
    for name, notebook, title in FIGURES:
        path = out / f"{name}_verdicts.csv"
        if not path.exists():
            continue
        v = pd.read_csv(path)
        verdicts = "<br>".join(f"**{r.claim}: {r.status}**" for r in v.itertuples())
        lines.append(f"| <img src=\"{name}.png\" width=\"300\"><br>{title} | `{notebook}` | {verdicts} |")
    lines += ["", "The sentences with the numbers are in the executed notebooks (`build/executed/" + profile + "/`) and in "
              "the `summary` column of the verdict CSVs."]
    for name, _, _ in FIGURES:
        path = out / f"{name}_verdicts.csv"
        if path.exists():
            lines += ["", f"**{name}**", ""]
            for r in pd.read_csv(path).itertuples():
                lines.append(f"- {r.claim}: **{r.status}**. {r.summary}")
    (out / "README.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {out / 'README.md'}")


if __name__ == "__main__":
    # Any further arguments are the make variables the figures were made with, e.g. SET="prune.levels=12"
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", nargs="?", default="small", help="the profile whose figures/<profile>/ is described")
    ap.add_argument("how", nargs=argparse.REMAINDER, help="the make arguments it was made with (SET=..., ...)")
    args = ap.parse_args()
    if not (Path("figures") / args.profile / "machine.json").is_file():
        ap.error(f"figures/{args.profile}/machine.json is missing: run `make figures PROFILE={args.profile}` first")
    main(args.profile, "".join(f" {a}" for a in args.how))
