"""Hash-keyed, atomic, resumable results on disk.

Layout of one run (one protocol, one seed)::

    <root>/<protocol>-<hash>/seed<k>/
        config.json          full config + provenance (code version, git commit, torch, device)
        level_000.pt         weights, mask, rewind point and per-example training losses
        level_000.json       metrics of level 0; written last, with the .pt file's sha256
        ...
        done.json            present once every level is finished

A level counts as finished only when its JSON exists, and the JSON is written (atomically)
after the checkpoint it vouches for, so a killed run never leaves a half level that looks
whole. A file that fails to parse or whose checksum does not match raises
:class:`CorruptResultError` naming the file; it is never used.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
import torch

from . import __version__
from .config import RunConfig, from_dict

DEFAULT_ROOT_ENV = "PGCORE_STORE"


class CorruptResultError(RuntimeError):
    """A result file exists but cannot be trusted."""


def project_dir() -> Path:
    """The checkout pgcore is installed from (editable install), else the working directory."""
    repo = Path(__file__).resolve().parent.parent
    return repo if (repo / "pyproject.toml").exists() else Path.cwd()


def default_root() -> Path:
    """``$PGCORE_STORE`` if set, else ``results/`` in the project checkout."""
    env = os.environ.get(DEFAULT_ROOT_ENV)
    return Path(env).expanduser() if env else project_dir() / "results"


def git_commit() -> str:
    """Commit of the pgcore checkout, with ``-dirty`` if it has uncommitted changes; ``unknown`` outside git."""
    here = Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, timeout=10)
        if sha.returncode != 0:
            return "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", "pgcore"],
                               cwd=here.parent, capture_output=True, text=True, timeout=10)
        return sha.stdout.strip() + ("-dirty" if dirty.stdout.strip() else "")
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def provenance(device: torch.device | str | None = None) -> dict[str, Any]:
    """Code version and environment, recorded with every result."""
    import numpy

    dev = torch.device(device) if device is not None else None
    info = {
        "pgcore": __version__,
        "git_commit": git_commit(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "torch_threads": torch.get_num_threads(),
        "device": str(dev) if dev is not None else None,
    }
    if dev is not None and dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


def _atomic_write(path: Path, payload: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, obj: Any) -> None:
    _atomic_write(path, (json.dumps(obj, indent=1, sort_keys=True) + "\n").encode())


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CorruptResultError(f"result file {path} is corrupt ({e}); delete it (and the run's later levels) "
                                 f"to recompute, or delete the run directory {path.parent}") from e


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class Run:
    """The on-disk record of one run (protocol + config + seed)."""

    def __init__(self, cfg: RunConfig, root: str | Path | None = None):
        self.cfg = cfg
        self.root = Path(root) if root is not None else default_root()
        self.path = self.root / f"{cfg.protocol}-{cfg.hash()}" / f"seed{cfg.seed}"

    def __repr__(self) -> str:
        return f"Run({self.path})"

    # -- config -------------------------------------------------------------------------
    def open(self, device: torch.device | str | None = None) -> None:
        """Create the run directory and its config.json, or check an existing one matches."""
        cfg_path = self.path / "config.json"
        if cfg_path.exists():
            stored = read_json(cfg_path)
            if stored.get("science") != self.cfg.science_dict():
                raise CorruptResultError(f"{cfg_path} describes a different config than its hash says; "
                                         f"delete {self.path} to recompute")
            return
        write_json(cfg_path, {"config": self.cfg.to_dict(), "science": self.cfg.science_dict(),
                              "hash": self.cfg.hash(), "provenance": provenance(device)})

    # -- levels -------------------------------------------------------------------------
    def _level_paths(self, level: int) -> tuple[Path, Path]:
        return self.path / f"level_{level:03d}.json", self.path / f"level_{level:03d}.pt"

    def finished_levels(self) -> list[int]:
        """Levels whose metrics file exists (and so whose checkpoint was written first)."""
        if not self.path.exists():
            return []
        return sorted(int(p.stem.split("_")[1]) for p in self.path.glob("level_*.json"))

    def save_level(self, level: int, metrics: dict[str, Any], checkpoint: dict[str, Any]) -> None:
        """Write a level's checkpoint, then its metrics (with the checkpoint's checksum)."""
        js, pt = self._level_paths(level)
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        blob = buf.getvalue()
        _atomic_write(pt, blob)
        write_json(js, {**metrics, "checkpoint_sha256": _sha256(blob)})

    def load_metrics(self, level: int) -> dict[str, Any]:
        js, _ = self._level_paths(level)
        record = read_json(js)
        if not isinstance(record, dict) or "final" not in record:
            raise CorruptResultError(f"result file {js} lacks its metrics; delete it to recompute level {level}")
        return record

    def load_checkpoint(self, level: int, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        js, pt = self._level_paths(level)
        expected = self.load_metrics(level)["checkpoint_sha256"]
        try:
            blob = pt.read_bytes()
        except FileNotFoundError as e:
            raise CorruptResultError(f"checkpoint {pt} is missing though {js} says level {level} finished; "
                                     f"delete {js} to recompute that level") from e
        if _sha256(blob) != expected:
            raise CorruptResultError(f"checkpoint {pt} does not match the checksum in {js} (truncated or "
                                     f"overwritten); delete both to recompute level {level}")
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)

    def mark_done(self) -> None:
        write_json(self.path / "done.json", {"levels": self.finished_levels()})

    def is_done(self) -> bool:
        return (self.path / "done.json").exists()

    # -- tidy results -------------------------------------------------------------------
    def frame(self) -> pd.DataFrame:
        """One row per level x metric source of this run."""
        rows = []
        for level in self.finished_levels():
            m = self.load_metrics(level)
            base = {"protocol": self.cfg.protocol, "run": self.cfg.hash(), "seed": self.cfg.seed, "level": level,
                    "sparsity": m["sparsity"], "epochs_total": m["epochs_total"]}
            for source, values in m["final"].items():
                rows.append({**base, "source": source, "loss": values["loss"], "accuracy": values["accuracy"],
                             "error": 1.0 - values["accuracy"]})
        return pd.DataFrame(rows)

    def history(self) -> pd.DataFrame:
        """Every evaluation of every level (one row each), for training curves."""
        rows = []
        for level in self.finished_levels():
            m = self.load_metrics(level)
            for rec in m["history"]:
                rows.append({"seed": self.cfg.seed, "level": level, "sparsity": m["sparsity"], **rec})
        return pd.DataFrame(rows)


def find_run(ref: str | Path, root: str | Path | None = None) -> Run:
    """Open an existing run from its directory, or from ``<protocol>-<hash>[/seed<k>]`` / a hash prefix."""
    root = Path(root) if root is not None else default_root()
    path = Path(ref)
    candidates: list[Path] = []
    if (path / "config.json").exists():
        candidates = [path]
    elif path.is_dir():
        candidates = sorted(p.parent for p in path.glob("seed*/config.json"))
    else:
        candidates = sorted(p.parent for p in root.glob(f"*{ref}*/seed*/config.json"))
        candidates += sorted(p.parent for p in root.glob(f"*/{ref}/config.json"))
    if not candidates:
        raise FileNotFoundError(f"no run matching '{ref}' (looked in {root}); `pgcore run` prints run directories")
    if len(candidates) > 1:
        listed = "\n  ".join(str(c) for c in candidates[:20])
        raise ValueError(f"'{ref}' matches {len(candidates)} runs; name one:\n  {listed}")
    stored = read_json(candidates[0] / "config.json")
    return Run(from_dict(stored["config"]), root=candidates[0].parent.parent)


def frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Concatenate the tidy frames of several runs (e.g. the seeds of one experiment)."""
    frames = [r.frame() for r in runs]
    frames = [f for f in frames if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
