"""Video (rank-5 batches): the 3-D layers, time_distributed, conv_lstm2d, torchvision's video
models, their summary and their export. One sample is (channels, frames, height, width) as
stored; the summary shows (frames, height, width, channels), as Keras does."""

import json
import math
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import import_or_skip_unless_ci, invoke, trained_run, write_config
from dlcli.config import TorchvisionModel
from dlcli.errors import ConfigError
from dlcli.layer_specs import (
    ActivationLayer,
    AvgPool3DLayer,
    BatchNormLayer,
    Conv2DLayer,
    Conv3DLayer,
    ConvLSTM2DLayer,
    DenseLayer,
    DropoutLayer,
    FlattenLayer,
    GlobalAvgPoolLayer,
    GlobalMaxPoolLayer,
    LSTMLayer,
    MaxPool2DLayer,
    MaxPool3DLayer,
    ReshapeLayer,
    ResidualLayer,
    TimeDistributedLayer,
)
from dlcli.models import build_model, parameter_counts, plan_model, plan_network, use_channels_last
from dlcli.summary import summary_data, summary_text

VIDEO = (3, 4, 8, 8)  # channels, frames, height, width: 4 frames of 8x8 RGB


def planned_and_built(specs, shape=VIDEO):
    plan = plan_model(tuple(specs), shape)
    model = build_model(plan)
    assert parameter_counts(model) == [(r.params, r.frozen) for r in plan.layers]
    return plan, model


def run_layers(plan, model, x):
    """Each layer's output shape at run time, against the plan's."""
    model.eval()
    with torch.no_grad():
        for record, (start, end) in zip(plan.layers, model.layer_ranges):
            x = model[start:end](x) if end > start else x
            assert tuple(x.shape[1:]) == record.output_shape, (record.name, tuple(x.shape[1:]), record.output_shape)
    return x


def keras_length(size, kernel, stride, padding):
    """Keras's output length of a convolution: ceil(size / stride) for same, else (size - k) // s + 1."""
    if padding == "same":
        return math.ceil(size / stride)
    return (size - kernel) // stride + 1


# ----------------------------------------------------------------------------- conv3d and 3-D pooling


@pytest.mark.parametrize(
    "c_in, filters, kernel, strides, padding",
    [
        (3, 8, 3, 1, "valid"),
        (3, 8, 3, 1, "same"),
        (1, 5, (1, 3, 3), (1, 2, 2), "same"),  # a (2+1)D-style spatial kernel
        (2, 4, (3, 1, 1), 1, "valid"),  # and its temporal one
        (4, 6, 2, 2, "same"),  # asymmetric same padding: Keras pads the end
        (3, 2, (2, 3, 4), (2, 1, 3), "valid"),
    ],
)
def test_conv3d_counts_and_shapes_follow_keras(c_in, filters, kernel, strides, padding):
    t, h, w = 5, 9, 10
    k = (kernel,) * 3 if isinstance(kernel, int) else kernel
    s = (strides,) * 3 if isinstance(strides, int) else strides
    plan, model = planned_and_built(
        [Conv3DLayer(filters=filters, kernel_size=kernel, strides=strides, padding=padding)], (c_in, t, h, w)
    )
    (record,) = plan.layers
    # Keras's Conv3D: k_t * k_h * k_w * c_in * filters + filters
    assert record.params == k[0] * k[1] * k[2] * c_in * filters + filters
    assert sum(p.numel() for p in model.parameters()) == record.params
    expected = tuple(keras_length(n, kn, sn, padding) for n, kn, sn in zip((t, h, w), k, s))
    assert record.output_shape == (filters, *expected)
    assert record.type_name == "Conv3D"
    run_layers(plan, model, torch.randn(2, c_in, t, h, w))


