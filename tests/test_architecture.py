"""pgcore's modules stand on floors: each imports only modules on floors below its own, with
imports inside functions counted too (an import moved into a function to dodge a cycle is
still a cycle). A new module must be given a floor here."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

import pgcore

PACKAGE = Path(pgcore.__file__).parent

# Bottom to top. Config is the ground floor: it imports nothing of pgcore.
FLOORS = (
    ("__init__", "config", "seeds", "pruning", "analysis", "progress", "provenance"),
    ("data", "models", "plans", "claims", "plots"),
    ("train", "download", "store", "figures"),
    ("batched", "explore"),
    ("protocols",),
    ("study",),
    ("compute", "notebook"),
    ("cli",),
)


def imports_of(source: str, modules: set[str]) -> set[str]:
    """The pgcore modules ``source`` imports, at any depth (functions, TYPE_CHECKING blocks)."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1 or (node.module or "").split(".")[0] == "pgcore":
                parts = (node.module or "").split(".")
                name = parts[0] if node.level == 1 else (parts[1] if len(parts) > 1 else "")
                found |= {name} if name else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            found |= {a.name.split(".")[1] for a in node.names if a.name.startswith("pgcore.")}
    return found & modules


def import_graph() -> dict[str, set[str]]:
    modules = {p.stem for p in PACKAGE.glob("*.py")}
    return {m: imports_of((PACKAGE / f"{m}.py").read_text(), modules) - {m} for m in modules}


def test_imports_of_sees_function_level_and_absolute_imports():
    src = "from . import store\nfrom .plans import plan\nimport pgcore.cli\ndef f():\n    from pgcore.study import Study\n"
    assert imports_of(src, {"store", "plans", "cli", "study", "config"}) == {"store", "plans", "cli", "study"}


def test_every_module_has_a_floor_and_imports_only_from_below():
    graph = import_graph()
    floor = {m: k for k, names in enumerate(FLOORS) for m in names}
    assert set(graph) == set(floor), f"modules without a floor: {sorted(set(graph) - set(floor))}"
    upward = [f"{m} -> {d}" for m, deps in graph.items() for d in deps if floor[d] >= floor[m]]
    assert not upward, f"imports that do not point down: {upward}"
    graphlib.TopologicalSorter(graph).prepare()  # no cycles (implied by the floors, checked anyway)
