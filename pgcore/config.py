"""Experiment configuration: frozen dataclasses, validation, and the hash that names a run's
directory in the store (so a finished run is reused and an interrupted one resumes)."""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import difflib
import hashlib
import importlib
import inspect
import json
import math
import re
import typing
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import yaml

__all__ = ["is_import_path", "import_path", "source_digest", "ConfigError", "ImportPathError", "DataConfig",
           "ModelConfig", "TrainConfig", "PruneConfig", "RunConfig", "check_study", "from_dict", "parse_yaml",
           "load_yaml", "set_value", "override", "at_least", "validate", "check_overrides"]

DATASETS = ("mnist1d", "mnist5k", "mnist", "cifar10", "cifar100", "svhn")
MODELS = ("mlp", "cnn1d", "lenet_300_100", "resnet20", "resnet32", "resnet56", "vgg11", "vgg16")

# Every protocol (what each does at a level: pgcore.plans): the protocol whose run it builds on, whether it has
# pruning levels, the pruning settings that enter its hash, and the pruning methods it accepts. The number of levels
# never enters a hash: level k does not depend on how many follow, so a run grows.
_PRUNE = ("rate", "method", "scope", "retrain", "rewind_epoch", "prunable", "ignore")
_MASK = ("rate", "method", "scope", "prunable", "ignore")
PROTOCOLS: dict[str, dict[str, Any]] = {
    "imp": {"source": None, "levels": "chain", "prune": _PRUNE, "methods": ("magnitude", "random")},
    "extended_dense": {"source": None, "levels": "chain", "prune": (), "methods": None},
    "extended_stretched": {"source": None, "levels": "each", "prune": (), "methods": None},
    "train": {"source": None, "levels": None, "prune": (), "methods": None},
    "reinit": {"source": "imp", "levels": "each", "prune": _PRUNE, "methods": ("magnitude", "random")},
    "extended_oneshot": {"source": "extended_dense", "levels": "each", "prune": ("rate", "scope", "prunable", "ignore"),
                         "methods": None},
    "pai": {"source": None, "levels": "each", "prune": _MASK, "methods": ("snip", "magnitude", "random")},
    "tie": {"source": "imp", "levels": None, "prune": _PRUNE, "methods": ("magnitude", "random")},
}

# Parameters a model's framework leaves dense by default (``prune.ignore: null`` picks this).
# OpenLTH prunes ResNets' output layer (``fc.weight``) but not VGG's or LeNet's.
DENSE_BY_DEFAULT: dict[str, tuple[str, ...]] = {"lenet_300_100": ("fc3.weight",), "vgg11": ("fc.weight",),
                                                 "vgg16": ("fc.weight",)}

# A researcher's own model or dataset is named by import path, ``"mypkg.nets:WideLeNet"``: a model is called as
# ``f(input_shape, num_classes, **width/depth if set)`` and returns an nn.Module; a dataset is called as
# ``f(data_seed)`` and returns (x_train, y_train, x_test, y_test) tensors (float inputs, int64 labels 0..C-1).
# The run's hash covers the path and the digest of its module's source.
_IMPORT_PATH = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


def is_import_path(name: str) -> bool:
    return bool(_IMPORT_PATH.fullmatch(name))


def import_path(name: str) -> Any:
    """The object ``"module.path:attr"`` names, or :class:`ConfigError` saying why not. Importing runs the module's
    code, as any import does; the module is found as any Python module is (sys.path is left as it is)."""
    module, attr = name.split(":")
    try:
        obj = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as e:
        raise ImportPathError(name, f"cannot import {name!r} ({type(e).__name__}: {e}); the module must be "
                                    f"importable as any Python module, installed or on PYTHONPATH (one in the "
                                    f"current directory: `PYTHONPATH=. pgcore ...`), and define {attr}") from None
    _check(callable(obj), f"{name!r} is not callable; name a function or class")
    return obj


