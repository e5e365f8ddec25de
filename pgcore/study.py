"""A study: every run the figures of one parameter file need (the figures and their series are declared once, in
:data:`pgcore.figures.FIGURES`), so ``pgcore plan`` and ``pgcore compute`` know exactly what the notebooks will read,
and the notebooks only read: a run missing from the store is one line naming the command that computes it.

A parameter file holds a base config and what each figure varies around it: ``variants`` (figure 1, ``prune.*``),
``noise_fractions`` and ``noise_levels`` (figure 4), ``stretched_levels`` (figure 3), ``pai_methods`` and
``control_levels`` (figures 5, 6: the levels their reinitialized, at-initialization and one-shot controls train),
``tie_fraction`` and ``tie_levels`` (figure 7), ``recipes`` and ``weaker_recipe`` (figure 9, ``train.*``)."""

from __future__ import annotations

import graphlib
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import torch

from .config import (SECTIONS, STUDY_DEFAULTS, ConfigError, RunConfig, check_overrides, check_study, from_dict,
                     load_yaml, override)
from .figures import FIGURES, Series
from .plans import levels_of, plan, source_config
from .protocols import Experiment, choose_execution, resolve_device, run_seeds
from .provenance import project_dir
from .store import CorruptResultError, Run, default_root

__all__ = ["Need", "Study", "MissingRunsError", "depends_on"]


class MissingRunsError(LookupError):
    """A notebook (or a read) asked for runs the store does not hold; they are computed by ``pgcore compute``."""


@dataclass(frozen=True)
class Need(Series):
    """Runs of one protocol (every seed) with dotted ``changes`` to the base config, and the figures reading them."""

    figures: tuple[str, ...] = field(default=(), compare=False)

    def label(self) -> str:
        body = ", ".join(f"{k}={v}" for k, v in self.changes)
        return f"{self.protocol}({body})" if body else self.protocol


