"""``python -m stylize ... --engine ray``: the same batch on Ray Data, on this machine or a cluster.

The driver (this process) lists the inputs (local folders or object-store URLs, through
``pyarrow.fs``, the filesystem layer Ray Data itself reads with), works out what is left to do
from the manifest and the outputs already there, and streams the rest through a pool of
actors. Each actor holds one painter, opened exactly as the plain CLI opens it
(``stylize.__main__.open_stylizer``: the one runtime, its per-machine engine choice included),
reads its photos, paints them and writes the paintings itself, and returns one outcome per
photo. The driver appends each outcome to the manifest as it arrives, so a job stopped at
any point resumes where it stopped, and one bad photo is a line in the manifest, not the end
of the job.

The same bytes as the plain CLI:

- an actor runs its engine with the CLI's settings, ``--threads`` included: OpenVINO's
  kernels split their sums differently with one thread than with several, so the thread
  count is part of what decides the bytes;
- photos of one size share a network call only where this engine paints each photo of a
  batch exactly as it paints it alone, which the actor checks when it starts
  (``shares_calls``); elsewhere each photo gets its own call, as in the plain CLI.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import os
import socket
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlparse

import numpy as np
from PIL import Image
from tqdm import tqdm

from core import codec, settings
from core.codec import InputError, Limits
from core.files import atomic_write
from core.paths import ROOT
from core.photos import default_parity_photo
from stylize.batch import Report, _refused, _unreadable, output_names

INSTALL_HINT = ("--engine ray needs Ray Data: .venv/bin/pip install -r requirements-ray.txt "
                "(scripts/install.sh --dev installs it too)")
#: The job's record, in the output location beside the paintings.
MANIFEST = "stylize-manifest.jsonl"
#: What a photo folder may also hold; the video path does not exist yet, so these are named
#: in the manifest as not supported rather than refused as "not an image".
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".3gp"})
#: Photos per actor call: enough for same-size photos to meet in one network call, few enough
#: that the pool balances and a lost actor repeats little.
BATCH_SIZE = 8
#: Pixels per network call: photos of one size are batched up to this, so a batch of large
#: photos never holds more activations than one large photo would.
BATCH_PIXELS = 2_000_000
#: Concurrent reads and writes per actor: object-store requests wait on the network, not the CPU.
IO_THREADS = 8
#: An object store has no append: its manifest is rewritten whole (one PUT) at most this often.
MANIFEST_PUT_SECONDS = 10.0
#: Without a terminal (a cluster job's log), a progress line this often instead of a bar.
PROGRESS_LINE_SECONDS = 30.0
#: Failures listed in the summary; the manifest has them all.
SUMMARY_LINES = 50
#: The embedded Ray's shared-memory store: only task lists and outcomes pass through it
#: (photos are read and written by the actors), so it is kept small.
OBJECT_STORE_BYTES = 256 * 2**20
#: Environment that decides the bytes (tiling threshold, engine settings, the choice cache):
#: the driver's, handed to its actors.
SETTINGS_PREFIX = "STYLE_"

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# Locations: local paths and object-store URLs, through pyarrow.fs
# ---------------------------------------------------------------------------------------


def is_url(location: str | os.PathLike) -> bool:
    return isinstance(location, str) and "://" in location


def s3_endpoint(given: str | None) -> str | None:
    """``--s3-endpoint``, else the AWS SDK's own variables for a custom endpoint."""
    return given or os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None


