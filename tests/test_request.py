"""Request parsing: raw body, multipart fields and JSON come out the same."""

from __future__ import annotations

import base64
from types import SimpleNamespace

import pytest

from core.codec import InputError
from core.request import Param, RequestForm
from core.torchserve import FORM_URLENCODED, parse_row, reason_phrase

PARAMS = {"max_side": Param(int, None, low=16, high=4096), "preserve_colors": Param(bool, False)}


def parse(row, content_type="", params=PARAMS):
    """A TorchServe row read (``core.torchserve``) and its parameters checked, as a service does."""
    form = RequestForm("image", params)
    request = parse_row(row, content_type, form)
    images = {"image": request.photo} if request.photo is not None else {}
    return SimpleNamespace(images=images, params=form.parse_params(request.params))


def test_raw_multipart_and_json_agree():
    data = b"\x89PNG fake"
    raw = parse({"body": bytearray(data)}, "image/png")
    multipart = parse({"image": bytearray(data), "max_side": b"64"})
    json_body = parse({"body": {"image": base64.b64encode(data).decode(), "max_side": 64}}, "application/json")
    assert raw.images["image"] == multipart.images["image"] == json_body.images["image"] == data
    assert multipart.params["max_side"] == json_body.params["max_side"] == 64
    assert raw.params == {"max_side": None, "preserve_colors": False}


@pytest.mark.parametrize(
    "row, content_type, words",
    [
        ({"body": b"{not json"}, "application/json", "not valid JSON"),
        ({"body": [1, 2]}, "application/json", "must be an object"),
        ({"body": {"image": "***"}}, "application/json", "not valid base64"),
        ({"image": b"x", "colour": b"red"}, "", "unknown parameter"),
        ({"image": b"x", "max_side": b"huge"}, "", "must be int"),
        ({"image": b"x", "max_side": b"8"}, "", "at least 16"),
        ({"image": b"x", "preserve_colors": b"maybe"}, "", "must be bool"),
        ({"body": "plain text"}, "text/plain", "not an image"),
    ],
)
def test_bad_requests_name_the_problem(row, content_type, words):
    with pytest.raises(InputError, match=words):
        parse(row, content_type)


MULTIPART = "multipart/form-data; boundary=x"


def _refusal(row, content_type="") -> InputError:
    with pytest.raises(InputError) as error:
        parse(row, content_type)
    return error.value


def test_a_text_file_sent_as_the_image_is_415_naming_it():
    """curl -F image=@notes.txt: TorchServe hands a text/* part over as str."""
    error = _refusal({"image": "meeting notes\nbuy milk\n"}, MULTIPART)
    assert error.status == 415, error
    assert "field 'image'" in str(error) and "text file" in str(error) and "not an image" in str(error)


def test_base64_text_in_an_image_field_still_works():
    data = b"\x89PNG fake"
    text = base64.b64encode(data).decode()
    assert parse({"image": text}, MULTIPART).images["image"] == data
    assert parse({"image": text}).images["image"] == data  # KServe v2 BYTES input: base64 text
    bad = _refusal({"image": "%%%"})  # not multipart (KServe, JSON): still a bad base64 field
    assert bad.status == 400 and "not valid base64" in str(bad)


def test_a_form_encoded_body_says_to_set_a_content_type():
    """curl --data-binary @photo.jpg without -H: the frontend decodes the body as a form, so the
    handler sees odd field names (here a name with U+FFFD, as binary bytes become) and no image."""
    for row in ({"caf\ufffd\x00\x10JFIF": b"\x01", "strength": b"0.5"}, {"strength": b"0.5"}):
        error = _refusal(row, FORM_URLENCODED)
        assert error.status == 415, error
        assert "Content-Type" in str(error) and "image/jpeg" in str(error), error
        assert "\ufffd" not in str(error) and "JFIF" not in str(error)


def test_unknown_field_names_the_image_field():
    """curl -F photo=@x.jpg: the message says where the image goes."""
    error = _refusal({"photo": b"\xff\xd8 jpeg bytes"}, MULTIPART)
    assert error.status == 400 and "unknown parameter(s): photo" in str(error)
    assert "the image goes in field 'image'" in str(error), error


def test_unknown_binary_field_names_are_escaped_and_capped():
    names = {"\x00" + chr(0xFFFD) * 1500 + str(i): b"1" for i in range(40)}
    message = str(_refusal({"image": b"x", **names}, MULTIPART))
    assert message.isascii() and message.isprintable() and len(message) < 600, message
    assert "and 35 more" in message


def test_an_echoed_parameter_value_is_escaped_and_capped():
    message = str(_refusal({"image": b"x", "max_side": ("\u00e9\x00" * 5000).encode()}))
    assert "parameter 'max_side' must be int" in message
    assert message.isascii() and message.isprintable() and len(message) < 200, message


def test_reason_phrase_is_one_short_line_of_ascii():
    """TorchServe frames the phrase by character count but sends UTF-8 bytes: one non-ASCII
    character kills the worker. The JSON body keeps the whole message."""
    phrase = reason_phrase("unknown parameter(s): caf\u00e9\r\nX-Evil: 1 " + "x" * 500)
    assert phrase.isascii() and phrase.isprintable() and len(phrase) <= 200, phrase
    assert phrase.startswith("unknown parameter(s): caf\\xe9  X-Evil: 1")
    assert reason_phrase("plain message") == "plain message"


@pytest.mark.parametrize("raw, words", [(b"10", "at most 9"), (b"-1", "at least 0"), (b"fast", "must be int")])
def test_png_compression_is_validated_by_name(raw, words):
    from core.style_options import PARAMS as FAST_PARAMS

    with pytest.raises(InputError, match=f"parameter 'png_compression' .*{words}"):
        parse({"image": b"x", "png_compression": raw}, "", FAST_PARAMS)
    parsed = parse({"image": b"x", "png_compression": b"9"}, "", FAST_PARAMS)
    assert parsed.params["png_compression"] == 9
