"""What a figure notebook does, in one call: read its runs from the store, draw and judge the figure
(:data:`pgcore.figures.FIGURES`), save it with its numbers and verdicts in ``figures/<profile>/``, and show them."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import pandas as pd

from . import claims, plots
from .figures import FIGURES, Made
from .provenance import machine
from .study import Study

__all__ = ["show", "publish", "study", "SEED_SOURCES"]

SEED_SOURCES = ("train", "train_clean", "train_noisy", "val", "test")


def study(ns: Mapping[str, Any]) -> Study:
    """A notebook's :class:`Study` from its parameter cell (see :meth:`Study.from_notebook`), the plotting style set
    and ``machine.json`` written where its figures go."""
    plots.style()
    s = Study.from_notebook(ns)
    out = plots.figures_dir(s.params["profile"], s.params.get("figures_dir"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine.json").write_text(json.dumps(machine(), indent=1, sort_keys=True) + "\n")
    return s


def publish(s: Study, name: str, made: Made) -> list[Path]:
    """Save figure ``name`` (PDF, PNG), its numbers (mean, CI per level: ``<name>.csv``; every seed:
    ``<name>_seeds.csv``, so its verdicts can be recomputed without the store) and its verdicts; show them."""
    from IPython.display import Markdown, display

    profile = s.params["profile"]
    out = plots.figures_dir(profile, s.params.get("figures_dir"))
    labelled = made.verdicts.items() if isinstance(made.verdicts, Mapping) else [(None, v) for v in made.verdicts]
    seeds = pd.concat([d.assign(procedure=k) for k, d in made.numbers.items() if len(d)], ignore_index=True)
    seeds = seeds[seeds.source.isin(SEED_SOURCES)].drop(columns=["run"], errors="ignore")
    seeds.to_csv(out / f"{name}_seeds.csv", index=False, float_format="%.8g")
    paths = plots.save(made.fig, name, out) + [
        plots.save_numbers(made.numbers, name, out, profile, made.metrics), out / f"{name}_seeds.csv",
        claims.save([v for _, v in labelled], name, out, profile)]
    lines = [f"{label}: {v.markdown()}" if label else v.markdown() for label, v in labelled] + list(made.notes)
    display(Markdown("**Result at this scale.**\n\n" + "\n".join(f"- {line}" for line in lines)))
    print("saved", *[p.name for p in paths])
    return paths


def show(figure: str, ns: Mapping[str, Any]) -> Made:
    """Figure ``figure`` for a notebook's parameters ``ns``: read (never trained unless ``compute = True``), drawn,
    judged, saved and shown; returns what was drawn (``.numbers``: the tidy frame of every series)."""
    s = study(ns)
    frames = s.frames(figure)  # an unknown figure is refused here
    made = FIGURES[figure].make(s.params, frames, s.title)
    publish(s, FIGURES[figure].output, made)
    return made
