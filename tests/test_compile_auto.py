"""training.compile: auto decides before the first step, from the run's length, the step's work
and whether the step can be one graph; it never compiles to find out. The rule's branches are
pinned here without compiling (tests/test_compile.py compiles what auto chose)."""

import io
import json

import pytest
import torch
from rich.console import Console

import dlcli.devices
from dlcli.config import load_config
from dlcli.devices import COMPILE_MIN_STEPS, choose_compile
from dlcli.errors import ConfigError
from dlcli.training import train

CPU = torch.device("cpu")


def _never_asked():
    raise AssertionError("auto looked at something the answer did not depend on")


@pytest.mark.parametrize("setting,mode", [(True, "default"), (False, None), ("reduce-overhead", "reduce-overhead")])
def test_true_false_and_modes_are_taken_as_given(setting, mode):
    choice = choose_compile(setting, CPU, 10, blocker=_never_asked, step_gflop=_never_asked)
    assert (choice.mode, choice.reason) == (mode, "set in the config")


def test_auto_stays_eager_on_a_gpu_and_without_a_compiler(monkeypatch):
    on_gpu = choose_compile("auto", torch.device("cuda", 0), 10**9, blocker=_never_asked, step_gflop=_never_asked)
    assert on_gpu.mode is None and "cuda_graph" in on_gpu.reason
    monkeypatch.setattr(dlcli.devices, "cpp_compiler_found", lambda: False)
    bare = choose_compile("auto", CPU, 10**9, blocker=_never_asked, step_gflop=_never_asked)
    assert bare.mode is None and "no C++ compiler" in bare.reason


def test_auto_compiles_only_a_long_run_of_a_small_one_graph_step(monkeypatch):
    monkeypatch.setattr(dlcli.devices, "cpp_compiler_found", lambda: True)
    short = choose_compile("auto", CPU, COMPILE_MIN_STEPS - 1, blocker=_never_asked, step_gflop=_never_asked)
    assert short.mode is None and "too few to win back compiling" in short.reason
    long = COMPILE_MIN_STEPS
    blocked = choose_compile("auto", CPU, long, blocker=lambda: "the model has buffers", step_gflop=_never_asked)
    assert blocked.mode is None and "cannot be one graph (the model has buffers)" in blocked.reason
    heavy = choose_compile("auto", CPU, long, blocker=lambda: None, step_gflop=lambda: 1.8)  # the course CNN
    assert heavy.mode is None and "1.80 GFLOP" in heavy.reason
    uncounted = choose_compile("auto", CPU, long, blocker=lambda: None, step_gflop=lambda: None)
    assert uncounted.mode is None and "could not be counted" in uncounted.reason
    small = choose_compile("auto", CPU, long, blocker=lambda: None, step_gflop=lambda: 0.01)  # the MLP
    assert small.mode == "default" and small.reason.startswith("auto: compiled")


def _run(tmp_path, tiny_config, *sets):
    config = load_config(tiny_config, ["training.epochs=1", "device=cpu", *sets])
    outcome = train(config, runs_dir=tmp_path / "runs", console=Console(file=io.StringIO()), draw_plots=False)
    return json.loads((outcome.run_dir / "run.json").read_text())


def test_auto_is_the_default_and_a_short_run_stays_eager(tmp_path, tiny_config):
    info = _run(tmp_path, tiny_config)
    assert load_config(tiny_config).training.compile == "auto"
    assert info["compile"] is False and "too few to win back compiling" in info["compile_reason"]
    assert info.get("compiled_step") is None


def test_an_explicit_compile_with_unfreezing_is_refused_but_auto_is_not(tmp_path, tiny_config):
    unfreezing = ["training.fine_tune.freeze=backbone", "training.fine_tune.freeze_epochs=1"]
    with pytest.raises(ConfigError, match="compiled step keeps the parameters"):
        load_config(tiny_config, ["training.compile=true", *unfreezing])
    assert load_config(tiny_config, unfreezing).training.compile == "auto"