def test_conv3d_same_padding_at_stride_two_pads_the_end_as_keras_does():
    plan, model = planned_and_built([Conv3DLayer(filters=1, kernel_size=2, strides=2, padding="same")], (1, 3, 3, 3))
    assert plan.layers[0].output_shape == (1, 2, 2, 2)
    assert isinstance(model[0], torch.nn.ConstantPad3d) and model[0].padding == (0, 1, 0, 1, 0, 1)


def test_conv3d_without_bias_and_a_bad_kernel_length():
    plan, _ = planned_and_built([Conv3DLayer(filters=4, kernel_size=3, use_bias=False)])
    assert plan.layers[0].params == 27 * 3 * 4
    with pytest.raises(ConfigError, match=r"kernel_size \[3, 3\] needs one number or three"):
        plan_model((Conv3DLayer(filters=4, kernel_size=(3, 3)),), VIDEO)
    with pytest.raises(ConfigError, match=r"a 5x5x5 kernel .* does not fit its input of shape 4x8x8x3"):
        plan_model((Conv3DLayer(filters=4, kernel_size=5),), VIDEO)


@pytest.mark.parametrize(
    "layer",
    [
        MaxPool3DLayer(),
        MaxPool3DLayer(pool_size=(1, 2, 2)),
        MaxPool3DLayer(pool_size=3, strides=2, ceil_mode=True),
        MaxPool3DLayer(pool_size=3, strides=2, padding=1),
        AvgPool3DLayer(pool_size=(2, 3, 3), strides=(1, 2, 2), padding=1, ceil_mode=True),
        AvgPool3DLayer(pool_size=2),
    ],
)
def test_3d_pooling_shapes_are_pytorchs(layer):
    plan, model = planned_and_built([layer], (2, 5, 9, 8))
    assert plan.layers[0].params == 0
    run_layers(plan, model, torch.randn(2, 2, 5, 9, 8))


def test_avg_pooling_leaves_the_padding_out_of_the_average():
    plan, model = planned_and_built([AvgPool3DLayer(pool_size=3, strides=1, padding=1)], (1, 3, 3, 3))
    out = model(torch.ones(1, 1, 3, 3, 3))
    assert torch.allclose(out, torch.ones_like(out))  # zeros of the padding would pull the corners down


def test_pool_padding_over_half_the_window_is_refused():
    with pytest.raises(ConfigError, match="padding 2 is more than half its 3x3x3 window"):
        plan_model((MaxPool3DLayer(pool_size=3, padding=2),), VIDEO)


# ----------------------------------------------------------------------------- rank-5 batch norm, dropout, pooling


def test_batchnorm_dropout_global_pooling_and_reshape_over_videos():
    specs = [
        Conv3DLayer(filters=4, kernel_size=3, padding="same", activation="relu"),
        BatchNormLayer(),
        DropoutLayer(rate=0.3),
        ActivationLayer(activation="tanh"),
        ResidualLayer(layers=(Conv3DLayer(filters=6, kernel_size=3, strides=2, padding="same"),)),
        GlobalAvgPoolLayer(),
        DenseLayer(units=3),
    ]
    plan, model = planned_and_built(specs)
    assert isinstance(model[2], torch.nn.BatchNorm3d)
    assert (plan.layers[1].params, plan.layers[1].frozen) == (8, 8)
    assert [r.output_shape for r in plan.layers] == [
        (4, 4, 8, 8),
        (4, 4, 8, 8),
        (4, 4, 8, 8),
        (4, 4, 8, 8),
        (6, 2, 4, 4),
        (6,),
        (3,),
    ]
    projection = plan.layers[4].children[-1]
    assert (projection.type_name, projection.params) == ("Conv3D", 4 * 6 + 6)
    assert plan.layers[5].type_name == "GlobalAveragePooling3D"
    x = torch.randn(2, *VIDEO)
    run_layers(plan, model, x)
    plan, model = planned_and_built([GlobalMaxPoolLayer()])
    assert plan.layers[0].type_name == "GlobalMaxPooling3D"
    assert torch.equal(model(x), x.amax((2, 3, 4)))
    # target_shape is written as the summary shows shapes: frames, height, width, channels
    plan, _ = planned_and_built([FlattenLayer(), ReshapeLayer(target_shape=(4, 8, 8, 3))])
    assert plan.layers[-1].output_shape == VIDEO