class Filesystems:
    """The pyarrow filesystem of each location, made once per bucket: an S3 filesystem holds a
    client (and, without an endpoint, asks AWS for the bucket's region when made)."""

    def __init__(self, endpoint: str | None):
        self.endpoint = endpoint
        self._made: dict[tuple[str, str], Any] = {}

    def resolve(self, location: str) -> tuple[Any, str]:
        """``(filesystem, path in its terms)`` for a local path or a URL."""
        import pyarrow.fs as pafs

        if not is_url(location):
            if ("", "") not in self._made:
                self._made[("", "")] = pafs.LocalFileSystem()
            return self._made[("", "")], os.path.abspath(location)
        parsed = urlparse(location)
        path = (parsed.netloc + parsed.path).rstrip("/")
        key = (parsed.scheme, parsed.netloc)
        if key not in self._made:
            if parsed.scheme == "s3" and self.endpoint:
                service = urlparse(self.endpoint if "://" in self.endpoint else f"https://{self.endpoint}")
                region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
                self._made[key] = pafs.S3FileSystem(endpoint_override=service.netloc, scheme=service.scheme,
                                                    region=region)
            else:
                self._made[key] = pafs.FileSystem.from_uri(location)[0]
        return self._made[key], path

    def is_local(self, location: str) -> bool:
        return not is_url(location) or urlparse(location).scheme == "file"

    def read(self, location: str) -> bytes:
        fs, path = self.resolve(location)
        with fs.open_input_stream(path) as stream:
            return stream.read()

    def write(self, location: str, data: bytes) -> None:
        """Atomically: a local file is written under a temporary name and renamed; an object
        is one PUT (or one completed multipart upload), visible whole or not at all."""
        fs, path = self.resolve(location)
        if self.is_local(location):
            atomic_write(path, data)
            return
        with fs.open_output_stream(path) as stream:
            stream.write(data)


def join(location: str, name: str) -> str:
    return f"{location.rstrip('/')}/{name}" if is_url(location) else os.path.join(location, name)


def list_inputs(given: Sequence[str | os.PathLike], places: Filesystems) -> tuple[list[str], list[tuple[str, str]]]:
    """Like ``stylize.batch.collect_inputs`` for paths and URLs: files as given, plus every
    visible file directly inside given folders (prefixes); and the given locations that cannot
    be used, each with its reason."""
    from pyarrow.fs import FileSelector, FileType

    found: list[str] = []
    unusable: list[tuple[str, str]] = []
    for place in given:
        location = str(place) if is_url(place) else os.path.abspath(place)
        try:
            fs, path = places.resolve(location)
            info = fs.get_file_info(path)
            if info.type == FileType.NotFound:
                unusable.append((str(place), "missing file (no such file or folder)"))
            elif info.type == FileType.Directory:
                children = fs.get_file_info(FileSelector(path, recursive=False))
                found += sorted(join(location, child.base_name) for child in children
                                if child.type == FileType.File and not child.base_name.startswith("."))
            else:
                found.append(location)
        except (OSError, ValueError) as error:  # no such bucket, no access, a malformed URL
            unusable.append((str(place), f"cannot list ({error})"))
    return list(dict.fromkeys(found)), unusable


def existing_names(location: str, places: Filesystems) -> set[str]:
    """Names of the files already in the output location (one listing, not a request per photo)."""
    from pyarrow.fs import FileSelector, FileType

    fs, path = places.resolve(location)
    listing = fs.get_file_info(FileSelector(path, recursive=False, allow_not_found=True))
    return {info.base_name for info in listing if info.type == FileType.File}


# ---------------------------------------------------------------------------------------
# The manifest
# ---------------------------------------------------------------------------------------


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class Manifest:
    """One JSON object a line in the output location: a ``run`` line per job, then one line per
    outcome (``painted``, ``skipped`` or ``failed``, with the ``reason``). The last line about
    an input is its outcome. Locally each line is appended as it comes, so a crash loses at
    most the line being written; an object store gets the whole file again every few seconds
    and at the end."""

    def __init__(self, location: str, places: Filesystems):
        self.location = location
        self.places = places
        self.local = places.is_local(location)
        self._lines = self._read_lines()
        self._file = None
        self._put_at = 0.0

    def _read_lines(self) -> list[str]:
        try:
            text = self.places.read(self.location).decode("utf-8", errors="replace")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def outcomes(self) -> dict[str, dict]:
        """Each input's last recorded outcome; lines that do not parse (a write cut short) are ignored."""
        latest: dict[str, dict] = {}
        for line in self._lines:
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and "input" in record:
                latest[record["input"]] = record
        return latest

    def add(self, record: dict) -> None:
        line = json.dumps(record, ensure_ascii=False)
        if self.local:
            if self._file is None:
                _, path = self.places.resolve(self.location)
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - open for the whole job
                if self._lines and self._file.tell() and not self._ends_with_newline(path):
                    self._file.write("\n")  # a line cut short by a crash stays on its own line
            self._file.write(line + "\n")
            self._file.flush()
        else:
            self._lines.append(line)
            if time.monotonic() - self._put_at >= MANIFEST_PUT_SECONDS:
                self.flush()

    @staticmethod
    def _ends_with_newline(path: str) -> bool:
        with open(path, "rb") as file:
            file.seek(-1, os.SEEK_END)
            return file.read(1) == b"\n"

    def flush(self) -> None:
        if self.local:
            if self._file is not None:
                self._file.flush()
            return
        self.places.write(self.location, ("\n".join(self._lines) + "\n").encode())
        self._put_at = time.monotonic()

    def close(self) -> None:
        self.flush()
        if self._file is not None:
            self._file.close()
            self._file = None


