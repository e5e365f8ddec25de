"""The notebooks' parameter cells are the smoke profile, so nbval (which injects nothing) runs smoke."""

import ast
import json
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9]*.ipynb"))


def _parameters(nb_path: Path) -> dict:
    nb = json.loads(nb_path.read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{nb_path.name} needs exactly one cell tagged 'parameters'"
    assert not any("injected-parameters" in c.get("metadata", {}).get("tags", []) for c in nb["cells"]), \
        f"{nb_path.name} carries papermill-injected parameters; re-run `make notebooks`"
    values = {}
    for node in ast.parse("".join(cells[0]["source"])).body:
        if isinstance(node, ast.Assign):
            values[node.targets[0].id] = ast.literal_eval(node.value)
    return values


@pytest.mark.parametrize("nb_path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_parameter_cell_matches_smoke_profile(nb_path):
    smoke = yaml.safe_load((ROOT / "params" / "smoke.yaml").read_text())
    params = _parameters(nb_path)
    for key, value in smoke.items():
        assert params.get(key) == value, f"{nb_path.name}: parameter {key} differs from params/smoke.yaml"


@pytest.mark.parametrize("profile", ["smoke", "small", "paper"])
def test_profiles_are_valid_configs(profile):
    from pgcore.config import from_dict, load_yaml

    params = load_yaml(ROOT / "params" / f"{profile}.yaml")
    assert params["profile"] == profile
    for seed in params["seeds"]:
        from_dict(params, seed=seed)
