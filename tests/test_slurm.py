"""A study computed through a real SLURM cluster (`pgcore compute --cluster slurm`).

scripts/slurm-local.sh makes this machine a one-node cluster; CI runs it first and sets
PGCORE_REQUIRE_SLURM=1, so there the test fails rather than skips when SLURM is missing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgcore.study import Study

pytestmark = pytest.mark.cluster

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
HANG = 900  # seconds after which the submission counts as hung (jobs may queue first)
TINY_STUDY = {
    "seeds": [0, 1], "progress": False,
    "data": {"name": "mnist1d", "num_samples": 1000, "val_fraction": 0.1},
    "model": {"name": "mlp", "width": 32, "depth": 2},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "prune": {"levels": 2, "rate": 0.2},
    "variants": {"finetune": {"retrain": "finetune"}},
    "cluster": {"walltime": "00:20:00", "cores": 1, "memory": "3GB", "jobs": 2},
}


def _slurm_missing() -> str | None:
    """Why SLURM cannot be used here, or None."""
    if shutil.which("sbatch") is None:
        return "no sbatch found: SLURM is not installed (scripts/slurm-local.sh sets up a one-node cluster)"
    info = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, timeout=60)
    if info.returncode != 0 or not {"idle", "mix", "alloc"} & set(info.stdout.split()):
        return f"SLURM has no node up (sinfo: {(info.stdout + info.stderr).strip() or 'nothing'})"
    return None


@pytest.fixture(scope="module")
def slurm() -> None:
    why = _slurm_missing()
    if why and os.environ.get("PGCORE_REQUIRE_SLURM") == "1":
        pytest.fail(f"PGCORE_REQUIRE_SLURM=1 but {why}")
    if why:
        pytest.skip(why)


def _finals(root: Path) -> dict[str, dict]:
    return {str(p.relative_to(root)): json.loads(p.read_text())["final"]
            for p in sorted(root.glob("*-*/seed*/level_*.json"))}


def test_study_through_slurm_equals_local(slurm, tmp_path):
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(TINY_STUDY))
    store = tmp_path / "slurm-store"
    out = subprocess.run([BIN / "pgcore", "compute", config, "--cluster", "slurm", "--store", store, "--figures", "fig1",
                          "--no-progress"], capture_output=True, text=True, timeout=HANG, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "on a slurm cluster" in out.stdout
    # The workers ran as SLURM jobs: their logs are there, one per job.
    logs = list((store / "slurm-logs").glob("pgcore-*.err"))
    assert logs and any("Start worker" in p.read_text() for p in logs)

    local = tmp_path / "local-store"
    study = Study.from_dict(TINY_STUDY, root=local, progress=False)
    for need in study.expand(["fig1"]):
        study.train(need)
    ours, reference = _finals(store), _finals(local)
    assert len(reference) == 2 * (1 + 3 + 3)  # per seed: the dense run, imp and finetune with 3 levels each
    assert ours == reference