def source_digest(name: str) -> str:
    """12 hex digits of the source of ``name``'s module and of the module its object is defined in."""
    modules = {importlib.import_module(name.split(":")[0]), inspect.getmodule(import_path(name))}
    sources = sorted(inspect.getsource(m) for m in modules if m is not None)
    return hashlib.sha256("\0".join(sources).encode()).hexdigest()[:12]


# Bump when a change to the engine makes old cached results incomparable (the code that computes numbers is
# fingerprinted with every run too: pgcore.provenance.numerics_digest).
HASH_VERSION = 2


class ConfigError(ValueError):
    """A configuration value is unknown, out of range or unreadable."""


class ImportPathError(ConfigError):
    """An import path (``mypkg.nets:WideNet``, kept as ``name``) whose module or attribute does not import here."""

    def __init__(self, name: str, message: str):
        self.name = name
        super().__init__(message)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


# Each setting's allowed values live on its field (``metadata``), read by :func:`validate`.
def _one_of(*choices: str) -> Any:
    """A setting that is one of ``choices``, the first by default."""
    return field(default=choices[0], metadata={"choices": choices})


def _rule(default: Any, test: Callable[[Any, Any], bool], kind: str, why: str = "") -> Any:
    """A setting whose value ``v`` passes ``test(v, c)`` (``c``: the whole :class:`RunConfig`); else the error says
    it must be ``kind`` (formatted with ``c``), then ``why``."""
    return field(default=default, metadata={"test": test, "kind": kind, "why": why})


def _count(default: int, least: int) -> Any:
    """An integer setting of at least ``least``."""
    kind = {0: "a non-negative integer", 1: "a positive integer"}.get(least, f"an integer >= {least}")
    return _rule(default, lambda v, c: _is_int(v) and v >= least, kind)


@dataclass(frozen=True)
class DataConfig:
    name: str = "mnist1d"
    num_samples: int = _count(5000, least=50)  # MNIST-1D only: examples generated in total (80% train, 20% test)
    data_seed: int = 42  # MNIST-1D generator seed (42 is the published dataset) and val-split seed
    # carved from train, for choosing the best sparsity honestly
    val_fraction: float = _rule(0.0, lambda v, c: 0 <= v < 1, "in [0, 1)")
    # fraction of training labels replaced by a different class
    noisy_fraction: float = _rule(0.0, lambda v, c: 0 <= v < 1, "in [0, 1)", ": noisy labels are measured against "
                                  "the clean ones, and at 1.0 no training label is clean")
    noise_seed: int = 0  # the noisy set is fixed by this seed, the same for every training seed
    augment: bool | None = None  # None: random crop + flip for image datasets, nothing for MNIST-1D
    data_dir: str = "data"  # where torchvision datasets live (not part of the hash)
    download: bool = False  # fetch missing torchvision files (needs a network; not part of the hash)
    # training examples left out (indices into the training split, after the val split)
    exclude: tuple[int, ...] = _rule((), lambda v, c: all(_is_int(i) and i >= 0 for i in v) and len(set(v)) == len(v),
                                     "distinct non-negative training-example indices")
    # Top-improved examples (protocol ``tie``): left out are the ``leave_out_fraction`` of training examples whose
    # loss improved most from the source IMP run's level 0 to ``leave_out_level`` ("top-improved"), or as many random
    # ones ("random", the same for every level).
    leave_out: str = _one_of("", "top-improved", "random")
    leave_out_fraction: float = _rule(0.0, lambda v, c: not c.data.leave_out or 0 < v < 1, "in (0, 1)")
    leave_out_level: int = _rule(
        0, lambda v, c: c.data.leave_out != "top-improved" or (_is_int(v) and 1 <= v <= c.prune.levels),
        "an IMP level in 1..prune.levels={c.prune.levels}")


