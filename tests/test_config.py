import dataclasses
from pathlib import Path

import pytest
import yaml

from conftest import synthetic_config, write_config
from dlcli.config import (
    CnnModel,
    LayersModel,
    MlpModel,
    config_to_dict,
    dump_config,
    load_config,
)
from dlcli.errors import ConfigError
from dlcli.layer_specs import Conv2DLayer

ROOT = Path(__file__).resolve().parents[1]


def error_of(tmp_path, config, overrides=()):
    path = write_config(tmp_path / "c.yaml", config)
    with pytest.raises(ConfigError) as info:
        load_config(path, overrides)
    return info.value.full_message()


def test_course_configs_load():
    mlp = load_config(ROOT / "configs/fashion_mnist_mlp.yaml")
    assert mlp.training.epochs == 5 and mlp.training.batch_size == 32
    cnn = load_config(ROOT / "configs/mnist_cnn.yaml")
    assert isinstance(cnn.model, LayersModel)
    assert cnn.model.layers[0] == Conv2DLayer(filters=32, kernel_size=3, activation="relu")
    assert cnn.data.validation_split == 0.1 and cnn.training.epochs == 15 and cnn.training.batch_size == 128
    imdb = load_config(ROOT / "configs/imdb_binary.yaml")
    assert imdb.data.validation_size == 10000 and imdb.data.validation_from == "start"
    assert imdb.optimizer.name == "rmsprop" and imdb.training.epochs == 20 and imdb.training.batch_size == 512


def test_overrides_parse_yaml_scalars(tiny_config):
    cfg = load_config(
        tiny_config, ["training.epochs=1", "optimizer.lr=1e-3", "training.shuffle=false", "model.hidden=[4, 5]"]
    )
    assert cfg.training.epochs == 1
    assert cfg.optimizer.lr == pytest.approx(0.001)
    assert cfg.training.shuffle is False
    assert cfg.model.hidden == (4, 5)


def test_defaults_then_file_then_overrides(tmp_path):
    raw = synthetic_config()
    del raw["training"]["batch_size"]
    path = write_config(tmp_path / "c.yaml", raw)
    assert load_config(path).training.batch_size == 32  # default
    raw["training"]["batch_size"] = 8
    path = write_config(tmp_path / "c.yaml", raw)
    assert load_config(path).training.batch_size == 8  # file beats default
    assert load_config(path, ["training.batch_size=4"]).training.batch_size == 4  # --set beats file


def test_dump_and_reload_is_identical(tmp_path):
    for name in ("mnist_cnn", "imdb_binary", "fashion_mnist_mlp", "synthetic_quick"):
        cfg = load_config(ROOT / f"configs/{name}.yaml")
        again = tmp_path / f"{name}.yaml"
        again.write_text(dump_config(cfg))
        assert load_config(again) == cfg


def test_presets_parse_with_their_own_defaults(tmp_path):
    raw = synthetic_config()
    raw["model"] = {"preset": "cnn"}
    cfg = load_config(write_config(tmp_path / "c.yaml", raw))
    assert cfg.model == CnnModel()
    assert cfg.model.dropout == 0.5
    raw["model"] = {"preset": "mlp", "hidden": 64}
    assert load_config(write_config(tmp_path / "c.yaml", raw)).model == MlpModel(hidden=(64,))


def test_unknown_key_names_line_and_suggests(tmp_path):
    raw = synthetic_config()
    raw["training"]["epoch"] = 3
    message = error_of(tmp_path, raw)
    assert "training.epoch" in message
    assert "line" in message and "c.yaml" in message
    assert "Did you mean 'epochs'" in message


def test_unknown_top_level_key(tmp_path):
    raw = synthetic_config()
    raw["optimiser"] = {"name": "adam"}
    message = error_of(tmp_path, raw)
    assert "unknown key 'optimiser'" in message and "'optimizer'" in message


def test_wrong_type_says_what_was_expected(tmp_path):
    raw = synthetic_config()
    raw["training"]["batch_size"] = "big"
    message = error_of(tmp_path, raw)
    assert "training.batch_size" in message and "whole number" in message and "'big'" in message
    raw["training"].update(batch_size=32, channels_last="maybe")
    message = error_of(tmp_path, raw)
    assert "training.channels_last: expected true, false, or 'auto', found the text 'maybe'" in message


@pytest.mark.parametrize(
    "section,key,value,words",
    [
        ("training", "batch_size", 0, "at least 1"),
        ("training", "epochs", 0, "at least 1"),
        ("optimizer", "lr", -0.1, "greater than 0"),
        ("data", "validation_split", 1.5, "less than 1"),
    ],
)
def test_out_of_range_values(tmp_path, section, key, value, words):
    raw = synthetic_config()
    raw[section][key] = value
    message = error_of(tmp_path, raw)
    assert f"{section}.{key}" in message and words in message


