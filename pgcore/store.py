"""Hash-keyed, atomic, resumable results on disk. One run (one protocol, one seed)::

    <root>/<protocol>-<hash>/seed<k>/
        config.json     full config, provenance and the numerics digest of the code that computed it
        level_000.pt    weights, mask, rewind point and per-example training losses
        level_000.json  metrics of level 0, written after the .pt file, with its sha256 (only this, naming a
                        ``reference``, when the level is exactly another run's, mostly the dense level 0)
        done.json       present once every level is finished
    <root>/<protocol>-<hash>/seed<k>.lock   held (flock) while a process trains the run

A level counts only once its JSON exists, so a killed run never leaves a half level that looks whole."""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Iterable, Iterator

import filelock
import pandas as pd
import torch

from .config import PROTOCOLS, ConfigError, ImportPathError, RunConfig, from_dict, is_import_path
from .plans import levels_of
from .provenance import numerics_digest, project_dir, provenance

__all__ = ["CorruptResultError", "StaleResultError", "MisfiledRunError", "OwnCodeNotImportedError", "NotARunError",
           "RunInUseError", "default_root", "write_json", "read_json", "Problem", "check_run_dir", "recording_writes",
           "Run", "holding", "import_own_code_asked", "own_code", "find_run", "find_runs", "find_run_dirs",
           "run_dirs", "frame"]


class CorruptResultError(RuntimeError):
    """A result file that cannot be trusted: ``what`` is wrong and ``fix`` says how to mend it."""

    def __init__(self, what: str, fix: str = ""):
        self.what, self.fix = what, fix
        super().__init__(f"{what}; {fix}" if fix else what)


class StaleResultError(CorruptResultError):
    """A result computed by code whose numerics differ from the running code's."""


class MisfiledRunError(CorruptResultError):
    """A run directory that this version of pgcore files elsewhere (or cannot read); never used."""


class OwnCodeNotImportedError(MisfiledRunError):
    """A run made with a researcher's own model or data code, which reading a store imports only when asked."""


class NotARunError(ValueError):
    """A directory that is not provably a pgcore run: pgcore neither uses nor changes it."""


class RunInUseError(RuntimeError):
    """A run whose lock another process holds: it is training the run."""


# A store's files are data: the model or data module a run's config.json names is imported (its code run) only when
# the reader asks, by this variable or by ``import_own_code=True``.
IMPORT_OWN_CODE = "PGCORE_IMPORT_OWN_CODE"


def default_root() -> Path:
    """``$PGCORE_STORE`` if set, else ``results/`` in the project checkout."""
    env = os.environ.get("PGCORE_STORE")
    return Path(env).expanduser() if env else project_dir() / "results"


def _atomic_write(path: Path, payload: bytes) -> None:
    """Write a temporary file beside ``path``, fsync it, rename it over ``path``; an OSError names ``path``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as e:
        raise OSError(e.errno, e.strerror, str(path)) from e
    try:
        mask = os.umask(0)
        os.umask(mask)
        os.fchmod(fd, 0o666 & ~mask)  # mkstemp's 0600 would shut out the group of a shared store
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError) and e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def write_json(path: Path, obj: Any) -> None:
    """Strict JSON only: NaN or infinity (a diverged run's loss) is refused, never stored."""
    try:
        text = json.dumps(obj, indent=1, sort_keys=True, allow_nan=False)
    except ValueError as e:
        raise ValueError(f"refusing to write {path}: it holds NaN or infinity, which strict JSON cannot "
                         f"store (a diverged run?)") from e
    _atomic_write(path, (text + "\n").encode())


def _reject_constant(name: str) -> Any:
    raise ValueError(f"it holds {name}, which strict JSON does not allow")


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(), parse_constant=_reject_constant)
    except (ValueError, UnicodeDecodeError) as e:  # JSONDecodeError is a ValueError
        raise CorruptResultError(f"result file {path} is corrupt ({e})", f"run `pgcore repair {path.parent}` "
                                 f"to drop it and what depends on it, then run again to recompute") from e


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a stored run: ``level`` is the first level to recompute (None: config.json)."""

    level: int | None
    message: str


_LEVEL_FILE = re.compile(r"level_(\d{3,})\.(json|pt)")
_EXPERIMENT_DIR = re.compile(r"([a-z_]+)-[0-9a-f]{12}")
_SEED_DIR = re.compile(r"seed\d+")
_OWN_FILE = re.compile(r"config\.json|done\.json|level_\d{3,}\.(json|pt)|\..+\.tmp")  # what pgcore writes in a run


def _run_layout(parts: tuple[str, ...]) -> bool:
    """Whether the last two path components are a run's: ``<protocol>-<12 hex>/seed<k>``."""
    m = _EXPERIMENT_DIR.fullmatch(parts[-2]) if len(parts) >= 2 else None
    return bool(m and m[1] in PROTOCOLS and _SEED_DIR.fullmatch(parts[-1]))