@dataclass(frozen=True)
class ModelConfig:
    name: str = "mlp"
    # hidden units (mlp), channels (cnn1d), first-stage width (resnet)
    width: int | None = _rule(None, lambda v, c: v is None or (_is_int(v) and v >= 1), "a positive integer or null")
    # hidden layers (mlp) or conv layers (cnn1d)
    depth: int | None = _rule(None, lambda v, c: v is None or (_is_int(v) and v >= 1), "a positive integer or null")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = _count(40, least=1)
    batch_size: int = _count(128, least=1)
    lr: float = _rule(0.1, lambda v, c: math.isfinite(v) and v > 0, "a finite positive number")
    momentum: float = _rule(0.9, lambda v, c: 0 <= v < 1, "in [0, 1)")
    nesterov: bool = False
    weight_decay: float = _rule(5e-4, lambda v, c: math.isfinite(v) and v >= 0, "a finite number >= 0")
    schedule: str = _one_of("cosine", "step", "constant")
    # epochs where a step schedule multiplies lr by gamma
    milestones: tuple[int, ...] = _rule((), lambda v, c: all(_is_int(e) and 0 < e < c.train.epochs for e in v),
                                        "epochs strictly between 0 and train.epochs={c.train.epochs}")
    gamma: float = _rule(0.1, lambda v, c: math.isfinite(v) and v > 0, "a finite positive number")
    # linear warm-up from 0, counted in epochs
    warmup_epochs: float = _rule(0.0, lambda v, c: 0 <= v <= c.train.epochs, "in [0, epochs]")
    eval_every: int = _count(1, least=1)  # evaluate every this many epochs (the last epoch is always evaluated)
    precision: str = _one_of("fp32", "bf16")  # autocast bf16: GPU speed, slightly different numbers
    # torch.compile the model and the masked update (falls back to eager, with a warning)
    compile: bool = _rule(False, lambda v, c: isinstance(v, bool), "true or false")


@dataclass(frozen=True)
class PruneConfig:
    levels: int = _count(20, least=0)  # pruning levels after the dense run; level k has sparsity 1 - (1-rate)^k
    rate: float = _rule(0.2, lambda v, c: 0 < v < 1, "in (0, 1)",
                        ": the fraction of the remaining prunable weights removed per level")
    method: str = "magnitude"  # magnitude | random (imp, reinit); snip too for pai
    scope: str = _one_of("global", "layerwise")
    retrain: str = _one_of("lrr", "rewind", "finetune")  # learning-rate rewinding, weight rewinding, fine-tuning
    # weight rewinding: epoch whose weights the survivors are reset to
    rewind_epoch: int = _rule(0, lambda v, c: _is_int(v) and 0 <= v < c.train.epochs,
                              "in [0, train.epochs={c.train.epochs})")
    prunable: tuple[str, ...] = ("conv", "linear")  # module kinds whose weights are pruned
    ignore: tuple[str, ...] | None = None  # parameter names never pruned; None: the model's own rule (DENSE_BY_DEFAULT)
    # The levels a protocol whose levels are independent ("each" in PROTOCOLS) trains besides level 0 (empty: every
    # level to ``levels``). Like ``levels``, not part of a run's identity: a run stores any set of its levels.
    at_levels: tuple[int, ...] = _rule(
        (), lambda v, c: not v or (PROTOCOLS[c.protocol]["levels"] == "each" and list(v) == sorted(set(v))
                                   and all(_is_int(k) and 1 <= k <= c.prune.levels for k in v)),
        "empty, or increasing levels from 1 to prune.levels={c.prune.levels} of a protocol whose levels are "
        "independent (reinit, pai, extended_oneshot, extended_stretched)")


