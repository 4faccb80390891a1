"""`dlcli schema`: the JSON Schema generated from the config's dataclasses, the copy kept in
schema/, the shipped configs' modeline, and agreement with the loader on mutated configs."""

from __future__ import annotations

import copy
import dataclasses
import json
import random
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from dlcli.cli import app
from dlcli.config import PRESETS, load_config
from dlcli.errors import ConfigError
from dlcli.layer_specs import LAYER_TYPES
from dlcli.registry import DATASETS
from dlcli.schema import CROSS_FIELD_RULES, config_schema, schema_text

jsonschema = pytest.importorskip("jsonschema")

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
SCHEMA_FILE = ROOT / "schema" / "dlcli.schema.json"
MODELINE = "# yaml-language-server: $schema=../schema/dlcli.schema.json"


@pytest.fixture(scope="module")
def validator():
    schema = config_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def _raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def _loader_accepts(raw: dict) -> tuple[bool, str]:
    try:
        load_config(None, raw=raw)
    except ConfigError as exc:
        return False, exc.full_message()
    except TypeError as exc:  # `model: {preset: [1]}`: config._build_model looks the list up in PRESETS
        if "unhashable" not in str(exc):
            raise
        return False, f"the loader fails with TypeError: {exc}"
    return True, ""


# ----------------------------------------------------------------------------- the file and the command


def test_the_kept_schema_is_the_generated_one():
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(), (
        "schema/dlcli.schema.json is out of date: run `dlcli schema --out schema/dlcli.schema.json --force`"
    )


