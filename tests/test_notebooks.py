"""The notebooks' parameter cells name the smoke profile (nbval injects nothing, so it runs smoke), hold at most six
lines, and figure notebooks stay thin: they read and show, the library draws and judges."""

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
def test_parameter_cell_names_the_smoke_profile_and_reads_only(nb_path):
    params = _parameters(nb_path)
    assert params["profile"] == "smoke" and params["params"] is None and params["overrides"] == {}
    assert set(params) == {"profile", "params", "overrides", "compute"}
    # Only the tour trains what it shows; every figure notebook reads (pgcore compute trains).
    assert params["compute"] is (nb_path.name == "00_quickstart.ipynb")
    cell = next(c for c in json.loads(nb_path.read_text())["cells"] if "parameters" in c["metadata"].get("tags", []))
    assert sum(1 for line in "".join(cell["source"]).splitlines() if line.strip() and not line.startswith("#")) <= 6


@pytest.mark.parametrize("nb_path", [p for p in NOTEBOOKS if not p.name.startswith(("00", "08"))],
                         ids=lambda p: p.name)
def test_figure_notebooks_stay_thin(nb_path):
    code = ["".join(c["source"]) for c in json.loads(nb_path.read_text())["cells"] if c["cell_type"] == "code"]
    lines = [line for src in code for line in src.splitlines() if line.strip() and not line.strip().startswith("#")]
    assert len(lines) <= 20, nb_path.name
    assert any("show(" in src for src in code)


@pytest.mark.parametrize("profile", ["smoke", "small", "paper"])
def test_profiles_are_valid_configs(profile):
    from pgcore.config import from_dict, load_yaml

    params = load_yaml(ROOT / "params" / f"{profile}.yaml")
    assert params["profile"] == profile
    for seed in params["seeds"]:
        from_dict(params, seed=seed)
