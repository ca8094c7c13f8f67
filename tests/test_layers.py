import pytest

from nst_engine.errors import LayerError
from nst_engine.layers import LAYER_INDEX, LAYER_NAMES, check_layer, min_input_size, parse_layers, stride


def test_names_follow_torchvision_indices() -> None:
    assert len(LAYER_NAMES) == 37  # torchvision's vgg19().features has 37 modules
    assert LAYER_INDEX["conv1_1"] == 0 and LAYER_INDEX["relu4_2"] == 22 and LAYER_INDEX["relu5_1"] == 29
    assert LAYER_NAMES[36] == "pool5"


def test_unknown_layer_suggests_nearest() -> None:
    with pytest.raises(LayerError, match="did you mean 'relu4_2'"):
        check_layer("relu4_20")
    with pytest.raises(LayerError, match="unknown VGG19 layer 'banana'"):
        check_layer("banana")


def test_parse_layers_dedupes_and_rejects_empty() -> None:
    assert parse_layers("relu1_1, relu2_1,relu1_1") == ("relu1_1", "relu2_1")
    with pytest.raises(LayerError):
        parse_layers(" , ")


def test_strides_and_minimum_size() -> None:
    assert stride("relu1_1") == 1 and stride("pool1") == 2 and stride("relu5_1") == 16
    assert min_input_size(["relu1_1", "relu5_1"]) == 16