@dataclass(frozen=True)
class RunConfig:
    protocol: str = _one_of(*PROTOCOLS)
    seed: int = _count(0, least=0)
    # sequential | lockstep (K seeds as one vectorized model; other float rounding)
    execution: str = _one_of("sequential", "lockstep")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)

    def __post_init__(self) -> None:
        if self.prune.ignore is None:  # the model's own rule: which layers its framework leaves dense
            ignore = DENSE_BY_DEFAULT.get(self.model.name, ())
            object.__setattr__(self, "prune", dataclasses.replace(self.prune, ignore=ignore))
        validate(self)

    def to_dict(self) -> dict[str, Any]:
        return json.loads(json.dumps(dataclasses.asdict(self)))  # tuples as lists, as JSON and YAML give them

    def science_dict(self) -> dict[str, Any]:
        """The fields that can change a result (not paths, nor pruning settings the protocol never reads)."""
        d = self.to_dict()
        del d["data"]["data_dir"], d["data"]["download"]
        # Settings absent when at their default, so hashes from before they existed still hold.
        for part, key, default in ((d["data"], "exclude", []), (d["train"], "precision", "fp32"),
                                   (d["train"], "compile", False), (d["data"], "leave_out", ""),
                                   (d["data"], "leave_out_fraction", 0.0), (d["data"], "leave_out_level", 0),
                                   (d, "execution", "sequential")):
            if part[key] == default:
                del part[key]
        if self.data.leave_out == "random":  # the same random examples at every level: one run serves them all
            d["data"].pop("leave_out_level", None)
        # Only the pruning settings the protocol reads (never the number of levels).
        d["prune"] = {k: v for k, v in d["prune"].items() if k in PROTOCOLS[self.protocol]["prune"]}
        if not d["prune"]:
            d.pop("prune")
        code = {n: source_digest(n) for n in (self.data.name, self.model.name) if is_import_path(n)}
        if code:  # a researcher's own model or dataset: its code is part of what it computes
            d["code"] = code
        d["hash_version"] = HASH_VERSION
        return d

    def hash(self) -> str:
        """12 hex digits of :meth:`science_dict` without the seed: an experiment's seeds share it."""
        d = self.science_dict()
        d.pop("seed")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:12]

    def replace(self, **changes: Any) -> "RunConfig":
        return dataclasses.replace(self, **changes)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig, "prune": PruneConfig}


def _did_you_mean(word: Any, options: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(word), list(options), n=1)
    return f" Did you mean '{close[0]}'?" if close else ""


def _unknown(key: str, known: list[str], where: str) -> ConfigError:
    return ConfigError(f"unknown key '{key}' in {where}.{_did_you_mean(key, known)} Known keys: "
                       f"{', '.join(sorted(known))}.")


def _coerce(value: Any, tp: Any, where: str) -> Any:
    """``value`` as field type ``tp``; a number may be given as a string (YAML reads ``1e-3`` as one), a section
    (a dataclass) as a mapping."""
    if type(None) in typing.get_args(tp):  # ``X | None``
        if value is None:
            return None
        tp = typing.get_args(tp)[0]
    if dataclasses.is_dataclass(tp):
        _check(isinstance(value, Mapping), f"section '{where}' must be a mapping of keys to values, e.g. "
                                           f"'{where}: {{...}}', got {value!r}")
        return tp(**_fields(tp, value, f"{where}."))
    if typing.get_origin(tp) is tuple:
        _check(isinstance(value, (list, tuple)), f"{where} must be a list, got {value!r}")
        return tuple(_coerce(v, typing.get_args(tp)[0], f"{where}[{i}]") for i, v in enumerate(value))
    if tp in (bool, str):
        _check(isinstance(value, tp), f"{where} must be {'true or false' if tp is bool else 'a string'}, got {value!r}")
        return value
    number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    if isinstance(value, str):
        with contextlib.suppress(ValueError):  # both ignore surrounding whitespace
            number = float(value)
            number = int(value)  # "5" is the int 5
    if tp is float and number is not None:
        # An int stays an int, so configs written as ``lr: 1`` keep their hash.
        return number
    if tp is int and number is not None and float(number).is_integer():
        return int(number)
    raise ConfigError(f"{where} must be {'an integer' if tp is int else 'a number'}, got {value!r}")


