"""Write the verdict tables of one profile's figures from what `make figures` left in figures/<profile>/:
figures/<profile>/README.md, and the root README's table between `<!-- verdicts:<profile> -->` and
`<!-- /verdicts:<profile> -->`.

    PYTHONPATH=. python scripts/figures_readme.py small
    PYTHONPATH=. python scripts/figures_readme.py paper-lenet 'SET="prune.levels=20 variants={}"' 'FIGURES="fig1 fig2"'

The figures, their notebooks and captions are pgcore.figures.FIGURES; every number written comes from a CSV in
figures/<profile>/ (`<figure>_verdicts.csv`, the tidy `<figure>.csv` for a level's sparsity, `isa_check.csv`).
Each verdict row leads with the effect the verdict tests and its 95% interval, then the status. Files made by
today's rules (pgcore.claims: per-claim margins, Holm's correction, evidence classes) carry the columns `evidence`,
`ruled_out_beyond` and `effect_size`, and their rows also say what is ruled out and the evidence; files made by the
earlier rules lack those columns, and the tables say so.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
NEW_COLUMNS = ("evidence", "ruled_out_beyond", "effect_size")  # written by today's pgcore.claims, not by earlier rules
NO_GAIN = "no gain to explain"
# What a difference compares, as the verdict's summary names it: today's "test error: IMP − dense = -0.0001 ± …",
# the earlier "IMP − extended dense +0.0034 ± …".
QUANTITY = (re.compile(r"([\w'() ]+: [^=:;]+?) = ([+-]\d+\.\d+)"),
            re.compile(r"([^:;]*? − [^:;]*?) ([+-]\d+\.\d+) ±"))


def today(v: pd.DataFrame) -> bool:
    """Whether a verdict file was written by today's rules (its columns say so)."""
    return all(c in v.columns for c in NEW_COLUMNS)


def rules(v: pd.DataFrame) -> str:
    return "today's rules" if today(v) else "earlier rules"


def number(row: dict, key: str) -> float:
    try:
        return float(row.get(key))
    except (TypeError, ValueError):
        return math.nan


def fmt(x: float, scale: float, sign: bool = True) -> str:
    """``x`` with the decimals a number of size ``scale`` needs (4 at least, as pgcore.claims writes them)."""
    if not math.isfinite(x):
        return "n/a"
    digits = min(max(1 - math.floor(math.log10(scale)), 4), 8) if scale > 0 and math.isfinite(scale) else 4
    return (f"{x:+.{digits}f}" if sign else f"{x:.{digits}f}").replace("-", "−")


def size(d: float) -> str:
    """A standardized effect (mean / sd of the paired differences)."""
    return f"{d:+.2f}".replace("-", "−") if math.isfinite(d) else "n/a"


@dataclass
class Effect:
    """One paired difference a verdict tests, read from one row of a verdict file (``key``: its columns' prefix)."""

    key: str
    label: str
    diff: float
    ci: float
    level: float
    sparsity: float
    margin: float
    bound: float
    evidence: str
    effect_size: float
    match: bool
    status: str

    @property
    def scale(self) -> float:
        return min((x for x in (self.margin, self.ci) if math.isfinite(x) and x > 0), default=1.0)

    def value(self) -> str:
        if not math.isfinite(self.diff):
            return "not measured"
        ci = f" ± {fmt(self.ci, self.scale, sign=False)}" if math.isfinite(self.ci) else " (one seed)"
        return fmt(self.diff, self.scale) + ci

    def where(self) -> str:
        bits = [f"level {int(self.level)}"] if math.isfinite(self.level) else []
        if math.isfinite(self.sparsity):
            bits.append(f"{self.sparsity:.1%} sparse")
        return f" ({', '.join(bits)})" if bits else ""

    def ruled_out(self) -> str:
        """What the data rule out, in pgcore.claims' words."""
        b, s = self.bound, self.scale
        if not math.isfinite(b):
            return "nothing is ruled out (no interval)"
        if self.match:
            return f"a difference beyond ±{fmt(b, s, sign=False)} is ruled out"
        lower = b < self.diff  # the bound lies on the side the claim predicts
        word = "drop" if lower else "rise"
        if (b < 0) == lower and b != 0:
            return f"a {word} beyond {fmt(abs(b), s, sign=False)} is ruled out"
        return f"any {word} is ruled out"

    def line(self, new: bool, status: str | None = None) -> str:
        """The comparison in one line: "label −0.0001 ± 0.0004 (level 1, 20.0% sparse): **status** — bound
        (evidence: …, margin ±…)"; ``status`` (the verdict's, in bold) replaces the comparison's own."""
        head = f"{self.label} " if self.label else ""
        word = f"**{status}**" if status else self.status
        text = f"{head}{self.value()}{self.where()}" + (f": {word}" if word else "")
        if new and math.isfinite(self.diff):
            margin = f", margin ±{fmt(self.margin, self.scale, sign=False)}" if math.isfinite(self.margin) else ""
            text += f" — {self.ruled_out()} (evidence: {self.evidence}{margin})"
        return text


