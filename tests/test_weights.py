"""Fetching weights: mirror, download with checksum, and clear failures offline."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from export import weights


def test_fetch_from_mirror_verifies_and_caches(tmp_path, mirror):
    folder = weights.fetch("wave", cache=tmp_path / "cache", mirror=mirror)
    assert folder == tmp_path / "cache" / "engstrom" / "wave"
    assert len(list(folder.iterdir())) == 49
    assert weights.sha256_of(folder / "Variable_3") == weights._CHECKSUMS["wave"]["Variable_3"]


def test_corrupt_mirror_file_is_refused_and_removed(tmp_path, mirror):
    bad_mirror = tmp_path / "mirror"
    shutil.copytree(mirror / "engstrom" / "scream", bad_mirror / "engstrom" / "scream")
    victim = bad_mirror / "engstrom" / "scream" / "Variable_6"
    victim.chmod(0o644)
    data = bytearray(victim.read_bytes())
    data[100] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(weights.WeightsUnavailable, match="SHA-256 mismatch"):
        weights.fetch("scream", cache=tmp_path / "cache", mirror=bad_mirror)
    assert not (tmp_path / "cache" / "engstrom" / "scream" / "Variable_6").exists()


def test_download_uses_pinned_url_and_checksum(tmp_path, mirror, monkeypatch):
    """The real download path, against a loopback HTTP server standing in for GitHub."""
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror / "engstrom"))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        monkeypatch.setattr(weights, "ENGSTROM_URL", f"http://127.0.0.1:{httpd.server_port}/{{style}}/{{file}}")
        folder = weights.fetch("la_muse", cache=tmp_path / "cache", mirror=None)
    finally:
        httpd.shutdown()
    assert all(weights.sha256_of(folder / f) == h for f, h in weights._CHECKSUMS["la_muse"].items())


def test_offline_without_mirror_says_how_to_fix(tmp_path, monkeypatch):
    monkeypatch.delenv("STYLE_WEIGHTS_MIRROR", raising=False)
    # Port 9 on loopback refuses at once: the same failure as a machine with no internet.
    monkeypatch.setattr(weights, "ENGSTROM_URL", "http://127.0.0.1:9/{style}/{file}")
    with pytest.raises(weights.WeightsUnavailable) as error:
        weights.fetch("udnie", cache=tmp_path / "cache")
    message = str(error.value)
    assert "udnie" in message and "127.0.0.1:9" in message and "--mirror" in message
    assert not any((tmp_path / "cache").rglob("Variable*")), "no partial files may be left"


def test_unknown_style_lists_known_ones(tmp_path):
    with pytest.raises(weights.WeightsUnavailable, match="Known: .*udnie"):
        weights.fetch("van_gogh", cache=tmp_path)
