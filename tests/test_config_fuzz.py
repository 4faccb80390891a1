"""Property: any mutation of a valid config ends in a run or a clean error, never a traceback."""

import tempfile
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from dlcli.cli import app

from conftest import synthetic_config

runner = CliRunner()


def base_config() -> dict:
    raw = synthetic_config(epochs=1, batch_size=8)
    raw["data"]["download"] = False
    raw["data"]["synthetic"].update(samples=40, test_samples=10)
    raw["model"] = {"layers": [{"flatten": {}}, {"dense": {"units": 4, "activation": "relu"}},
                               {"dropout": {"rate": 0.1}}, {"dense": {"units": 3, "activation": "softmax"}}]}
    return raw


def paths(node, prefix=()):
    """Every key path of a nested config, lists included."""
    yield prefix
    if isinstance(node, dict):
        for key, value in node.items():
            yield from paths(value, prefix + (key,))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from paths(value, prefix + (i,))


ALL_PATHS = [p for p in paths(base_config()) if p]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 6),
    st.floats(allow_nan=True, allow_infinity=True, width=32),
    st.text(max_size=6),
    st.sampled_from(["relu", "softmax", "sigmoid", "mnist", "adam", "sgd", "rmsprop", "mse", "same", "auto",
                     "binary_crossentropy", "multilabel", "regression", "cnn", "mlp", "conv2d", "val_loss"]),
    st.lists(st.integers(-1, 5), max_size=3),
    st.dictionaries(st.sampled_from(["units", "rate", "name", "x"]), st.integers(-1, 5), max_size=2),
)
MUTATION = st.tuples(st.sampled_from(["set", "delete", "add"]), st.sampled_from(ALL_PATHS), VALUES)


def mutate(raw: dict, action: str, path: tuple, value) -> dict:
    parent = raw
    for part in path[:-1]:
        parent = parent[part]
    last = path[-1]
    if action == "set":
        parent[last] = value
    elif action == "delete":
        if isinstance(parent, list):
            parent.pop(last)
        else:
            del parent[last]
    elif isinstance(parent, dict):
        parent["unknown_" + str(last)] = value
    else:
        parent.insert(last, value)
    return raw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(MUTATION, min_size=1, max_size=3))
def test_any_mutation_is_a_run_or_a_clean_error(mutations):
    raw = base_config()
    for action, path, value in mutations:
        try:
            raw = mutate(raw, action, path, value)
        except (KeyError, IndexError, TypeError, AttributeError):
            pass  # an earlier mutation removed or replaced this path
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "c.yaml"
        config.write_text(yaml.safe_dump(raw))
        result = runner.invoke(app, ["train", str(config), "--runs-dir", str(Path(tmp) / "runs"), "-q"])
    assert result.exit_code in (0, 1, 2), result.output
    assert "Traceback" not in result.output
    if result.exception is not None:
        assert isinstance(result.exception, SystemExit), repr(result.exception)
    if result.exit_code != 0:
        assert result.output.startswith("Error: "), result.output
