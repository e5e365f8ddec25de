"""A study: every run the figures of one parameter file need, declared once (:meth:`Study.needs`), so ``pgcore plan``
and ``pgcore compute`` know exactly what the notebooks will read.

A parameter file holds a base config and what each figure varies around it: ``variants`` (figure 1, ``prune.*``),
``noise_fractions`` and ``noise_levels`` (figure 4), ``stretched_levels`` (figure 3), ``pai_methods`` (figures 5, 6),
``tie_fraction`` and ``tie_levels`` (figure 7), ``recipes`` (figure 9, ``train.*``)."""

from __future__ import annotations

import graphlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import pandas as pd
import torch

from .config import (SECTIONS, STUDY_DEFAULTS, ConfigError, RunConfig, check_notebook_parameters, check_study,
                     from_dict, load_yaml, override)
from . import claims, plots
from .plans import last_level, plan, source_protocol
from .protocols import Experiment, choose_execution, resolve_device, run_seeds
from .provenance import machine
from .store import CorruptResultError, Run
from .tie import run_tie, tie_configs

FIGURES = ("fig1", "fig2", "fig3", "fig4", "fig5", "fig6", "fig7", "explore", "fig9")
TIE = "tie"  # a need whose runs are dense retrainings without chosen examples (pgcore.tie)


@dataclass(frozen=True)
class Need:
    """Runs of one protocol (every seed) with dotted ``changes`` to the base config; protocol ``tie``: figure 7's
    retrainings at the IMP level ``changes`` name."""

    protocol: str
    changes: tuple[tuple[str, Any], ...] = ()
    figures: tuple[str, ...] = field(default=(), compare=False)

    def label(self) -> str:
        body = ", ".join(f"{k}={v}" for k, v in self.changes)
        return f"{self.protocol}({body})" if body else self.protocol


def _need(protocol: str, figure: str, changes: Mapping[str, Any] | None = None) -> Need:
    return Need(protocol, tuple(sorted((changes or {}).items())), (figure,))