def _fields(cls: type, values: Mapping[str, Any], prefix: str, keys_of: str | None = None) -> dict[str, Any]:
    """``values`` coerced to the types of ``cls``'s fields, each named ``prefix`` + its key; an unknown key names
    ``keys_of`` (or the prefix)."""
    hints = typing.get_type_hints(cls)
    for key in values:
        if key not in hints:
            raise _unknown(str(key), list(hints), keys_of or prefix.rstrip("."))
    return {key: _coerce(v, hints[key], f"{prefix}{key}") for key, v in values.items()}


# What a study assumes for an experiment key its parameter file leaves out (noise_levels: prune.levels).
STUDY_DEFAULTS = {"profile": "smoke", "progress": True, "lockstep": "auto", "device": "auto", "variants": None,
                  "noise_fractions": [], "noise_levels": None, "stretched_levels": None, "pai_methods": [],
                  "tie_fraction": 0.1, "tie_levels": "all", "control_levels": "all", "recipes": None, "weaker_recipe": None}
PAI_METHODS = ("snip", "magnitude", "random")
_NULLABLE = ("variants", "recipes", "stretched_levels", "noise_levels", "device", "cluster", "store_dir",
             "figures_dir", "weaker_recipe")  # null: not used
# papermill passes these as strings
_PARSED = ("seeds", "noise_fractions", "pai_methods", "tie_levels", "control_levels", "variants", "recipes", "cluster")


