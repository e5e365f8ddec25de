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
    _run("benchmarks/throughput.py", "--only", "mlp", "--mnist1d-epochs", "1", "--repeats", "1", "--models", "2",
         "--no-compile", "--device", "cpu", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert [r["variant"] for r in rows] == ["baseline", "pgcore", "pgcore bf16", "pgcore x2"]
    assert all(float(r["images_per_s"]) > 0 for r in rows)
    # each ratio is the variant's images/s over the baseline's (to the CSV's rounding)
    base = float(rows[0]["images_per_s"])
    for r in rows:
        assert abs(float(r["speedup_vs_baseline"]) - float(r["images_per_s"]) / base) <= 0.006 + 1e-4 * float(r["images_per_s"]) / base
    assert all(r["workload"] == "mlp512" and r["data"] == "mnist1d" and r["device"] == "cpu" for r in rows)
    assert all(r["gflops"] == "" and r["of_peak"] == "" for r in rows)


def test_throughput_lenet_reports_gflops_and_sgemm_peak(tmp_path):
    out = tmp_path / "throughput.csv"
    _run("benchmarks/throughput.py", "--only", "lenet", "--epochs", "1", "--repeats", "1", "--lenet-n", "512",
         "--models", "2", "--no-compile", "--device", "cpu", "--out", str(out))
    rows = list(csv.DictReader(out.open()))
    assert all(r["workload"] == "lenet" for r in rows)
    by = {r["variant"]: r for r in rows}
    assert set(by) == {"sgemm peak (1 thread)", "baseline", "pgcore", "pgcore bf16", "pgcore x2"}
    peak = float(by.pop("sgemm peak (1 thread)")["gflops"])
    assert peak > 0
    flops_per_image = 6 * (784 * 300 + 300 * 100 + 100 * 10)
    for r in by.values():
        ips, gflops = float(r["images_per_s"]), float(r["gflops"])
        assert ips > 0 and gflops > 0
        assert abs(gflops - ips * flops_per_image / 1e9) <= 1e-3 + 1e-4 * gflops
        assert abs(float(r["of_peak"]) - gflops / peak) <= 1e-3 * max(1.0, gflops / peak)
        assert r["threads"] == "1"  # pgcore.protocols.CPU_THREADS
        assert r["data"].startswith(("mnist (real", "mnist-shaped random"))


def test_lenet_data_falls_back_to_mnist_shaped(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from throughput import mnist_data
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    import torch

    data, x_u8, y, source = mnist_data(str(tmp_path / "absent"), 300, torch.device("cpu"))
    assert source.startswith("mnist-shaped random")
    assert data.x_train.shape == (300, 1, 28, 28) and x_u8.shape == (300, 1, 28, 28) and len(y) == 300
    assert x_u8.dtype.name == "uint8" and data.y_train.tolist() == y.tolist()
    mean, std = 0.1307, 0.3081
    assert torch.allclose(data.x_train, (torch.as_tensor(x_u8).float() / 255 - mean) / std, atol=1e-6)


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