# ---------------------------------------------------------------------------------------
# The actors
# ---------------------------------------------------------------------------------------


def open_painter(args: argparse.Namespace, style_images: Sequence[tuple[str, bytes]] = ()):
    """The painter the CLI options ask for, opened by the plain CLI's own code. A node of a
    cluster has no copy of the driver's ``--style-image`` files: they travel as bytes and are
    laid down here under their names for the CLI's code to read."""
    from stylize.options import open_stylizer, runtime_settings

    if not style_images:
        return open_stylizer(args, runtime_settings(args))
    with tempfile.TemporaryDirectory(prefix="stylize-styles-") as folder:
        paths = []
        for index, (name, data) in enumerate(style_images):
            path = Path(folder) / f"{index}-{name}"
            path.write_bytes(data)
            paths.append(path)
        return open_stylizer(argparse.Namespace(**{**vars(args), "style_image": paths}), runtime_settings(args))


def shares_calls(painter, params: dict) -> bool:
    """Whether two photos painted in one network call come out byte for byte as painted one at
    a time, here, with this engine and thread count (ONNX Runtime's CPU kernels do; OpenVINO's
    multi-threaded ones may not). Checked on two crops of the measuring photo."""
    photo = Image.open(default_parity_photo()).convert("RGB")
    crops = [photo.crop((0, 0, 96, 80)), photo.crop((40, 30, 136, 110))]
    try:
        together = painter.paint(crops, [params, params])
        alone = [painter.paint([crop], [params])[0] for crop in crops]
    except Exception:  # noqa: BLE001 - a painter that cannot batch paints one at a time
        return False
    return all(a.tobytes() == b.tobytes() for a, b in zip(together, alone, strict=True))