def test_unknown_activation_and_layer_suggest(tmp_path):
    raw = synthetic_config()
    raw["model"] = {"layers": [{"flatten": {}}, {"dense": {"units": 3, "activation": "softmx"}}]}
    message = error_of(tmp_path, raw)
    assert "model.layers.1.dense.activation" in message and "'softmax'" in message
    raw["model"] = {"layers": [{"flaten": {}}]}
    message = error_of(tmp_path, raw)
    assert "unknown layer type 'flaten'" in message and "'flatten'" in message


def test_yaml_syntax_error_names_line(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("name: x\ndata:\n  dataset: mnist\n    root: oops\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "bad.yaml, line 4" in str(info.value) and "not valid YAML" in str(info.value)


def test_missing_empty_and_folder_config(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "empty.yaml").write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        load_config(tmp_path / "empty.yaml")
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(tmp_path)


def test_set_errors(tiny_config):
    with pytest.raises(ConfigError, match="--set training.epoch") as info:
        load_config(tiny_config, ["training.epoch=3"])
    assert "'epochs'" in str(info.value)
    with pytest.raises(ConfigError, match="--set training.epochs: expected a whole number"):
        load_config(tiny_config, ["training.epochs=many"])
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        load_config(tiny_config, ["training.epochs"])


def test_required_keys(tmp_path):
    raw = synthetic_config()
    del raw["model"]
    assert "model: is required" in error_of(tmp_path, raw)
    raw = synthetic_config()
    raw["model"] = {"hidden": [3]}
    assert "preset" in error_of(tmp_path, raw)


def test_bad_name_and_device(tmp_path):
    raw = synthetic_config()
    raw["name"] = "../escape"
    assert "folder name" in error_of(tmp_path, raw)
    raw = synthetic_config()
    raw["device"] = "gpu"
    assert "auto, cpu, cuda or cuda:N" in error_of(tmp_path, raw)


def test_float_written_without_dot_is_accepted(tmp_path):
    path = tmp_path / "c.yaml"
    write_config(path, synthetic_config())
    text = path.read_text().replace("lr: 0.01", "lr: 1e-3")
    path.write_text(text)
    assert load_config(path).optimizer.lr == pytest.approx(1e-3)


def test_config_to_dict_layers_round_trip():
    cfg = load_config(ROOT / "configs/mnist_cnn.yaml")
    layers = config_to_dict(cfg)["model"]["layers"]
    assert layers[0] == {
        "conv2d": {
            "filters": 32,
            "kernel_size": 3,
            "strides": 1,
            "padding": "valid",
            "activation": "relu",
            "use_bias": True,
        }
    }
    assert layers[4] == {"flatten": {}}


def test_dumped_config_writes_every_field():
    """A run's config.yaml is the fully resolved config: every field of every section, layer,
    schedule and early-stopping block is written out, so that a change of a default later
    cannot change what an old run means."""
    cfg = load_config(
        ROOT / "configs/mnist_cnn.yaml",
        ["training.schedule={name: step}", "training.early_stopping={monitor: val_loss}"],
    )
    missing = []

    def walk(node, value, path):
        if dataclasses.is_dataclass(value):
            kind = getattr(type(value), "kind", None)
            body = node[kind] if kind is not None else node
            names = [f.name for f in dataclasses.fields(value) if f.init]
            missing.extend(".".join(map(str, path + (n,))) for n in names if n not in body)
            for name in names:
                if name in body:
                    walk(body[name], getattr(value, name), path + (name,))
        elif isinstance(value, (tuple, list)) and isinstance(node, list):
            for i, (n, v) in enumerate(zip(node, value)):
                walk(n, v, path + (i,))

    walk(yaml.safe_load(dump_config(cfg)), cfg, ())
    assert missing == []


# -- hostile YAML: duplicate keys, alias bombs, self-reference, depth -----------------------------

BASE_YAML = "name: t\ndata: {dataset: synthetic}\nmodel: {preset: mlp}\n"


def yaml_error(tmp_path, text: str) -> str:
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    return info.value.full_message()


def test_a_key_given_twice_names_both_lines(tmp_path):
    text = BASE_YAML + "training:\n  epochs: 1\nseed: 3\ntraining:\n  epochs: 5\n"
    assert yaml_error(tmp_path, text) == (
        f"{tmp_path / 'c.yaml'}, line 7: the key 'training' is given on lines 4 and 7 of the same mapping; "
        "YAML would silently keep only the last one. Keep one `training:` and merge what the two hold into it."
    )
    nested = BASE_YAML + "training: {epochs: 1, batch_size: 8, epochs: 2}\n"
    assert yaml_error(tmp_path, nested).startswith(
        f"{tmp_path / 'c.yaml'}, line 4: the key 'epochs' is given twice on line 4 of the same mapping;"
    )


def test_a_key_given_twice_in_a_set_value(tiny_config):
    with pytest.raises(ConfigError) as info:
        load_config(tiny_config, ["training={epochs: 1, epochs: 2}"])
    assert info.value.full_message().startswith(
        "--set 'training={epochs: 1, epochs: 2}', line 1: the key 'epochs' is given twice on line 1"
    )


def test_merge_keys_and_reused_anchors_still_load(tmp_path):
    path = tmp_path / "c.yaml"
    # A merged key overridden by the mapping's own is YAML's intent, not a duplicate; an anchor
    # used twice is fine while the expansion stays small.
    path.write_text(
        "name: t\n"
        "model:\n  <<: {preset: mlp, hidden: &h [8, 8], dropout: 0.1}\n  dropout: 0.2\n"
        "data: {dataset: synthetic, synthetic: {shape: *h}}\n"
    )
    config = load_config(path)
    assert config.model == MlpModel(hidden=(8, 8), dropout=0.2)
    assert config.data.synthetic.shape == (8, 8)


def alias_bomb(levels: int, repeat: int = 9) -> str:
    lines = ["x0: &x0 [" + ", ".join(["lol"] * repeat) + "]"]
    for i in range(1, levels):
        lines.append(f"x{i}: &x{i} [" + ", ".join([f"*x{i - 1}"] * repeat) + "]")
    return BASE_YAML + "\n".join(lines) + "\n"


def test_an_alias_bomb_is_refused_at_once(tmp_path):
    import time

    started = time.perf_counter()
    message = yaml_error(tmp_path, alias_bomb(levels=30))  # 9^30 values once expanded
    elapsed = time.perf_counter() - started
    assert message == (
        f"{tmp_path / 'c.yaml'}, line 8: the config holds more than 10,000 values once its aliases (*name) "
        "are expanded. A dlcli config needs a few hundred; write the values out instead of repeating nested aliases."
    )
    assert elapsed < 5, elapsed  # the unguarded loader worked for minutes; the guard takes milliseconds


def test_a_deep_alias_chain_and_a_deep_file_are_refused(tmp_path):
    chain = BASE_YAML + "x0: &x0 [1]\n" + "".join(f"x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, 40))
    assert yaml_error(tmp_path, chain) == (
        f"{tmp_path / 'c.yaml'}, line 35: the config is nested more than 32 levels deep once its aliases (*name) "
        "are expanded. A dlcli config needs about 6 levels; write the values out instead of nesting aliases."
    )
    brackets = BASE_YAML + "x: " + "[" * 5000 + "]" * 5000 + "\n"
    assert yaml_error(tmp_path, brackets) == (
        f"{tmp_path / 'c.yaml'}, line 4: the config is nested more than 32 levels deep. "
        "A dlcli config needs about 6 levels."
    )
    blocks = BASE_YAML + "".join(" " * i + f"k{i}:\n" for i in range(100))
    assert yaml_error(tmp_path, blocks).startswith(
        f"{tmp_path / 'c.yaml'}, line 35: the config is nested more than 32 levels deep."
    )


def test_an_alias_inside_its_own_anchor_is_refused(tmp_path):
    text = "name: t\ndata: &d {dataset: synthetic, again: *d}\nmodel: {preset: mlp}\n"
    assert yaml_error(tmp_path, text) == (
        f"{tmp_path / 'c.yaml'}, line 2: an alias refers to the value that contains it, so the config would "
        "never end. Remove the *alias from inside its own &anchor."
    )


def test_too_many_values_or_characters_are_refused(tmp_path):
    wide = BASE_YAML + "x: [" + ", ".join(["1"] * 10_001) + "]\n"
    assert yaml_error(tmp_path, wide) == (
        f"{tmp_path / 'c.yaml'}, line 4: the config holds more than 10,000 values. A dlcli config needs a few hundred."
    )
    huge = BASE_YAML + "x: '" + "a" * 300_000 + "'\n"
    assert yaml_error(tmp_path, huge) == (
        f"{tmp_path / 'c.yaml'}: {len(huge):,} characters is more than a config may hold (262,144). "
        "Check that this is the experiment file you meant."
    )


def test_hostile_yaml_exits_2_in_the_cli(tmp_path):
    from typer.testing import CliRunner

    from dlcli.cli import app

    path = tmp_path / "c.yaml"
    path.write_text(alias_bomb(levels=12))
    result = CliRunner().invoke(app, ["train", str(path), "--print-config"])
    assert result.exit_code == 2
    assert result.output.startswith(f"Error: {path}, line 8: the config holds more than 10,000 values")