def label(summary: str, diff: float) -> str:
    """What the difference ``diff`` compares, as the summary names it beside its value ("" if it does not)."""
    for pattern in QUANTITY:
        for m in pattern.finditer(summary):
            shown = m.group(2)
            if math.isfinite(diff) and abs(float(shown) - diff) <= 0.6 * 10 ** -len(shown.split(".")[1]):
                return m.group(1).strip()
    return ""


def part_keys(row: dict) -> list[str]:
    """The prefixes of a row's per-comparison columns (``<key>_diff`` beside ``<key>_ci``), in column order."""
    return [c[:-5] for c in row if c.endswith("_diff") and f"{c[:-5]}_ci" in row]


def effect_of(row: dict, key: str, sparsity: dict[int, float]) -> Effect:
    """The difference of comparison ``key`` of a verdict row ("": the row's own difference, read where its deciding
    comparison is read); ``sparsity``: each level's, from the figure's tidy CSV."""
    p, keys = f"{key}_" if key else "", part_keys(row)
    own = [k for k in keys if number(row, f"{k}_diff") == number(row, "diff")]  # the part the row's numbers are
    where = [f"{p}level"] if key else ["read_at", *(f"{k}_level" for k in own[:1])]
    level = next((x for x in (number(row, c) for c in [*where, "read_at", "level"]) if math.isfinite(x)), math.nan)
    sp = sparsity.get(int(level), number(row, "sparsity")) if math.isfinite(level) else math.nan
    diff = number(row, f"{p}diff")
    return Effect(key, label(str(row.get("summary", "")), diff), diff, number(row, f"{p}ci"), level, sp,
                  number(row, f"{p}margin"), number(row, f"{p}ruled_out_beyond"), str(row.get(f"{p}evidence", "")),
                  number(row, f"{p}effect_size"), f"{p}equivalent_within" in row,
                  str(row.get(f"{p}status") or ("" if key else row["status"])))


def effects(row: dict, sparsity: dict[int, float]) -> list[Effect]:
    """The differences a verdict row is decided on: IMP's own gain where it has none to explain; else the row's own
    difference, with the comparisons that gave the verdict its status where that one's own status is another (figure
    4's memorization, figure 3's gain of extended training); else (figure 5's controls) every comparison measured but
    the premise."""
    keys = part_keys(row)
    if row["status"] == NO_GAIN and "gain" in keys:
        return [effect_of(row, "gain", sparsity)]
    if not math.isfinite(number(row, "diff")):
        measured = [k for k in keys if k != "gain" and math.isfinite(number(row, f"{k}_diff"))]
        return [effect_of(row, k, sparsity) for k in measured or [""]]
    own = [k for k in keys if number(row, f"{k}_diff") == number(row, "diff") and f"{k}_status" in row]
    if own and row[f"{own[0]}_status"] != row["status"]:
        why = [k for k in keys if k not in (own[0], "gain") and row.get(f"{k}_status") == row["status"]]
        if why:
            return [effect_of(row, k, sparsity) for k in (own[0], *why)]
    return [effect_of(row, "", sparsity)]


def verdict_line(row: dict, new: bool, sparsity: dict[int, float]) -> str:
    """A verdict in one line: the effect it is decided on, then its status; several (figure 5's controls): each with
    its own status, then the verdict's."""
    found = effects(row, sparsity)
    if len(found) == 1:
        return found[0].line(new, row["status"])
    return "; ".join(e.line(new) for e in found) + f": **{row['status']}**"


def verdict_lines(v: pd.DataFrame, sparsity: dict[int, float], summaries: bool = False) -> list[str]:
    """One line per verdict of a figure, after its claim; ``summaries``: a file of the earlier rules, which records no
    bound or evidence, adds its own summary after the status."""
    new = today(v)
    tail = (lambda r: "") if new or not summaries else (lambda r: f" — {r['summary']}")
    return [f"*{r['claim']}*: {verdict_line(r, new, sparsity)}{tail(r)}" for r in v.to_dict("records")]


def level_sparsity(tidy: Path) -> dict[int, float]:
    """Each level's sparsity, from the figure's tidy CSV (the pruned procedure's, the largest at a level)."""
    if not tidy.exists():
        return {}
    df = pd.read_csv(tidy, usecols=["level", "sparsity"])
    return {int(k): float(s) for k, s in df.groupby("level").sparsity.max().items()}


@dataclass
class Made:
    """One figure of ``figures/<profile>/``: its table entry and what the folder holds of it."""

    name: str
    notebook: str
    output: str
    caption: str
    verdicts: pd.DataFrame | None
    sparsity: dict[int, float]
    seeds: bool


