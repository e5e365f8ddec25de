"""Where a number comes from: the code (version, git commit, digest of the code that decides
numbers) and the machine (CPU, its kernels, torch), recorded with every result and figure."""

from __future__ import annotations

import ast
import contextlib
import functools
import hashlib
import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import numpy
import torch

from . import __version__

__all__ = ["syntax", "numerics_digest", "project_dir", "git_commit", "machine", "provenance"]

NUMERICS_MODULES = ("data", "models", "pruning", "seeds", "plans", "train", "batched", "protocols")


def syntax(source: str) -> str:
    """The syntax tree of Python ``source`` without docstrings or ``__all__``, as text: only a change to a statement
    that computes changes it."""
    tree = ast.parse(source)
    tree.body = [n for n in tree.body if not (isinstance(n, ast.Assign) and
                                              any(getattr(t, "id", None) == "__all__" for t in n.targets))]
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and isinstance(body[0], ast.Expr) \
                and isinstance(body[0].value, ast.Constant) and isinstance(body[0].value.value, str):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree)


@functools.cache
def numerics_digest() -> str:
    """A 12-hex digest of the :func:`syntax` of :data:`NUMERICS_MODULES`, the modules that decide numbers."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in NUMERICS_MODULES:
        h.update(name.encode() + syntax((here / f"{name}.py").read_text()).encode())
    return h.hexdigest()[:12]


def project_dir() -> Path:
    """The checkout pgcore is installed from (editable install), else the working directory."""
    repo = Path(__file__).resolve().parent.parent
    return repo if (repo / "pyproject.toml").exists() else Path.cwd()


def git_commit() -> str:
    """Commit of the pgcore checkout (``-dirty`` with uncommitted changes); ``unknown`` outside git."""
    git = functools.partial(subprocess.run, cwd=Path(__file__).resolve().parent.parent, capture_output=True,
                            text=True, timeout=10)
    try:
        sha = git(["git", "rev-parse", "HEAD"], check=True).stdout.strip()
        dirty = git(["git", "status", "--porcelain", "--untracked-files=no", "--", "pgcore"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("-dirty" if dirty else "")


def machine() -> dict[str, Any]:
    """The CPU and its kernels (AVX-512 and AVX2 add in other orders; ``ATEN_CPU_CAPABILITY`` pins them)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    return {"cpu": cpu, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "aten_cpu_capability": os.environ.get("ATEN_CPU_CAPABILITY"), "torch": torch.__version__}


def provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    """Code version and environment, recorded with every result."""
    dev = torch.device(device) if device is not None else None
    cuda = dev is not None and dev.type == "cuda"
    info = {"pgcore": __version__, "git_commit": git_commit(), "torch": torch.__version__, "numpy": numpy.__version__,
            "python": platform.python_version(), "platform": platform.platform(),
            "torch_threads": torch.get_num_threads(), "device": str(dev) if dev is not None else None,
            "numerics": numerics_digest(), "machine": machine(),
            "device_name": torch.cuda.get_device_name(dev) if cuda else platform.processor() or platform.machine()}
    if cuda:
        info["cuda"] = torch.version.cuda
    return info
