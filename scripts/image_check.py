#!/usr/bin/env python3
"""Client side of scripts/test-image.sh: free ports, and real requests to a running image.

  free-ports N                        N free loopback TCP ports, one per line
  torchserve URL KEY_FILE PHOTO STYLE POST the photo to URL/predictions/STYLE (inference key
                                      from KEY_FILE, "-" for none); checks 200, a PNG of the
                                      photo's size, painted (not the photo)
  kserve URL PHOTO STYLE              the same through the Open Inference Protocol v2
                                      (POST URL/v2/models/STYLE/infer, BYTES input "image")
Exit status 0 when every check passes; the failure is printed otherwise.
"""

from __future__ import annotations

import base64
import io
import json
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from PIL import Image, ImageChops, ImageStat

#: Mean absolute difference (0-255, over RGB) a painting must differ from its photo by at least.
MIN_DIFFERENCE = 10.0


def free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def _post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, body, headers)
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as error:
        return error.code, dict(error.headers), error.read()


def check_painting(photo: Path, painted: bytes, expect_png: bool = True) -> str:
    original = Image.open(photo).convert("RGB")
    result = Image.open(io.BytesIO(painted))
    if expect_png and result.format != "PNG":
        raise AssertionError(f"expected a PNG, got {result.format}")
    if result.size != original.size:
        raise AssertionError(f"painting is {result.size}, the photo {original.size}")
    difference = sum(ImageStat.Stat(ImageChops.difference(result.convert("RGB"), original)).mean) / 3
    if difference < MIN_DIFFERENCE:
        raise AssertionError(f"painting differs from the photo by {difference:.1f}/255 on average: not painted")
    return f"{result.format} {result.size[0]}x{result.size[1]}, mean difference from the photo {difference:.0f}/255"


def torchserve(url: str, key_file: str, photo: Path, style: str) -> str:
    headers = {"Content-Type": "image/jpeg", "Accept": "image/png"}
    if key_file != "-":
        headers["Authorization"] = "Bearer " + json.loads(Path(key_file).read_text())["inference"]["key"]
    started = time.monotonic()
    status, response_headers, body = _post(f"{url}/predictions/{style}", photo.read_bytes(), headers)
    took = time.monotonic() - started
    if status != 200:
        raise AssertionError(f"HTTP {status}: {body[:500]!r}")
    runtime = response_headers.get("X-Style-Runtime", "?")
    return f"{style}: 200 in {took:.1f}s, {check_painting(photo, body)}, runtime {runtime}"


def kserve(url: str, photo: Path, style: str) -> str:
    request = {"inputs": [{"name": "image", "shape": [1], "datatype": "BYTES",
                           "data": [base64.b64encode(photo.read_bytes()).decode("ascii")]}],
               "parameters": {"format": "png"}}
    started = time.monotonic()
    status, _, body = _post(f"{url}/v2/models/{style}/infer", json.dumps(request).encode(),
                            {"Content-Type": "application/json"})
    took = time.monotonic() - started
    if status != 200:
        raise AssertionError(f"HTTP {status}: {body[:500]!r}")
    (output,) = json.loads(body)["outputs"]
    if output["name"] != "stylized" or output["datatype"] != "BYTES":
        raise AssertionError(f"unexpected output {output['name']} {output['datatype']}")
    return f"{style} (v2): 200 in {took:.1f}s, {check_painting(photo, base64.b64decode(output['data'][0]))}"


def main(argv: list[str]) -> int:
    try:
        if argv[:1] == ["free-ports"]:
            print("\n".join(map(str, free_ports(int(argv[1])))))
        elif argv[:1] == ["torchserve"] and len(argv) == 5:
            print(torchserve(argv[1], argv[2], Path(argv[3]), argv[4]))
        elif argv[:1] == ["kserve"] and len(argv) == 4:
            print(kserve(argv[1], Path(argv[2]), argv[3]))
        else:
            print(__doc__, file=sys.stderr)
            return 2
    except (AssertionError, OSError, ValueError, KeyError) as error:
        print(f"image_check: FAILED: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