# ----------------------------------------------------------------------------- conv_lstm2d


@pytest.mark.parametrize("padding, kernel", [("valid", 3), ("same", 3), ("same", 2), ("valid", 1)])
@pytest.mark.parametrize("return_sequences", [False, True])
def test_conv_lstm2d_counts_and_shapes_follow_keras(padding, kernel, return_sequences):
    c_in, filters, t, h, w = 3, 5, 4, 7, 6
    plan, model = planned_and_built(
        [ConvLSTM2DLayer(filters=filters, kernel_size=kernel, padding=padding, return_sequences=return_sequences)],
        (c_in, t, h, w),
    )
    (record,) = plan.layers
    # Keras's ConvLSTM2D: 4 * filters * (k_h * k_w * (c_in + filters)) + 4 * filters
    assert record.params == 4 * filters * (kernel * kernel * (c_in + filters)) + 4 * filters
    assert sum(p.numel() for p in model.parameters()) == record.params
    ho, wo = keras_length(h, kernel, 1, padding), keras_length(w, kernel, 1, padding)
    assert record.output_shape == ((filters, t, ho, wo) if return_sequences else (filters, ho, wo))
    run_layers(plan, model, torch.randn(2, c_in, t, h, w))


def test_conv_lstm2d_is_an_lstm_of_convolutions():
    """With 1x1 kernels on 1x1 frames a ConvLSTM2D is an LSTM: the same numbers as nn.LSTM given
    the same weights (gates in the same order: input, forget, cell, output)."""
    plan, model = planned_and_built([ConvLSTM2DLayer(filters=3, kernel_size=1, return_sequences=True)], (2, 5, 1, 1))
    cell = model[0]
    assert torch.all(cell.bias[3:6] == 1) and torch.all(cell.bias[:3] == 0) and torch.all(cell.bias[6:] == 0)
    lstm = torch.nn.LSTM(2, 3, batch_first=True)
    with torch.no_grad():
        lstm.weight_ih_l0.copy_(cell.weight_ih[:, :, 0, 0])
        lstm.weight_hh_l0.copy_(cell.weight_hh[:, :, 0, 0])
        lstm.bias_ih_l0.copy_(cell.bias)
        lstm.bias_hh_l0.zero_()
    x = torch.randn(3, 2, 5, 1, 1)
    expected, _ = lstm(x[:, :, :, 0, 0].transpose(1, 2))
    got = model(x)[:, :, :, 0, 0].transpose(1, 2)
    assert torch.allclose(got, expected, atol=1e-6)


def test_conv_lstm2d_recurrent_kernel_starts_orthogonal():
    _, model = planned_and_built([ConvLSTM2DLayer(filters=4, kernel_size=3)])
    flat = model[0].weight_hh.detach().flatten(1)  # (16, 36): orthonormal rows
    assert torch.allclose(flat @ flat.T, torch.eye(16), atol=1e-5)


# ----------------------------------------------------------------------------- time_distributed


def test_time_distributed_then_lstm_is_the_classic_video_model():
    frame_stack = (Conv2DLayer(filters=4, kernel_size=3, activation="relu"), MaxPool2DLayer(), FlattenLayer())
    specs = [TimeDistributedLayer(layers=frame_stack), LSTMLayer(units=6), DenseLayer(units=2)]
    plan, model = planned_and_built(specs)
    td = plan.layers[0]
    assert td.output_shape == (4, 4 * 3 * 3)  # (frames, features)
    assert td.params == 3 * 3 * 3 * 4 + 4 and [c.output_shape for c in td.children] == [(4, 6, 6), (4, 3, 3), (36,)]
    assert td.mult_adds == 4 * td.children[0].mult_adds  # every frame
    x = torch.randn(2, *VIDEO)
    run_layers(plan, model, x)
    # the same layers on each frame alone
    body = model[0].body
    by_frame = torch.stack([body(x[:, :, t]) for t in range(4)], dim=1)
    with torch.no_grad():
        assert torch.allclose(model[0](x), by_frame, atol=1e-6)
    data = summary_data(plan)
    assert data["layers"][0]["output_shape"] == [None, 4, 36]
    assert data["layers"][0]["layers"][0]["output_shape"] == [None, 6, 6, 4]  # one frame's


