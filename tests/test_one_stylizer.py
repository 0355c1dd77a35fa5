"""Handler, CLI and app paint through the one ``core.stylizer``: the same photo and settings
give byte-identical files from all three, on the same engine."""

from __future__ import annotations

import io

from PIL import Image
from ts.context import Context, RequestProcessor

from app import client, local
from core import codec
from handlers.fast_style import FastStyleHandler
from stylize.__main__ import main

from .conftest import ONNX_DIR, ts_metrics


def test_handler_cli_and_app_give_the_same_bytes(built_store, small_photo, tmp_path, capsys):
    photo = small_photo.copy()
    photo.thumbnail((120, 120))
    png = codec.encode(photo, "png")

    manifest = {"model": {"modelName": "udnie", "serializedFile": "udnie.onnx"}}
    context = Context("udnie", str(ONNX_DIR), manifest, 1, None, "0.12.0", metrics=ts_metrics())
    handler = FastStyleHandler()
    handler.initialize(context)
    context.request_processor = [RequestProcessor({"body": {"content-type": "image/png"}, "X-Strength": "0.8"})]
    [served] = handler.handle([{"body": bytearray(png)}], context)

    source = tmp_path / "in.png"
    source.write_bytes(png)
    assert main([str(source), "-o", str(tmp_path / "out"), "--style", "udnie", "--strength", "0.8",
                 "--no-progress"]) == 0
    printed = capsys.readouterr().out
    from_cli = (tmp_path / "out" / "in.png").read_bytes()

    params = client.FastOptions(strength=0.8, max_side=None).params()
    from_app = codec.encode(local.stylize(codec.decode(png), "udnie", params, ONNX_DIR), "png")

    runtime = handler.stylizer.runtime
    assert f"on {runtime}" in printed and local.stylizer("udnie", ONNX_DIR).runtime == runtime
    assert served == from_cli == from_app
    assert Image.open(io.BytesIO(served)).size == photo.size