def check_study(params: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``params`` with every :data:`EXPERIMENT_KEYS` checked and those given as strings parsed."""
    out = dict(params)
    for key in _PARSED:
        if isinstance(out.get(key), str) and out[key] != "all":
            out[key] = parse_yaml(out[key], f"parameter {key}={out[key]!r} does not read as YAML")
    for key, check in _STUDY_CHECKS.items():
        if key in out and not (out[key] is None and key in _NULLABLE):
            check(key, out[key], out)
    return out


def _nonneg_int(x: Any) -> bool:
    return _is_int(x) and x >= 0


def _fraction(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and 0 < x < 1


def _must(test: Callable[[Any], bool], kind: str) -> Callable[[str, Any, Mapping], None]:
    """A check that ``test(value)`` holds, else ``<key> must be <kind>, got <value>``."""
    return lambda key, v, _: _check(test(v), f"{key} must be {kind}, got {v!r}")


def _check_seeds(key: str, v: Any, _: Mapping) -> None:
    _check(isinstance(v, (list, tuple)) and len(v) > 0 and all(map(_nonneg_int, v)),
           f"seeds must be a non-empty list of non-negative integers, e.g. seeds: [0, 1], got {v!r}")
    twice = sorted({s for s in v if list(v).count(s) > 1})
    _check(not twice, f"seeds lists {twice[0] if twice else ''} more than once, got {list(v)}; each seed is one run: "
                      f"list it once")


def _section_changes(section: str, example: str) -> Callable[[str, Any, Mapping], None]:
    """A check of a mapping of names to changes of ``section``'s settings."""
    def check(key: str, v: Any, _: Mapping) -> None:
        _check(isinstance(v, Mapping), f"{key} must map a name to {section}.* settings, {example}; got {v!r}")
        for name, changes in v.items():
            _check(isinstance(changes, Mapping) and len(changes) > 0,
                   f"{key}.{name} must map {section}.* keys to values, {example}; got {changes!r}")
            _fields(SECTIONS[section], changes, f"{key}.{name}.", f"{key}.{name} (keys of the {section} section)")
    return check


_levels_check = _must(lambda v: v == "all" or (isinstance(v, (list, tuple)) and len(v) > 0
                                              and all(_is_int(k) and k >= 1 for k in v)),
                      "'all' or a list of pruning levels from 1 to prune.levels, e.g. [2, 5]")


def _check_pai_methods(key: str, v: Any, _: Mapping) -> None:
    _check(isinstance(v, (list, tuple)), f"pai_methods must be a list from {', '.join(PAI_METHODS)}, got {v!r}")
    for m in v:
        _choice(m, PAI_METHODS, "pai_methods entry")


# Each cluster setting's test and what its error says it must be (null: the scheduler's default).
_STRING, _POSITIVE = (lambda v: isinstance(v, str), "a string"), (lambda v: _is_int(v) and v >= 1, "an integer >= 1")
CLUSTER_KEYS = {"partition": _STRING, "account": _STRING,
                "walltime": (_STRING[0], "quoted, e.g. '04:00:00' (YAML reads an unquoted 04:00:00 as a number)"),
                "cores": _POSITIVE, "memory": _STRING, "gpus": (_nonneg_int, "an integer >= 0"), "jobs": _POSITIVE}


def _check_cluster(key: str, v: Any, _: Mapping) -> None:
    _check(isinstance(v, Mapping), f"cluster must be a mapping such as {{partition: gpu, walltime: '04:00:00'}}, "
                                   f"got {v!r}")
    for name, value in v.items():
        _check(name in CLUSTER_KEYS, f"unknown key cluster.{name}; known: {', '.join(CLUSTER_KEYS)}")
        test, kind = CLUSTER_KEYS[name]
        _check(value is None or test(value), f"cluster.{name} must be {kind}, got {value!r}")


def _check_dir(key: str, v: Any, _: Mapping) -> None:
    _check(isinstance(v, (str, Path)) and str(v) != "", f"{key} must be a directory path, got {v!r}")
    _check(not Path(v).exists() or Path(v).is_dir(), f"{key} {v} is a file, not a directory; name a directory (it is "
                                                      f"created if missing)")


# Every key of a parameter file that is not part of one run's config, and its check (first failure wins).
_STUDY_CHECKS: dict[str, Callable[[str, Any, Mapping], None]] = {
    "seeds": _check_seeds,
    "noise_fractions": _must(lambda v: isinstance(v, (list, tuple)) and all(map(_fraction, v)),
                             "a list of label-noise fractions in (0, 1), e.g. [0.1, 0.2] (the clean run is always "
                             "included)"),
    "noise_levels": _must(_nonneg_int, "an integer >= 0"),
    "stretched_levels": _must(_nonneg_int, "an integer >= 0"),
    "variants": _section_changes("prune", "e.g. variants: {rewind: {retrain: rewind, rewind_epoch: 2}}"),
    "recipes": _section_changes("train",
                                "e.g. recipes: {paper: {momentum: 0.0, weight_decay: 0.0, schedule: constant}}"),
    "pai_methods": _check_pai_methods,
    # Whether IMP reaches these levels is checked where figure 7's runs are built, so a run or another figure's
    # subset is not refused for a key it does not use.
    "tie_levels": _levels_check, "control_levels": _levels_check,
    "tie_fraction": _must(_fraction, "a number in (0, 1), e.g. 0.1"),
    "lockstep": _must(lambda v: isinstance(v, bool) or v == "auto", "true, false or auto"),
    "progress": _must(lambda v: isinstance(v, bool), "true or false"),
    "device": lambda key, v, _: _check(isinstance(v, str) and re.fullmatch(r"auto|cpu|cuda(:\d+)?", v) is not None,
                                       f"unknown device {v!r}; use auto, cpu, cuda or cuda:N"),
    "profile": _must(lambda v: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]+", v) is not None
                     and v not in (".", ".."),
                     "a plain name of letters, digits, '_', '.' and '-' (figures go to figures/<profile>/)"),
    "cluster": _check_cluster,
    "weaker_recipe": lambda key, v, p: _check(v == "profile" or v in (p.get("recipes") or {}),
                                              f"weaker_recipe names the recipe figure 9 expects pruning to gain "
                                              f"more under: 'profile' (the parameter file's own) or one of recipes, "
                                              f"got {v!r}"),
    "store_dir": _check_dir, "figures_dir": _check_dir,
}
EXPERIMENT_KEYS = tuple(_STUDY_CHECKS)