@dataclass
class Study:
    """The runs one parameter file's figures need, trained (or read) by :meth:`frame` for every seed."""

    params: dict[str, Any]
    seeds: Sequence[int]
    root: str | Path | None = None
    device: str | torch.device = "auto"
    progress: bool = True
    lockstep: bool | str = "auto"

    def __post_init__(self) -> None:
        self.params = {**STUDY_DEFAULTS, **{k: v for k, v in self.params.items() if v is not None}}

    @classmethod
    def from_parameters(cls, ns: Mapping[str, Any]) -> "Study":
        """From a notebook's variables; imports and IPython's names are ignored, a misspelt parameter is an error."""
        seen = ns.get(_SEEN)  # a re-run of the setup cell: only the names the first run took as parameters
        names = {k: v for k, v in ns.items() if (k in seen if seen is not None else
                 not k.startswith("_") and k not in _IPYTHON and not callable(v) and not isinstance(v, type(torch)))}
        params = check_notebook_parameters(names)
        missing = [k for k in ("data", "model", "train", "prune", "seeds") if k not in params]
        if missing:
            raise KeyError(f"parameters lack {missing}; see params/smoke.yaml for the full set")
        if isinstance(ns, dict):
            ns[_SEEN] = sorted(names)
        return cls.from_dict(params)

    @classmethod
    def from_dict(cls, params: Mapping[str, Any], **kwargs: Any) -> "Study":
        """From a parameter file's contents, every experiment key checked first."""
        params = check_study(params)
        if "seeds" not in params:
            raise ConfigError("the parameters lack seeds, e.g. seeds: [0, 1]; see params/smoke.yaml")
        given = {**STUDY_DEFAULTS, **{k: v for k, v in params.items() if v is not None}}
        kw = {"root": params.get("store_dir"), "device": given["device"], "progress": bool(given["progress"]),
              "lockstep": given["lockstep"], **kwargs}
        return cls(params=dict(params), seeds=list(params["seeds"]), **kw)

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> "Study":
        return cls.from_dict(load_yaml(path), **kwargs)

    def base(self) -> dict[str, Any]:
        return {k: v for k, v in self.params.items() if k in SECTIONS}

    def config(self, protocol: str, changes: Mapping[str, Any] | Iterable = (), seed: int | None = None) -> RunConfig:
        d = override(self.base(), dict(changes))
        d["protocol"] = protocol
        return from_dict(d, seed=self.seeds[0] if seed is None else seed)

    def run(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None) -> Experiment:
        """Every seed's run of ``protocol`` (with dotted ``changes``), trained if the store lacks it."""
        return run_seeds(override(self.base(), changes or {}), self.seeds, protocol=protocol, root=self.root,
                         device=self.device, progress=self.progress, lockstep=self.lockstep)

    def frame(self, protocol: str = "imp", changes: Mapping[str, Any] | None = None) -> pd.DataFrame:
        return self.run(protocol, changes).frame()

    def tie(self, level: int, changes: Mapping[str, Any] | None = None) -> pd.DataFrame:
        """Figure 7 at one IMP level (:func:`pgcore.tie.run_tie`)."""
        imp = self.run("imp", changes)
        return run_tie(imp.runs, level, float(self.params["tie_fraction"]), root=self.root,
                       device=self.device, progress=self.progress)

    @property
    def levels(self) -> int:
        """``prune.levels`` (or its default)."""
        return self.config("imp").prune.levels

    def title(self, what: str, levels: int | None = None) -> str:
        """A figure's title: dataset / model, what it shows, and the profile, seeds and levels it holds."""
        p, n = self.params, self.levels if levels is None else levels
        return (f"{p['data']['name']} / {p['model']['name']}: {what} ({p['profile']}, {len(self.seeds)} seeds, "
                f"{n} levels)")

    def publish(self, name: str, fig: Any, numbers: Mapping[str, pd.DataFrame], verdicts: Sequence | Mapping,
                notes: Sequence[str] = (), metrics: tuple[str, ...] = ("error", "loss", "accuracy")) -> list[Path]:
        """Save figure ``name``, its ``numbers`` and ``verdicts`` (a mapping labels them); show them and ``notes``."""
        from IPython.display import Markdown, display

        profile = self.params["profile"]
        out = plots.figures_dir(profile, self.params.get("figures_dir"))
        labelled = verdicts.items() if isinstance(verdicts, Mapping) else [(None, v) for v in verdicts]
        paths = plots.save(fig, name, out) + [plots.save_numbers(dict(numbers), name, out, profile, metrics),
                                              claims.save([v for _, v in labelled], name, out, profile)]
        lines = [f"{label}: {v.markdown()}" if label else v.markdown() for label, v in labelled] + list(notes)
        display(Markdown("**Result at this scale.**\n\n" + "\n".join(f"- {line}" for line in lines)))
        print("saved", *[p.name for p in paths])
        return paths

    def tie_levels(self) -> list[int]:
        levels = self.params["tie_levels"]
        return list(range(1, self.levels + 1)) if levels == "all" else [int(k) for k in levels]

    def recipe_changes(self, name: str) -> tuple[tuple[str, Any], ...]:
        """Figure 9's IMP run under recipe ``name`` (``train.*`` overrides of the profile's recipe)."""
        return tuple(sorted((f"train.{k}", v) for k, v in self.params["recipes"][name].items()))

    def noise_changes(self, fraction: float) -> dict[str, dict[str, Any]]:
        """Figure 4's runs at one noise fraction: IMP to ``noise_levels`` (memorization may give way only near
        99.9% sparsity), extended dense training to ``levels``."""
        noise = {"data.noisy_fraction": fraction} if fraction else {}
        return {"imp": {**noise, "prune.levels": int(self.params["noise_levels"] or self.levels)},
                "extended_dense": {**noise, "prune.levels": self.levels}}

    def needs(self, figures: Iterable[str] = FIGURES) -> list[Need]:
        """Every run the named figures read, each once with every figure that reads it."""
        p = self.params
        wanted: list[Need] = [_need("train", "fig1")]
        for fig in figures:
            if fig in ("fig1", "fig2", "fig3", "fig5", "fig6", "fig7", "explore", "fig9"):
                wanted.append(_need("imp", fig))
            if fig == "fig1":
                wanted += [_need("imp", fig, {f"prune.{k}": v for k, v in ch.items()})
                           for ch in (p.get("variants") or {}).values()]
            if fig in ("fig3", "fig6"):
                wanted.append(_need("extended_dense", fig))
            if fig == "fig3" and p.get("stretched_levels"):
                wanted.append(_need("extended_stretched", fig, {"prune.levels": int(p["stretched_levels"])}))
            if fig == "fig4":
                for f in [0.0, *p["noise_fractions"]]:
                    wanted += [_need(proto, fig, changes) for proto, changes in self.noise_changes(f).items()]
            if fig == "fig5":
                wanted += [_need("imp", fig, {"prune.method": "random"}), _need("reinit", fig)]
            if fig in ("fig5", "fig6"):
                wanted += [_need("pai", fig, {"prune.method": m}) for m in p["pai_methods"]]
            if fig == "fig6":
                wanted += [_need("reinit", fig), _need("extended_oneshot", fig)]
            if fig == "fig7":
                wanted += [_need(TIE, fig, {"level": k}) for k in self.tie_levels()]
            if fig == "fig9":
                wanted += [_need("imp", fig, dict(self.recipe_changes(name))) for name in (p.get("recipes") or {})]
        merged: dict[Need, tuple[str, ...]] = {}
        for n in wanted:
            merged[n] = merged.get(n, ()) + n.figures
        return [Need(n.protocol, n.changes, tuple(dict.fromkeys(f))) for n, f in merged.items()]

    def runs(self, need: Need, seed: int) -> list[RunConfig]:
        """The run configs behind one need for one seed (a TIE need's IMP run while it is not done)."""
        execution = "lockstep" if self.lockstep_on(resolve_device(self.device)) else "sequential"
        if need.protocol == TIE:
            imp = Run(self.config("imp", seed=seed).replace(execution=execution), self.root)
            if not imp.is_done():
                return [imp.cfg]
            return tie_configs(imp, dict(need.changes)["level"], float(self.params["tie_fraction"]))
        return [self.config(need.protocol, need.changes, seed).replace(execution=execution)]

    def run_paths(self, need: Need, seed: int) -> list[str] | None:
        """Where ``need``'s runs for ``seed`` are stored; None while not known yet (figure 7's)."""
        cfgs = self.runs(need, seed)
        if need.protocol == TIE and cfgs[0].protocol == "imp":
            return None
        return [str(Run(c, self.root).path) for c in cfgs]

    def lockstep_on(self, dev: torch.device) -> bool:
        """Whether this study's seeds train in lockstep on ``dev`` (decided for its IMP runs)."""
        cfgs = [self.config("imp", seed=s) for s in self.seeds]
        return choose_execution(cfgs, self.root, dev, self.lockstep)

    def compute(self, need: Need) -> None:
        """Train (or find) every seed's runs of ``need``, one process, one after the other."""
        if need.protocol == TIE:
            self.tie(dict(need.changes)["level"])
        else:
            self.run(need.protocol, dict(need.changes))

    def expand(self, figures: Iterable[str] = FIGURES, needs: Iterable[Need] | None = None) -> list[Need]:
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

    def plan(self, figures: Iterable[str] = FIGURES, needs: Iterable[Need] | None = None) -> pd.DataFrame:
        """Every run the figures need, once, with every figure and the most levels any asks for: columns need,
        figures, seed, run, levels (stored/needed), state (done, partial, missing, corrupt, waits for imp)."""
        rows: dict[str, dict[str, Any]] = {}
        for need in self.expand(figures, needs):
            for seed in self.seeds:
                for row in self._rows(need, seed):
                    kept = rows.setdefault(row["run"], row)
                    if kept is not row:
                        kept["figures"] = ",".join(dict.fromkeys((kept["figures"] + "," + row["figures"]).split(",")))
                        if row["want"] > kept["want"]:
                            kept.update(want=row["want"], state=row["state"])
        df = pd.DataFrame(list(rows.values()), columns=["need", "figures", "seed", "run", "have", "want", "state"])
        df["levels"] = [f"{min(h, w)}/{w}" if w else "-" for h, w in zip(df.have, df.want)]
        return df.drop(columns=["have", "want"])

    def _rows(self, need: Need, seed: int) -> list[dict[str, Any]]:
        head = {"need": need.label(), "figures": ",".join(need.figures), "seed": seed}
        rows = []
        for cfg in self.runs(need, seed):
            if need.protocol == TIE and cfg.protocol == "imp":  # its runs are known once the IMP run is
                rows.append({**head, "run": f"{need.label()}/seed{seed}", "have": 0, "want": 0,
                             "state": "waits for imp"})
                continue
            run, want = Run(cfg, self.root), last_level(cfg) + 1
            try:
                have = len(run.finished_levels())
                state = "done" if run.is_done() and have >= want else ("partial" if have else "missing")
            except CorruptResultError:
                have, state = 0, "corrupt"
            rows.append({**head, "run": str(run.path), "have": have, "want": want, "state": state})
        return rows


_IPYTHON = {"In", "Out", "exit", "quit", "get_ipython", "display"}
_SEEN = "_pgcore_parameter_names"


def depends_on(study: Study, need: Need) -> list[Need]:
    """The needs ``need`` builds on: its source protocol, a TIE need's IMP run, the dense run its level 0 reuses."""
    if need.protocol == TIE:
        return [Need("imp")]
    cfg = study.config(need.protocol, need.changes)
    src = source_protocol(cfg)
    deps = [Need(src, need.changes)] if src else []
    if plan(cfg, 0).reuse == "dense":
        deps.append(Need("train", tuple((k, v) for k, v in need.changes if not k.startswith("prune."))))
    return deps


def notebook(ns: Mapping[str, Any]) -> Study:
    """What every notebook starts with: plotting style, its :class:`Study`, machine.json in its figures directory."""
    plots.style()
    study = Study.from_parameters(ns)
    out = plots.figures_dir(study.params["profile"], study.params.get("figures_dir"))
    out.mkdir(parents=True, exist_ok=True)
    (out / "machine.json").write_text(json.dumps(machine(), indent=1, sort_keys=True) + "\n")
    return study
