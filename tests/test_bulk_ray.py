"""``python -m stylize ... --engine ray``: the plain CLI's bytes on Ray Data, bad files recorded
and passed over, reruns that skip finished work, and an object-store round trip.

One embedded Ray (loopback only) serves the whole module, and the CLI joins it as it would
join a cluster's; the S3 service is moto's server on a free loopback port, stopped by its PID.
Photos are small variants of the real ones, in a few shared sizes so batches form.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("ray.data", reason="requirements-ray.txt (installed by the dev set)")
pytest.importorskip("moto.server", reason="moto[server] (requirements-dev.txt)")

import pyarrow.fs as pafs  # noqa: E402 - after the skips: ray[data] brings pyarrow's S3 support pinned

from stylize import ray_engine  # noqa: E402
from stylize.__main__ import main  # noqa: E402

# Ray Data reads its own deprecated settings when it sends its context to the actors.
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning:ray.data.context")

#: Longer side of each variant, and crops per size: a few dozen photos, several of one size.
SIDES = (48, 64, 80)
VARIANTS = 6
BAD = {"corrupt.jpg": "corrupt or truncated", "notes.txt": "not an image", "clip.mp4": "not supported yet"}


@pytest.fixture(scope="module")
def photos(content_photos, tmp_path_factory) -> Path:
    """A folder of small photos in mixed sizes (PNG and JPEG), a truncated JPEG, a text file and a video."""
    folder = tmp_path_factory.mktemp("photos")
    for source in content_photos:
        image = Image.open(source).convert("RGB")
        for side in SIDES:
            for index in range(VARIANTS):
                variant = image.crop((index * 7, index * 5, image.width - index * 3, image.height))
                variant.thumbnail((side, side))
                variant = variant.crop((0, 0, side - 8 * (index % 2), variant.height))  # two sizes per side
                if index % 3 == 0:
                    variant.save(folder / f"{source.stem}_{side}_{index}.jpg", quality=90)
                else:
                    variant.save(folder / f"{source.stem}_{side}_{index}.png")
    whole = next(folder.glob("*.jpg")).read_bytes()
    (folder / "corrupt.jpg").write_bytes(whole[: len(whole) // 3])
    (folder / "notes.txt").write_text("not an image\n")
    (folder / "clip.mp4").write_bytes(b"\0\0\0\x18ftypmp42" + bytes(64))
    return folder


def _good(photos: Path) -> list[Path]:
    return sorted(p for p in photos.iterdir() if p.name not in BAD)


@pytest.fixture(scope="module")
def ray_session():
    """One Ray for the module, started as the CLI starts its own (loopback only); the CLI finds
    it running, uses it and leaves it up."""
    import ray

    assert ray_engine.start_ray(None, ray_engine.local_cores())
    try:
        yield
    finally:
        ray.shutdown()


def _run(capsys, *args: object) -> tuple[int, str, str]:
    code = main([*map(str, args), "--no-progress"])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _manifest(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _last_run(text: str) -> list[dict]:
    """The records the last run wrote (after its ``run`` line); every one of them whole."""
    lines = [line for line in text.splitlines() if line.strip()]
    start = max(i for i, line in enumerate(lines) if line.startswith('{"run"'))
    return _manifest("\n".join(lines[start + 1 :]))


def _outcomes(records: list[dict]) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in records if "input" in r}


@pytest.fixture(scope="module")
def plain(photos, tmp_path_factory) -> Path:
    """The plain CLI's paintings of the folder, the reference for every Ray run."""
    out = tmp_path_factory.mktemp("plain")
    assert main([str(photos), "-o", str(out), "--style", "wave", "--no-progress"]) == 1  # the bad files
    return out


def test_ray_paints_the_plain_clis_bytes_and_records_bad_files(photos, plain, tmp_path, capsys, ray_session):
    out = tmp_path / "ray"
    code, summary, err = _run(capsys, photos, "-o", out, "--style", "wave", "--engine", "ray")
    assert code == 1, summary + err  # the bad files, as in the plain CLI
    good = _good(photos)
    assert f"{len(good)} of {len(good) + len(BAD)} written" in summary
    for source in good:
        name = f"{source.stem}.png"
        assert (out / name).read_bytes() == (plain / name).read_bytes(), name
    outcomes = _outcomes(_manifest((out / ray_engine.MANIFEST).read_text()))
    assert len(outcomes) == len(good) + len(BAD)
    for name, words in BAD.items():
        assert outcomes[name]["status"] in ("failed", "skipped") and words in outcomes[name]["reason"], outcomes[name]
        assert f"{photos / name}: " in err, err  # named on stderr as it happens
    assert outcomes["clip.mp4"]["status"] == "skipped"
    assert all(outcomes[p.name]["status"] == "painted" for p in good)
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "no temporary file left behind"


