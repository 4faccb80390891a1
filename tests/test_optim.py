import pytest
import torch

from dlcli.config import OptimizerConfig, ScheduleConfig
from dlcli.errors import ConfigError
from dlcli.optim import LrSchedule, build_optimizer, optimizer_options


def params():
    return [torch.nn.Parameter(torch.ones(3))]


@pytest.mark.parametrize(
    "config,cls,expected",
    [
        (
            OptimizerConfig(name="sgd", lr=0.1, momentum=0.9, nesterov=True),
            torch.optim.SGD,
            {"lr": 0.1, "momentum": 0.9, "nesterov": True},
        ),
        (OptimizerConfig(name="adam"), torch.optim.Adam, {"lr": 0.001, "eps": 1e-7, "betas": (0.9, 0.999)}),
        (
            OptimizerConfig(name="adamw", weight_decay=0.1, beta_1=0.8),
            torch.optim.AdamW,
            {"weight_decay": 0.1, "betas": (0.8, 0.999)},
        ),
        (OptimizerConfig(name="rmsprop"), torch.optim.RMSprop, {"lr": 0.001, "alpha": 0.9, "eps": 1e-7}),
        (
            OptimizerConfig(name="rmsprop", rho=0.5, centered=True, momentum=0.1),
            torch.optim.RMSprop,
            {"alpha": 0.5, "centered": True, "momentum": 0.1},
        ),
    ],
)
def test_optimizers_take_keras_defaults_and_options(config, cls, expected):
    optimizer = build_optimizer(config, params())
    assert isinstance(optimizer, cls)
    group = optimizer.param_groups[0]
    for key, value in expected.items():
        assert group[key] == value, key


@pytest.mark.parametrize("name", ["sgd", "adam", "adamw", "rmsprop"])
def test_the_implementation_options_for_a_cuda_graph_reach_pytorch(name):
    # Built on the CPU: a CUDA run asks for these and the GPU machine found adam, adamw and rmsprop
    # refusing `capturable` (TypeError), which no CPU test had asked for.
    recorded = build_optimizer(OptimizerConfig(name=name), params(), device_type="cuda", capturable=True)
    group = recorded.param_groups[0]
    assert bool(group.get("capturable")) is (name != "sgd")  # SGD keeps no step count to record
    assert bool(group.get("fused")) is (name in ("adam", "adamw"))
    plain = build_optimizer(OptimizerConfig(name=name), params()).param_groups[0]
    assert not plain.get("capturable") and not plain.get("fused")


def test_options_that_do_not_apply_are_errors():
    with pytest.raises(ConfigError, match="optimizer.rho does not apply to adam"):
        optimizer_options(OptimizerConfig(name="adam", rho=0.9))
    with pytest.raises(ConfigError, match="Nesterov momentum needs optimizer.momentum"):
        build_optimizer(OptimizerConfig(name="sgd", nesterov=True), params())
    with pytest.raises(ConfigError, match="unknown optimizer 'adamx'.*Did you mean 'adam'"):
        build_optimizer(OptimizerConfig(name="adamx"), params())


def test_unknown_schedule_suggests():
    optimizer = build_optimizer(OptimizerConfig(name="sgd"), params())
    with pytest.raises(ConfigError, match="unknown schedule 'cosin'.*'cosine'"):
        LrSchedule(ScheduleConfig(name="cosin"), optimizer, 10)