def made(profile: str) -> list[Made]:
    from pgcore.figures import FIGURES

    out = ROOT / "figures" / profile
    found = []
    for name, f in FIGURES.items():
        if f.output is None:  # the explorer draws interactively: no file, no verdict
            continue
        path = out / f"{f.output}_verdicts.csv"
        found.append(Made(name, f.notebook, f.output, f.caption, pd.read_csv(path) if path.exists() else None,
                          level_sparsity(out / f"{f.output}.csv"), (out / f"{f.output}_seeds.csv").exists()))
    return found


def names(items: list[Made]) -> str:
    return ", ".join(m.name for m in items) or "none"


def rules_note(figs: list[Made]) -> str:
    """Which rules made each verdict file (their columns say)."""
    done = [m for m in figs if m.verdicts is not None]
    new, old = [m for m in done if today(m.verdicts)], [m for m in done if not today(m.verdicts)]
    parts = []
    if new:
        parts.append(f"{names(new)}: today's rules (`pgcore.claims`: per-claim margins, Holm's correction, evidence "
                     f"classes; each row says what is ruled out)")
    if old:
        parts.append(f"{names(old)}: the earlier rules (files without the columns {', '.join(NEW_COLUMNS)}: no "
                     f"per-claim margin, bound or evidence recorded; recomputing the figures rewrites them under "
                     f"today's rules, [docs/verdict-rules.md](docs/verdict-rules.md))")
    return "Verdict files by " + "; ".join(parts) + "." if parts else "No verdict file yet."


def table(figs: list[Made], root: str, width: int, summaries: bool = False) -> list[str]:
    """The gallery: a thumbnail, the figure and its claim, and its verdicts (``root``: the path to figures/<profile>/
    from where the table is read; ``summaries``: see :func:`verdict_lines`)."""
    nb = "notebooks/" if root.startswith("figures/") else "../../notebooks/"
    lines = ["| | figure | verdict: effect ± 95% interval (where), then the status |", "|---|---|---|"]
    for m in figs:
        if m.verdicts is None:
            continue
        cell = f"**{m.name}** [`{m.notebook}`]({nb}{m.notebook}.ipynb)<br>{m.caption}"
        lines.append(f"| <img src=\"{root}{m.output}.png\" width=\"{width}\"> | {cell} | "
                     f"{'<br>'.join(verdict_lines(m.verdicts, m.sparsity, summaries))} |")
    return lines


def kernel_check(out: Path) -> list[str]:
    """``isa_check.csv`` as a table: each claim's status and difference under each kernel set."""
    path = out / "isa_check.csv"
    if not path.exists():
        return []
    df = pd.read_csv(path)
    sets = list(dict.fromkeys(df.kernels))
    lines = ["", "## Verdicts under other CPU kernels (`isa_check.csv`)", "",
             "The same runs computed and judged with each set of ATen CPU kernels (`scripts/isa_check.py`; "
             f"{rules(df)}):", "",
             "| figure | claim | " + " | ".join(f"`{k}`" for k in sets) + " |", "|---|---|" + "---|" * len(sets)]
    for (figure, claim), g in df.groupby(["figure", "claim"], sort=False):
        cells = []
        for k in sets:
            r = g[g.kernels == k]
            if not len(r):
                cells.append("")
                continue
            found = [e for e in effects(r.iloc[0].to_dict(), level_sparsity(out / f"{figure}.csv"))
                     if math.isfinite(e.diff)]
            label = (lambda e: f"{e.label} " if len(found) > 1 and e.label else "")
            cells.append(", ".join([verdict_word(r.iloc[0]), *(f"{label(e)}{e.value()}{e.where()}" for e in found)]))
        lines.append(f"| {figure} | {claim} | " + " | ".join(cells) + " |")
    return lines + ["", differing(df)]


def verdict_word(row: pd.Series) -> str:
    """A kernel set's status, with its evidence class where the file has one: "not significant (inconclusive)"."""
    evidence = row.get("evidence")
    shown = isinstance(evidence, str) and row.status != "not tested"
    return f"{row.status} ({evidence})" if shown else str(row.status)


def differing(df: pd.DataFrame) -> str:
    """The sentence naming every verdict whose status or evidence class differs between kernel sets."""
    compared = [c for c in ("status", "evidence") if c in df]
    differs = df.groupby(["figure", "claim"], sort=False)[compared].nunique().gt(1).any(axis=1)
    if not differs.any():
        return f"Every verdict's {' and '.join(compared)} is the same under every kernel set."
    named = []
    for figure, claim in differs[differs].index:
        rows = df[(df.figure == figure) & (df.claim == claim)]
        named.append(f"{figure} (*{claim}*: {', '.join(c for c in compared if rows[c].nunique() > 1)})")
    return f"The {' or '.join(compared)} differs between kernel sets for {'; '.join(named)}."


