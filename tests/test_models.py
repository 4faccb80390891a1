from pathlib import Path

import pytest
import torch

from dlcli.config import (
    ActivationLayer,
    AvgPool2DLayer,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    MaxPool2DLayer,
    load_config,
)
from dlcli.errors import ConfigError
from dlcli.models import build_model, parameter_counts, plan_model
from dlcli.training import plan_experiment

ROOT = Path(__file__).resolve().parents[1]


def built(name):
    plan = plan_experiment(load_config(ROOT / f"configs/{name}.yaml"))
    return plan, build_model(plan.model_plan)


def test_fashion_mnist_mlp_has_55050_parameters():
    plan, model = built("fashion_mnist_mlp")
    assert sum(p.numel() for p in model.parameters()) == 55_050
    assert [c[0] for c in parameter_counts(model)] == [0, 50_240, 4_160, 650]


def test_mnist_cnn_matches_the_course():
    plan, model = built("mnist_cnn")
    assert sum(p.numel() for p in model.parameters()) == 34_826
    counts = [c[0] for c in parameter_counts(model)]
    assert counts == [320, 0, 18_496, 0, 0, 0, 16_010]
    shapes = [r.output_shape for r in plan.model_plan.layers]
    # channels first internally: 26x26x32, 13x13x32, 11x11x64, 5x5x64, 1600, 1600, 10
    assert shapes == [(32, 26, 26), (32, 13, 13), (64, 11, 11), (64, 5, 5), (1600,), (1600,), (10,)]
    out = model(torch.zeros(2, 1, 28, 28))
    assert out.shape == (2, 10)


def test_imdb_classifier_has_160305_parameters():
    plan, model = built("imdb_binary")
    assert [c[0] for c in parameter_counts(model)] == [160_016, 272, 17]
    assert plan.model_plan.output_activation == "sigmoid" and plan.model_plan.absorbed_activation


def test_final_softmax_is_left_to_the_loss():
    plan, model = built("mnist_cnn")
    assert not isinstance(list(model)[-1], torch.nn.Softmax)
    assert plan.model_plan.output_activation == "softmax"


def count(specs, shape):
    plan = plan_model(tuple(specs), shape)
    model = build_model(plan)
    return plan, [c[0] for c in parameter_counts(model)], model


def test_every_layer_type_against_hand_counts():
    specs = [
        Conv2DLayer(filters=4, kernel_size=3, padding="same", activation="tanh"),  # 3*3*2*4+4 = 76
        AvgPool2DLayer(pool_size=2),
        Conv2DLayer(filters=6, kernel_size=2, strides=2, use_bias=False),  # 2*2*4*6 = 96
        MaxPool2DLayer(pool_size=2, strides=1),
        FlattenLayer(),
        DropoutLayer(rate=0.25),
        DenseLayer(units=5, activation="sigmoid"),
        ActivationLayer(activation="relu"),
        DenseLayer(units=3, activation="softmax"),
    ]
    plan, counts, model = count(specs, (2, 12, 12))
    shapes = [r.output_shape for r in plan.layers]
    assert shapes == [(4, 12, 12), (4, 6, 6), (6, 3, 3), (6, 2, 2), (24,), (24,), (5,), (5,), (3,)]
    assert counts == [76, 0, 96, 0, 0, 0, 24 * 5 + 5, 0, 5 * 3 + 3]
    assert model(torch.zeros(3, 2, 12, 12)).shape == (3, 3)


def test_alexnet_first_layer_has_34944_parameters():
    plan, counts, _ = count([Conv2DLayer(filters=96, kernel_size=11, strides=4)], (3, 227, 227))
    assert counts == [34_944]
    assert plan.layers[0].output_shape == (96, 55, 55)  # (227 - 11) / 4 + 1


def test_same_padding_at_stride_two_matches_keras():
    plan, _, model = count([Conv2DLayer(filters=2, kernel_size=3, strides=2, padding="same")], (1, 7, 7))
    assert plan.layers[0].output_shape == (2, 4, 4)  # ceil(7 / 2)
    assert model(torch.zeros(1, 1, 7, 7)).shape == (1, 2, 4, 4)
    plan, _, model = count([Conv2DLayer(filters=2, kernel_size=3, padding=1)], (1, 5, 5))
    assert plan.layers[0].output_shape == (2, 5, 5)


def test_dense_on_images_names_the_layer_and_shape():
    with pytest.raises(ConfigError, match=r"layer 1 \(dense\) needs a flat input.*28x28x1.*flatten"):
        plan_model((DenseLayer(units=3),), (1, 28, 28))


def test_kernel_too_large_names_both_shapes():
    specs = (Conv2DLayer(filters=2, kernel_size=3), MaxPool2DLayer(pool_size=2), Conv2DLayer(filters=2, kernel_size=5))
    with pytest.raises(ConfigError, match=r"layer 3 \(conv2d_1\).*5x5 kernel.*3x3x2"):
        plan_model(specs, (1, 8, 8))


def test_conv_on_flat_input_is_an_error():
    with pytest.raises(ConfigError, match="needs an image input"):
        plan_model((Conv2DLayer(filters=2, kernel_size=3),), (20,))
