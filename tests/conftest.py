import pytest

from pgcore.config import from_dict

# A run small enough for unit tests: 1,000 generated MNIST-1D examples, a narrow MLP.
TINY = {
    "data": {"name": "mnist1d", "num_samples": 1000, "val_fraction": 0.1},
    "model": {"name": "mlp", "width": 32, "depth": 2},
    "train": {"epochs": 2, "batch_size": 64, "lr": 0.1},
    "prune": {"levels": 3},
}


@pytest.fixture
def tiny_params():
    import copy

    return copy.deepcopy(TINY)


@pytest.fixture
def tiny_cfg(tiny_params):
    return from_dict(tiny_params)


@pytest.fixture(autouse=True)
def _isolated_store(tmp_path, monkeypatch):
    """Every test writes results to its own directory, never to results/."""
    monkeypatch.setenv("PGCORE_STORE", str(tmp_path / "store"))


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    """``pgcore <argv>`` in this process: exit status, stdout, stderr."""
    from pgcore import cli

    try:
        rc = cli.main([str(a) for a in argv])
    except SystemExit as e:  # argparse's one-line error
        rc = e.code
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    """The single line an error prints; no traceback."""
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("pgcore: error: "), err
    return lines[0]