def from_dict(d: Mapping[str, Any], *, seed: int | None = None) -> RunConfig:
    """A validated :class:`RunConfig` from nested plain data; :data:`EXPERIMENT_KEYS` are ignored here."""
    _check(isinstance(d, Mapping), f"a config must be a mapping of sections, got {type(d).__name__}")
    top = [f.name for f in fields(RunConfig)]
    for key in d:
        if key not in top and key not in EXPERIMENT_KEYS:
            raise _unknown(key, [*top, *EXPERIMENT_KEYS], "the config")
    given = {k: v for k, v in d.items() if k in top and not (k in SECTIONS and v is None)}  # a null section: defaults
    return RunConfig(**_fields(RunConfig, given if seed is None else {**given, "seed": seed}, ""))


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, but a key given twice in one mapping is an error, not silently the last."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # `<<: *anchor` may repeat keys it merges in: that is what it is for
            key = self.construct_object(key_node, deep=True)
            if not isinstance(key, typing.Hashable):
                continue  # PyYAML's own error follows
            line = key_node.start_mark.line + 1
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key '{key}' is given twice (line {seen[key]} and line {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)


def parse_yaml(text: str, what: str) -> Any:
    """YAML ``text`` as plain data; an error is one line: ``<what>: <problem> at line L, column C``."""
    try:
        return yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 -- a SafeLoader
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{what}: {problem}{where}") from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a parameter/config YAML file into plain data, with a clear error if unreadable."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror or e}") from e
    except UnicodeDecodeError as e:
        raise ConfigError(f"config file {path} is not UTF-8 text (byte {e.object[e.start]:#04x} at offset "
                          f"{e.start}); save it as UTF-8") from None
    d = parse_yaml(text, f"config file {path} is not valid YAML")
    _check(d is not None, f"config file {path} is empty; start from params/smoke.yaml")
    _check(isinstance(d, dict), f"config file {path} must hold a mapping (section: values), not {type(d).__name__}")
    _check(any(name in d for name in SECTIONS), f"config file {path} has none of the sections {', '.join(SECTIONS)}, "
                                                f"so it would train the defaults; start from params/smoke.yaml")
    return d


def set_value(d: dict[str, Any], assignment: str) -> None:
    """Apply one ``key.sub=value`` override (value parsed as YAML) to nested plain data."""
    _check("=" in assignment, f"override '{assignment}' must look like section.key=value, e.g. train.epochs=10")
    key, raw = assignment.split("=", 1)
    key = key.strip()
    # YAML reads nothing as null: a forgotten value would silently become the default
    _check(bool(raw.strip()), f"override '{assignment}' has no value after '='; give one ({key}=<value>, or "
                              f"{key}=null for none)")
    value = parse_yaml(raw, f"cannot parse value in override '{assignment}'")
    if key in SECTIONS and not isinstance(value, Mapping):
        raise ConfigError(f"override '{assignment}' would replace the whole {key} section with {value!r}; change "
                          f"one of its keys instead, e.g. {key}.{fields(SECTIONS[key])[0].name}=<value>")
    _put(d, key, value, assignment)


def override(params: Mapping[str, Any], changes: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of nested ``params`` with dotted-key ``changes`` applied: ``{"data.noisy_fraction": 0.1}``."""
    out = copy.deepcopy(dict(params))
    for key, value in changes.items():
        _put(out, key, copy.deepcopy(value), key)
    return out


def _put(d: dict[str, Any], key: str, value: Any, what: str) -> None:
    """Set dotted ``key`` (``train.epochs``) in nested ``d``, making sections as needed."""
    *sections, last = key.split(".")
    for section in sections:
        d = d.setdefault(section, {})
        _check(isinstance(d, dict), f"override '{what}': '{section}' is not a section")
    d[last] = value


def at_least(least: int) -> Callable[[str], int]:
    """An argparse ``type`` for an integer >= ``least``: anything else is argparse's one-line error naming the
    option, never a traceback or a silent default."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be an integer >= {least}, got {value}")
        return value

    return parse


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _choice(value: str, options: Any, what: str, also: str = "") -> None:
    if value not in options:
        raise ConfigError(f"unknown {what} '{value}'.{_did_you_mean(value, options)} Choose one of: "
                          f"{', '.join(options)}{also}.")


