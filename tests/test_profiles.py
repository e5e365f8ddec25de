"""Every profile a CPU runs trains through its real data path: the parameter file as it is,
one epoch per level and one pruning level, so a missing package or file fails here, not in
`make figures`. (paper-lenet, whose data come from the package index: tests/test_download.py.)"""

from pathlib import Path

import pytest

from pgcore.config import load_yaml, override
from pgcore.protocols import run_seeds

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("profile, train_size", [("small", 3_600), ("mnist1d", None), ("smoke", None)])
def test_profile_trains_one_level_through_its_real_data(profile, train_size, tmp_path):
    params = load_yaml(ROOT / "params" / f"{profile}.yaml")
    params = override(params, {"train.epochs": 1, "train.eval_every": 1, "prune.levels": 1})
    exp = run_seeds(params, params["seeds"][:1], protocol="imp", root=tmp_path, device="cpu", progress=False)
    df = exp.frame()
    test = df[df.source == "test"].set_index("level")
    assert list(test.index) == [0, 1]
    assert test.loc[1, "sparsity"] == pytest.approx(params["prune"]["rate"] if "rate" in params["prune"] else 0.2,
                                                    abs=2e-3)
    assert (test.error < 0.9).all()  # better than chance after one epoch
    if train_size is not None:
        from pgcore.data import load

        assert len(load(exp.runs[0].cfg.data).y_train) == train_size
