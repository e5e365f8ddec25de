"""The benchmark scripts run end to end on a CPU and write complete records (no speed is asserted)."""

import csv
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _run(*args: str) -> None:
    subprocess.run([sys.executable, *args], cwd=ROOT, check=True, capture_output=True, text=True, timeout=None)


def test_throughput_writes_every_variant(tmp_path):
    out = tmp_path / "throughput.csv"
    _run("benchmarks/throughput.py", "--only", "mlp", "--epochs", "1", "--repeats", "1", "--models", "2",
         "--no-compile", "--device", "cpu", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert [r["variant"] for r in rows] == ["baseline", "pgcore", "pgcore bf16", "pgcore x2"]
    assert all(float(r["images_per_s"]) > 0 for r in rows)
    assert float(rows[0]["speedup_vs_baseline"]) == 1.0


def test_full_run_records_time_and_projection(tmp_path):
    out = tmp_path / "full_run.json"
    _run("benchmarks/full_run.py", "--epochs", "1", "--train-n", "128", "--test-n", "64", "--lockstep", "2",
         "--set", "model.width=4", "--set", "train.epochs=4", "--set", "train.milestones=[2, 3]", "--set", "prune.levels=2", "--device", "cpu",
         "--out", str(out))
    rec = json.loads(out.read_text())
    assert rec["epochs_timed"] == 1 and rec["train"]["epochs"] == 4 and rec["model"]["width"] == 4
    assert rec["seconds"] > 0
    assert abs(rec["projected_full_run_s"] - rec["seconds"] * 4) < 0.25
    # 3 runs per seed (dense + 2 levels) x 3 seeds
    assert abs(rec["projected_curve_x_seeds_s"] - rec["projected_full_run_s"] * 9) < 1
    assert rec["lockstep_models"] == 2 and rec["lockstep_speedup"] > 0
    assert rec["provenance"]["torch"]
