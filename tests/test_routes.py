"""The routes a researcher takes: a figure appears as soon as its runs are done, a study computed in lockstep is read
by every figure without training, and a notebook runs on a minimal parameter file of one's own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgcore import compute
from pgcore.config import load_yaml
from pgcore.figures import FIGURES
from pgcore.study import Study

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HANG = 900  # seconds after which a stuck subprocess counts as hung (never a speed limit)


def shrunk_smoke(**changes) -> dict:
    p = load_yaml(REPO / "params" / "smoke.yaml")
    p["prune"]["levels"], p["train"]["epochs"], p["data"]["num_samples"] = 2, 2, 1000
    p["noise_levels"], p["stretched_levels"] = 2, 1
    return {**p, **changes}


def _files(root: Path) -> list[Path]:
    return sorted(root.glob("*-*/seed*/level_*.json"))


@pytest.mark.cluster
def test_figure_1_is_drawn_before_the_study_ends(tmp_path):
    """`pgcore compute --notebooks` (what `make figures` runs) executes each figure's notebook as a task depending on
    that figure's runs: figure 1's files exist before the last level of the study is stored."""
    path, store, out = tmp_path / "mine.yaml", tmp_path / "store", tmp_path / "figures"
    path.write_text(yaml.safe_dump(shrunk_smoke(profile="routes-test", figures_dir=str(out))))
    env = {k: v for k, v in os.environ.items() if k != "PGCORE_NOTEBOOK_COMPUTE"} | {"PGCORE_PLAIN_PROGRESS": "1"}
    figures = ["fig1", "fig5"]  # figure 5 adds runs of its own (random pruning, reinit, SNIP) after figure 1's
    # One worker runs one task at a time, in priority order: no race decides what comes first.
    done = subprocess.run([BIN / "pgcore", "compute", path, "--store", store, "--workers", "1", "--dashboard", "none",
                           "--no-progress", "--figures", *figures, "--notebooks", tmp_path / "executed"], env=env,
                          capture_output=True, text=True, timeout=HANG)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "2 notebook(s) run" in done.stdout
    executed = sorted(p.name for p in (tmp_path / "executed").glob("*.ipynb"))
    assert executed == sorted(f"{FIGURES[f].notebook}.ipynb" for f in figures)
    fig1 = (out / "fig1_pruning_curve.png").stat().st_mtime
    last = max(p.stat().st_mtime for p in _files(store))
    assert fig1 < last, "figure 1 was drawn only after the whole study"


@pytest.mark.cluster
def test_after_a_lockstep_compute_every_figure_reads_its_runs_and_trains_nothing(tmp_path):
    """The execution mode is decided once, when the study is built: computed in lockstep, every figure of a study in
    `auto` mode reads the lockstep runs (none of them trains a sequential twin)."""
    params = shrunk_smoke()
    study = Study.from_dict({**params, "lockstep": True}, root=tmp_path, progress=False)
    cluster = compute.local_cluster(2, dashboard=None)
    try:
        summary = compute.compute_study(study, cluster, progress=False, out=lambda line: None)
    finally:
        compute.close_cluster(cluster)
    assert not summary.failed and not summary.skipped
    before = _files(tmp_path)
    reader = Study.from_dict({**params, "lockstep": "auto"}, root=tmp_path, progress=False)
    assert reader.execution == "lockstep"
    for figure in FIGURES:
        frames = reader.frames(figure)  # raises MissingRunsError if a run were missing: nothing trains here
        assert all(len(f) for f in frames.values()), figure
    assert _files(tmp_path) == before


def test_notebook_01_runs_on_a_minimal_parameter_file(tmp_path):
    """A parameter file with only the run's sections and seeds: the notebook fills every other key as the CLI does."""
    minimal = {"seeds": [0], "data": {"name": "mnist1d", "num_samples": 1000, "val_fraction": 0.1},
               "model": {"name": "mlp", "width": 16}, "train": {"epochs": 1}, "prune": {"levels": 1},
               "figures_dir": str(tmp_path / "figures")}
    path = tmp_path / "minimal.yaml"
    path.write_text(yaml.safe_dump(minimal))
    env = {**os.environ, "PGCORE_STORE": str(tmp_path / "store"), "PGCORE_PLAIN_PROGRESS": "1"}
    nb = REPO / "notebooks" / f"{FIGURES['fig1'].notebook}.ipynb"
    done = subprocess.run([BIN / "papermill", "--log-level", "WARNING", "-k", "pgcore", "--cwd", nb.parent,
                           "-p", "params", path, "-p", "compute", "True", nb, tmp_path / "out.ipynb"],
                          env=env, capture_output=True, text=True, timeout=HANG)
    assert done.returncode == 0, done.stderr[-3000:]
    assert (tmp_path / "figures" / "fig1_pruning_curve.png").exists()
    assert (tmp_path / "figures" / "fig1_pruning_curve_seeds.csv").exists()
