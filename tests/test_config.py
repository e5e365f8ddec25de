import dataclasses
import re

import pytest

from pgcore.config import (SECTIONS, ConfigError, ModelConfig, RunConfig, check_study, from_dict, load_yaml,
                           set_value)
from pgcore.config import PROTOCOLS as PLANS
from pgcore.plans import PLANS as PLAN_FUNCTIONS
from pgcore.study import Study


def test_default_config_hash_is_pinned():
    # Pinned: if this changes, every cached result silently stops being found.
    # Bump HASH_VERSION on purpose when the engine's numbers change, then update this value.
    assert RunConfig().hash() == "722c8ccfca64"


# A valid other value for every field of every section (strings and tuples included).
OTHER = {
    "data": {"name": "mnist5k", "num_samples": 4000, "data_seed": 7, "val_fraction": 0.2, "noisy_fraction": 0.1,
             "noise_seed": 3, "augment": False, "data_dir": "/elsewhere", "download": True, "exclude": (4, 9),
             "leave_out": "random", "leave_out_fraction": 0.2, "leave_out_level": 2},
    "model": {"name": "cnn1d", "width": 8, "depth": 3},
    "train": {"epochs": 20, "batch_size": 64, "lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-4,
              "schedule": "step", "milestones": (10,), "gamma": 0.5, "warmup_epochs": 1.0, "eval_every": 2,
              "precision": "bf16", "compile": True},
    "prune": {"levels": 5, "rate": 0.5, "method": "random", "scope": "layerwise", "retrain": "rewind",
              "rewind_epoch": 2, "prunable": ("linear",), "ignore": ("out.weight",), "at_levels": (2, 4)},
}
# Fields that never change a number: where data lives, how many levels follow level k, which levels of a protocol
# whose levels are independent are trained.
NOT_HASHED = {("data", "data_dir"), ("data", "download"), ("prune", "levels"), ("prune", "at_levels")}


def config_of(protocol: str = "imp", field: str = "") -> RunConfig:
    """A valid default config of ``protocol`` (a top-improved run for ``tie``, or to change a leave_out field)."""
    if protocol == "tie" or field.startswith("leave_out"):
        data = dataclasses.replace(RunConfig().data, leave_out="top-improved", leave_out_fraction=0.1, leave_out_level=1)
        return RunConfig(protocol="tie", data=data)
    return RunConfig(protocol="pai" if field == "at_levels" else protocol)


def test_every_field_has_an_alternative_value():
    for section, cls in SECTIONS.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(OTHER[section]), section


@pytest.mark.parametrize("section, name", [(s, n) for s in OTHER for n in OTHER[s]])
def test_hash_changes_with_every_field_but_paths_and_levels(section, name):
    base = config_of(field=name)
    changed = base.replace(**{section: dataclasses.replace(getattr(base, section), **{name: OTHER[section][name]})})
    assert getattr(getattr(changed, section), name) != getattr(getattr(base, section), name)
    if (section, name) in NOT_HASHED:
        assert changed.hash() == base.hash()
    else:
        assert changed.hash() != base.hash(), f"{section}.{name} does not change the hash"


@pytest.mark.parametrize("protocol", sorted(PLANS))
def test_each_protocol_hashes_exactly_the_pruning_settings_it_reads(protocol):
    base = config_of(protocol)
    for name, value in OTHER["prune"].items():
        if name == "method" and PLANS[protocol]["methods"] and value not in PLANS[protocol]["methods"]:
            continue
        if name == "at_levels" and PLANS[protocol]["levels"] != "each":  # refused there (test_controls)
            continue
        changed = base.replace(prune=dataclasses.replace(base.prune, **{name: value}))
        assert (changed.hash() != base.hash()) == (name in PLANS[protocol]["prune"]), (protocol, name)


def test_hash_ignores_seed_and_changes_with_protocol_and_execution(tmp_path):
    from pgcore.store import Run

    base = RunConfig()
    # Seeds of one experiment share the hash and sit side by side.
    assert base.replace(seed=1).hash() == base.hash()
    assert Run(base.replace(seed=1), tmp_path).path.parent == Run(base, tmp_path).path.parent
    assert Run(base.replace(seed=1), tmp_path).path != Run(base, tmp_path).path
    assert len({config_of(p).hash() for p in PLANS}) == len(PLANS)
    assert base.replace(execution="lockstep").hash() != base.hash()


def test_output_layer_rule_is_the_models_own_default():
    assert RunConfig(model=ModelConfig(name="resnet20")).prune.ignore == ()
    assert RunConfig(model=ModelConfig(name="vgg16")).prune.ignore == ("fc.weight",)
    assert RunConfig(model=ModelConfig(name="lenet_300_100")).prune.ignore == ("fc3.weight",)
    explicit = from_dict({"model": {"name": "vgg16"}, "prune": {"ignore": []}})
    assert explicit.prune.ignore == ()


