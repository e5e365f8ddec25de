"""The benchmarks and scripts refuse a bad argument with argparse's one line (exit 2), before any work: no
traceback, no silent default (``--epochs 0`` once trained the 160-epoch schedule)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("argv, said", [
    (["benchmarks/full_run.py", "--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["benchmarks/full_run.py", "--train-n", "many"], "argument --train-n: must be an integer >= 1, got 'many'"),
    (["benchmarks/full_run.py", "--set", "train.epochs="], "override 'train.epochs=' has no value after '='"),
    (["benchmarks/full_run.py", "--params", "params/nope.yaml"], "cannot read config file params/nope.yaml"),
    (["benchmarks/full_run.py", "--device", "gpu0"], "gpu0"),
    (["benchmarks/study.py", "--workers", "2", "0"], "argument --workers: must be an integer >= 1, got 0"),
    (["benchmarks/study.py", "--profile", "nope"], "argument --profile: invalid choice: 'nope'"),
    (["benchmarks/throughput.py", "--repeats", "0"], "argument --repeats: must be an integer >= 1, got 0"),
    (["benchmarks/throughput.py", "--workers", "-1"], "argument --workers: must be an integer >= 0, got -1"),
    (["scripts/choose_small.py", "--seeds", "0", "-1"], "argument --seeds: must be an integer >= 0, got -1"),
    (["scripts/mnist1d_baselines.py", "--epochs", "0"], "argument --epochs: must be an integer >= 1, got 0"),
    (["scripts/isa_check.py", "params/nope.yaml"], "parameter file params/nope.yaml does not exist"),
    (["scripts/figures_readme.py", "nope"], "figures/nope/machine.json is missing"),
])
def test_a_bad_argument_is_one_line(argv, said):
    proc = subprocess.run([sys.executable, *argv], cwd=ROOT, capture_output=True, text=True, timeout=300)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert last.startswith(f"{Path(argv[0]).name}: error: ") and said in last, last


def test_the_kernel_table_names_every_verdict_whose_status_or_evidence_differs(monkeypatch):
    """figures_readme's kernel check: each cell gives status (evidence); the sentence under the table names the
    verdicts that differ between kernel sets, and in what."""
    import importlib.util

    import pandas as pd

    spec = importlib.util.spec_from_file_location("figures_readme", ROOT / "scripts" / "figures_readme.py")
    readme = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "figures_readme", readme)  # its dataclasses look their module up
    spec.loader.exec_module(readme)
    rows = [("fig1", "A", "default", "not significant", "inconclusive"),
            ("fig1", "A", "native", "not significant", "inconclusive"),
            ("fig3", "B", "default", "not significant", "inside the margin"),
            ("fig3", "B", "native", "not significant", "inconclusive"),
            ("fig7", "C", "default", "not significant", "inconclusive"),
            ("fig7", "C", "native", "not reproduced", "inside the margin")]
    df = pd.DataFrame(rows, columns=["figure", "claim", "kernels", "status", "evidence"])
    said = readme.differing(df)
    assert said == "The status or evidence differs between kernel sets for fig3 (*B*: evidence); fig7 (*C*: status, evidence)."
    assert readme.differing(df[df.figure == "fig1"]).startswith("Every verdict's status and evidence is the same")
    assert readme.differing(df.drop(columns="evidence")) == "The status differs between kernel sets for fig7 (*C*: status)."
    assert readme.verdict_word(df.iloc[2]) == "not significant (inside the margin)"
    assert readme.verdict_word(df.drop(columns="evidence").iloc[2]) == "not significant"
