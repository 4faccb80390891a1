import pytest
import torch

from dlcli.errors import ConfigError
from dlcli.losses import check_last_layer, loss_spec, make_objective, prepare_targets
from dlcli.metrics import infer_mode


def test_softmax_with_binary_crossentropy_on_labels_is_rejected():
    with pytest.raises(ConfigError, match="binary_crossentropy does not fit this data") as info:
        loss_spec("binary_crossentropy", "multiclass")
    assert "sparse_categorical_crossentropy" in str(info.value)


def test_last_layer_must_fit_the_loss():
    with pytest.raises(ConfigError, match="applies sigmoid over 10 units"):
        check_last_layer("sparse_categorical_crossentropy", "multiclass", 10, 10, "sigmoid")
    with pytest.raises(ConfigError, match="has 5 units.*needs 10"):
        check_last_layer("categorical_crossentropy", "multiclass", 10, 5, "softmax")
    with pytest.raises(ConfigError, match="expects a sigmoid"):
        check_last_layer("binary_crossentropy", "binary", 2, 1, "softmax")
    check_last_layer("binary_crossentropy", "binary", 2, 1, "sigmoid")
    check_last_layer("mse", "regression", 2, 2, "linear")


def test_objectives_of_the_four_problem_types():
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.0, 3.0, 1.0]])
    labels = torch.tensor([0, 2])
    multi = make_objective("sparse_categorical_crossentropy", "multiclass", 3)
    assert multi.metric_name == "accuracy" and int(multi.metric_sum(logits, labels)) == 1
    assert torch.isclose(multi.loss_fn(logits, labels), torch.nn.functional.cross_entropy(logits, labels))

    binary = make_objective("binary_crossentropy", "binary", 2)
    y = prepare_targets(torch.tensor([1, 0, 1]), "binary_crossentropy", "binary")
    assert y.shape == (3, 1) and y.dtype == torch.float32
    out = torch.tensor([[3.0], [-2.0], [-1.0]])
    assert int(binary.metric_sum(out, y)) == 2
    expected = torch.nn.functional.binary_cross_entropy(torch.sigmoid(out), y)
    assert torch.isclose(binary.loss_fn(out, y), expected, atol=1e-6)

    multilabel = make_objective("binary_crossentropy", "multilabel", 2)
    y = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    assert multilabel.metric_per_sample == 2
    out = torch.tensor([[1.0, -1.0], [1.0, -1.0]])
    assert int(multilabel.metric_sum(out, y)) == 3
    assert torch.isclose(multilabel.loss_fn(out, y), torch.nn.functional.binary_cross_entropy(torch.sigmoid(out), y))

    regression = make_objective("mse", "regression", 1)
    assert regression.metric_name == "mae" and infer_mode(regression.metric_name) == "min"
    out, y = torch.tensor([[1.0], [3.0]]), torch.tensor([[0.0], [1.0]])
    assert float(regression.metric_sum(out, y)) == 3.0
    assert float(regression.loss_fn(out, y)) == 2.5  # (1 + 4) / 2
    assert float(make_objective("mae", "regression", 1).loss_fn(out, y)) == 1.5  # (1 + 2) / 2

    # categorical_crossentropy (one-hot in Keras) takes the same integer labels as the sparse one.
    categorical = make_objective("categorical_crossentropy", "multiclass", 3)
    assert prepare_targets(torch.tensor([0, 2]), "categorical_crossentropy", "multiclass").tolist() == [0, 2]
    assert torch.isclose(categorical.loss_fn(logits, labels), torch.nn.functional.cross_entropy(logits, labels))