def test_time_distributed_keeps_a_video_when_frames_stay_images():
    specs = [
        TimeDistributedLayer(layers=(Conv2DLayer(filters=5, kernel_size=3, padding="same"),)),
        Conv3DLayer(filters=2, kernel_size=2),
    ]
    plan, model = planned_and_built(specs)
    assert plan.layers[0].output_shape == (5, 4, 8, 8)
    run_layers(plan, model, torch.randn(2, *VIDEO))


def test_time_distributed_dense_on_every_step_of_a_sequence():
    specs = [LSTMLayer(units=4, return_sequences=True), TimeDistributedLayer(layers=(DenseLayer(units=3),))]
    plan, model = planned_and_built(specs, (6, 2))
    assert plan.layers[1].output_shape == (6, 3) and plan.layers[1].params == 4 * 3 + 3
    run_layers(plan, model, torch.randn(2, 6, 2))


# ----------------------------------------------------------------------------- errors


def error(specs, shape=VIDEO):
    with pytest.raises(ConfigError) as caught:
        plan_model(tuple(specs), shape)
    return caught.value


def test_conv3d_on_images_says_it_needs_frames():
    exc = error([Conv3DLayer(filters=4, kernel_size=3)], (3, 28, 28))
    assert "layer 1 (conv3d) needs frames" in exc.message and "28x28x3 (an image)" in exc.message
    assert "conv2d" in exc.hint and exc.key == "model.layers.0"
    for layer in (MaxPool3DLayer(), AvgPool3DLayer(), ConvLSTM2DLayer(filters=2, kernel_size=3)):
        assert "needs frames" in error([layer], (3, 28, 28)).message


def test_image_layers_on_a_video_point_to_3d_layers_and_time_distributed():
    exc = error([Conv2DLayer(filters=4, kernel_size=3)])
    assert "needs an image input" in exc.message and "4x8x8x3 (a video)" in exc.message
    assert "conv3d" in exc.hint and "time_distributed" in exc.hint
    exc = error([DenseLayer(units=3)])
    assert "4x8x8x3 (a video)" in exc.message and "global_avg_pool" in exc.hint


def test_time_distributed_whose_layers_cannot_take_a_frame():
    exc = error(
        [TimeDistributedLayer(layers=(Conv2DLayer(filters=2, kernel_size=3), Conv3DLayer(filters=2, kernel_size=1)))]
    )
    assert "layer 1 (time_distributed), its layer 2 (conv3d) needs frames" in exc.message
    assert "one frame of its input 4x8x8x3 is 8x8x3" in exc.message
    assert exc.key == "model.layers.0.time_distributed.layers.1"
    exc = error([TimeDistributedLayer(layers=(Conv2DLayer(filters=2, kernel_size=9),))])
    assert "a 9x9 kernel does not fit its input of shape 8x8x3" in exc.message
    exc = error([TimeDistributedLayer(layers=(FlattenLayer(), ReshapeLayer(target_shape=(-1, 3))))])
    assert "into 64x3 (a sequence" in exc.message and "an image or flat features" in exc.message
    exc = error([TimeDistributedLayer(layers=(DenseLayer(units=2),))], (3, 8, 8))
    assert "needs frames to apply its layers to" in exc.message and "8x8x3 (an image)" in exc.message


