"""Request parsing: raw body, multipart fields and JSON come out the same."""

from __future__ import annotations

import base64

import pytest

from core.codec import InputError
from core.request import Param, parse_request

PARAMS = {"max_side": Param(int, None, low=16, high=4096), "preserve_colors": Param(bool, False)}


def parse(row, content_type=""):
    return parse_request(row, content_type, lambda n: n == "image", PARAMS, "image")


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
