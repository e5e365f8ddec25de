"""Every import is a declared dependency and every declared dependency is used: deptry, with
the project's own configuration (pyproject.toml, [tool.deptry])."""

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def deptry(where: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deptry", ".", "--no-ansi"], cwd=where,
                          capture_output=True, text=True)


def test_every_import_is_declared_and_every_dependency_used():
    done = deptry(ROOT)
    assert done.returncode == 0, done.stdout + done.stderr


def test_an_undeclared_import_fails_the_check(tmp_path):
    """The check has teeth: a module importing a package that is installed here only as
    another package's dependency (scikit-learn, through mlxtend) is reported."""
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    (tmp_path / "pgcore").mkdir()
    (tmp_path / "pgcore" / "__init__.py").write_text("import sklearn\nimport yaml\n")
    done = deptry(tmp_path)
    assert done.returncode != 0
    assert "'sklearn' imported but it is a transitive dependency" in done.stdout + done.stderr