def test_a_config_error_names_the_file_line_and_shapes(tmp_path):
    config = video_config(layers=[{"conv3d": {"filters": 2, "kernel_size": 3}}, "flatten", {"dense": {"units": 3}}])
    config["data"]["synthetic"]["input_shape"] = [8, 8, 3]
    result = invoke("summary", write_config(tmp_path / "c.yaml", config))
    assert result.exit_code == 2
    assert "line" in result.output and "needs frames" in result.output and "8x8x3 (an image)" in result.output


# ----------------------------------------------------------------------------- summary, channels-last


def test_summary_shows_frames_height_width_channels():
    plan, _ = planned_and_built([Conv3DLayer(filters=4, kernel_size=(1, 3, 3)), GlobalAvgPoolLayer()], (3, 4, 8, 6))
    data = summary_data(plan)
    assert data["input_shape"] == [None, 4, 8, 6, 3]
    assert data["layers"][0]["output_shape"] == [None, 4, 6, 4, 4]
    assert data["layers"][0]["kernel"] == "1x3x3"
    text = summary_text(plan)
    assert "(None, 4, 6, 4, 4)" in text and "Conv3D" in text and "GlobalAveragePooling3D" in text
    assert "video shapes are (batch, frames, height, width, channels)" in text


def test_channels_last_3d_for_conv3d_weights_gives_the_same_outputs():
    plan, model = planned_and_built(
        [
            Conv3DLayer(filters=4, kernel_size=3, activation="relu"),
            TimeDistributedLayer(layers=(Conv2DLayer(filters=2, kernel_size=3),)),
            FlattenLayer(),
            DenseLayer(units=2),
        ],
        (3, 4, 9, 9),
    )
    x = torch.randn(2, 3, 4, 9, 9)
    before = model(x)
    assert use_channels_last(model, "auto")
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last_3d)
    assert model[2].body[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert torch.allclose(model(x), before, atol=1e-5)


# ----------------------------------------------------------------------------- any list of video layers

SIZE3 = st.sampled_from([1, 2, (1, 2, 2), (2, 1, 1)])
VIDEO_LAYERS = st.one_of(
    st.builds(
        Conv3DLayer,
        filters=st.integers(1, 3),
        kernel_size=SIZE3,
        strides=st.sampled_from([1, 2, (1, 2, 2)]),
        padding=st.sampled_from(["valid", "same", 0, 1]),
    ),
    st.builds(MaxPool3DLayer, pool_size=SIZE3, padding=st.sampled_from([0, 1]), ceil_mode=st.booleans()),
    st.builds(AvgPool3DLayer, pool_size=SIZE3, strides=st.sampled_from([None, 1]), ceil_mode=st.booleans()),
    st.builds(
        ConvLSTM2DLayer,
        filters=st.integers(1, 2),
        kernel_size=st.integers(1, 3),
        padding=st.sampled_from(["valid", "same"]),
        return_sequences=st.booleans(),
    ),
    st.builds(
        TimeDistributedLayer,
        layers=st.sampled_from(
            [
                (Conv2DLayer(filters=2, kernel_size=2),),
                (MaxPool2DLayer(pool_size=2, ceil_mode=True),),
                (FlattenLayer(), DenseLayer(units=3)),
                (DenseLayer(units=2),),
            ]
        ),
    ),
    st.just(BatchNormLayer()),
    st.just(GlobalAvgPoolLayer()),
    st.just(GlobalMaxPoolLayer()),
    st.just(FlattenLayer()),
    st.just(DropoutLayer(rate=0.1)),
    st.builds(LSTMLayer, units=st.integers(1, 2)),
    st.builds(DenseLayer, units=st.integers(1, 3)),
)


@settings(
    max_examples=int(os.environ.get("DLCLI_FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.sampled_from([(2, 3, 5, 5), (1, 2, 3, 4), (2, 5, 5)]), st.lists(VIDEO_LAYERS, min_size=1, max_size=3))
def test_any_list_of_video_layers_is_a_clean_error_or_runs_as_planned(shape, layers):
    try:
        plan = plan_model(tuple(layers), shape)
    except ConfigError as exc:
        assert exc.key and exc.key.startswith("model.layers.") and "layer" in str(exc)
        return
    model = build_model(plan)
    assert parameter_counts(model) == [(r.params, r.frozen) for r in plan.layers]
    run_layers(plan, model, torch.randn(2, *shape))


# ----------------------------------------------------------------------------- torchvision's video models

VIDEO_INPUTS = {  # an input each accepts (channels, frames, height, width)
    "r3d_18": (3, 4, 16, 16),
    "mc3_18": (3, 4, 16, 16),
    "r2plus1d_18": (3, 4, 16, 16),
    "s3d": (3, 16, 224, 224),  # its final pooling is 2x7x7
    "mvit_v1_b": (3, 16, 224, 224),  # position embeddings for 16x224x224
    "mvit_v2_s": (3, 16, 224, 224),
    "swin3d_t": (3, 4, 32, 32),
    "swin3d_s": (3, 4, 32, 32),
    "swin3d_b": (3, 4, 32, 32),
}


def test_every_torchvision_video_model_is_planned_on_the_meta_device():
    import torchvision.models as tvm

    assert sorted(VIDEO_INPUTS) == sorted(tvm.list_models(module=tvm.video))
    for name, shape in VIDEO_INPUTS.items():
        plan = plan_network(TorchvisionModel(torchvision=name), shape, 5, "softmax", ("softmax",))
        with torch.device("meta"):
            reference = tvm.get_model(name, num_classes=5)
        assert plan.trainable_params == sum(p.numel() for p in reference.parameters()), name
        assert plan.layers[-1].output_shape[:1] == (5,), name
        assert summary_data(plan)["torchvision"] == name


def test_r3d_18_adapted_to_one_channel_and_its_summary():
    plan = plan_network(TorchvisionModel(torchvision="r3d_18"), (1, 4, 16, 16), 7, "softmax", ("softmax",))
    # torchvision's own count (R3D_18_Weights' num_params) at 3 channels and Kinetics' 400 classes, less
    # two channels of the stem's 64 3x7x7 kernels and 393 classes of fc (512 weights and a bias each)
    assert plan.trainable_params == 33_371_472 - 2 * 64 * 3 * 7 * 7 - (400 - 7) * 513
    assert [r.name for r in plan.layers] == ["stem", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    data = summary_data(plan)
    assert data["input_shape"] == [None, 4, 16, 16, 1]
    assert data["layers"][0]["output_shape"] == [None, 4, 8, 8, 64]  # frames kept by the stem, pixels halved
    model = build_model(plan)
    assert model.stem[0].in_channels == 1 and model.fc.out_features == 7
    assert model(torch.randn(2, 1, 4, 16, 16)).shape == (2, 7)


def test_video_weights_of_torchvisions_layout_are_loaded_then_adapted(tmp_path):
    import torchvision.models as tvm

    original = tvm.video.mc3_18()
    path = tmp_path / "mc3.pt"
    torch.save(original.state_dict(), path)
    plan = plan_network(TorchvisionModel(torchvision="mc3_18", weights=str(path)), (1, 2, 16, 16), 4, "softmax")
    model = build_model(plan)
    assert torch.equal(model.stem[0].weight, original.stem[0].weight.sum(1, keepdim=True))
    assert torch.equal(model.layer1[0].conv1[0].weight, original.layer1[0].conv1[0].weight)
    assert model.fc.out_features == 4


def tv_error(name, shape):
    with pytest.raises(ConfigError) as caught:
        plan_network(TorchvisionModel(torchvision=name), shape, 5, "softmax")
    return caught.value


def test_video_model_errors_name_the_fix():
    exc = tv_error("r3d_19", VIDEO)
    assert "'r3d_19' is not a classification model" in exc.message and "r3d_18" in exc.hint
    assert "r2plus1d_18" in exc.message  # the video models are listed
    exc = tv_error("r3d_18", (3, 32, 32))
    assert "r3d_18 is a video model" in exc.message and "32x32x3 (images)" in exc.message
    exc = tv_error("resnet18", VIDEO)
    assert "resnet18 takes images" in exc.message and "4x8x8x3 (clips" in exc.message and "r3d_18" in exc.hint
    exc = tv_error("s3d", VIDEO)
    assert "s3d does not fit inputs of 4x8x8x3" in exc.message and "larger clips" in exc.hint


# ----------------------------------------------------------------------------- training and export


def video_config(layers=None, torchvision=None, input_shape=(4, 8, 8, 3), samples=24):
    return {
        "name": "video",
        "seed": 0,
        "device": "cpu",
        "data": {
            "dataset": "synthetic",
            "synthetic": {
                "task": "multiclass",
                "input_shape": list(input_shape),
                "classes": 3,
                "samples": samples,
                "test_samples": 8,
            },
        },
        "model": {"torchvision": torchvision} if torchvision else {"layers": layers},
        "loss": "sparse_categorical_crossentropy",
        "optimizer": {"name": "adam", "lr": 0.01},
        "training": {"epochs": 1, "batch_size": 8},
    }


def test_synthetic_input_shape_of_rank_4_is_frames_height_width_channels():
    from dlcli.config import load_config

    config = load_config(None, raw=video_config([{"dense": {"units": 3}}], input_shape=(4, 8, 6, 3)))
    assert config.data.synthetic.sample_shape == (3, 4, 8, 6)


def exported(run, tmp_path, fmt):
    out = tmp_path / fmt / f"model.{fmt}"
    result = invoke("export", run, "--format", fmt, "--out", out)
    assert result.exit_code == 0, result.output
    sidecar = json.loads((out.parent / "export.json").read_text())
    return sidecar


def export_modules(fmt):
    return ("onnx", "onnxscript", "onnxruntime") if fmt == "onnx" else ()


CONV3D_LAYERS = [
    {"conv3d": {"filters": 4, "kernel_size": 3, "padding": "same", "activation": "relu"}},
    {"batchnorm": {}},
    {"maxpool3d": {"pool_size": [1, 2, 2]}},
    {"conv_lstm2d": {"filters": 3, "kernel_size": 3, "padding": "same", "return_sequences": True}},
    {"time_distributed": {"layers": [{"conv2d": {"filters": 2, "kernel_size": 3}}, "flatten"]}},
    {"lstm": {"units": 4}},
    {"dense": {"units": 3, "activation": "softmax"}},
]


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_a_video_layer_model_trains_and_exports_verified(tmp_path, fmt):
    for module in export_modules(fmt):
        import_or_skip_unless_ci(module, f"{module} is not installed (the export extra)")
    run = trained_run(write_config(tmp_path / "v.yaml", video_config(CONV3D_LAYERS)), tmp_path / "runs")
    sidecar = exported(run, tmp_path, fmt)
    assert sidecar["input"]["shape"] == ["batch", 3, 4, 8, 8]
    assert max(sidecar["verified"]["max_abs_difference"].values()) <= 1e-5


@pytest.mark.parametrize("fmt", ["onnx", "pt2"])
def test_r3d_18_trains_and_exports_verified(tmp_path, fmt):
    for module in export_modules(fmt):
        import_or_skip_unless_ci(module, f"{module} is not installed (the export extra)")
    config = video_config(torchvision="r3d_18", input_shape=(4, 16, 16, 3), samples=8)
    run = trained_run(write_config(tmp_path / "r.yaml", config), tmp_path / "runs")
    sidecar = exported(run, tmp_path, fmt)
    assert max(sidecar["verified"]["max_abs_difference"].values()) <= 1e-5
