import math
from pathlib import Path

import pytest
import torch

from dlcli.config import load_config
from dlcli.errors import ConfigError
from dlcli.layer_specs import (
    ActivationLayer,
    AvgPool2DLayer,
    Conv2DLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    MaxPool2DLayer,
)
from dlcli.models import build_model, parameter_counts, plan_model
from dlcli.plan import plan_experiment

ROOT = Path(__file__).resolve().parents[1]


def built(name, overrides=()):
    plan = plan_experiment(load_config(ROOT / f"configs/{name}.yaml", list(overrides)))
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


def only_tap(conv, *position):
    """Weights that copy the input pixel under one kernel position, and no bias."""
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[(0, 0, *position)] = 1.0
        conv.bias.zero_()


@pytest.mark.parametrize("h, w, tap", [(8, 8, (0, 0)), (8, 7, (0, 1)), (7, 8, (1, 0)), (7, 7, (1, 1))])
def test_same_padding_at_stride_two_pads_the_end_as_keras_does(h, w, tap):
    """Keras pads a strided "same" convolution by ceil(size / stride) outputs and puts an odd
    extra pixel at the end (bottom, right): with a 3x3 kernel at stride 2, an even side gets
    (0, 1), so the kernel's first tap reads rows 0, 2, 4...; an odd side gets (1, 1), so its
    middle tap does."""
    _, _, model = count([Conv2DLayer(filters=1, kernel_size=3, strides=2, padding="same")], (1, h, w))
    (conv,) = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    only_tap(conv, *tap)
    x = torch.randn(2, 1, h, w, generator=torch.Generator().manual_seed(0))
    assert torch.equal(model(x), x[:, :, ::2, ::2])