def check_run_dir(run_dir: Path) -> None:
    """Raise :class:`NotARunError` unless ``run_dir`` is provably a pgcore run, so nothing else is ever deleted."""
    run_dir = Path(run_dir)
    why = None
    if not _run_layout(run_dir.absolute().parts):
        why = "it is not a <store>/<protocol>-<hash>/seed<k> directory"
    elif not (run_dir / "config.json").exists():
        raise FileNotFoundError(f"{run_dir / 'config.json'} is missing; run the `pgcore run` command that made this "
                                f"run (it rewrites config.json), or delete {run_dir}")
    else:
        try:
            stored = read_json(run_dir / "config.json")
            if not (isinstance(stored, dict) and {"config", "science", "hash"} <= stored.keys()):
                why = "its config.json is not a pgcore run config (no config, science and hash)"
        except CorruptResultError:
            strangers = sorted(p.name for p in run_dir.iterdir() if not _OWN_FILE.fullmatch(p.name))
            if strangers:
                why = (f"its config.json is unreadable and it holds files pgcore never writes "
                       f"({', '.join(strangers[:3])})")
    if why:
        raise NotARunError(f"{run_dir} is not a pgcore run: {why}; pgcore leaves it alone")


_WRITES = threading.local()


@contextlib.contextmanager
def recording_writes() -> Iterator[set[Path]]:
    """The run directories this thread writes a level or done.json in meanwhile (not another process's)."""
    _WRITES.runs = runs = set()
    try:
        yield runs
    finally:
        del _WRITES.runs


def _note_write(run_dir: Path) -> None:
    getattr(_WRITES, "runs", set()).add(run_dir)