def test_rerun_skips_finished_work(photos, tmp_path, capsys, ray_session):
    out = tmp_path / "ray"
    assert _run(capsys, photos, "-o", out, "--style", "wave", "--engine", "ray")[0] == 1
    manifest = out / ray_engine.MANIFEST
    # A job stopped part-way: three paintings never written, the last line cut short by the crash.
    lost = _good(photos)[:3]
    for source in lost:
        (out / f"{source.stem}.png").unlink()
    manifest.write_text(manifest.read_text()[:-20])
    kept = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png")}
    code, summary, _ = _run(capsys, photos, "-o", out, "--style", "wave", "--engine", "ray")
    assert code == 1, summary
    assert f"({len(lost)} painted, 3 failed, {len(kept)} kept)" in summary, summary
    assert {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.name in kept} == kept
    second = _last_run(manifest.read_text())
    painted = sorted(Path(r["input"]).name for r in second if r.get("status") == "painted")
    assert painted == sorted(p.name for p in lost)
    assert {Path(r["input"]).name for r in second if r.get("status") == "failed"} == {"corrupt.jpg", "notes.txt"}


def test_shared_network_calls_keep_the_bytes_where_the_engine_allows(photos, tmp_path, capsys, ray_session):
    """ONNX Runtime paints a batch exactly as one photo at a time: same-size photos share calls."""
    engine = ("--style", "wave", "--backend", "onnxruntime", "--precision", "fp32", "--threads", "1")
    assert _run(capsys, photos, "-o", tmp_path / "plain", *engine)[0] == 1
    code, summary, _ = _run(capsys, photos, "-o", tmp_path / "ray", *engine, "--engine", "ray", "--actors", "2")
    assert code == 1 and "2 actors x 1 thread" in summary, summary
    records = _manifest((tmp_path / "ray" / ray_engine.MANIFEST).read_text())
    assert max(r.get("batch", 0) for r in records) > 1, "no photos shared a network call"
    for source in _good(photos):
        name = f"{source.stem}.png"
        assert (tmp_path / "ray" / name).read_bytes() == (tmp_path / "plain" / name).read_bytes(), name


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """moto's S3 server on a free loopback port, with test credentials; stopped by its PID."""
    port = _free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    with pytest.MonkeyPatch.context() as env, log.open("wb") as sink:
        for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                            "AWS_DEFAULT_REGION": "us-east-1", "AWS_EC2_METADATA_DISABLED": "true"}.items():
            env.setenv(name, value)
        server = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                                  stdout=sink, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    urllib.request.urlopen(f"{endpoint}/moto-api/", timeout=2).close()
                    break
                except OSError:
                    if server.poll() is not None or time.monotonic() > deadline:
                        pytest.fail(f"moto server did not start: {log.read_text()[-2000:]}")
                    time.sleep(0.2)
            fs = pafs.S3FileSystem(endpoint_override=f"127.0.0.1:{port}", scheme="http", region="us-east-1",
                                   allow_bucket_creation=True)
            fs.create_dir("photos")
            yield endpoint, fs
        finally:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def test_object_store_round_trip(photos, plain, s3, capsys, ray_session):
    endpoint, fs = s3
    sources = [*_good(photos)[:8], photos / "corrupt.jpg"]
    for source in sources:
        with fs.open_output_stream(f"photos/in/{source.name}") as stream:
            stream.write(source.read_bytes())
    command = ("s3://photos/in", "-o", "s3://photos/out", "--style", "wave", "--engine", "ray",
               "--s3-endpoint", endpoint)
    code, summary, err = _run(capsys, *command)
    assert code == 1 and "8 painted, 1 failed" in summary, summary + err
    for source in sources[:-1]:
        with fs.open_input_stream(f"photos/out/{source.stem}.png") as stream:
            assert stream.read() == (plain / f"{source.stem}.png").read_bytes(), source.name
    with fs.open_input_stream(f"photos/out/{ray_engine.MANIFEST}") as stream:
        outcomes = _outcomes(_manifest(stream.read().decode()))
    assert outcomes["corrupt.jpg"]["status"] == "failed" and "corrupt" in outcomes["corrupt.jpg"]["reason"]
    assert outcomes[sources[0].name]["output"] == f"s3://photos/out/{sources[0].stem}.png"
    # A rerun skips what is done: nothing painted again, the corrupt file tried again.
    code, summary, _ = _run(capsys, *command)
    assert code == 1 and "0 painted, 1 failed, 8 kept" in summary, summary