def validate(cfg: RunConfig) -> None:
    """Raise :class:`ConfigError` for any value that would fail or mislead later (the first one found)."""
    for name, known, what in ((cfg.data.name, DATASETS, "dataset"), (cfg.model.name, MODELS, "model")):
        if is_import_path(name):
            import_path(name)
        else:
            _choice(name, known, what, also=", or your own as an import path, e.g. mypkg.nets:WideNet")
    for prefix, part in (("", cfg), *((f"{s}.", getattr(cfg, s)) for s in SECTIONS)):
        for f in fields(part):  # the allowed values on each field (_one_of, _rule)
            value, rule = getattr(part, f.name), f.metadata
            if "choices" in rule:
                _choice(value, rule["choices"], prefix + f.name)
            elif "test" in rule and not rule["test"](value, cfg):
                shown = list(value) if isinstance(value, tuple) else value  # as YAML writes it
                raise ConfigError(f"{prefix}{f.name} must be {rule['kind'].format(c=cfg)}, got {shown!r}{rule['why']}")
    _choice(cfg.prune.method, PROTOCOLS[cfg.protocol]["methods"] or ("magnitude", "random", "snip"),
            f"prune.method for protocol {cfg.protocol}")
    for module in cfg.prune.prunable:
        _choice(module, ("conv", "linear"), "prune.prunable kind")
    _check(len(cfg.prune.prunable) > 0, "prune.prunable must name at least one module kind (conv, linear)")
    _check((cfg.protocol == "tie") == bool(cfg.data.leave_out),
           "protocol tie leaves examples out (data.leave_out: top-improved or random), and only it does")
    _validate_size(cfg.data)


# Training examples before the validation split; MNIST-1D keeps 80% of num_samples for training.
TRAIN_SIZES = {"mnist5k": 4_000, "mnist": 60_000, "cifar10": 50_000, "cifar100": 50_000, "svhn": 73_257}
MIN_EXAMPLES_PER_CLASS = 10


def _validate_size(d: DataConfig) -> None:
    """Enough training examples left after the validation split and exclusions."""
    total = int(d.num_samples * 0.8) if d.name == "mnist1d" else TRAIN_SIZES.get(d.name)  # None: the user's own
    if total is not None:
        n_val = int(round(d.val_fraction * total))
        left = total - n_val - len(d.exclude)
        least = MIN_EXAMPLES_PER_CLASS * (100 if d.name == "cifar100" else 10)
        _check(left >= least, f"only {left} training examples are left ({total} minus {n_val} for data.val_fraction="
                              f"{d.val_fraction} and {len(d.exclude)} in data.exclude); at least {least} "
                              f"({MIN_EXAMPLES_PER_CLASS} per class) are needed for a meaningful run")


def check_overrides(changes: Any) -> dict[str, Any]:
    """A notebook's ``overrides`` (dotted key -> value; papermill's ``-p overrides '{...}'`` passes JSON text),
    checked: each key starts with a section or an experiment key."""
    if isinstance(changes, str):
        changes = parse_yaml(changes, f"overrides {changes!r} is not a valid mapping") or {}
    if not isinstance(changes, Mapping):
        raise ConfigError(f"overrides must map dotted keys to values, e.g. {{\"train.epochs\": 3}}, got {changes!r}")
    known = {"protocol", "seed", *SECTIONS, *EXPERIMENT_KEYS}
    for key in changes:
        head = str(key).split(".")[0]
        _check(head in known, f"overrides key '{key}' must start with a section or parameter name, e.g. "
                              f"train.epochs.{_did_you_mean(head, known)}")
    return dict(changes)