@pytest.mark.parametrize("steps, tap", [(8, 0), (7, 1)])
def test_same_padding_at_stride_two_pads_the_end_of_a_sequence_too(steps, tap):
    _, _, model = count([Conv1DLayer(filters=1, kernel_size=3, strides=2, padding="same")], (steps, 1))
    (conv,) = [m for m in model.modules() if isinstance(m, torch.nn.Conv1d)]
    only_tap(conv, tap)
    x = torch.randn(2, steps, 1, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.numel() == 2 * math.ceil(steps / 2)
    assert torch.equal(out.reshape(2, -1), x[:, ::2, 0])


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


# ----------------------------------------------------------------------------- architectures

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

from conftest import invoke, make_imdb_npz, synthetic_config, write_config  # noqa: E402
from dlcli.layer_specs import (  # noqa: E402
    AvgPool1DLayer,
    BatchNormLayer,
    Conv1DLayer,
    EmbeddingLayer,
    GlobalAvgPoolLayer,
    GlobalMaxPoolLayer,
    GRULayer,
    LayerNormLayer,
    LSTMLayer,
    MaxPool1DLayer,
    ReshapeLayer,
    ResidualLayer,
)
from dlcli.summary import summary_text  # noqa: E402


def analytic_and_built(specs, shape, vocab=None, absorb=()):
    """The plan's counts must be what the built modules hold, layer by layer."""
    plan = plan_model(tuple(specs), shape, absorb, vocab_size=vocab)
    model = build_model(plan)
    assert parameter_counts(model) == [(r.params, r.frozen) for r in plan.layers]
    return plan, model


def test_sequence_layers_count_shape_and_run_as_planned():
    specs = [
        EmbeddingLayer(output_dim=6),  # 50 * 6
        Conv1DLayer(filters=8, kernel_size=3, padding="same", activation="relu"),  # 3*6*8+8 = 152
        MaxPool1DLayer(pool_size=2),
        AvgPool1DLayer(pool_size=2, strides=1),
        BatchNormLayer(),  # 2*8 trainable, 2*8 running statistics
        GRULayer(units=5, return_sequences=True),  # 3*(5*(8+5) + 2*5) = 225
        LayerNormLayer(),  # 2*5
        LSTMLayer(units=4, bidirectional=True),  # 2 * 4*(4*(5+4) + 2*4) = 352
        DenseLayer(units=3, activation="softmax"),  # 8*3+3 = 27
    ]
    plan, model = analytic_and_built(specs, (20,), vocab=50, absorb=("softmax",))
    assert [r.output_shape for r in plan.layers] == [
        (20, 6),
        (20, 8),
        (10, 8),
        (9, 8),
        (9, 8),
        (9, 5),
        (9, 5),
        (8,),
        (3,),
    ]
    assert [r.params + r.frozen for r in plan.layers] == [300, 152, 0, 0, 32, 225, 10, 352, 27]
    assert [r.type_name for r in plan.layers] == [
        "Embedding",
        "Conv1D",
        "MaxPooling1D",
        "AveragePooling1D",
        "BatchNormalization",
        "GRU",
        "LayerNormalization",
        "Bidirectional(LSTM)",
        "Dense",
    ]
    assert plan.total_params == 1098 and plan.trainable_params == 1082
    assert model(torch.randint(0, 50, (4, 20))).shape == (4, 3)


def test_global_pooling_and_reshape_by_rank():
    specs = [
        GlobalMaxPoolLayer(),
        ReshapeLayer(target_shape=(2, -1)),
        GlobalAvgPoolLayer(),
        ReshapeLayer(target_shape=(1, 1, 3)),
        Conv2DLayer(filters=2, kernel_size=1),
        FlattenLayer(),
    ]
    plan, model = analytic_and_built(specs, (6, 5, 5))
    assert [r.output_shape for r in plan.layers] == [(6,), (2, 3), (3,), (3, 1, 1), (2, 1, 1), (2,)]
    assert [r.type_name for r in plan.layers][:3] == ["GlobalMaxPooling2D", "Reshape", "GlobalAveragePooling1D"]
    x = torch.randn(2, 6, 5, 5)
    pooled = x.amax((2, 3))
    assert torch.equal(model[:3](x), pooled.reshape(2, 2, 3).mean(1))


def test_lstm_returns_the_last_state_without_copying_and_bidirectional_as_keras():
    from dlcli.models.modules import LSTM

    torch.manual_seed(0)
    x = torch.randn(3, 7, 4)
    one = LSTM(4, 5, bidirectional=False, return_sequences=False)
    last = one(x)
    full, _ = torch.nn.LSTM.forward(one, x)
    assert torch.allclose(last, full[:, -1]) and last._base is not None  # a view of h_n, not a copy
    two = LSTM(4, 5, bidirectional=True, return_sequences=False)
    full, _ = torch.nn.LSTM.forward(two, x)
    # forward direction after the last step, backward direction after reading back to the first
    assert torch.allclose(two(x), torch.cat((full[:, -1, :5], full[:, 0, 5:]), 1))
    two.return_sequences = True
    assert torch.equal(two(x), full)


def _padded(words, steps, where):
    """The word ids `words` in a row of `steps`, zeros before ("pre"), after, or both."""
    pad = steps - len(words)
    before = {"pre": pad, "post": 0, "both": pad // 2}[where]
    return torch.tensor([0] * before + words + [0] * (pad - before))


@pytest.mark.parametrize(
    "middle",
    [
        [LSTMLayer(units=6, return_sequences=True), LayerNormLayer(), GRULayer(units=5, bidirectional=True)],
        [DropoutLayer(rate=0.5), GlobalAvgPoolLayer()],
        [LSTMLayer(units=6, bidirectional=True, return_sequences=True), GlobalMaxPoolLayer()],
        [GRULayer(units=5)],
    ],
    ids=["lstm-layernorm-bigru", "global-avg", "bilstm-global-max", "gru"],
)
def test_mask_zero_makes_padding_invisible_to_recurrent_layers_and_pooling(middle):
    words = [7, 3, 9, 4]
    for mask_zero in (True, False):
        torch.manual_seed(0)
        _, model = analytic_and_built(
            [EmbeddingLayer(output_dim=8, mask_zero=mask_zero), *middle, DenseLayer(units=1)], (12,), vocab=20
        )
        model.eval()
        batch = torch.stack([_padded(words, 12, where) for where in ("pre", "post", "both")] + [torch.zeros(12)])
        out = model(batch.long())
        alone = model(torch.tensor([words]))
        if mask_zero:  # with padding anywhere, or none, the sentence gives the same output
            torch.testing.assert_close(out[1], out[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out[2], out[0], rtol=1e-5, atol=1e-6)
            torch.testing.assert_close(out[0], alone[0], rtol=1e-5, atol=1e-6)
            # All padding: zeros reach the output layer, which gives its bias (as in Keras).
            torch.testing.assert_close(out[3], model[-1].bias)
            # Export's formulation (fixed shapes, no packing) computes the same.
            for module in model.modules():
                if hasattr(module, "packed"):
                    module.packed = False
            torch.testing.assert_close(model(batch.long()), out, rtol=1e-5, atol=1e-6)
        else:  # without the mask the padding is read as words, which the check above must catch
            assert not torch.allclose(out[0], alone[0], rtol=1e-3, atol=1e-4)


def test_the_mask_ends_at_a_layer_that_moves_steps():
    plan = plan_model(
        (
            EmbeddingLayer(output_dim=8, mask_zero=True),
            LSTMLayer(units=6, return_sequences=True),
            Conv1DLayer(filters=4, kernel_size=3),
            GlobalMaxPoolLayer(),
            DenseLayer(units=1),
        ),
        (12,),
        vocab_size=20,
    )
    assert [r.takes_mask for r in plan.layers] == [False, True, False, False, False]


def test_keras_initialization_of_the_new_layers():
    _, model = analytic_and_built(
        [EmbeddingLayer(output_dim=8, mask_zero=True), LSTMLayer(units=6), DenseLayer(units=1)], (10,), vocab=100
    )
    embedding, lstm = model[0], model[1]
    assert embedding.weight.abs().max() <= 0.05 and torch.equal(embedding.weight[0], torch.zeros(8))
    assert torch.equal(lstm.bias_ih_l0[6:12], torch.ones(6))  # forget gate, Keras's unit_forget_bias
    assert torch.count_nonzero(lstm.bias_ih_l0) == 6 and torch.count_nonzero(lstm.bias_hh_l0) == 0
    w = lstm.weight_hh_l0  # (4*units, units), orthogonal columns
    assert torch.allclose(w.T @ w, torch.eye(6), atol=1e-5)
    bound = (6 / (8 + 24)) ** 0.5  # Glorot-uniform over fan_in 8, fan_out 4*6
    assert lstm.weight_ih_l0.abs().max() <= bound


def test_batchnorm_keeps_running_statistics_and_freezes_them_in_eval():
    _, model = analytic_and_built([BatchNormLayer(momentum=0.9), FlattenLayer(), DenseLayer(units=2)], (3, 4, 4))
    bn = model[0]
    assert bn.momentum == pytest.approx(0.1) and bn.eps == 0.001
    x = torch.randn(8, 3, 4, 4) * 3 + 2
    model.train()
    model(x)
    expected = 0.1 * x.mean((0, 2, 3))
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)
    model.eval()
    model(x * 10)
    assert torch.allclose(bn.running_mean, expected, atol=1e-6)
    assert {"0.running_mean", "0.running_var", "0.num_batches_tracked"} <= set(model.state_dict())


def test_residual_adds_the_input_or_its_projection():
    identity = ResidualLayer(layers=(Conv2DLayer(filters=3, kernel_size=3, padding="same"),), activation="relu")
    plan, model = analytic_and_built([identity], (3, 6, 6))
    x = torch.randn(2, 3, 6, 6)
    block = model[0]
    assert block.shortcut is None and torch.equal(model(x), torch.relu(block.body(x) + x))
    projected = ResidualLayer(layers=(Conv2DLayer(filters=5, kernel_size=3, strides=2, padding="same"),))
    plan, model = analytic_and_built([projected], (3, 7, 7))
    (record,) = plan.layers
    assert [c.name for c in record.children] == ["conv2d", "projection"]
    assert record.children[1].type_name == "Conv2D" and record.children[1].params == 3 * 5 + 5
    shortcut = model[0].shortcut
    assert shortcut.kernel_size == (1, 1) and shortcut.stride == (2, 2)
    assert model(torch.randn(2, 3, 7, 7)).shape == (2, 5, 4, 4) and record.output_shape == (5, 4, 4)
    flat = ResidualLayer(layers=(DenseLayer(units=4, activation="relu"),))
    plan, model = analytic_and_built([flat], (6,))
    assert isinstance(model[0].shortcut, torch.nn.Linear) and plan.layers[0].params == 28 + 28


def test_a_residual_model_summary_is_pinned():
    specs = (
        Conv2DLayer(filters=4, kernel_size=3, padding="same", activation="relu"),
        ResidualLayer(
            layers=(
                Conv2DLayer(filters=8, kernel_size=3, strides=2, padding="same", activation="relu"),
                BatchNormLayer(),
            ),
            activation="relu",
        ),
        GlobalAvgPoolLayer(),
        DenseLayer(units=10, activation="softmax"),
    )
    text = summary_text(plan_model(specs, (1, 28, 28), ("softmax",)))
    assert text.splitlines()[4:] == [
        "│ conv2d (Conv2D)                          │ (None, 28, 28, 4) │      40 │",
        "│ residual (Residual)                      │ (None, 14, 14, 8) │     368 │",
        "│   └ conv2d_1 (Conv2D)                    │ (None, 14, 14, 8) │     296 │",
        "│   └ batchnorm (BatchNormalization)       │ (None, 14, 14, 8) │      32 │",
        "│   └ projection (Conv2D)                  │ (None, 14, 14, 8) │      40 │",
        "│ global_avg_pool (GlobalAveragePooling2D) │ (None, 8)         │       0 │",
        "│ dense (Dense)                            │ (None, 10)        │      90 │",
        "└──────────────────────────────────────────┴───────────────────┴─────────┘",
        " Total params: 498 (1.95 KB)",  # 40 + (296 + 32 + 40) + 90
        " Trainable params: 482",
        " Non-trainable params: 16",
        " Note: image shapes are (batch, height, width, channels), as Keras shows them.",
        " Note: non-trainable params are batch norm's running means and variances, as Keras counts them.",
        " Note: a residual block's row counts the layers under it (└), whose output is added to its input.",
        " Note: the final softmax is applied inside the loss, on the logits, for stability.",
    ]


def test_lenet5_preset_is_the_classic_network():
    plan, model = built("mnist_lenet5")
    assert [r.params for r in plan.model_plan.layers] == [156, 0, 2_416, 0, 0, 48_120, 10_164, 850]
    assert plan.model_plan.total_params == 61_706
    assert [r.output_shape for r in plan.model_plan.layers][:4] == [(6, 28, 28), (6, 14, 14), (16, 10, 10), (16, 5, 5)]
    assert isinstance(model[1], torch.nn.ReLU) and isinstance(model[2], torch.nn.MaxPool2d)  # the config's choice
    # The original's tanh and average pooling (the preset's defaults) build as asked.
    from dlcli.config import LeNet5Model

    assert (LeNet5Model().activation, LeNet5Model().pooling) == ("tanh", "avg")
    _, model = built("mnist_lenet5", ["model.activation=tanh", "model.pooling=avg"])
    assert isinstance(model[1], torch.nn.Tanh) and isinstance(model[2], torch.nn.AvgPool2d)


def test_imdb_sequence_configs_plan_from_the_vocabulary():
    plan, model = built("imdb_lstm")
    assert [r.params for r in plan.model_plan.layers] == [320_000, 8_448, 33]
    assert plan.model_plan.layers[0].output_shape == (500, 32)
    plan, _ = built("imdb_conv1d")
    assert [r.output_shape for r in plan.model_plan.layers] == [(500, 128), (494, 32), (98, 32), (92, 32), (32,), (1,)]
    assert plan.model_plan.total_params == 1_315_937


def test_summary_of_presets_and_layer_lists_imports_no_torch():
    code = (
        "import sys; from dlcli.cli import app\n"
        "for name in ('mnist_cnn', 'imdb_lstm', 'mnist_lenet5', 'imdb_binary'):\n"
        "    try: app(['summary', f'configs/{name}.yaml'])\n"
        "    except SystemExit as e: assert not e.code, e.code\n"
        "print('torch loaded:', 'torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert out.strip().endswith("torch loaded: False") and out.count("Total params") == 4


def test_summary_of_builtin_datasets_imports_no_numpy_and_only_their_own_reader():
    """Naming a built-in dataset reads no data for the summary: no NumPy, and of the dataset
    modules only the ones that register the datasets named; --json draws no table (no rich,
    unless typer itself imports it, as older versions of typer do)."""
    code = (
        "import sys, typer; typer_loads_rich = 'rich' in sys.modules\n"
        "from dlcli.cli import app\n"
        "def run(*args):\n"
        "    try: app(['summary', *args])\n"
        "    except SystemExit as e: assert not e.code, e.code\n"
        "run('configs/mnist_cnn.yaml', '--json')\n"
        "print('rich loaded by --json:', 'rich' in sys.modules and not typer_loads_rich)\n"
        "for name in ('mnist_cnn', 'fashion_mnist_mlp', 'imdb_lstm', 'mnist_lenet5', 'synthetic_quick'):\n"
        "    run(f'configs/{name}.yaml')\n"
        "print('loaded:', sorted(m for m in sys.modules if m in ('numpy', 'torch') or m.startswith('dlcli.data.')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True).stdout
    assert "rich loaded by --json: False" in out and out.count("Total params") == 5
    assert out.strip().endswith(
        "loaded: ['dlcli.data.dataset', 'dlcli.data.imdb', 'dlcli.data.inputs', 'dlcli.data.preprocessing', "
        "'dlcli.data.sequences', 'dlcli.data.synthetic', 'dlcli.data.vision']"
    )


# ----------------------------------------------------------------------------- torchvision models


def test_torchvision_resnet18_adapted_to_grayscale_and_ten_classes():
    plan, model = built("fashion_mnist_resnet")
    mp = plan.model_plan
    assert mp.trainable_params == 11_175_370 and mp.total_params - mp.trainable_params == 9_600
    assert [r.name for r in mp.layers] == [
        "conv1",
        "bn1",
        "relu",
        "maxpool",
        "layer1",
        "layer2",
        "layer3",
        "layer4",
        "avgpool",
        "fc",
    ]
    assert [r.output_shape for r in mp.layers][3:8] == [(64, 7, 7), (64, 7, 7), (128, 4, 4), (256, 2, 2), (512, 1, 1)]
    assert parameter_counts(model) == [(r.params, r.frozen) for r in mp.layers]
    assert model.conv1.in_channels == 1 and model.conv1.kernel_size == (7, 7) and model.fc.out_features == 10
    model.eval()
    assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)


def tv_config(tmp_path, name, weights=None, shape=(1, 28, 28), classes=10):
    raw = synthetic_config(epochs=1)
    height_width_channels = [*shape[1:], shape[0]]  # `shape` is channels first, as the tensors hold it
    raw["data"]["synthetic"].update(input_shape=height_width_channels, classes=classes, samples=32, test_samples=8)
    raw["model"] = {"torchvision": name, **({"weights": str(weights)} if weights else {})}
    raw["training"]["batch_size"] = 16
    return write_config(tmp_path / "tv.yaml", raw)


def test_weights_file_of_torchvision_layout_is_loaded_then_adapted(tmp_path):
    import torchvision

    torch.manual_seed(1)
    original = torchvision.models.squeezenet1_1(num_classes=1000)
    torch.save(original.state_dict(), tmp_path / "sq.pt")
    config = tv_config(tmp_path, "squeezenet1_1", tmp_path / "sq.pt")
    plan = plan_experiment(load_config(config))
    model = build_model(plan.model_plan)
    assert torch.equal(model.features[0].weight, original.features[0].weight.sum(1, keepdim=True))
    assert torch.equal(model.features[3].squeeze.weight, original.features[3].squeeze.weight)
    assert model.classifier[1].out_channels == 10  # the data's classes, a new layer
    torch.save(model.state_dict(), tmp_path / "adapted.pt")  # the adapted layout loads as it is
    again = build_model(
        plan_experiment(load_config(tv_config(tmp_path, "squeezenet1_1", tmp_path / "adapted.pt"))).model_plan
    )
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))


def test_bad_torchvision_name_and_weights_are_errors(tmp_path):
    import torchvision

    result = invoke("summary", tv_config(tmp_path, "resnet19"))
    assert result.exit_code == 2
    assert "'resnet19' is not a classification model of torchvision" in result.output
    assert "Did you mean 'resnet18'" in result.output
    torch.save(torchvision.models.squeezenet1_0().state_dict(), tmp_path / "other.pt")
    result = invoke(
        "train", tv_config(tmp_path, "squeezenet1_1", tmp_path / "other.pt"), "--runs-dir", tmp_path / "runs"
    )
    assert result.exit_code == 2
    assert "does not hold the weights of torchvision's squeezenet1_1" in result.output
    assert "of another shape (e.g. features.0.weight [96, 3, 7, 7] (needs [64, 3, 3, 3])" in result.output
    result = invoke("train", tv_config(tmp_path, "resnet18", tmp_path / "missing.pt"), "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 2 and "model.weights:" in result.output and "is not a file" in result.output
    result = invoke("summary", tv_config(tmp_path, "vgg11"))
    assert result.exit_code == 2 and "vgg11 does not fit inputs of 28x28x1" in result.output


# ----------------------------------------------------------------------------- bad layer lists (exit 2)


def layers_config(tmp_path, layers, **data):
    raw = synthetic_config(epochs=1)
    raw["data"].update(data)
    raw["model"] = {"layers": layers}
    return write_config(tmp_path / "layers.yaml", raw)


def imdb_config(tmp_path, layers, **data):
    make_imdb_npz(tmp_path / "imdb" / "imdb.npz")
    raw = synthetic_config(epochs=1)
    raw["data"] = {
        "dataset": "imdb",
        "root": str(tmp_path),
        "download": False,
        "num_words": 50,
        "output_mode": "sequence",
        "sequence_length": 12,
        **data,
    }
    raw["model"] = {"layers": layers}
    raw["loss"] = "binary_crossentropy"
    return write_config(tmp_path / "imdb.yaml", raw)


def error_of(config, *sets):
    result = invoke("summary", config, *[a for s in sets for a in ("--set", s)])
    assert result.exit_code == 2, result.output
    return " ".join(result.output.split())


OUT = {"dense": {"units": 1, "activation": "sigmoid"}}


def test_lstm_after_flatten_says_it_needs_a_sequence(tmp_path):
    config = imdb_config(tmp_path, [{"embedding": {"output_dim": 4}}, "flatten", {"lstm": {"units": 3}}, OUT])
    message = error_of(config)
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "lstm:" in text)
    assert (
        f"{config}, line {line}: model layer 3 (lstm) needs a sequence input of shape steps x features "
        "(a rank-3 batch: batch, steps, features), but its input has shape 48 (flat, after flatten). "
        "Remove the flatten before it"
    ) in message


def test_embedding_on_float_inputs(tmp_path):
    message = error_of(
        layers_config(tmp_path, [{"embedding": {"output_dim": 4, "input_dim": 10}}, "flatten", {"dense": {"units": 3}}])
    )
    assert (
        "model layer 1 (embedding) needs integer word ids, but this data gives float features of shape 8. "
        "Use integer word ids: data.output_mode: sequence"
    ) in message
    message = error_of(imdb_config(tmp_path, [{"embedding": {"output_dim": 4}}, {"embedding": {"output_dim": 4}}, OUT]))
    assert "model layer 2 (embedding_1) needs integer word ids, but its input is the float output" in message
    message = error_of(imdb_config(tmp_path, [{"dense": {"units": 4}}, OUT]))
    assert (
        "model layer 1 (dense) gets the data's integer word ids (shape 12), which only an embedding can read" in message
    )


def test_return_sequences_before_dense(tmp_path):
    config = imdb_config(
        tmp_path,
        [
            {"embedding": {"output_dim": 4}},
            {"gru": {"units": 3, "return_sequences": True}},
            {"dropout": {"rate": 0.1}},
            OUT,
        ],
    )
    message = error_of(config)
    assert "model layer 4 (dense) needs a flat input, but its input has shape 12x3 (a sequence, after gru)" in message
    assert "set return_sequences: false on the last recurrent layer" in message


def test_residual_that_cannot_be_projected(tmp_path):
    block = {"residual": {"layers": [{"conv2d": {"filters": 4, "kernel_size": 3, "padding": 2}}]}}
    raw_layers = [block, "flatten", {"dense": {"units": 3}}]
    message = error_of(layers_config(tmp_path, raw_layers), "data.synthetic.input_shape=[6, 6, 1]")
    assert (
        "model layer 1 (residual): its layers turn 6x6x1 into 8x8x4, which cannot be added to the block's "
        "input: no 1x1 projection with one stride maps its pixels (6 -> 8 x 6 -> 8)"
    ) in message
    block = {"residual": {"layers": ["flatten", {"dense": {"units": 4}}]}}
    message = error_of(
        layers_config(tmp_path, [block, "flatten", {"dense": {"units": 3}}]), "data.synthetic.input_shape=[6, 6, 1]"
    )
    assert "a 1x1 projection keeps the rank (3 dimensions here, 1 after)" in message


def test_inner_layer_errors_name_the_block(tmp_path):
    block = {"residual": {"layers": [{"lstm": {"units": 2}}]}}
    config = layers_config(tmp_path, [block, {"dense": {"units": 3}}])
    message = error_of(config)
    line = next(i for i, text in enumerate(config.read_text().splitlines(), 1) if "lstm:" in text)
    assert f"{config}, line {line}: model layer 1 (residual), its layer 1 (lstm) needs a sequence input" in message


def test_sequence_length_of_zero(tmp_path):
    config = imdb_config(tmp_path, [{"embedding": {"output_dim": 4}}, {"lstm": {"units": 3}}, OUT])
    message = error_of(config, "data.sequence_length=0")
    assert "data.sequence_length: must be at least 1, found 0" in message


# ----------------------------------------------------------------------------- memory


def test_a_model_too_large_for_memory_is_refused_before_allocating(tmp_path):
    config = layers_config(tmp_path, ["flatten", {"dense": {"units": 10**10}}, {"dense": {"units": 3}}])
    result = invoke("train", config, "--runs-dir", tmp_path / "runs")
    assert result.exit_code == 1, result.output
    message = " ".join(result.output.split())
    assert message.startswith(
        "Error: The model needs about 1.7 TB of memory to train: 120,000,000,003 parameters "
        "take 447.0 GB as float32, their gradients 447.0 GB and adam's two moment estimates "
        "894.1 GB; this machine has "
    )
    assert "this machine has" in message and "available (of" in message
    assert not (tmp_path / "runs").exists()  # refused before the run folder
    summary = invoke("summary", config)  # the plan alone still shows it
    assert summary.exit_code == 0 and "120,000,000,003" in summary.output


def test_allocation_failure_becomes_a_clear_error(capsys):
    """A real failure of PyTorch's CPU allocator (400 TB asked for), inside the build guard and
    through the CLI's error handler: exit code 1, one paragraph, no traceback."""
    import typer

    from dlcli.cli import handle_errors
    from dlcli.errors import ResourceError
    from dlcli.models.memory import allocation_guard

    plan = plan_model((DenseLayer(units=3),), (4,))
    with pytest.raises(
        ResourceError,
        match=r"Out of memory while building the model on cpu \(15 parameters take "
        r"60 B as float32; .* available\): \[enforce fail .*can't allocate memory",
    ):
        with allocation_guard(plan):
            torch.empty(10**14)
    with pytest.raises(RuntimeError, match="something else"):
        with allocation_guard(plan):
            raise RuntimeError("something else")

    @handle_errors
    def command():
        torch.empty(10**14)

    with pytest.raises(typer.Exit) as exit_info:
        command()
    assert exit_info.value.exit_code == 1
    err = capsys.readouterr().err
    assert (
        err.startswith("Error: Out of memory ([enforce fail") and "you tried to allocate 400000000000000 bytes" in err
    )


# ----------------------------------------------------------------------------- end to end


def test_an_lstm_trains_on_imdb_sequences_and_evaluates(tmp_path):
    config = imdb_config(
        tmp_path,
        [{"embedding": {"output_dim": 8, "mask_zero": True}}, {"lstm": {"units": 8, "bidirectional": True}}, OUT],
        validation_split=0.2,
    )
    runs = tmp_path / "runs"
    result = invoke("train", config, "--runs-dir", runs, "-q", "--set", "training.epochs=2")
    assert result.exit_code == 0, result.output
    (run,) = runs.iterdir()
    rows = (run / "summary.txt").read_text().splitlines()[4:7]
    assert rows == [
        "│ embedding (Embedding)      │ (None, 12, 8) │     400 │",
        "│ lstm (Bidirectional(LSTM)) │ (None, 16)    │   1,152 │",  # 2 * (4*8*(8+8) + 2*4*8)
        "│ dense (Dense)              │ (None, 1)     │      17 │",
    ]
    results = json.loads((run / "results.json").read_text())
    evaluated = invoke("evaluate", run, "--checkpoint", "last", "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["loss"] == pytest.approx(results["test_loss"], rel=1e-5)
    # mask_zero packs sequences, which ONNX cannot hold; the export computes the same in fixed
    # shapes. Its outputs must be the trained (packing) model's, on padded rows of any length.
    exported = invoke("export", run, "--format", "onnx", "--out", tmp_path / "lstm.onnx")
    assert exported.exit_code == 0, exported.output
    import onnxruntime as ort

    from dlcli.loading import load_run

    ids = torch.tensor([[0] * 9 + [5, 7, 3], [0] * 12, [4] * 12, [0] * 4 + list(range(1, 9))], dtype=torch.int64)
    session = ort.InferenceSession(str(tmp_path / "lstm.onnx"), providers=["CPUExecutionProvider"])
    onnx_out = session.run(None, {"input": ids.numpy()})[0]
    model = load_run(run, checkpoint="best").model.eval()
    with torch.no_grad():
        expected = torch.sigmoid(model(ids)).numpy()
    np.testing.assert_allclose(onnx_out.reshape(-1), expected.reshape(-1), atol=1e-5)


def test_a_torchvision_run_evaluates_without_its_initial_weights_file(tmp_path):
    import torchvision

    torch.save(torchvision.models.squeezenet1_1().state_dict(), tmp_path / "start.pt")
    config = tv_config(tmp_path, "squeezenet1_1", tmp_path / "start.pt", shape=(3, 32, 32), classes=3)
    runs = tmp_path / "runs"
    result = invoke("train", config, "--runs-dir", runs, "-q")
    assert result.exit_code == 0, result.output
    (tmp_path / "start.pt").unlink()  # the checkpoint holds every weight now
    (run,) = runs.iterdir()
    evaluated = invoke("evaluate", run, "--json")
    assert evaluated.exit_code == 0, evaluated.output
    assert json.loads(evaluated.output)["samples"] == 8


# ----------------------------------------------------------------------------- property: plan == reality

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from dlcli.layer_specs import ActivationLayer as _Act  # noqa: E402

ACTIVATIONS_ST = st.sampled_from(["linear", "relu", "tanh", "sigmoid"])
PADDING_ST = st.sampled_from(["valid", "same", 0, 1])
SIMPLE_LAYERS = st.one_of(
    st.builds(DenseLayer, units=st.integers(1, 4), activation=ACTIVATIONS_ST),
    st.builds(
        Conv2DLayer,
        filters=st.integers(1, 3),
        kernel_size=st.integers(1, 3),
        strides=st.integers(1, 2),
        padding=PADDING_ST,
        activation=ACTIVATIONS_ST,
    ),
    st.builds(MaxPool2DLayer, pool_size=st.integers(1, 2), strides=st.sampled_from([None, 1, 2])),
    st.builds(AvgPool2DLayer, pool_size=st.integers(1, 2)),
    st.builds(
        Conv1DLayer,
        filters=st.integers(1, 3),
        kernel_size=st.integers(1, 3),
        strides=st.integers(1, 2),
        padding=PADDING_ST,
        activation=ACTIVATIONS_ST,
    ),
    st.builds(MaxPool1DLayer, pool_size=st.integers(1, 2)),
    st.builds(AvgPool1DLayer, pool_size=st.integers(1, 2), strides=st.sampled_from([None, 1])),
    st.just(GlobalAvgPoolLayer()),
    st.just(GlobalMaxPoolLayer()),
    st.just(FlattenLayer()),
    st.builds(DropoutLayer, rate=st.just(0.1)),
    st.builds(_Act, activation=ACTIVATIONS_ST),
    st.builds(LSTMLayer, units=st.integers(1, 3), bidirectional=st.booleans(), return_sequences=st.booleans()),
    st.builds(
        GRULayer,
        units=st.integers(1, 3),
        bidirectional=st.booleans(),
        return_sequences=st.booleans(),
        dropout=st.sampled_from([0.0, 0.2]),
    ),
    st.just(BatchNormLayer()),
    st.just(LayerNormLayer()),
    st.builds(ReshapeLayer, target_shape=st.sampled_from([(-1,), (-1, 1), (1, -1), (2, -1), (-1, 1, 1), (0, 2)])),
)
LAYERS_ST = st.one_of(
    SIMPLE_LAYERS,
    st.builds(
        ResidualLayer, layers=st.lists(SIMPLE_LAYERS, min_size=1, max_size=2).map(tuple), activation=ACTIVATIONS_ST
    ),
)
INPUTS_ST = st.sampled_from([((6,), None), ((5, 4), None), ((2, 6, 6), None), ((7,), 10)])


# DLCLI_FUZZ_EXAMPLES=3000 for a long run by hand
@settings(
    max_examples=int(os.environ.get("DLCLI_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(INPUTS_ST, st.lists(LAYERS_ST, min_size=1, max_size=4))
def test_any_layer_list_is_a_clean_error_or_a_model_that_runs_as_planned(inputs, layers):
    shape, vocab = inputs
    if vocab:
        layers = [EmbeddingLayer(output_dim=3)] + layers
    try:
        plan = plan_model(tuple(layers), shape, vocab_size=vocab)
    except ConfigError as exc:
        assert exc.key and exc.key.startswith("model.layers.") and "layer" in str(exc)
        return
    model = build_model(plan)
    assert parameter_counts(model) == [(r.params, r.frozen) for r in plan.layers]
    x = torch.randint(0, vocab, (2, *shape)) if vocab else torch.randn(2, *shape)
    model.eval()
    with torch.no_grad():
        for record, (start, end) in zip(plan.layers, model.layer_ranges):
            x = model[start:end](x) if end > start else x
            out = tuple(x.shape[1:])
            # sequences may be channels-first at run time; the plan holds (steps, channels)
            assert out == record.output_shape or (len(out) == 2 and out[::-1] == record.output_shape), (
                record.name,
                out,
                record.output_shape,
            )


def test_every_layer_type_has_one_planner():
    """A layer is its options class in layer_specs and its planner in models.layers; the planner's
    registration carries the rest (Keras name, --verbose details, masking)."""
    from dlcli.layer_specs import LAYER_TYPES
    from dlcli.models.layers import LAYER_PLANNERS

    assert LAYER_PLANNERS.names() == sorted(LAYER_TYPES)


# ----------------------------------------------------------------------------- pooling options, ZFNet, the course's CNNs


@pytest.mark.parametrize("size", [7, 8, 13])
@pytest.mark.parametrize(
    "pool_size, strides, padding, ceil_mode",
    [(3, 2, 0, True), (3, 2, 1, False), (3, 2, 1, True), (2, None, 0, True), (2, 1, 1, False), (5, 3, 2, True)],
)
def test_2d_pooling_padding_and_ceil_mode_give_pytorchs_sizes(size, pool_size, strides, padding, ceil_mode):
    for layer in (MaxPool2DLayer, AvgPool2DLayer):
        spec = layer(pool_size=pool_size, strides=strides, padding=padding, ceil_mode=ceil_mode)
        plan, counts, model = count([spec], (2, size, size + 1))
        out = model(torch.randn(1, 2, size, size + 1))
        assert tuple(out.shape[1:]) == plan.layers[0].output_shape


def test_pool_padding_is_checked_and_shown():
    with pytest.raises(ConfigError, match="padding 2 is more than half its 3x3 window"):
        plan_model((MaxPool2DLayer(pool_size=3, padding=2),), (1, 8, 8))
    plan = plan_model((MaxPool2DLayer(pool_size=3, strides=2, padding=1, ceil_mode=True),), (1, 8, 8))
    assert plan.layers[0].details["padding"] == "1+ceil"
    assert plan_model((MaxPool2DLayer(pool_size=3, ceil_mode=True),), (1, 8, 8)).layers[0].details["padding"] == "ceil"


def test_zfnet_feature_maps_are_those_of_figure_3_of_the_paper():
    """Zeiler and Fergus (2013), Figure 3, for a 224x224x3 input: 110x110x96 after conv 1, 55x55 after
    pool 1, 26x26x256 after conv 2, 13x13 after pool 2 and convs 3 to 5, 6x6x256 after pool 5, then
    4096, 4096 and the classes."""
    from dlcli.models.layers import shape_text
    from dlcli.models.presets import zfnet_layers

    plan = plan_model(tuple(zfnet_layers()) + (DenseLayer(units=1000, activation="softmax"),), (3, 224, 224))
    sizes = [shape_text(r.output_shape) for r in plan.layers if r.type_name != "Dropout"]
    assert sizes == [
        "110x110x96",  # conv 1: 96 7x7 filters, stride 2
        "55x55x96",  # pool 1: 3x3, stride 2
        "26x26x256",  # conv 2: 256 5x5 filters, stride 2
        "13x13x256",  # pool 2
        "13x13x384",  # conv 3
        "13x13x384",  # conv 4
        "13x13x256",  # conv 5
        "6x6x256",  # pool 5
        "9216",
        "4096",  # fc 6
        "4096",  # fc 7
        "1000",
    ]
    by_hand = (
        (7 * 7 * 3 * 96 + 96)  # conv 1: 14,208
        + (5 * 5 * 96 * 256 + 256)  # conv 2: 614,656
        + (3 * 3 * 256 * 384 + 384)  # conv 3: 885,120
        + (3 * 3 * 384 * 384 + 384)  # conv 4: 1,327,488
        + (3 * 3 * 384 * 256 + 256)  # conv 5: 884,992
        + (6 * 6 * 256 * 4096 + 4096)  # fc 6: 37,752,832
        + (4096 * 4096 + 4096)  # fc 7: 16,781,312
        + (4096 * 1000 + 1000)  # output: 4,097,000
    )
    assert by_hand == 62_357_608 == plan.trainable_params
    with torch.device("meta"):  # the modules the plan builds, without 250 MB of weights
        modules = [m for r in plan.layers if r.make for m in r.make()]
    assert sum(p.numel() for m in modules for p in m.parameters()) == by_hand


def _torchvision_count(weights: str) -> int:
    """Torchvision's own parameter count of a model, from its weights' metadata (nothing is downloaded)."""
    import torchvision.models as tvm

    return getattr(tvm, weights).DEFAULT.meta["num_params"]


@pytest.mark.parametrize(
    "model, shape, classes, expected",
    [
        ({"preset": "lenet5"}, [28, 28, 1], 10, 61_706),  # LeCun et al. (1998), as the course counts it
        ({"preset": "zfnet"}, [224, 224, 3], 1000, 62_357_608),  # by hand, above
        ({"torchvision": "alexnet"}, [224, 224, 3], 1000, "AlexNet_Weights"),
        ({"torchvision": "vgg16"}, [224, 224, 3], 1000, "VGG16_Weights"),
        ({"torchvision": "googlenet"}, [224, 224, 3], 1000, "GoogLeNet_Weights"),
        ({"torchvision": "resnet18"}, [224, 224, 3], 1000, "ResNet18_Weights"),
    ],
    ids=["lenet5", "zfnet", "alexnet", "vgg16", "googlenet", "resnet18"],
)
def test_every_cnn_the_course_names_builds_and_summarises(model, shape, classes, expected):
    raw = {
        "name": model.get("preset") or model["torchvision"],
        "data": {"dataset": "synthetic", "synthetic": {"input_shape": shape, "classes": classes}},
        "model": model,
        "loss": "sparse_categorical_crossentropy",
    }
    plan = plan_experiment(load_config(None, raw=raw))  # torchvision's models on the meta device
    if isinstance(expected, str):
        expected = _torchvision_count(expected)
    assert plan.model_plan.trainable_params == expected
    text = summary_text(plan.model_plan, plan)
    assert f"Trainable params: {expected:,}" in text
    if model.get("preset") == "lenet5":
        built_model = build_model(plan.model_plan)
        assert sum(p.numel() for p in built_model.parameters()) == expected


def test_a_reshape_target_is_written_in_the_summarys_order(tmp_path):
    """`target_shape: [2, 3, 4]` is a 2x3 image of 4 channels: the summary shows (None, 2, 3, 4),
    and a 1x1 convolution after it sees 4 input channels."""
    raw = {
        "data": {"dataset": "synthetic", "synthetic": {"input_shape": [24]}},
        "model": {
            "layers": [
                {"reshape": {"target_shape": [2, 3, 4]}},
                {"conv2d": {"filters": 5, "kernel_size": 1}},
                "flatten",
                {"dense": {"units": 3}},
            ]
        },
    }
    result = invoke("summary", write_config(tmp_path / "r.yaml", raw), "--json")
    layers = json.loads(result.output)["layers"]
    assert layers[0]["output_shape"] == [None, 2, 3, 4] and layers[1]["output_shape"] == [None, 2, 3, 5]
    assert layers[1]["params"] == 4 * 5 + 5


@pytest.mark.parametrize("dims", [2, 3])
def test_channels_last_reaches_a_first_convolution_over_one_channel(dims):
    """A kernel over one input channel is contiguous in both layouts, so asking it to be
    channels-last left its strides channels-first, and the first block ran channels-first with
    a copy of every activation and gradient at the next convolution. Its output must come out
    channels-last (channel stride 1) and equal the channels-first model's."""
    from dlcli.models import use_channels_last

    conv = torch.nn.Conv2d if dims == 2 else torch.nn.Conv3d
    torch.manual_seed(0)
    model = torch.nn.Sequential(conv(1, 8, 3), torch.nn.ReLU(), conv(8, 4, 3))
    gray = torch.rand(2, 1, *([9] * dims))  # a batch as the data gives it: channels-first
    before = model(gray)
    assert use_channels_last(model, True)
    first = model[0](gray)
    assert first.stride(1) == 1 and model[0].weight.stride(1) == 1
    assert torch.allclose(model(gray), before, atol=1e-6)