class Run:
    """The on-disk record of one run (protocol + config + seed)."""

    def __init__(self, cfg: RunConfig, root: str | Path | None = None):
        self.cfg = cfg
        self.root = Path(root) if root is not None else default_root()
        self.path = self.root / f"{cfg.protocol}-{cfg.hash()}" / f"seed{cfg.seed}"

    def __repr__(self) -> str:
        return f"Run({self.path})"

    def _fix(self, level: int | None) -> str:
        """The command that mends a bad ``level`` and every later one (None: a bad config.json)."""
        if level is None:
            return f"run `pgcore repair {self.path}`, then the same `pgcore run` to rewrite it"
        return f"run `pgcore repair {self.path}` to drop level {level} and later, then run again"

    def _config(self) -> dict[str, Any] | None:
        """The stored config.json, None if absent; :class:`CorruptResultError` if it is another config's."""
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            return None
        stored = read_json(cfg_path)
        if not isinstance(stored, dict) or stored.get("science") != self.cfg.science_dict():
            raise CorruptResultError(f"{cfg_path} describes a different config than its directory", self._fix(None))
        return stored

    def open(self, device: torch.device | str | None = None) -> None:
        """Create the run directory and its config.json, or check an existing one (config, numerics digest). Levels
        stored without a config.json (it was deleted or repaired) are kept only if this code computed them."""
        if self._config() is None:
            other = {self.load_metrics(k).get("provenance", {}).get("numerics") for k in self._stored()}
            if other - {numerics_digest()}:
                raise StaleResultError(f"{self.path} has no config.json and its levels were computed by other code "
                                       f"(numerics digests {sorted(map(str, other))}); delete it to recompute them")
            write_json(self.path / "config.json", {"config": self.cfg.to_dict(), "science": self.cfg.science_dict(),
                                                   "hash": self.cfg.hash(), "numerics": numerics_digest(),
                                                   "provenance": provenance(device)})
        self.check_numerics()

    def check_numerics(self) -> None:
        """Raise :class:`StaleResultError` if the run was computed by code with other numerics."""
        cfg_path = self.path / "config.json"
        digest = read_json(cfg_path).get("numerics") if cfg_path.exists() else numerics_digest()
        if digest != numerics_digest():
            raise StaleResultError(
                f"{self.path} was computed by other code (numerics digest {digest}, this code "
                f"{numerics_digest()}), so its numbers may differ from what this code computes. "
                f"Recompute it: delete {self.path}; or keep it knowingly: `pgcore accept {self.path}`")

    def accept_numerics(self) -> str | None:
        """Mark the run as computed by this code; its old digest is returned and kept under ``accepted_from``."""
        cfg_path = self.path / "config.json"
        stored = read_json(cfg_path)
        old = stored.get("numerics")
        if old != numerics_digest():
            stored.setdefault("accepted_from", []).append(old)
            stored["numerics"] = numerics_digest()
            write_json(cfg_path, stored)
        return old

    def lock(self, timeout: float = -1) -> filelock.BaseFileLock:
        """The run's OS lock (it dies with its holder), held while the run trains."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        return _lock(self.path, timeout)

    def _level_paths(self, level: int) -> tuple[Path, Path]:
        return self.path / f"level_{level:03d}.json", self.path / f"level_{level:03d}.pt"

    def _stored(self, suffix: str = "json") -> list[int]:
        """Levels with a ``level_<k>.<suffix>`` file, in order, gaps included."""
        if not self.path.exists():
            return []
        found = (_LEVEL_FILE.fullmatch(p.name) for p in self.path.iterdir())
        return sorted(int(m[1]) for m in found if m and m[2] == suffix)

    def finished_levels(self) -> list[int]:
        """Levels whose metrics (and so checkpoint) are stored: 0..k for a chain of levels, else
        :class:`CorruptResultError`; any set of them for a protocol whose levels are independent."""
        levels = self._stored()
        if PROTOCOLS[self.cfg.protocol]["levels"] != "each" and levels != list(range(len(levels))):
            gap = next(k for k in range(len(levels) + 1) if k not in levels)
            raise CorruptResultError(f"{self.path}: level {gap} is missing but level {levels[-1]} is stored",
                                     f"run `pgcore repair {self.path}` to drop levels {gap} to {levels[-1]}, "
                                     f"then run again to recompute them")
        return levels

    def save_level(self, level: int, metrics: dict[str, Any], checkpoint: dict[str, Any]) -> None:
        """Write a level's checkpoint, then its metrics (with the checkpoint's checksum)."""
        js, pt = self._level_paths(level)
        buf = io.BytesIO()
        torch.save(checkpoint, buf)
        blob = buf.getvalue()
        _atomic_write(pt, blob)
        write_json(js, {**metrics, "checkpoint_sha256": hashlib.sha256(blob).hexdigest()})
        _note_write(self.path)

    def load_metrics(self, level: int) -> dict[str, Any]:
        js, _ = self._level_paths(level)
        record = read_json(js)
        if not isinstance(record, dict) or "final" not in record:
            raise CorruptResultError(f"result file {js} lacks its metrics", self._fix(level))
        return record

    def save_reference(self, level: int, source: Run, source_level: int, **changes: Any) -> None:
        """Store ``level`` as ``source``'s ``source_level``: its metrics with ``changes``, a reference, no copy."""
        path = Path(os.path.relpath(source.path, self.root)).as_posix()
        parts = PurePosixPath(path).parts
        if not (len(parts) == 2 and _run_layout(parts)):  # exactly a run of this store: no "..", not absolute
            raise ValueError(f"{source.path} is not a run of the store {self.root}: a level refers only to "
                             f"runs of its own store")
        record = source.load_metrics(source_level)
        record.pop("reference", None)
        record.update(changes, level=level, reference={"path": path, "level": source_level})
        write_json(self._level_paths(level)[0], record)
        _note_write(self.path)

    def _referenced(self, level: int, ref: Any) -> Path:
        """The level JSON a stored ``reference`` names, if it is a level of a run in this store."""
        if isinstance(ref, dict) and isinstance(ref.get("path"), str) and isinstance(ref.get("level"), int):
            parts = PurePosixPath(ref["path"]).parts
            if len(parts) == 2 and _run_layout(parts) and ref["level"] >= 0:
                return self.root.joinpath(*parts) / f"level_{ref['level']:03d}.json"
        raise CorruptResultError(f"result file {self._level_paths(level)[0]} is corrupt (its reference {ref!r} is "
                                 f"not a level of a run in the store {self.root})", self._fix(level))

    def load_checkpoint(self, level: int, map_location: str | torch.device = "cpu") -> dict[str, Any]:
        """A level's checkpoint (another run's, for a reference), checked against the checksum stored here."""
        js, pt = self._level_paths(level)
        record = self.load_metrics(level)
        if "reference" in record:
            js = self._referenced(level, record["reference"])
            pt = js.with_suffix(".pt")
        try:
            blob = pt.read_bytes()
        except FileNotFoundError as e:
            raise CorruptResultError(f"checkpoint {pt} is missing though {js} says level {level} finished",
                                     self._fix(level)) from e
        if hashlib.sha256(blob).hexdigest() != record["checkpoint_sha256"]:
            raise CorruptResultError(f"checkpoint {pt} does not match the checksum in {js} (truncated or overwritten)",
                                     self._fix(level))
        return torch.load(io.BytesIO(blob), map_location=map_location, weights_only=True)

    def mark_done(self) -> None:
        write_json(self.path / "done.json", {"levels": self.finished_levels()})
        _note_write(self.path)

    def is_done(self) -> bool:
        """Whether config.json and every level the config asks for are stored (cheap: checkpoints are not read)."""
        return self._config() is not None and set(levels_of(self.cfg)) <= set(self.finished_levels())

    def verify(self) -> list[Problem]:
        """Everything wrong with the stored files: config.json, a missing level, bad metrics or checkpoints."""
        problems = []
        try:
            self._config()
        except (CorruptResultError, OSError) as e:
            problems.append(Problem(None, getattr(e, "what", str(e))))
        levels = self._stored()
        each = PROTOCOLS[self.cfg.protocol]["levels"] == "each"
        for k in levels if each else range(max(levels, default=-1) + 1):
            if k not in levels:
                problems.append(Problem(k, f"{self._level_paths(k)[0]} is missing but later levels are stored"))
                continue
            try:
                self.load_checkpoint(k)
            except CorruptResultError as e:
                problems.append(Problem(k, e.what))
            except Exception as e:  # noqa: BLE001 -- torch.load of a damaged file can raise many kinds
                problems.append(Problem(k, f"{self._level_paths(k)[1]} cannot be loaded ({type(e).__name__}: {e})"))
        return problems

    def explain(self, problems: list[Problem]) -> CorruptResultError:
        """The first problem and the command that fixes it, as one error."""
        first = min(problems, key=lambda p: -1 if p.level is None else p.level)
        more = f" (and {len(problems) - 1} more problem(s): `pgcore verify {self.path}`)" if len(problems) > 1 else ""
        return CorruptResultError(first.message, self._fix(first.level) + more)

    def to_repair(self, from_level: int | None = None) -> list[Path]:
        """The files ``pgcore repair`` removes, in a safe order: what :meth:`verify` finds invalid (or
        ``from_level``) and every later level."""
        if from_level is not None and from_level < 0:
            raise ValueError(f"from_level must be a level >= 0, got {from_level}")
        problems = self.verify()
        start = min((k for k in [from_level, *(p.level for p in problems)] if k is not None), default=None)
        config_bad = any(p.level is None for p in problems)
        doomed = [self.path / "done.json"] if start is not None or config_bad else []
        if config_bad:
            doomed.append(self.path / "config.json")
        if start is not None:
            # Highest level first, metrics before checkpoints: stopped half-way, what is left
            # is still levels 0..k with every checkpoint its metrics vouch for.
            doomed += [self._level_paths(k)[0] for k in reversed(self._stored("json")) if k >= start]
            doomed += [self._level_paths(k)[1] for k in reversed(self._stored("pt")) if k >= start]
        return [p for p in doomed if p.exists()]

    def _levels(self) -> list[int]:
        """The finished levels this config asks for (a run may have grown beyond it)."""
        return [k for k in self.finished_levels() if k in levels_of(self.cfg)]

    def frame(self) -> pd.DataFrame:
        """One row per level x metric source of this run."""
        rows = []
        for level in self._levels():
            m = self.load_metrics(level)
            base = {"protocol": self.cfg.protocol, "run": self.cfg.hash(), "seed": self.cfg.seed, "level": level,
                    "sparsity": m["sparsity"], "epochs_total": m["epochs_total"]}
            for source, values in m["final"].items():
                loss, acc = (float("nan") if v is None else v for v in (values["loss"], values["accuracy"]))
                rows.append({**base, "source": source, "loss": loss, "accuracy": acc, "error": 1.0 - acc})
        return pd.DataFrame(rows)

    def history(self) -> pd.DataFrame:
        """Every evaluation of every level (one row each), for training curves."""
        rows = []
        for level in self._levels():
            m = self.load_metrics(level)
            rows += [{"seed": self.cfg.seed, "level": level, "sparsity": m["sparsity"], **rec} for rec in m["history"]]
        return pd.DataFrame(rows)


