"""The networks: TF semantics of the Engstrom port, sizes, and trained-weight behaviour."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core import codec
from export.weights import load_engstrom
from networks import (
    EngstromNet,
    MultistyleNet,
    SizePreserving,
    StyleTransformer,
    TFConvTranspose,
    TransformerNet,
    load_pytorch_examples,
)
from networks.engstrom import even_size_same_padding, tf_same_padding


def test_tf_same_padding_matches_tensorflow_rule():
    # TF: out = ceil(n / s); total pad = max((out - 1) * s + k - n, 0); the extra pixel after.
    assert tf_same_padding(64, 3, 2) == (0, 1)
    assert tf_same_padding(65, 3, 2) == (1, 1)
    assert tf_same_padding(10, 9, 1) == (4, 4)
    for n in range(2, 40, 2):
        assert tf_same_padding(n, 3, 2) == even_size_same_padding(3, 2)


def test_transposed_conv_is_the_gradient_of_same_conv():
    """TF defines conv2d_transpose as the gradient of a 'SAME' conv; check ours is exactly
    that adjoint, which pins down the pixel alignment (an off-by-one shift fails here)."""
    torch.manual_seed(0)
    layer = TFConvTranspose(5, 4, 3, 2)
    y = torch.randn(1, 5, 6, 7)
    assert layer._pad_before == 0
    ours = layer.conv(y)[..., :12, :14]
    kernel = layer.conv.weight  # [in=5, out=4, 3, 3] == conv weight [out_c=5, in_c=4, 3, 3]
    x = torch.zeros(1, 4, 12, 14, requires_grad=True)
    top, bottom = tf_same_padding(12, 3, 2)
    left, right = tf_same_padding(14, 3, 2)
    conv = F.conv2d(F.pad(x, (left, right, top, bottom)), kernel, stride=2)
    assert conv.shape[-2:] == y.shape[-2:]
    (gradient,) = torch.autograd.grad(conv, x, grad_outputs=y)
    torch.testing.assert_close(ours, gradient, rtol=1e-5, atol=1e-5)
    shifted = F.conv_transpose2d(y, kernel, stride=2, padding=1, output_padding=1)
    assert not torch.allclose(shifted, gradient, atol=1e-3)


@pytest.mark.parametrize(("network", "count", "keys"), [
    (EngstromNet, 48, {"residuals.4.conv2.conv.weight", "residuals.4.conv2.norm.scale", "deconv2.norm.shift"}),
    (MultistyleNet, 54, {"contract.0.conv.weight", "res.5.conv2.norm.scale", "expand.2.norm.shift"}),
    (StyleTransformer, 84, {"contract.0.conv.bias", "residual.4.conv1.norm.scale.weight", "expand.2.norm.shift.bias"}),
])
def test_shared_blocks_keep_each_familys_checkpoint_keys(network, count, keys):
    """The blocks in networks/blocks.py are shared; the state-dict keys (what the weight
    porters and saved checkpoints address) stay each family's."""
    state = network().state_dict()
    assert len(state) == count and keys <= state.keys()
    assert not any(key.startswith("contract.") and ".norm." in key for key in state if network is StyleTransformer)
    assert not any(key.endswith("conv.bias") for key in state if network is not StyleTransformer), "bias-free convs"


@pytest.mark.parametrize("network", [EngstromNet, TransformerNet])
@pytest.mark.parametrize("size", [(1, 1), (2, 3), (17, 31), (64, 48), (101, 77)])
def test_output_has_input_size(network, size):
    net = SizePreserving(network().eval())
    with torch.no_grad():
        out = net(torch.rand(1, 3, *size) * 255)
    assert out.shape == (1, 3, *size)
    assert float(out.min()) >= 0 and float(out.max()) <= 255


def test_engstrom_manifest_matches_network(mirror):
    """The README's layout facts, checked: 48 variables, kernels where it says, TF layouts."""
    import json

    manifest = json.loads((mirror / "engstrom" / "udnie" / "manifest.json").read_text())
    assert len(manifest) == 48
    shape = {int(k.split("_")[1]) if "_" in k else 0: v["shape"] for k, v in manifest.items()}
    assert shape[0] == [9, 9, 3, 32] and shape[45] == [9, 9, 32, 3]
    assert shape[39] == [3, 3, 64, 128] and shape[42] == [3, 3, 32, 64]  # [kh, kw, out, in]
    assert all(shape[k] == [3, 3, 128, 128] for k in (9, 12, 15, 18, 21, 24, 27, 30, 33, 36))
    # shift (created first) is initialised to 0 and scale to 1 in TF; trained scales stay
    # mostly positive while shifts centre near zero. Swapped, the network would blow up.
    folder = mirror / "engstrom" / "udnie"
    shift = np.fromfile(folder / "Variable_1", "<f4")
    scale = np.fromfile(folder / "Variable_2", "<f4")
    assert abs(float(np.median(shift))) < abs(float(np.median(scale)))


def _luma_structure(array: np.ndarray) -> np.ndarray:
    """Coarse luminance layout (16x16 blocks) used to compare compositions."""
    luma = array.mean(axis=0)
    h, w = (luma.shape[0] // 16) * 16, (luma.shape[1] // 16) * 16
    return luma[:h, :w].reshape(h // 16, 16, w // 16, 16).mean(axis=(1, 3)).ravel()


@pytest.mark.parametrize("style", ["la_muse", "rain_princess", "scream", "udnie", "wave", "wreck"])
def test_trained_engstrom_weights_paint_the_photo(style, mirror, small_photo):
    """A faithful port paints: output far from the photo, not flat, same composition."""
    net = SizePreserving(load_engstrom(mirror / "engstrom" / style))
    x = codec.to_array(small_photo)
    with torch.no_grad():
        y = net(torch.from_numpy(x)[None])[0].numpy()
    assert np.abs(y - x).mean() > 15, "output barely differs from the photo"
    assert y.std() > 25, "flat output: the weights are not laid out right"
    correlation = np.corrcoef(_luma_structure(x), _luma_structure(y))[0, 1]
    assert correlation > 0.3, f"composition lost (corr {correlation:.2f}): noise, not a painting"


def test_pytorch_examples_checkpoint_with_old_running_stats_loads(tmp_path):
    """Checkpoints saved by old PyTorch carry InstanceNorm running stats; they are dropped."""
    reference = TransformerNet()
    state = reference.state_dict()
    for i in range(1, 6):
        state[f"in{i}.running_mean"] = torch.zeros(state[f"in{i}.weight"].shape)
        state[f"in{i}.running_var"] = torch.ones(state[f"in{i}.weight"].shape)
    state["res1.in1.running_mean"] = torch.zeros(128)
    path = tmp_path / "old.pth"
    torch.save(state, path)
    net = load_pytorch_examples(path)
    for name, value in reference.state_dict().items():
        torch.testing.assert_close(net.state_dict()[name], value)
    x = torch.rand(1, 3, 32, 32) * 255
    torch.testing.assert_close(net(x), reference.eval()(x))


def test_pytorch_examples_loader_refuses_foreign_keys(tmp_path):
    state = TransformerNet().state_dict()
    state["not_a_layer.weight"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad.pth")
    with pytest.raises(RuntimeError, match="not_a_layer"):
        load_pytorch_examples(tmp_path / "bad.pth")
