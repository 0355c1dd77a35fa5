#!/usr/bin/env python3
"""Docker HEALTHCHECK: exit 0 when TorchServe's ``/ping`` answers ``Healthy``.

With token authorization on (the image's default) TorchServe 0.12 refuses even ``/ping``
without the inference key, so the check reads ``key_file.json`` from the runtime folder;
when that key has expired it renews it through the loopback management API with the
file's API key, which is what a client must do too (TorchServe rewrites the file).
Python rather than curl because the slim runtime image has no curl.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request
from datetime import UTC, datetime
from pathlib import Path


def _keys(runtime_dir: Path) -> dict:
    try:
        return json.loads((runtime_dir / "key_file.json").read_text())
    except (OSError, ValueError):
        return {}


def _expired(entry: dict) -> bool:
    stamp = entry.get("expiration time", "")
    try:  # e.g. 2026-11-25T12:27:24.307547715Z: keep whole seconds
        expires = datetime.strptime(stamp.split(".")[0].rstrip("Z"), "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
    except ValueError:
        return False
    return expires <= datetime.now(UTC)


def _request(url: str, key: str | None, method: str = "GET", timeout: float = 4.0) -> bytes:
    request = urllib.request.Request(url, method=method)
    if key:
        request.add_header("Authorization", f"Bearer {key}")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def inference_key(runtime_dir: Path, management_port: int) -> str | None:
    keys = _keys(runtime_dir)
    entry = keys.get("inference")
    if not entry:
        return None  # token authorization is off
    if _expired(entry) and keys.get("API", {}).get("key"):
        _request(f"http://127.0.0.1:{management_port}/token?type=inference", keys["API"]["key"], "POST")
        entry = _keys(runtime_dir).get("inference", entry)
    return entry.get("key")


def healthy(port: int, runtime_dir: Path, management_port: int) -> bool:
    try:
        key = inference_key(runtime_dir, management_port)
        return json.loads(_request(f"http://127.0.0.1:{port}/ping", key)).get("status") == "Healthy"
    except (OSError, ValueError):
        return False


if __name__ == "__main__":
    env = os.environ
    ok = healthy(
        int(env.get("STYLE_INFERENCE_PORT", 8080)),
        Path(env.get("STYLE_RUNTIME_DIR", "/home/model-server/runtime")),
        int(env.get("STYLE_MANAGEMENT_PORT", 8081)),
    )
    sys.exit(0 if ok else 1)