def _lock(run_dir: Path, timeout: float = -1) -> filelock.BaseFileLock:
    return filelock.FileLock(str(run_dir.parent / f"{run_dir.name}.lock"), timeout=timeout)


@contextlib.contextmanager
def holding(run_dir: Path) -> Iterator[None]:
    """Hold the lock of the run in ``run_dir`` meanwhile; :class:`RunInUseError` at once if another process holds
    it (a run is changed only by whoever holds its lock)."""
    lock = _lock(Path(run_dir), timeout=0)
    try:
        with lock:
            yield
    except filelock.Timeout:  # nothing run while it is held takes another lock
        raise RunInUseError(f"{run_dir} is in use: another process holds its lock {lock.lock_file} (it is training "
                            f"the run); run the command again once that process has finished or been stopped") from None


def import_own_code_asked() -> bool:
    """Whether the environment asks to import the own code that stored runs name (``PGCORE_IMPORT_OWN_CODE=1``)."""
    return os.environ.get(IMPORT_OWN_CODE) == "1"


def own_code(config: Any) -> dict[str, str]:
    """The import paths of a stored config's own data and model code, by section: ``{"model": "mypkg.nets:Net"}``."""
    named = {}
    for section in ("data", "model"):
        values = config.get(section) if isinstance(config, dict) else None
        name = values.get("name") if isinstance(values, dict) else None
        if isinstance(name, str) and is_import_path(name):
            named[section] = name
    return named