@dataclass
class Study:
    """The runs one parameter file's figures need, read (or, with ``compute=True``, trained) for every seed. How
    seeds train (one by one, or in lockstep on a GPU) is decided once, here, and used by every path."""

    params: dict[str, Any]
    seeds: Sequence[int]
    root: str | Path | None = None
    device: str | torch.device = "auto"
    progress: bool = True
    lockstep: bool | str = "auto"
    compute: bool = False  # train missing runs when read (else MissingRunsError)
    source: str | None = None  # the parameter file, for the command a missing run's message names
    execution: str = field(init=False, default="sequential")

    def __post_init__(self) -> None:
        self.params = {**STUDY_DEFAULTS, **{k: v for k, v in self.params.items() if v is not None}}
        cfgs = [self.config("imp", (), s) for s in self.seeds]  # sequential until decided here
        lockstep = choose_execution(cfgs, self.root, resolve_device(self.device), self.lockstep)
        self.execution = "lockstep" if lockstep else "sequential"

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], **kwargs: Any) -> "Study":
        """From a parameter file's contents, every experiment key checked first."""
        params = check_study(params)
        if "seeds" not in params:
            raise ConfigError("the parameters lack seeds, e.g. seeds: [0, 1]; see params/smoke.yaml")
        given = {**STUDY_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
        kw = {"root": params.get("store_dir"), **{k: given[k] for k in ("device", "progress", "lockstep")}, **kwargs}
        return cls(params=dict(params), seeds=list(params["seeds"]), **kw)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "Study":
        """From a parameter file (YAML, read by the checked loader that refuses duplicate keys)."""
        return cls.from_dict(load_yaml(path), **{"source": str(path), **kwargs})

    @classmethod
    def from_notebook(cls, ns: Mapping[str, Any]) -> "Study":
        """From a notebook's parameter cell: ``params`` (a parameter file) or ``profile`` (``params/<profile>.yaml``
        of this project), then dotted ``overrides``; ``compute`` trains missing runs in the notebook."""
        given = sorted(k for k in ("seeds", *SECTIONS) if k in ns)
        if given:  # papermill -f <file> injects the file's keys, which the notebook would not read
            raise ConfigError(f"notebook parameters {', '.join(given)} are keys of a parameter file: give the file "
                              f"itself, papermill -p params <file> (not -f <file>), or change one setting with "
                              f"-p overrides '{{\"train.epochs\": 3}}'")
        profile = check_study({"profile": ns.get("profile", "smoke")})["profile"]  # a plain name, not a path
        path = ns.get("params") or project_dir() / "params" / f"{profile}.yaml"
        params = override(load_yaml(path), check_overrides(ns.get("overrides") or {}))
        compute = bool(ns.get("compute", False)) or os.environ.get("PGCORE_NOTEBOOK_COMPUTE") == "1"  # e.g. CI's nbval
        return cls.from_dict(params, source=str(path), compute=compute)

    def base(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k in SECTIONS}

    def config(self, protocol: str, changes: Mapping[str, Any] | Iterable = (), seed: int | None = None) -> RunConfig:
        """One seed's config of ``protocol`` with dotted ``changes``, in the study's execution mode."""
        d = {**override(self.base(), dict(changes)), "protocol": protocol, "execution": self.execution}
        return from_dict(d, seed=self.seeds[0] if seed is None else seed)

    def command(self, figures: Sequence[str] = ()) -> str:
        """The command that computes what this study's figures (or ``figures``) need."""
        path = self.source or f"params/{self.params['profile']}.yaml"
        return f"pgcore compute {path}" + (f" --figures {' '.join(figures)}" if figures else "")

    def run(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None,
            figure: str | None = None) -> Experiment:
        """Every seed's stored run of ``protocol`` (with dotted ``changes``); a missing one is trained only when the
        study computes (``compute=True``), else :class:`MissingRunsError` names the command that computes it."""
        cfgs = [self.config(protocol, changes or {}, s) for s in self.seeds]
        missing = [c for c in cfgs if not Run(c, self.root).is_done()]
        if missing and not self.compute:
            label = Need(protocol, tuple(sorted((changes or {}).items()))).label()
            raise MissingRunsError(
                f"{len(missing)} of {len(cfgs)} seed(s) of {label} are not in the store {self.root or default_root()}"
                f": compute them with `{self.command([figure] if figure else [])}` (or `make figures`), or set "
                f"compute = True to train them here")
        return run_seeds(override(self.base(), changes or {}), self.seeds, protocol=protocol, root=self.root,
                         device=self.device, progress=self.progress, lockstep=self.execution == "lockstep")

    def frame(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """The tidy frame (one row per seed x level x metric source) of :meth:`run`."""
        return self.run(protocol, changes).frame()

    def series(self, figure: str) -> dict[str, Series]:
        """Figure ``figure``'s series (label -> protocol and changes), from :data:`pgcore.figures.FIGURES`."""
        if figure not in FIGURES:
            raise ConfigError(f"unknown figure '{figure}'; figures: {', '.join(FIGURES)}")
        return FIGURES[figure].series(self.params)

    def frames(self, figure: str) -> dict[str, pd.DataFrame]:
        """Every series of ``figure`` as a tidy frame, read from the store (see :meth:`run`)."""
        return {label: self.run(s.protocol, dict(s.changes), figure).frame()
                for label, s in self.series(figure).items()}

    def title(self, what: str, levels: int | None = None) -> str:
        """A figure's title: dataset / model, what it shows, and the profile, seeds and levels it holds."""
        p, n = self.params, self.config("imp").prune.levels if levels is None else levels
        return (f"{p['data']['name']} / {p['model']['name']}: {what} ({p['profile']}, {len(self.seeds)} seeds, "
                f"{n} levels)")

    def needs(self, figures: Iterable[str] = tuple(FIGURES)) -> list[Need]:
        """Every run the named figures read, each once with every figure that reads it."""
        merged: dict[Need, tuple[str, ...]] = {}
        for fig in figures:
            for s in self.series(fig).values():
                n = Need(s.protocol, s.changes)
                merged[n] = merged.get(n, ()) + (fig,)
        return [Need(n.protocol, n.changes, tuple(dict.fromkeys(f))) for n, f in merged.items()]

    def run_paths(self, need: Need, seed: int) -> list[str]:
        """Where ``need``'s runs for ``seed`` are stored."""
        return [str(Run(self.config(need.protocol, need.changes, seed), self.root).path)]

    def train(self, need: Need) -> None:
        """Train (or find) every seed's runs of ``need``, in this process."""
        computing = replace(self, lockstep=self.execution == "lockstep", compute=True)  # as decided, not again
        computing.run(need.protocol, dict(need.changes))

    def expand(self, figures: Iterable[str] = tuple(FIGURES), needs: Iterable[Need] | None = None) -> list[Need]:
        """The figures' needs (or ``needs``) and all they build on, each once, dependencies first."""
        wanted = list(self.needs(figures) if needs is None else needs)
        deps: dict[Need, list[Need]] = {}
        stack = list(reversed(wanted))
        while stack:
            need = stack.pop()
            if need not in deps:
                deps[need] = depends_on(self, need)
                stack += reversed(deps[need])
        order = list(graphlib.TopologicalSorter(deps).static_order())
        figs = {n: n.figures for n in wanted}
        for need in reversed(order):  # dependents before what they build on: figures flow down
            for dep in deps[need]:
                figs[dep] = tuple(dict.fromkeys(figs.get(dep, ()) + figs.get(need, ())))
        return [Need(n.protocol, n.changes, figs.get(n, ())) for n in order]

    def plan(self, figures: Iterable[str] = tuple(FIGURES), needs: Iterable[Need] | None = None) -> pd.DataFrame:
        """Every run the figures need, once, with every figure (in table order) and the most levels any asks for:
        columns need, figures, seed, run, levels (stored/needed), state (done, partial, missing, corrupt)."""
        rows: dict[str, dict[str, Any]] = {}
        for need in self.expand(figures, needs):
            for seed in self.seeds:
                row = self._row(need, seed)
                kept = rows.setdefault(row["run"], row)
                if kept is not row:
                    kept["figures"] = kept["figures"] + row["figures"]
                    if row["want"] > kept["want"]:
                        kept.update(want=row["want"], state=row["state"])
        order = {f: i for i, f in enumerate(FIGURES)}
        for row in rows.values():
            row["figures"] = ",".join(sorted(set(row["figures"]), key=order.get))
        df = pd.DataFrame(list(rows.values()), columns=["need", "figures", "seed", "run", "have", "want", "state"])
        df["levels"] = [f"{min(h, w)}/{w}" if w else "-" for h, w in zip(df.have, df.want)]
        return df.drop(columns=["have", "want"])

    def _row(self, need: Need, seed: int) -> dict[str, Any]:
        cfg = self.config(need.protocol, need.changes, seed)
        run, want = Run(cfg, self.root), len(levels_of(cfg))
        try:
            have = len(set(run.finished_levels()) & set(levels_of(cfg)))
            state = "done" if run.is_done() and have >= want else ("partial" if have else "missing")
        except CorruptResultError:
            have, state = 0, "corrupt"
        return {"need": need.label(), "figures": list(need.figures), "seed": seed, "run": str(run.path),
                "have": have, "want": want, "state": state}


def depends_on(study: Study, need: Need) -> list[Need]:
    """The needs ``need`` builds on: its source protocol's run, the dense run its level 0 reuses."""
    cfg = study.config(need.protocol, need.changes)
    deps = []
    src = source_config(cfg)
    if src is not None:
        kept = tuple((k, v) for k, v in need.changes if not k.startswith("data.leave_out") and k != "prune.at_levels")
        deps.append(Need(src.protocol, kept))
    if plan(cfg, 0).reuse == "dense":
        deps.append(Need("train", tuple((k, v) for k, v in need.changes if not k.startswith("prune."))))
    return deps