def figure_readme(profile: str, how: str, figs: list[Made]) -> str:
    out = ROOT / "figures" / profile
    machine = json.loads((out / "machine.json").read_text())
    done = [m for m in figs if m.verdicts is not None]
    missing = [m for m in figs if m.verdicts is None]
    seeds = [m for m in done if m.seeds]
    lines = [f"# Figures at the `{profile}` profile", "",
             "Written by `scripts/figures_readme.py` from the CSV files in this folder; every number below is in "
             "one of them.", "",
             f"Made by `make figures PROFILE={profile}{how}` on {machine['cpu']} ({machine['cpu_capability']} kernels, "
             f"torch {machine['torch']}). Exact numbers vary with the CPU type (its instruction set changes float "
             "rounding); the verdicts should not (see the kernel check below where there is one). Each figure has "
             "its numbers beside it: `<figure>.csv` (profile, procedure, level, sparsity, epochs, metric, source, "
             "mean, 95% CI, seeds), `<figure>_verdicts.csv` (computed by `pgcore.claims`) and, from today's "
             f"notebooks, `<figure>_seeds.csv` (every seed's numbers; present for: {names(seeds)}).", "",
             rules_note(figs).replace("](docs/", "](../../docs/"), "",
             f"Not computed here: {names(missing)}." if missing else "Every figure with a verdict is here.", "",
             *table(figs, "", 300), "",
             "How these files were made, and what the numbers mean: "
             "[docs/committed-figures.md](../../docs/committed-figures.md)."]
    for m in done:
        lines += ["", f"## {m.name}: {m.caption}"]
        new = today(m.verdicts)
        for r in m.verdicts.to_dict("records"):
            lines += ["", f"**{r['claim']}: {r['status']}** ({rules(m.verdicts)})", "", f"> {r['summary']}"]
            if new and part_keys(r):
                lines += ["", "| comparison | status | evidence | difference ± 95% | level | ruled out beyond "
                          "| margin | effect size |", "|---|---|---|---|---|---|---|---|"]
                for k in part_keys(r):
                    e = effect_of(r, k, m.sparsity)
                    lines.append(f"| `{k}` | {e.status} | {e.evidence} | {e.value()} | "
                                 f"{int(e.level) if math.isfinite(e.level) else ''} | "
                                 f"{fmt(e.bound, e.scale)} | ±{fmt(e.margin, e.scale, sign=False)} | "
                                 f"{size(e.effect_size)} |")
    lines += kernel_check(out)
    if (out / "plan.md").is_file():  # the plan of what is still to compute, written before computing it
        lines += ["", (out / "plan.md").read_text().strip()]
    return "\n".join(lines).rstrip() + "\n"


def root_table(profile: str, figs: list[Made]) -> str:
    kernels = ROOT / "figures" / profile / "isa_check.csv"
    check = (f" The kernel check (`scripts/isa_check.py`, [docs/kernels.md](docs/kernels.md)): "
             f"{differing(pd.read_csv(kernels))}" if kernels.exists() else "")
    return "\n".join([*table(figs, f"figures/{profile}/", 220, summaries=True), "",
                      rules_note(figs) + f" Every verdict's summary: [figures/{profile}/README.md]"
                      f"(figures/{profile}/README.md).{check}"])


MARKERS = "<!-- verdicts:{} -->", "<!-- /verdicts:{} -->"


def replace_between(text: str, profile: str, body: str) -> str | None:
    """``text`` with ``body`` between the profile's markers; None where it has none (a profile of your own)."""
    start, end = (m.format(profile) for m in MARKERS)
    if start not in text or end not in text:
        return None
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def main(profile: str, how: str = "") -> None:
    figs = made(profile)
    out = ROOT / "figures" / profile / "README.md"
    out.write_text(figure_readme(profile, how, figs))
    readme = ROOT / "README.md"
    text = replace_between(readme.read_text(), profile, root_table(profile, figs))
    if text is not None:
        readme.write_text(text)
    print(f"wrote {out.relative_to(ROOT)}" + (f" and the {profile} table of README.md" if text is not None else
                                              f"; README.md has no {MARKERS[0].format(profile)} table to fill"))


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", nargs="?", default="small", help="the profile whose figures/<profile>/ is described")
    ap.add_argument("how", nargs=argparse.REMAINDER, help="the make arguments it was made with (SET=..., ...)")
    args = ap.parse_args()
    if not (ROOT / "figures" / args.profile / "machine.json").is_file():
        ap.error(f"figures/{args.profile}/machine.json is missing: run `make figures PROFILE={args.profile}` first")
    main(args.profile, "".join(f" {a}" for a in args.how))