def size_groups(photos: Sequence[Image.Image | None], batched: bool) -> list[list[int]]:
    """Indices of the photos to paint together: one size per group, at most ``BATCH_PIXELS``
    per group (at least one photo); every photo alone when the engine cannot batch exactly."""
    if not batched:
        return [[i] for i, photo in enumerate(photos) if photo is not None]
    by_size: dict[tuple[int, int], list[int]] = {}
    for i, photo in enumerate(photos):
        if photo is not None:
            by_size.setdefault(photo.size, []).append(i)
    groups = []
    for (width, height), members in by_size.items():
        per_call = max(1, BATCH_PIXELS // (width * height))
        groups += [members[start : start + per_call] for start in range(0, len(members), per_call)]
    return groups


class PaintActor:
    """One painter in one actor: a batch of ``{input, output}`` rows in, one outcome per row out."""

    def __init__(self, args: argparse.Namespace, style_images: Sequence[tuple[str, bytes]], endpoint: str | None):
        from stylize.options import batch_options

        self.painter = open_painter(args, style_images)
        self.params = batch_options(args).params()
        self.batched = shares_calls(self.painter, self.params)
        self.places = Filesystems(endpoint)
        self.io = ThreadPoolExecutor(IO_THREADS, thread_name_prefix="stylize-io")

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        sources, targets = [str(s) for s in batch["input"]], [str(t) for t in batch["output"]]
        reasons: list[str | None] = [None] * len(sources)
        data: list[bytes] = [b""] * len(sources)
        photos: list[Image.Image | None] = [None] * len(sources)
        for i, read in enumerate(self.io.map(self._read, sources)):
            if isinstance(read, str):
                reasons[i] = read
                continue
            data[i] = read
            try:
                photos[i] = codec.decode(read, Limits(), self.params.get("max_side"))
            except InputError as error:
                reasons[i] = _refused(error, read)
            except Exception as error:  # noqa: BLE001 - one bad image must not end the batch
                reasons[i] = f"not a usable image ({type(error).__name__}: {error})"
        encoded: list[bytes | None] = [None] * len(sources)
        shared = [0] * len(sources)  # how many photos the network call that painted this one held
        for group in size_groups(photos, self.batched):
            for i, outcome, call in self._paint(group, photos, data):
                if isinstance(outcome, bytes):
                    encoded[i], shared[i] = outcome, call
                else:
                    reasons[i] = outcome
        writes = {i: self.io.submit(self._write, targets[i], encoded[i]) for i in range(len(sources))
                  if encoded[i] is not None}
        for i, write in writes.items():
            reasons[i] = write.result()
        return {
            "input": sources,
            "output": targets,
            "status": ["painted" if reason is None else "failed" for reason in reasons],
            "reason": [reason or "" for reason in reasons],
            "size": ["x".join(map(str, photo.size)) if photo is not None else "" for photo in photos],
            "runtime": [self.painter.runtime] * len(sources),
            "batch": shared,
        }

    def _paint(self, group: list[int], photos: list, data: list[bytes]) -> Iterator[tuple[int, bytes | str, int]]:
        """``(index, encoded painting or the reason it failed, photos in its network call)`` for
        each photo of the group; when a shared call fails, each photo is painted alone so the
        failure is its own."""
        if len(group) > 1:
            try:
                paintings = self.painter.paint([photos[i] for i in group], [self.params] * len(group))
                encoded = [self._encode(painting) for painting in paintings]
            except Exception:  # noqa: BLE001 - retried one by one just below, to blame the right photo
                pass
            else:
                yield from ((i, painting, len(group)) for i, painting in zip(group, encoded, strict=True))
                return
        for i in group:
            try:
                yield i, self._encode(self.painter.paint([photos[i]], [self.params])[0]), 1
            except InputError as error:
                yield i, _refused(error, data[i]), 1
            except Exception as error:  # noqa: BLE001 - one bad image must not end the batch
                yield i, f"not a usable image ({type(error).__name__}: {error})", 1

    def _encode(self, painting: Image.Image) -> bytes:
        return codec.encode(painting, self.params.get("format") or "png", self.params.get("quality", 92))

    def _read(self, location: str) -> bytes | str:
        try:
            return self.places.read(location)
        except OSError as error:
            return _unreadable(error)

    def _write(self, location: str, data: bytes) -> str | None:
        try:
            self.places.write(location, data)
        except OSError as error:
            return f"cannot write {location} ({error.strerror or error})"
        return None


# ---------------------------------------------------------------------------------------
# Ray: started here or joined, and how many actors
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """How the pool is laid out: ``actors`` actors, each reserving ``cpus`` CPUs and running its
    engine on ``threads`` threads (0: every core of its node, as the plain CLI does)."""

    actors: int
    cpus: int
    threads: int
    fit: int  # how many fit on the nodes there are now

    def describe(self) -> str:
        threads = "every core" if self.threads == 0 else f"{self.threads} thread{'s' * (self.threads > 1)}"
        return f"{self.actors} actor{'s' * (self.actors > 1)} x {threads}"


def plan(node_cpus: Sequence[int], threads: int, actors: int | None) -> Plan:
    """``--threads T``: actors of T CPUs, as many as the nodes hold. ``--threads 0`` (the
    default): one actor per node, running on all of that node's cores, like the plain CLI.
    ``fit`` is 0 when no node has room for one actor."""
    node_cpus = [cpus for cpus in node_cpus if cpus > 0]
    if threads > 0:
        cpus, fit = threads, sum(total // threads for total in node_cpus)
    else:
        cpus, fit = min(node_cpus, default=1), len(node_cpus)
    return Plan(actors or max(fit, 1), cpus, threads, fit)


def launch(address: str | None, threads: int, actors: int | None) -> tuple[bool, Plan]:
    """Ray started here (sized for the pool asked for) or joined, and the pool laid out on its
    nodes; True when this call started Ray."""
    if address is None:
        cpus = threads or local_cores()
        wanted = actors or max(1, local_cores() // cpus)
        started = start_ray(None, max(local_cores(), wanted * cpus))
    else:
        started = start_ray(address, 0)
    return started, plan(node_cpus(), threads, actors)


def local_cores() -> int:
    return settings.thread_count(0)


def start_ray(address: str | None, num_cpus: int) -> bool:
    """Joins the cluster at ``address``, or starts Ray on this machine for the job (loopback
    only, no dashboard, a small object store). True when this call started Ray (and so must
    stop it); a process already connected to Ray keeps its connection."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # no usage report leaves the machine
    if address is None:
        # Ray takes the machine's network address for its node unless this says otherwise;
        # with it, every Ray server of the job listens on 127.0.0.1 alone.
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        # The one server Ray gives a fixed port (its autoscaler's metrics): a free one instead,
        # so jobs started side by side on one machine do not collide.
        os.environ["AUTOSCALER_METRIC_PORT"] = str(free_port())
    import ray

    if ray.is_initialized():
        return False
    # Ray's advice to opt out of its per-cluster token: the token stays, the advice is noise here.
    logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(logging.ERROR)
    if address is None:
        from ray._private import ray_constants

        ray_constants.ENABLE_RAY_CLUSTER = False  # the variable above is read when ray is first imported
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, object_store_memory=OBJECT_STORE_BYTES,
                 logging_level=logging.WARNING, configure_logging=True)
    else:
        ray.init(address=address, logging_level=logging.WARNING, configure_logging=True)
    return True


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def node_cpus() -> list[int]:
    import ray

    return [int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")]


def actor_environment(local: bool) -> dict[str, str]:
    """The driver's ``STYLE_*`` settings for the actors (they decide the bytes). On this machine
    also its object-store credentials and the checkout on the import path (a Ray already running
    here was started with another environment); a cluster's pods have their own credentials
    (docs/bulk.md) and the code in the image."""
    prefixes = (SETTINGS_PREFIX, "AWS_") if local else (SETTINGS_PREFIX,)
    env = {name: value for name, value in os.environ.items() if name.startswith(prefixes)}
    if local:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    return env


def paint_dataset(rows: list[dict], args: argparse.Namespace, style_images: list[tuple[str, bytes]],
                  endpoint: str | None, layout: Plan, local: bool):
    """The Ray Data pipeline: the rows still to do, through the actor pool, as a stream of outcomes."""
    import ray.data

    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # this module shows its own: done/total and photos per second
    context.print_on_execution_start = False
    logging.getLogger("ray.data").setLevel(logging.WARNING)
    logging.getLogger("ray.data._internal.progress").setLevel(logging.ERROR)  # "bars disabled": on purpose
    if layout.actors <= layout.fit:
        pool = ray.data.ActorPoolStrategy(size=layout.actors)
    else:  # more than the nodes hold now: start with what fits; an autoscaling cluster may add nodes
        pool = ray.data.ActorPoolStrategy(min_size=max(1, layout.fit), max_size=layout.actors)
    # One machine: an actor that died (out of memory on a huge photo) would die again on the
    # same batch, so the job stops, its manifest kept. A cluster: a lost node's batches are
    # retried on another, a few times.
    retries = 0 if local else 2
    dataset = ray.data.from_items(rows, override_num_blocks=max(1, math.ceil(len(rows) / BATCH_SIZE)))
    with warnings.catch_warnings():
        # Ray 2.60 has no named parameter for restarts yet; the generic one it deprecates still works.
        warnings.filterwarnings("ignore", message="`ray_remote_args` is deprecated")
        painted = dataset.map_batches(
            PaintActor, batch_size=BATCH_SIZE, batch_format="numpy", compute=pool, num_cpus=layout.cpus,
            fn_constructor_kwargs={"args": args, "style_images": style_images, "endpoint": endpoint},
            runtime_env={"env_vars": actor_environment(local)},
            max_restarts=retries, **({"max_task_retries": retries} if retries else {}),
        )
    return painted.iter_rows()


# ---------------------------------------------------------------------------------------
# The job
# ---------------------------------------------------------------------------------------


class Progress:
    """Done/total and photos per second: a bar on a terminal, a line every half minute in a log
    (a cluster job's), nothing with ``--no-progress``."""

    def __init__(self, total: int, done: int, wanted: bool | None):
        self.bar = tqdm(total=total, initial=done, desc="stylize (ray)", unit="img",
                        disable=None if wanted is None else not wanted)
        self.lines = wanted is None and self.bar.disable
        self.total, self.done, self.started, self.said = total, done, time.monotonic(), time.monotonic()
        self.painted = self.failed = 0

    def step(self, status: str) -> None:
        self.done += 1
        self.painted += status == "painted"
        self.failed += status == "failed"
        self.bar.update(1)
        if self.lines and time.monotonic() - self.said >= PROGRESS_LINE_SECONDS:
            self.said = time.monotonic()
            print(f"stylize: {self.done}/{self.total} done, {self.rate():.1f} img/s, {self.failed} failed",
                  file=sys.stderr, flush=True)

    def rate(self) -> float:
        return self.painted / max(time.monotonic() - self.started, 1e-9)

    def write(self, text: str) -> None:
        tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()


@dataclass
class Work:
    """The inputs sorted into what a run does with them."""

    rows: list[dict]  # to paint: {"input", "output"}
    kept: list[tuple[str, str, str]]  # (input, output, why): done earlier, or the output exists
    videos: list[tuple[str, str]]  # (input, output)


def sort_work(inputs: list[str], out: str, fmt: str, overwrite: bool, existing: set[str],
              recorded: dict[str, dict]) -> Work:
    names = output_names([PurePosixPath(item) for item in inputs], fmt)
    work = Work([], [], [])
    for item in inputs:
        name = names[PurePosixPath(item)]
        target = join(out, name)
        if PurePosixPath(item).suffix.lower() in VIDEO_SUFFIXES:
            work.videos.append((item, target))
        elif name in existing and not overwrite:
            earlier = recorded.get(item, {})
            done = earlier.get("status") == "painted" and earlier.get("output") == target
            work.kept.append((item, target, "done in an earlier run" if done
                              else "output exists; pass --overwrite to replace"))
        else:
            work.rows.append({"input": item, "output": target})
    return work


def summary(report: Report, total: int, out: str, manifest: str) -> str:
    """The plain CLI's summary, with long lists cut short: a bulk job's rerun keeps thousands
    of outputs, and every outcome is in the manifest anyway."""
    counts = f"{len(report.written)} painted, {len(report.failed)} failed"
    if report.kept:
        counts += f", {len(report.kept)} kept"
    lines = [f"{len(report.written)} of {total} written to {out} ({counts})"]
    if report.kept:
        lines.append(f"{len(report.kept)} kept (done in an earlier run, or the output exists; --overwrite "
                     "replaces them)")
    if report.failed:
        lines.append(f"{len(report.failed)} skipped (could not be painted):")
        lines += [f"  {source}: {reason}" for source, reason in report.failed[:SUMMARY_LINES]]
        if len(report.failed) > SUMMARY_LINES:
            lines.append(f"  ... {len(report.failed) - SUMMARY_LINES} more in the manifest")
    lines.append(f"manifest: {manifest}")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """``--engine ray``: the plain CLI's exit codes, summary and failures on stderr, plus the manifest."""
    try:
        import ray  # noqa: F401
        import ray.data  # noqa: F401
    except ImportError:
        print(f"error: {INSTALL_HINT}", file=sys.stderr)
        return 2
    from core.runtime_choice import SettingError
    from stylize.models import ModelError
    from stylize.options import batch_options, report_inputs, runtime_settings

    if args.actors is not None and args.actors < 1:
        print("error: --actors must be at least 1", file=sys.stderr)
        return 2
    endpoint = s3_endpoint(args.s3_endpoint)
    places = Filesystems(endpoint)
    inputs, unusable = list_inputs(args.inputs, places)
    if not report_inputs(args.inputs, inputs, unusable):
        return 2
    # Absolute paths: a cluster's nodes (and a rerun from another folder) see the same files.
    for name in ("onnx_dir", "model"):
        if getattr(args, name) is not None:
            setattr(args, name, Path(getattr(args, name)).absolute())
    try:
        painter = open_painter(args)  # the plain CLI's errors, before any actor starts
        label = f"{painter.model.name} on {painter.runtime}"
        style_images = [(path.name, path.read_bytes()) for path in args.style_image or []]
    except (ModelError, SettingError, OSError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    del painter  # the actors hold their own; this one only checked the options
    gc.collect()

    out = str(args.out_dir) if is_url(args.out_dir) else os.path.abspath(args.out_dir)
    options = batch_options(args)
    try:
        if places.is_local(out):
            Path(places.resolve(out)[1]).mkdir(parents=True, exist_ok=True)
        manifest = Manifest(join(out, MANIFEST), places)
        work = sort_work(inputs, out, options.fmt, options.overwrite, existing_names(out, places),
                         manifest.outcomes())
        manifest.add({"run": now(), "engine": "ray", "painter": label, "options": options.params(),
                      "inputs": len(inputs) + len(unusable), "to_paint": len(work.rows)})
        manifest.flush()  # the output location is writable before any work is done
    except OSError as error:
        print(f"error: cannot use {out} for the output ({error})", file=sys.stderr)
        return 2

    report = Report()
    report.failed += unusable
    for source, target, why in work.kept:
        report.kept.append((source, target))
        if why != "done in an earlier run":  # an earlier run's line already says painted
            manifest.add({"input": source, "output": target, "status": "skipped", "reason": why, "at": now()})
    for source, target in work.videos:
        reason = "video: not supported yet (photos only)"
        report.failed.append((source, reason))
        manifest.add({"input": source, "output": target, "status": "skipped", "reason": reason, "at": now()})
        print(f"{source}: {reason}", file=sys.stderr)

    started = time.perf_counter()
    local = args.address is None
    threads = runtime_settings(args).threads  # $STYLE_THREADS wins, as in the plain CLI
    layout: Plan | None = None
    stopped: str | None = None
    progress = None
    ray_started = False
    try:
        if work.rows:
            ray_started, layout = launch(args.address, threads, args.actors)
            if layout.fit == 0:
                print(f"error: no node of the Ray cluster has {threads} CPUs for one actor (--threads {threads})",
                      file=sys.stderr)
                return 2
            progress = Progress(len(inputs) + len(unusable), len(inputs) + len(unusable) - len(work.rows),
                                args.progress)
            for row in paint_dataset(work.rows, args, style_images, endpoint, layout, local):
                record = {"input": row["input"], "output": row["output"], "status": row["status"], "at": now(),
                          "runtime": row["runtime"]}
                if row["status"] == "painted":
                    record |= {"size": row["size"], "batch": int(row["batch"])}
                    report.written.append(row["output"])
                else:
                    record["reason"] = row["reason"]
                    report.failed.append((row["input"], row["reason"]))
                    progress.write(f"{row['input']}: {row['reason']}")
                manifest.add(record)
                progress.step(row["status"])
    except KeyboardInterrupt:
        stopped = "interrupted"
    except Exception as error:  # noqa: BLE001 - the job stops; what is done stays done
        stopped = f"{type(error).__name__}: {error}"
    finally:
        if progress is not None:
            progress.close()
        with contextlib.suppress(OSError):
            manifest.close()
        if ray_started:
            import ray

            ray.shutdown()
    seconds = time.perf_counter() - started
    rate = len(report.written) / seconds if seconds > 0 else 0.0
    where = f"Ray {'on this machine' if local else 'at ' + args.address}: " + (
        layout.describe() if layout else "nothing left to paint")
    total = len(inputs) + len(unusable)
    print(f"[{label}, {where}, {seconds:.1f} s, {rate:.2f} img/s] " + summary(report, total, out, manifest.location))
    if stopped:
        left = total - len(report.written) - len(report.failed) - len(report.kept)
        print(f"error: the job stopped ({stopped}); {left} photos not done: run the same command again "
              "to go on where it stopped", file=sys.stderr)
        return 130 if stopped == "interrupted" else 1
    return report.exit_code
