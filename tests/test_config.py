import dataclasses

import pytest

from pgcore.config import SECTIONS, ConfigError, ModelConfig, RunConfig, from_dict, load_yaml, set_value
from pgcore.plans import PROTOCOLS as PLANS


def test_default_config_hash_is_pinned():
    # Pinned: if this changes, every cached result silently stops being found.
    # Bump HASH_VERSION on purpose when the engine's numbers change, then update this value.
    assert RunConfig().hash() == "722c8ccfca64"


# A valid other value for every field of every section (strings and tuples included).
OTHER = {
    "data": {"name": "mnist5k", "num_samples": 4000, "data_seed": 7, "val_fraction": 0.2, "noisy_fraction": 0.1,
             "noise_seed": 3, "augment": False, "data_dir": "/elsewhere", "download": True, "exclude": (4, 9)},
    "model": {"name": "cnn1d", "width": 8, "depth": 3},
    "train": {"epochs": 20, "batch_size": 64, "lr": 0.05, "momentum": 0.5, "nesterov": True, "weight_decay": 1e-4,
              "schedule": "step", "milestones": (10,), "gamma": 0.5, "warmup_epochs": 1.0, "eval_every": 2,
              "precision": "bf16", "compile": True},
    "prune": {"levels": 5, "rate": 0.5, "method": "random", "scope": "layerwise", "retrain": "rewind",
              "rewind_epoch": 2, "prunable": ("linear",), "ignore": ("out.weight",)},
}
# Fields that never change a number: where data lives, and how many levels follow level k.
NOT_HASHED = {("data", "data_dir"), ("data", "download"), ("prune", "levels")}


def test_every_field_has_an_alternative_value():
    for section, cls in SECTIONS.items():
        assert {f.name for f in dataclasses.fields(cls)} == set(OTHER[section]), section


@pytest.mark.parametrize("section, name", [(s, n) for s in OTHER for n in OTHER[s]])
def test_hash_changes_with_every_field_but_paths_and_levels(section, name):
    base = RunConfig()
    changed = base.replace(**{section: dataclasses.replace(getattr(base, section), **{name: OTHER[section][name]})})
    assert getattr(getattr(changed, section), name) != getattr(getattr(base, section), name)
    if (section, name) in NOT_HASHED:
        assert changed.hash() == base.hash()
    else:
        assert changed.hash() != base.hash(), f"{section}.{name} does not change the hash"


@pytest.mark.parametrize("protocol", sorted(PLANS))
def test_each_protocol_hashes_exactly_the_pruning_settings_it_reads(protocol):
    base = RunConfig(protocol=protocol)
    for name, value in OTHER["prune"].items():
        if name == "method" and PLANS[protocol]["methods"] and value not in PLANS[protocol]["methods"]:
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
    assert len({base.replace(protocol=p).hash() for p in PLANS}) == len(PLANS)
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
