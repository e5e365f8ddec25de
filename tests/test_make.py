"""`make figures` with a researcher's own parameter file: its figures and executed notebooks are filed under the file's
own profile, and a committed profile's are never overwritten."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pgcore.cli import figures_name
from pgcore.config import ConfigError, load_yaml

REPO = Path(__file__).resolve().parent.parent
VENV = Path(sys.executable).parent.parent  # the environment these tests run in: make uses it as it is
HANG = 900  # seconds after which make counts as hung (never a speed limit)
# What `make figures` writes (other tests write elsewhere under build/ meanwhile: the test store, nbval's figures).
OUTPUTS = (REPO / "figures", REPO / "build" / "executed", REPO / "build" / "params")


def make(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    # -o: the environment is never reinstalled from here, whatever the stamp's time
    return subprocess.run(["make", "--no-print-directory", "-o", f"{VENV}/.installed", f"VENV={VENV}", *args],
                          cwd=REPO, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=HANG)


def snapshot(*folders: Path) -> dict[str, int]:
    """Every file under ``folders``: its modification time."""
    return {str(p): p.stat().st_mtime_ns for folder in folders if folder.exists()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def smoke_as(tmp_path: Path, profile: str | None, name: str = "mine.yaml", **changes) -> Path:
    params = load_yaml(REPO / "params" / "smoke.yaml")
    params.pop("profile")
    path = tmp_path / name
    path.write_text(yaml.safe_dump({**({"profile": profile} if profile else {}), **params, **changes}))
    return path


def test_a_file_is_named_by_its_profile_else_its_file_name(tmp_path):
    assert figures_name(smoke_as(tmp_path, "mine-test")) == "mine-test"
    assert figures_name(smoke_as(tmp_path, None, "lenet-wide.yaml")) == "lenet-wide"
    assert figures_name(smoke_as(tmp_path, None, "lenet-wide.yaml"), ["profile=wide2"]) == "wide2"
    assert figures_name(REPO / "params" / "small.yaml") == "small"
    assert figures_name(REPO / "params" / "paper-lenet.yaml", ["prune.levels=20"]) == "paper-lenet"
    with pytest.raises(ConfigError, match="profile must be a plain name"):
        figures_name(smoke_as(tmp_path, None, "my study.yaml"))


def test_a_file_borrowing_a_committed_profile_or_its_folder_is_refused(tmp_path):
    with pytest.raises(ConfigError) as e:
        figures_name(smoke_as(tmp_path, "small"))
    assert str(e.value) == "profile 'small' belongs to params/small.yaml; give your file its own profile: name"
    with pytest.raises(ConfigError, match="profile 'paper' belongs to params/paper.yaml"):
        figures_name(REPO / "params" / "smoke.yaml", ["profile=paper"])
    with pytest.raises(ConfigError, match="holds profile 'small''s figures"):
        figures_name(smoke_as(tmp_path, "mine-test", figures_dir=str(REPO / "figures" / "small")))


def test_make_figures_refuses_a_borrowed_profile_in_one_line_and_writes_nothing(tmp_path):
    before = snapshot(*OUTPUTS)
    out = make("figures", f"PARAMS={smoke_as(tmp_path, 'small')}", env={"PGCORE_STORE": str(tmp_path / "store")})
    assert out.returncode != 0 and out.stdout == ""
    ours = [line for line in out.stderr.splitlines() if not re.match(r"make(\[\d+\])?: \*\*\*", line)]
    assert ours == ["make figures: profile 'small' belongs to params/small.yaml; give your file its own profile: name"]
    assert snapshot(*OUTPUTS) == before and not (tmp_path / "store").exists()


def test_profile_is_short_for_its_file_in_params(tmp_path):
    out = make("-n", "figures", "PROFILE=smoke", "FIGURES=fig1")  # the commands, not run
    assert out.returncode == 0, out.stderr
    commands = " ".join(out.stdout.replace("\\\n", " ").split())
    assert f"{VENV}/bin/pgcore params params/smoke.yaml --set 'profile=\"smoke\"' --out build/params/smoke.yaml " \
           f"PGCORE_PLAIN_PROGRESS=1 {VENV}/bin/pgcore compute build/params/smoke.yaml --figures fig1 " \
           f"--notebooks build/executed/smoke --kernel pgcore" in commands
    assert "00_quickstart" not in commands  # a figure subset runs only its figures' notebooks


@pytest.mark.cluster
def test_make_figures_with_a_researchers_file_writes_only_under_its_profile(tmp_path):
    name = "mine-test"
    mine = [REPO / "figures" / name, REPO / "build" / "executed" / name, REPO / "build" / "params" / f"{name}.yaml"]
    for p in mine:  # left over by an interrupted run of this test
        shutil.rmtree(p) if p.is_dir() else p.unlink(missing_ok=True)
    others = snapshot(*OUTPUTS)
    try:
        out = make("figures", f"PARAMS={smoke_as(tmp_path, name)}", "FIGURES=fig1", "COMPUTE_ARGS=--dashboard none",
                   env={"PGCORE_STORE": str(tmp_path / "store")})
        assert out.returncode == 0, out.stderr[-3000:]
        assert out.stdout.strip().splitlines()[-1] == \
            f"figures written to figures/{name}/ (executed notebooks in build/executed/{name}/)"
        written = {str(p.relative_to(REPO)) for p in (REPO / "figures" / name).iterdir()}
        assert {f"figures/{name}/fig1_pruning_curve.{ext}" for ext in ("png", "pdf", "csv")} <= written
        assert pd.read_csv(REPO / "figures" / name / "fig1_pruning_curve.csv").profile.unique().tolist() == [name]
        assert [p.name for p in (REPO / "build" / "executed" / name).iterdir()] == ["01_pruning_curve.ipynb"]
        assert load_yaml(mine[2])["profile"] == name
        # Nothing else in figures/, build/executed/ or build/params/ was written or removed.
        after = snapshot(*OUTPUTS)
        assert {p: t for p, t in after.items() if not any(p.startswith(str(m)) for m in mine)} == others
        assert list((tmp_path / "store").glob("imp-*"))
    finally:
        for p in mine:
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