def test_urls_and_ray_options_need_the_ray_engine(photos, tmp_path, capsys):
    code, _, err = _run(capsys, "s3://photos/in", "-o", tmp_path)
    assert code == 2 and "need --engine ray" in err
    code, _, err = _run(capsys, photos, "-o", tmp_path, "--actors", "4")
    assert code == 2 and "--actors needs --engine ray" in err


def test_without_ray_it_says_how_to_install(photos, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # as on an install without requirements-ray.txt
    code, _, err = _run(capsys, photos, "-o", tmp_path, "--engine", "ray")
    assert code == 2 and "pip install -r requirements-ray.txt" in err


def test_the_pool_takes_every_core_once():
    assert ray_engine.plan([2], threads=0, actors=None) == ray_engine.Plan(1, 2, 0, 1)
    assert ray_engine.plan([2], threads=1, actors=None) == ray_engine.Plan(2, 1, 1, 2)
    assert ray_engine.plan([0, 16, 16, 8], threads=2, actors=None).actors == 20  # a head without CPUs
    assert ray_engine.plan([16, 16], threads=0, actors=None) == ray_engine.Plan(2, 16, 0, 2)
    assert ray_engine.plan([4], threads=2, actors=5) == ray_engine.Plan(5, 2, 2, 2)  # the pool grows as nodes come
    assert ray_engine.plan([2], threads=4, actors=None).fit == 0  # no room: refused before any work


def _bench_row(small_s: float, large_s: float, cpu_per_photo: float, count: int = 10) -> dict:
    marginal = count / (large_s - small_s)
    return {"seconds": {str(count): small_s, str(2 * count): large_s}, "cores_busy": 2,
            "cpu_seconds": {str(count): 5.0, str(2 * count): 5.0 + count * cpu_per_photo},
            "cpu_s_per_photo": cpu_per_photo, "end_to_end_per_s": 2 * count / large_s, "marginal_per_s": marginal,
            "fixed_s": small_s - count / marginal, "core_s_per_photo": 2 / marginal}


@pytest.mark.parametrize(("ray_marginal_s", "verdict"), [(11.0, "met"), (20.0, "not met")])
def test_bulk_benchmark_report_judges_the_target_from_the_numbers(ray_marginal_s, verdict):
    from bench import bulk

    plain = _bench_row(2.0, 12.0, 0.1)  # 1 photo/s once running
    ray = _bench_row(12.0, 12.0 + ray_marginal_s, 0.11)
    runs = {"plain": plain, "ray": ray, "plain --threads 1": plain, "ray --threads 1 --actors 2": ray}
    results = {"cpu_model": "test CPU", "flags": ["avx2"], "cores": 2, "style": "wave", "photos": [10, 20],
               "repeats": 1, "sizes": [[64, 48]], "load_before": (1.0, 1.0, 1.0), "load_after": (1.0, 1.0, 1.0),
               "runs": runs, "at": "2026-01-01 00:00",
               "pairs": [{"ray": "ray", "plain": "plain", "same_bytes": True},
                         {"ray": "ray --threads 1 --actors 2", "plain": "plain --threads 1", "same_bytes": True},
                         {"ray": "ray --threads 1 --actors 2", "plain": "plain", "same_bytes": None}]}
    text = bulk.report(results)
    ratio = 10.0 / ray_marginal_s
    assert f"| `ray` / `plain` | yes | **{ratio:.2f}** ({verdict})" in text, text
    assert "avx2" in text and "test CPU" in text and "N nodes of C cores" in text