def find_run(ref: str | Path, root: str | Path | None = None, import_own_code: bool | None = None) -> Run:
    """The one run ``ref`` names (:func:`find_run_dirs`); an error listing them if it names several."""
    runs = find_runs(ref, root, import_own_code)
    if len(runs) > 1:
        listed = "\n  ".join(str(r.path) for r in runs[:20])
        raise ValueError(f"'{ref}' matches {len(runs)} runs; name one:\n  {listed}")
    return runs[0]


def find_runs(ref: str | Path, root: str | Path | None = None, import_own_code: bool | None = None) -> list[Run]:
    """The runs ``ref`` names (:func:`find_run_dirs`). A run made with its own model or data code is read only if
    ``import_own_code`` (None: ``PGCORE_IMPORT_OWN_CODE=1``, or its modules already imported here), else
    :class:`OwnCodeNotImportedError`: a store's files never make pgcore import code."""
    return [_open_dir(d, import_own_code) for d in find_run_dirs(ref, root)]


def find_run_dirs(ref: str | Path, root: str | Path | None = None) -> list[Path]:
    """The run directories ``ref`` names: a run or experiment directory, or a hash prefix or run name in the store."""
    if not str(ref).strip():
        raise ConfigError("name a run: a run or experiment directory (results/imp-<hash>/seed0), or a hash prefix")
    root = Path(root) if root is not None else default_root()
    path = Path(ref)
    if (path / "config.json").exists() or (path.is_dir() and _run_layout(path.absolute().parts)):
        dirs = [path]
    elif path.is_dir():
        dirs = sorted(p.parent for p in path.glob("seed*/config.json"))
    else:
        dirs = sorted(p.parent for p in root.glob(f"*{ref}*/seed*/config.json"))
        dirs += sorted(p.parent for p in root.glob(f"*/{ref}/config.json"))
    if not dirs:
        raise FileNotFoundError(f"no run matching '{ref}' (looked in {root}); `pgcore run` prints run directories")
    experiments = sorted({d.parent for d in dirs})
    if len(experiments) > 1:
        listed = "\n  ".join(str(e) for e in experiments[:20])
        raise ValueError(f"'{ref}' matches {len(experiments)} experiments; name one:\n  {listed}")
    return dirs