def test_schema_command_prints_it_and_writes_it(tmp_path):
    result = CliRunner().invoke(app, ["schema"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == json.loads(schema_text())
    out = tmp_path / "sub" / "dlcli.schema.json"  # a missing folder is created
    assert CliRunner().invoke(app, ["schema", "--out", str(out)]).exit_code == 0
    assert out.read_text(encoding="utf-8") == schema_text()
    # its own file again: replaced without --force
    assert CliRunner().invoke(app, ["schema", "--out", str(out)]).exit_code == 0


def test_schema_out_refuses_a_users_file_without_force(tmp_path):
    mine = tmp_path / "notes.json"
    mine.write_text('{"mine": true}\n', encoding="utf-8")
    result = CliRunner().invoke(app, ["schema", "--out", str(mine)])
    assert result.exit_code == 2
    assert "not written by dlcli" in result.output and "--force" in result.output
    assert mine.read_text(encoding="utf-8") == '{"mine": true}\n'
    assert CliRunner().invoke(app, ["schema", "--out", str(mine), "--force"]).exit_code == 0
    assert json.loads(mine.read_text(encoding="utf-8"))["title"] == "dlcli experiment config"


def test_every_layer_type_preset_and_dataset_kind_has_its_schema():
    defs = config_schema()["$defs"]
    assert {f"layer.{k}" for k in LAYER_TYPES} <= set(defs)
    assert {f"model.{k}" for k in PRESETS} | {"model.layers", "model.torchvision"} <= set(defs)
    kinds = set(DATASETS.loaded())
    assert {f"data.{k}" for k in kinds} <= set(defs)
    for kind, source in DATASETS.loaded().items():
        keys = {f.name for f in dataclasses.fields(source.config) if f.init}
        assert set(defs[f"data.{kind}"]["properties"]) == keys
        assert defs[f"data.{kind}"]["properties"]["dataset"]["const"] == kind
    assert defs["layer.dense"]["properties"]["units"] == {
        "description": "number of output units",
        "type": "integer",
        "minimum": 1,
    }


def test_cross_field_rules_are_in_the_description_and_the_docs():
    description = config_schema()["description"]
    docs = (ROOT / "docs" / "config.md").read_text(encoding="utf-8")
    for rule in CROSS_FIELD_RULES:
        assert rule in description
        assert f"- {rule}" in docs
    assert "validation_split or validation_size" in docs


# ----------------------------------------------------------------------------- the shipped configs


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_shipped_config_has_the_modeline_and_validates(path, validator):
    assert path.read_text(encoding="utf-8").splitlines()[0] == MODELINE
    errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(_raw(path))]
    assert not errors, errors


def test_the_sweep_section_is_checked(validator):
    raw = _raw(ROOT / "configs" / "imdb_sweep.yaml")
    assert validator.is_valid(raw)
    for key, value in [("metod", "tpe"), ("method", "bayes"), ("trials", 0), ("params", "lr")]:
        bad = copy.deepcopy(raw)
        bad["sweep"][key] = value
        assert not validator.is_valid(bad), (key, value)


def test_forms_the_loader_accepts_are_accepted(validator):
    raw = _raw(ROOT / "configs" / "mnist_cnn.yaml")
    variants = [
        {"model": {"preset": "mlp", "hidden": 64}},  # one hidden layer
        {"optimizer": {"name": "adam", "lr": "1e-3"}},  # YAML 1.1 reads 1e-3 as text
        {"optimizer": None, "training": None, "tracking": None},  # sections of defaults
        {"model": {"layers": ["flatten", {"dense": {"units": 10}}, {"dropout": {"rate": 0.1}}]}},
        {"model": {"layers": [{"flatten": None}, {"dense": {"units": 10.0}}]}},  # 10.0 is a whole number
        {"model": {"torchvision": "resnet18"}},
        {"loss": {"name": "categorical_crossentropy", "label_smoothing": 0.1}},
        {"training": {"compile": "max-autotune", "channels_last": False}},
    ]
    for change in variants:
        config = {**raw, **change}
        assert _loader_accepts(config)[0], change
        assert validator.is_valid(config), (change, [e.message for e in validator.iter_errors(config)])


# ----------------------------------------------------------------------------- mutations

# Messages of the loader's checks across keys (which the schema leaves to dlcli): a mutation that
# trips one of these may pass the schema.
CROSS_FIELD_MESSAGES = (
    "not both",
    "one way of clipping",
    "warms up by itself",
    "recorded CUDA graph",
    "regression loss",
    "dataset needs",
    "expected [height, width]",
    "train_path",
    "is a policy for",
    "twice",
    "time_column",
    "not a frequency",
    "not a task",
    "one character",
)

WRONG_VALUES = ("bogus", "", 1.5, -1, 0, 2, 10**9, -0.5, 1.0, True, None, [1], [], {"a": 1}, "1e-3")


def _leaves(node, path=()):
    """(path, value) of every scalar and list of scalars in a raw config, outside `sweep:`."""
    if isinstance(node, dict):
        for key, value in node.items():
            if path == () and key == "sweep":
                continue
            yield from _leaves(value, path + (key,))
    elif isinstance(node, list) and any(isinstance(v, (dict, list)) for v in node):
        for i, value in enumerate(node):
            yield from _leaves(value, path + (i,))
    else:
        yield path, node


def _mappings(node, path=()):
    if isinstance(node, dict):
        yield path
        for key, value in node.items():
            if not (path == () and key == "sweep"):
                yield from _mappings(value, path + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _mappings(value, path + (i,))


def _set(raw: dict, path: tuple, value) -> dict:
    out = copy.deepcopy(raw)
    node = out
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value
    return out


def _get(raw, path):
    for part in path:
        raw = raw[part]
    return raw


def _foreign_keys(kind: str) -> list[tuple[str, object]]:
    """Keys of other dataset kinds with a value other than their default (bools, numbers, texts)."""
    own = {f.name for f in dataclasses.fields(DATASETS.get(kind).config)}
    out = []
    for _kind, source in sorted(DATASETS.loaded().items()):
        for f in dataclasses.fields(source.config):
            if f.name in own or not f.init or f.default is dataclasses.MISSING:
                continue
            if isinstance(f.default, bool):
                out.append((f.name, not f.default))
            elif isinstance(f.default, (int, float)):
                out.append((f.name, f.default + 7))
            elif isinstance(f.default, str):
                out.append((f.name, f.default + "x"))
    return sorted(set(out), key=str)


def _mutations(seed: int = 0) -> list[tuple[str, str, dict]]:
    """(label, kind of mutation, raw config): deterministic, from every shipped config."""
    rng = random.Random(seed)
    out = []
    for path in CONFIGS:
        raw = _raw(path)
        leaves = list(_leaves(raw))
        mappings = list(_mappings(raw))
        for leaf, _ in leaves:  # a wrong type, an out-of-range number or an unknown enum value, at every leaf
            for value in rng.sample(WRONG_VALUES, 3):
                out.append((f"{path.name}:{leaf}={value!r}", "value", _set(raw, leaf, value)))
        for where in rng.sample(mappings, min(4, len(mappings))):  # an unknown key
            node = _get(raw, where)
            typo = (next(iter(node)) + "s") if node else "colour"
            out.append((f"{path.name}:{where}+{typo}", "key", _set(raw, where + (typo,), 1)))
        if "layers" in raw["model"]:  # an unknown layer type
            layers = raw["model"]["layers"]
            i = rng.randrange(len(layers))
            for bad in ("bogus", {"densee": {"units": 4}}, {"dense": {"units": 4}, "flatten": {}}):
                out.append((f"{path.name}:layer {i}={bad!r}", "layer", _set(raw, ("model", "layers", i), bad)))
        for key, value in rng.sample(_foreign_keys(raw["data"]["dataset"]), 3):  # another kind's key
            out.append((f"{path.name}:data.{key}={value!r}", "foreign", _set(raw, ("data", key), value)))
    return out


def test_mutated_configs_agree_with_the_loader(validator):
    rejected = accepted = 0
    disagreements = []
    for label, _, raw in _mutations():
        ok, message = _loader_accepts(raw)
        valid = validator.is_valid(raw)
        if ok:
            accepted += 1
            if not valid:
                errors = [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(raw)][:2]
                disagreements.append(f"loader accepts, schema rejects {label}: {errors}")
        else:
            rejected += 1
            if valid and not any(m in message for m in CROSS_FIELD_MESSAGES):
                disagreements.append(f"loader rejects, schema accepts {label}: {message}")
    assert rejected >= 200 and accepted >= 50, (rejected, accepted)
    assert not disagreements, "\n".join(disagreements[:20])