@pytest.mark.parametrize("params, message", [
    ({"data": {"name": "cifar11"}}, "unknown dataset 'cifar11'. Did you mean 'cifar10'"),
    ({"model": {"name": "resnet21"}}, "unknown model"),
    ({"protocol": "lottery"}, "unknown protocol"),
    ({"prune": {"rate": 1.2}}, "prune.rate"),
    ({"prune": {"rate": 0.0}}, "prune.rate"),
    ({"data": {"noisy_fraction": -0.1}}, "data.noisy_fraction"),
    ({"data": {"noisy_fraction": 1.5}}, "data.noisy_fraction"),
    ({"train": {"epochs": -3}}, "train.epochs"),
    ({"train": {"epochs": 10, "milestones": [12]}}, "train.milestones"),
    ({"train": {"lerning_rate": 0.1}}, "unknown key 'lerning_rate'"),
    ({"prune": {"retrain": "rewnd"}}, "Did you mean 'rewind'"),
])
def test_bad_input_gives_clear_error(params, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(".", r"\.")):
        from_dict(params)


def test_unreadable_config_file(tmp_path):
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_yaml(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: {name: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_yaml(bad)
    bad.write_text("- just\n- a list\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_yaml(bad)


def test_overrides_parse_yaml_values():
    d = {"train": {"epochs": 3}}
    set_value(d, "train.epochs=7")
    set_value(d, "train.milestones=[2, 5]")
    set_value(d, "seeds=[0,1]")
    assert d == {"train": {"epochs": 7, "milestones": [2, 5]}, "seeds": [0, 1]}
    cfg = from_dict(d)
    assert cfg.train.milestones == (2, 5)
    with pytest.raises(ConfigError, match="section.key=value"):
        set_value(d, "train.epochs")


def test_config_round_trips_through_plain_data():
    cfg = from_dict({"prune": {"prunable": ["conv"], "levels": 4}, "seed": 3})
    assert from_dict(cfg.to_dict()) == cfg


# -- YAML: a key given twice, a file that is not UTF-8 -----------------------------------------

@pytest.mark.parametrize("text, message", [
    ("train: {epochs: 3}\nprune: {levels: 2}\ntrain: {epochs: 5}\n", "key 'train' is given twice (line 1 and line 3)"),
    ("data: {name: mnist1d, name: cifar10}\n", "key 'name' is given twice (line 1 and line 1)"),
    ("data:\n  name: mnist1d\n  val_fraction: 0.1\n  name: cifar10\n", "key 'name' is given twice (line 2 and line 4)"),
])
def test_a_key_given_twice_is_refused_naming_it_and_its_line(tmp_path, text, message):
    path = tmp_path / "twice.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="key 'name' is given twice"):
        set_value({}, "data={name: a, name: b}")


def test_merge_keys_may_repeat_what_they_merge(tmp_path):
    path = tmp_path / "merge.yaml"
    path.write_text("base: &b {epochs: 3, lr: 0.1}\ntrain:\n  <<: *b\n  epochs: 5\nseeds: [0]\n")
    assert load_yaml(path)["train"] == {"epochs": 5, "lr": 0.1}


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "latin1.yaml"
    path.write_bytes("# caf\xe9\ntrain: {epochs: 3}\n".encode("latin-1"))
    with pytest.raises(ConfigError, match=f"config file {path} is not UTF-8 text .*save it as UTF-8"):
        load_yaml(path)


def test_a_yaml_error_is_one_line_with_its_place(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("train: {epochs: 3}\ndata: {name: [unclosed\n")
    with pytest.raises(ConfigError) as e:
        load_yaml(path)
    assert "\n" not in str(e.value) and f"config file {path} is not valid YAML" in str(e.value)
    assert "at line 3, column 1" in str(e.value)


# -- study-level keys ------------------------------------------------------------------------------

def test_every_shipped_parameter_file_passes_the_study_checks():
    from pathlib import Path

    for path in sorted((Path(__file__).resolve().parent.parent / "params").glob("*.yaml")):
        check_study(load_yaml(path))


@pytest.mark.parametrize("key, value, message", [
    ("seeds", [0, 0], "seeds lists 0 more than once"),
    ("seeds", [], "seeds must be a non-empty list of non-negative integers"),
    ("seeds", [-1], "seeds must be a non-empty list"),
    ("seeds", 3, "seeds must be a non-empty list"),
    ("seeds", "[0", "parameter seeds='[0' does not read as YAML"),
    ("noise_fractions", [0.0], "noise_fractions must be a list of label-noise fractions in (0, 1)"),
    ("noise_fractions", [1], "noise_fractions must be"),
    ("noise_levels", -1, "noise_levels must be an integer >= 0, got -1"),
    ("noise_levels", 2.5, "noise_levels must be an integer >= 0"),
    ("stretched_levels", "two", "stretched_levels must be an integer >= 0"),
    ("variants", ["rewind"], "variants must map a name to prune.* settings"),
    ("variants", {"r": {"retrian": "rewind"}}, "unknown key 'retrian' in variants.r (keys of the prune section). "
                                                "Did you mean 'retrain'?"),
    ("variants", {"r": {"rewind_epoch": "two"}}, "variants.r.rewind_epoch must be an integer, got 'two'"),
    ("variants", {"r": "rewind"}, "variants.r must map prune.* keys to values"),
    ("pai_methods", ["snp"], "unknown pai_methods entry 'snp'. Did you mean 'snip'?"),
    ("pai_methods", None, "pai_methods must be a list from snip, magnitude, random"),
    ("tie_levels", [0], "tie_levels must be 'all' or a list of pruning levels from 1 to prune.levels"),
    ("tie_levels", "some", "tie_levels must be 'all'"),
    ("tie_fraction", 1.0, "tie_fraction must be a number in (0, 1)"),
    ("lockstep", "yes", "lockstep must be true, false or auto, got 'yes'"),
    ("progress", "no", "progress must be true or false, got 'no'"),
    ("device", "gpu", "unknown device 'gpu'; use auto, cpu, cuda or cuda:N"),
    ("profile", "../../x", "profile must be a plain name"),
    ("profile", "..", "profile must be a plain name"),
    ("profile", "a/b", "profile must be a plain name"),
    ("cluster", "gpu", "cluster must be a mapping"),
    ("cluster", {"queue": "gpu"}, "unknown key cluster.queue; known: partition, account"),
    ("cluster", {"cores": "4"}, "cluster.cores must be an integer >= 1, got '4'"),
    ("cluster", {"jobs": 0}, "cluster.jobs must be an integer >= 1, got 0"),
    ("cluster", {"walltime": 14400}, "cluster.walltime must be quoted"),
    ("store_dir", "", "store_dir must be a directory path"),
])
def test_study_keys_are_checked_one_line_each(tiny_params, key, value, message):
    params = {**tiny_params, "seeds": [0], key: value}
    with pytest.raises(ConfigError) as e:
        check_study(params)
    assert message in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=re.escape(message)):
        Study.from_dict(params)


def test_study_keys_given_as_strings_are_parsed(tiny_params):
    params = check_study({**tiny_params, "seeds": "[0, 1]", "noise_fractions": "[0.1]", "tie_levels": "all",
                          "pai_methods": "[snip]", "variants": "{f: {retrain: finetune}}"})
    assert params["seeds"] == [0, 1] and params["noise_fractions"] == [0.1] and params["tie_levels"] == "all"
    assert params["pai_methods"] == ["snip"] and params["variants"] == {"f": {"retrain": "finetune"}}


def test_a_store_or_figures_dir_that_is_a_file_is_refused(tiny_params, tmp_path):
    path = tmp_path / "file"
    path.write_text("mine")
    for key in ("store_dir", "figures_dir"):
        with pytest.raises(ConfigError, match=f"{key} {path} is a file, not a directory"):
            check_study({**tiny_params, "seeds": [0], key: str(path)})
    check_study({**tiny_params, "seeds": [0], "store_dir": str(tmp_path / "new"), "figures_dir": None})
    assert path.read_text() == "mine"


def test_a_study_with_its_defaults_filled_in_passes_the_checks_again():
    """Workers rebuild a study from ``study.params``, defaults included: they must check out."""
    from pathlib import Path

    from pgcore.config import STUDY_DEFAULTS, load_yaml
    from pgcore.study import Study

    params = {k: v for k, v in load_yaml(Path(__file__).parent.parent / "params" / "smoke.yaml").items()
              if k not in STUDY_DEFAULTS}
    study = Study.from_dict(params)
    assert set(STUDY_DEFAULTS) <= set(study.params)
    assert Study.from_dict(study.params).params == study.params


def test_every_protocol_has_a_plan_and_every_plan_a_protocol():
    assert set(PLANS) == set(PLAN_FUNCTIONS)


def test_figure_7s_levels_are_checked_only_where_figure_7_is_asked_for(tiny_params):
    """A tie level beyond prune.levels refuses figure 7 (one line naming both keys), not a run or another figure."""
    study = Study.from_dict({**tiny_params, "seeds": [0], "tie_levels": [4]})
    assert study.needs(["fig1"]) and study.config("imp").prune.levels == 3
    with pytest.raises(ConfigError, match="tie_levels lists level 4, beyond prune.levels=3"):
        study.needs(["fig7"])