def _open_dir(run_dir: Path, import_own_code: bool | None = None) -> Run:
    """The :class:`Run` stored in ``run_dir``, read from its config.json; refused unless provably a run, and
    unless its own code, if any, may be imported (:func:`find_runs`)."""
    check_run_dir(run_dir)
    stored = read_json(run_dir / "config.json")
    named = own_code(stored["config"])
    # Asked (None: by the environment), or every module it names already imported in this process, by the parameter
    # file or notebook that made the study, so nothing new runs.
    if import_own_code is None:
        import_own_code = import_own_code_asked() or all(name.split(":")[0] in sys.modules for name in named.values())
    if named and not import_own_code:
        code = " and ".join(f"{section} {name!r}" for section, name in named.items())
        raise OwnCodeNotImportedError(f"{run_dir}: own code, not imported ({code})",
                                      f"a store's files never make pgcore import code: set {IMPORT_OWN_CODE}=1 to "
                                      f"import it (running its code) and read this run")
    try:
        run = Run(from_dict(stored["config"]), root=run_dir.parent.parent)
    except ImportPathError as e:  # a researcher's own code: it must import here, as where the run was made
        section = "data" if (stored["config"].get("data") or {}).get("name") == e.name else "model"
        raise MisfiledRunError(f"{run_dir} was computed by your own {section} code, which does not import here: {e}",
                               "make its module importable (PYTHONPATH), as when the run was made, and run the "
                               "command again") from None
    except ConfigError as e:
        raise MisfiledRunError(f"{run_dir} was written by another version of pgcore and its config no longer "
                               f"reads ({e}); it is never used: delete {run_dir}") from e
    if run.path.resolve() != run_dir.resolve():
        raise MisfiledRunError(f"{run_dir} was written by another version of pgcore, which filed its config under "
                               f"another hash (now {run.path.parent.name}); it is never used: delete {run_dir}")
    return run


def run_dirs(root: str | Path | None = None) -> list[Path]:
    """Every run directory in a store (``<protocol>-<hash>/seed<k>``), readable or not."""
    root = Path(root) if root is not None else default_root()
    return sorted(p for p in root.glob("*-*/seed*") if p.is_dir())


def frame(runs: Iterable[Run]) -> pd.DataFrame:
    """Concatenate the tidy frames of several runs (e.g. the seeds of one experiment)."""
    frames = [f for f in (r.frame() for r in runs) if len(f)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
