"""Admission control: a server-wide bound on the heavy work running at once.

TorchServe accepts every request its queues can hold and kills a worker whose request
outlives the model's ``responseTimeout``; nothing in it weighs what a request costs. So
before painting, every request reserves its cost in a ledger shared by all workers of the
server (they are separate processes: a JSON file under an exclusive ``flock`` in the
server's temp folder; reservations of dead worker processes are dropped on every read).
What does not fit waits up to ``wait_s`` for room, then gets ``Overloaded`` (503, JSON naming
the reason, ``Retry-After``).

Cost model (``Settings``, each overridable by a ``STYLE_ADMISSION_*`` variable declared in
``core.settings``):

- a fast-style request of ``p`` pixels is ``p * c / 1e6`` core-seconds of work and
  ``p * bytes_per_pixel`` bytes of memory, where ``c``, core-seconds per megapixel, is this
  worker's own for photos of that size (``CostModel``): ``safety`` times what the requests
  of that size that ran alone took, on average; before any was seen, the speed the runtime
  choice measured for the engine it chose (``core.runtime_choice``) for small photos and
  ``core_seconds_per_megapixel`` for larger ones. Learned costs are kept beside the
  runtime choice, so a restarted worker starts from them. With ``cost: fixed``, ``c`` is
  ``core_seconds_per_megapixel`` for every size;
- a video is the work of all its frames and the memory of the frames its pipeline holds at
  once, and is always heavy;
- a Gatys request holds cores for its whole run (it stops at its own time budget) and
  ``p * gatys_bytes_per_pixel`` bytes. It runs with every core when the server is idle, but
  its threads time-share the cores with the fast styles' (the scheduler gives runnable
  threads equal shares), so it is charged at most half the machine: the other half stays
  for the fast styles' requests beside it.

A request may start only if, with it, every fast request in flight still finishes inside
its own budget (``responseTimeout - wait_s - margin_s``). Request ``r``'s finishing time is
bounded by ``(load_r - work_r) / free_cores + work_r / threads_r``: ``load_r`` is all the
work that ever ran beside ``r``, its own included (everything in flight when it started
plus everything admitted since, counted whole). While the cores are oversubscribed, all
work drains at ``free_cores`` per second; the rest of the time ``r`` runs at its own speed.
The longest wait is all the others' work draining first, then ``r`` alone (what ``r``
paints while they drain only shortens its own part). ``free_cores`` is what Gatys
leaves. Heavy requests (over ``heavy_pixels``) must fit in ``1 - reserve`` of the budget, so
small interactive ones still find room beside a burst of large photos. Memory: the
reservations' sum stays under ``memory_bytes``. Work that could not start even on an idle
server is refused at once (413): waiting cannot help it.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from core import hooks
from core.errors import InputError, Overloaded
from core.settings import RESPONSE_TIMEOUT_S, environment_fields, settings_dataclass, thread_count
from core.settings import env as setting

if TYPE_CHECKING:
    from core.stylizer import Stylizer

logger = logging.getLogger(__name__)

ENV_PREFIX = "STYLE_ADMISSION_"
LEDGER_NAME = "style-admission.json"
#: Where workers keep what they learned of their engine's speed (in the runtime-choice folder).
SPEED_BOOK_NAME = "admission-speed.json"
#: Requests smaller than this teach the cost model nothing: their time is mostly the fixed
#: cost of a call, not painting.
LEARN_MIN_PIXELS = 256 * 256
#: Weight of one observation in the learned cost (an exponential average).
LEARNING_RATE = 0.25
#: One observation moves the learned cost at most this many times up: a request slowed by a
#: passing storm on the machine must not shut the door for long.
MAX_STEP = 4.0
#: Upper bounds, in megapixels, of the size classes whose costs are learned apart.
SIZE_CLASSES_MP = (1.0, 4.0, 17.0)
#: The responseTimeout of a model whose config sets none: ``default_response_timeout`` in
#: config.properties (a test checks they agree; workers cannot read that file).
DEFAULT_RESPONSE_TIMEOUT_S = float(RESPONSE_TIMEOUT_S)


def machine_cpus() -> float:
    """Cores this process may use: its CPU affinity, capped by a cgroup v2 quota (containers)."""
    cpus = float(len(os.sched_getaffinity(0)))
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cpus = min(cpus, int(quota) / int(period))
    except (OSError, ValueError):
        pass
    return max(cpus, 1.0)


def machine_memory() -> int:
    """Bytes of memory the server may use: physical memory, capped by a cgroup v2 limit."""
    memory = psutil.virtual_memory().total
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        if limit != "max":
            memory = min(memory, int(limit))
    except (OSError, ValueError):
        pass
    return memory


#: ``Settings.cost``: the worker's measured and learned speed, or the fixed setting.
COSTS = ("measured", "fixed")


@settings_dataclass(environment_fields(ENV_PREFIX))
class Settings:
    """The bound's inputs. ``cpus``/``memory_bytes`` default to the machine's (see
    ``machine_cpus``/``machine_memory``; ``memory_fraction`` of the memory goes to heavy
    work, the rest is the idle server and headroom); the per-pixel costs are measured by
    ``python -m bench.load --mode calibrate`` and rounded up; the time cost about twice what
    a quiet machine shows, so a machine shared with other work still finishes in time.
    Each field is the variable ``STYLE_ADMISSION_<FIELD>``; its default is declared there."""

    cpus: float = field(default_factory=machine_cpus)  # the rest: one field per STYLE_ADMISSION_* setting

    @classmethod
    def from_environment(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Reads ``STYLE_ADMISSION_<FIELD>`` overrides (``env``: default this process's
        environment); a bad value raises ``ValueError`` naming the variable, so a worker
        refuses to start rather than misjudge its load."""
        values: dict = {}
        for name in (f.name for f in fields(cls)):
            variable = ENV_PREFIX + name.upper()
            value = setting(variable, env)
            if value is None:  # cpus: the machine's
                continue
            if not isinstance(value, str) and not (value >= 0 and math.isfinite(value)):
                raise ValueError(f"${variable} must be zero or more, got {value!r}")
            values[name] = value
        settings = cls(**values)
        if settings.cost not in COSTS:
            raise ValueError(f"${ENV_PREFIX}COST must be one of {', '.join(COSTS)}, got {settings.cost!r}")
        for name in ("cpus", "core_seconds_per_megapixel", "bytes_per_pixel", "memory_fraction", "safety"):
            if getattr(settings, name) <= 0:
                raise ValueError(f"${ENV_PREFIX}{name.upper()} must be more than zero, got {getattr(settings, name)}")
        if not settings.memory_fraction <= 1 or not settings.reserve < 1:
            raise ValueError(f"${ENV_PREFIX}MEMORY_FRACTION must be at most 1 and ${ENV_PREFIX}RESERVE "
                             f"below 1, got {settings.memory_fraction} and {settings.reserve}")
        if not settings.memory_bytes:
            settings = replace(settings, memory_bytes=int(settings.memory_fraction * machine_memory()))
        return settings

    def work(self, pixels: int) -> float:
        """Core-seconds a fast-style request of ``pixels`` costs at the fixed cost."""
        return pixels / 1e6 * self.core_seconds_per_megapixel

    def ledger_path(self) -> Path:
        return Path(self.ledger) if self.ledger else Path(tempfile.gettempdir()) / LEDGER_NAME


@dataclass
class Reservation:
    """One request's share of the server, as written in the ledger."""

    model: str
    pixels: int
    work: float  # core-seconds (fast styles; 0 for Gatys)
    cores: float  # cores held for the whole run (Gatys; 0 for fast styles)
    bytes: float
    threads: float  # cores this request's worker can use at most
    budget_s: float  # how long it may take, from its start
    heavy: bool
    started: float = 0.0  # time.time() at admission
    load: float = 0.0  # core-seconds run beside it so far (its own included)
    pid: int = field(default_factory=os.getpid)
    pid_started: float = 0.0
    key: str = field(default_factory=lambda: uuid.uuid4().hex)
    alone: bool = True  # nothing else ran beside it so far (its time then tells its cost)


def _finish_bound(entry: Reservation, free_cores: float) -> float:
    """Seconds from its start by which ``entry`` has finished (see the module doc)."""
    return (entry.load - entry.work) / free_cores + entry.work / min(entry.threads, free_cores)


def refusal(entries: list[Reservation], candidate: Reservation, settings: Settings) -> str | None:
    """Why ``candidate`` cannot start beside ``entries`` now, or None if it can."""
    everyone = [*entries, candidate]
    if sum(e.bytes for e in everyone) > settings.memory_bytes:
        return "memory"
    fast = [e for e in everyone if e.work > 0]
    if not fast:
        return None
    free_cores = settings.cpus - sum(e.cores for e in everyone)
    if free_cores <= 0:
        return "cpu"
    share = 1 - settings.reserve if candidate.heavy else 1.0
    for entry in fast:
        load = entry.load + candidate.work if entry is not candidate else candidate.load
        if _finish_bound(replace(entry, load=load), free_cores) > entry.budget_s * share:
            return "time"
    return None


def _retry_after(entries: list[Reservation], candidate: Reservation, settings: Settings, now: float) -> int:
    """Seconds until enough of ``entries`` have surely finished for ``candidate`` to start."""
    free_cores = max(settings.cpus - sum(e.cores for e in entries), 1e-3)
    remaining = sorted(entries, key=lambda e: e.started + _finish_bound(e, free_cores))
    while remaining:
        done = remaining.pop(0)
        left = [*remaining]
        trial = replace(candidate, load=sum(e.work for e in left) + candidate.work)
        if refusal(left, trial, settings) is None:
            return max(1, math.ceil(done.started + _finish_bound(done, free_cores) - now))
    return 1


@contextmanager
def locked_json(path: Path, parse: Callable[[Any], Any], empty: Callable[[], Any]) -> Iterator[Any]:
    """Yields ``parse`` of the JSON in ``path`` under an exclusive ``flock`` (``empty()`` for a
    missing, torn or foreign file: start afresh rather than block forever); what the caller
    leaves in the yielded object is written back (``asdict`` for dataclasses) before the
    lock is released."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0)
        text = file.read()
        try:
            value = parse(json.loads(text)) if text.strip() else empty()
        except (ValueError, TypeError, AttributeError):
            value = empty()
        yield value
        file.seek(0)
        file.truncate()
        file.write(json.dumps(value, default=asdict))


class Ledger:
    """The reservations of every worker of this server, in one locked JSON file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _open(self) -> Iterator[list[Reservation]]:
        """Yields the live reservations under the lock; what the caller leaves is written back."""
        with locked_json(self.path, lambda rows: [Reservation(**row) for row in rows], list) as entries:
            entries[:] = [e for e in entries if _alive(e.pid, e.pid_started)]
            yield entries

    def try_reserve(self, candidate: Reservation, settings: Settings) -> tuple[str, int] | None:
        """Adds ``candidate`` if it fits; else returns (reason, retry-after seconds)."""
        with self._open() as entries:
            candidate.load = sum(e.work for e in entries) + candidate.work
            reason = refusal(entries, candidate, settings)
            if reason is not None:
                return reason, _retry_after(entries, candidate, settings, time.time())
            for entry in entries:
                entry.load += candidate.work
                entry.alone = False
            candidate.alone = not entries
            candidate.started = time.time()
            entries.append(candidate)
        return None

    def release(self, key: str) -> Reservation | None:
        """Removes the reservation ``key``; returns it as the ledger had it (None if gone)."""
        with self._open() as entries:
            mine = next((e for e in entries if e.key == key), None)
            entries[:] = [e for e in entries if e.key != key]
        return mine

    def entries(self) -> list[Reservation]:
        with self._open() as entries:
            return list(entries)


def _alive(pid: int, started: float) -> bool:
    """The worker that made a reservation still runs (a reused PID has another start time)."""
    try:
        process = psutil.Process(pid)
        return abs(process.create_time() - started) < 0.01 and process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


# ---------------------------------------------------------------------------------------
# The cost of a fast-style megapixel on this worker: measured, then learned
# ---------------------------------------------------------------------------------------


@dataclass
class Learned:
    """What a worker learned of its engine's cost, as the speed book keeps it."""

    core_seconds_per_megapixel: float
    samples: int = 0


class SpeedBook:
    """Learned costs by worker kind (model, engine, threads), in one locked JSON file beside
    the runtime choice: workers of a model share what they learn, and a restart keeps it."""

    def __init__(self, path: Path):
        self.path = Path(path)

    def _open(self):
        return locked_json(self.path, lambda rows: {k: Learned(**v) for k, v in rows.items()}, dict)

    def get(self, key: str) -> Learned | None:
        with self._open() as book:
            return book.get(key)

    def update(self, key: str, change: Callable[[Learned | None], Learned]) -> Learned:
        """Replaces the entry ``key`` by ``change(entry)`` under the lock, so two workers'
        observations both count."""
        with self._open() as book:
            book[key] = change(book.get(key))
            return book[key]


def size_class(pixels: int) -> int:
    """Which of ``SIZE_CLASSES_MP`` a request of ``pixels`` falls in (the last: larger still)."""
    return next((i for i, bound in enumerate(SIZE_CLASSES_MP) if pixels <= bound * 1e6), len(SIZE_CLASSES_MP))


class CostModel:
    """Core-seconds per megapixel this worker charges a fast-style request, by its size.

    A megapixel does not cost the same in every photo: large ones are tiled, and their
    buffers outgrow the caches. So the cost is learned per size class (``size_class``).
    Each request that ran alone and was large enough (``LEARN_MIN_PIXELS``) is an
    observation of its class's true cost (its seconds times its threads, per megapixel);
    the class's learned cost is their exponential average (``LEARNING_RATE``; the first
    observation taken whole), at most ``MAX_STEP`` times up per observation. Admission
    charges ``safety`` times it, and a class is never charged less than a smaller one.

    Before a class has been observed: the smallest is charged the speed the runtime choice
    measured for the chosen engine (``measured``: on a small photo, warm); larger ones the
    fixed ``core_seconds_per_megapixel``, the safe figure for photos nobody has timed here.
    With ``cost: fixed`` every request is charged the fixed cost.
    """

    def __init__(self, settings: Settings, measured: float | None = None, book: SpeedBook | None = None,
                 key: str = ""):
        self.safety = settings.safety
        self.fixed = settings.core_seconds_per_megapixel
        self.learns = settings.cost == "measured"
        self.measured = measured if self.learns and measured else None
        self.book = book if self.learns else None
        self.key = key
        self.learned: dict[int, float] = {}
        for size in range(len(SIZE_CLASSES_MP) + 1):
            known = self._read_book(size)
            if known is not None:
                self.learned[size] = known.core_seconds_per_megapixel

    def _book_key(self, size: int) -> str:
        bound = f"up to {SIZE_CLASSES_MP[size]:g} MP" if size < len(SIZE_CLASSES_MP) else "larger"
        return f"{self.key}, {bound}"

    def _read_book(self, size: int) -> Learned | None:
        if self.book is None:
            return None
        try:
            return self.book.get(self._book_key(size))
        except OSError as error:  # an unreadable folder: learn in memory, forget on restart
            logger.warning("admission speed not kept in %s: %s", self.book.path, error)
            self.book = None
            return None

    def core_seconds_per_megapixel(self, pixels: int) -> float:
        """What admission charges per megapixel of a request of ``pixels`` now."""
        size = size_class(pixels)
        smaller = [cost for known, cost in self.learned.items() if known <= size]
        if size in self.learned:
            return self.safety * max(smaller)
        prior = self.fixed if size > 0 or self.measured is None else self.safety * self.measured
        return max([prior] + [self.safety * cost for cost in smaller])

    def work(self, pixels: int, image_pixels: int | None = None) -> float:
        """Core-seconds of ``pixels`` painted in images of ``image_pixels`` (default: one image)."""
        return pixels / 1e6 * self.core_seconds_per_megapixel(image_pixels or pixels)

    def _moved(self, previous: float | None, seen: float) -> float:
        if previous is None:
            return seen  # nothing known yet: an observation beats any guess
        return previous + LEARNING_RATE * (min(seen, MAX_STEP * previous) - previous)

    def observe(self, pixels: int, seconds: float, threads: float) -> None:
        """A request of ``pixels`` ran alone on ``threads`` cores for ``seconds``."""
        if not self.learns or pixels < LEARN_MIN_PIXELS or seconds <= 0:
            return
        size, seen = size_class(pixels), seconds * threads / (pixels / 1e6)
        if self.book is not None:
            def change(entry: Learned | None) -> Learned:
                previous = entry.core_seconds_per_megapixel if entry else self.learned.get(size)
                return Learned(self._moved(previous, seen), (entry.samples if entry else 0) + 1)

            try:
                self.learned[size] = self.book.update(self._book_key(size), change).core_seconds_per_megapixel
                return
            except OSError as error:  # an unwritable folder: learn in memory, forget on restart
                logger.warning("admission speed not kept in %s: %s", self.book.path, error)
                self.book = None
        self.learned[size] = self._moved(self.learned.get(size), seen)


def measured_speed(stylizer: Stylizer) -> float | None:
    """Core-seconds per megapixel the runtime choice measured for ``stylizer``'s chosen
    engine (its seconds on the measuring photo times its threads), or None when it was not
    measured (an engine given, not chosen)."""
    chosen = next((m for m in stylizer.choice.measurements if m.label == stylizer.runtime), None)
    if chosen is None or not chosen.seconds > 0:
        return None
    return chosen.seconds * thread_count(stylizer.settings.threads) / (measuring_pixels() / 1e6)


def measuring_pixels() -> int:
    """Pixels of the photo the runtime choice times its candidates on (one square measuring photo)."""
    from core.runtime_choice import MEASURE_SIDE

    return MEASURE_SIDE * MEASURE_SIDE


REASONS = {
    "memory": "the server's memory budget for images in progress is taken",
    "time": "the work already running would not leave this request time to finish",
    "cpu": "every core is held by optimizations in progress",
}
#: The same reasons for one request on an idle server (checked at start-up).
ALONE = {
    "memory": "it needs more memory than the budget for images",
    "time": "it would not finish inside the response timeout",
    "cpu": "no core is free",
}


class Admission:
    """One worker's door to the ledger: ``with admission.fast(pixels):`` around the painting."""

    def __init__(self, settings: Settings, model: str, response_timeout_s: float, threads: float,
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic,
                 cost: CostModel | None = None):
        self.settings = settings
        self.model = model
        self.budget_s = response_timeout_s - settings.wait_s - settings.margin_s
        self.threads = min(threads or settings.cpus, settings.cpus)
        self.cost = cost or CostModel(settings)
        self.ledger = Ledger(settings.ledger_path())
        self._sleep, self._clock = sleep, clock
        self._pid_started = psutil.Process().create_time()

    @classmethod
    def for_worker(cls, model: str, model_config: Mapping | None, threads: float = 0,
                   max_pixels: int | None = None, env: Mapping[str, str] | None = None,
                   stylizer: Stylizer | None = None) -> Admission:
        """Reads and checks the settings at worker start-up (``ValueError`` naming the setting):
        the budget must be positive and, on an idle server, the largest image the handler
        accepts (``max_pixels``) must fit, or it could never be painted. ``stylizer``: the
        worker's network, whose measured speed the cost starts from (``CostModel``). With
        ``cost: measured`` a ``max_pixels`` too slow to paint in time is only a warning: the
        cost learned from the requests served will tell (photos over what fits get a 413)."""
        from core.runtime_choice import cache_dir  # here: it loads ONNX Runtime, which not every worker needs

        hooks.worker_starting(model, env)  # every worker passes here first: plugins load now
        settings = Settings.from_environment(env)
        timeout = float((model_config or {}).get("responseTimeout", DEFAULT_RESPONSE_TIMEOUT_S))
        runtime = stylizer.runtime if stylizer is not None else "engine unknown"
        key = f"{model} {runtime} {thread_count(int(threads))} threads"
        measured = measured_speed(stylizer) if stylizer is not None else None
        cost = CostModel(settings, measured, SpeedBook(cache_dir(env) / SPEED_BOOK_NAME), key)
        admission = cls(settings, model, timeout, threads, cost=cost)
        if admission.budget_s <= 0:
            raise ValueError(f"responseTimeout {timeout:g}s leaves no time after ${ENV_PREFIX}WAIT_S "
                             f"{settings.wait_s:g}s and ${ENV_PREFIX}MARGIN_S {settings.margin_s:g}s")
        reason = admission._refused_alone(admission._fast_reservation(max_pixels)) if max_pixels else None
        if reason is not None:
            problem = (
                f"handler.max_pixels {max_pixels} cannot be painted on this server even when idle "
                f"({ALONE[reason]}: {settings.cpus:g} cores, {settings.memory_bytes / 2**30:.1f} GiB for "
                f"images, responseTimeout {timeout:g}s, {admission._cost_source(max_pixels)}, "
                f"${ENV_PREFIX}BYTES_PER_PIXEL "
                f"{settings.bytes_per_pixel:g})"
            )
            if reason == "time" and cost.learns:
                logger.warning("%s; photos over %.1f MP get 413", problem, admission.largest_alone() / 1e6)
            else:
                raise ValueError(f"{problem}; lower handler.max_pixels or give the server more")
        return admission

    def _cost_source(self, image_pixels: int) -> str:
        charged = self.cost.core_seconds_per_megapixel(image_pixels)
        if self.cost.learns and charged != self.settings.core_seconds_per_megapixel:
            return (f"{charged:.2f} core-seconds per megapixel (measured, ${ENV_PREFIX}SAFETY "
                    f"{self.settings.safety:g})")
        return f"${ENV_PREFIX}CORE_SECONDS_PER_MEGAPIXEL {self.settings.core_seconds_per_megapixel:g}"

    def _fast_reservation(self, pixels: int, image_pixels: int | None = None) -> Reservation:
        return Reservation(
            model=self.model, pixels=pixels, work=self.cost.work(pixels, image_pixels), cores=0.0,
            bytes=pixels * self.settings.bytes_per_pixel, threads=self.threads, budget_s=self.budget_s,
            heavy=pixels > self.settings.heavy_pixels, pid_started=self._pid_started,
        )

    def _refused_alone(self, reservation: Reservation) -> str | None:
        """Why ``reservation`` could not start even on an idle server, or None."""
        return refusal([], replace(reservation, load=reservation.work), self.settings)

    def fast(self, pixels: int):
        """Slot for a fast-style request of ``pixels`` (all its images together); the time it
        takes teaches the cost model (``CostModel.observe``) when nothing ran beside it."""
        return self._slot(self._fast_reservation(pixels), learn=True)

    def video(self, frame_pixels: int, frames: int, in_flight: int):
        """Slot for a video of ``frames`` frames of ``frame_pixels`` each: the work of all its
        frames, the memory of the ``in_flight`` frames its pipeline holds at once; always heavy
        (it holds the machine for long, so it leaves the reserve to small requests)."""
        reservation = replace(
            self._fast_reservation(frames * frame_pixels, frame_pixels),
            bytes=in_flight * frame_pixels * self.settings.bytes_per_pixel, heavy=True,
        )
        return self._slot(reservation)

    def seconds_alone(self, work_pixels: int, image_pixels: int | None = None) -> float:
        """Seconds ``work_pixels`` of painting (in images of ``image_pixels``, default one image)
        take on an idle server on this worker's threads, as admission charges them. Work over
        ``budget_s`` can never be admitted (heavy work: over ``heavy_budget_s``), however long
        it waits."""
        alone = self._fast_reservation(work_pixels, image_pixels)
        return _finish_bound(replace(alone, load=alone.work), self.settings.cpus)

    @property
    def heavy_budget_s(self) -> float:
        """The share of ``budget_s`` heavy work may use: it leaves ``reserve`` to small requests."""
        return self.budget_s * (1 - self.settings.reserve)

    def largest_alone(self) -> int:
        """The most pixels one heavy fast-style request may have here, on an idle server."""
        low, high = 0, int(self.settings.memory_bytes / self.settings.bytes_per_pixel)
        while low < high:  # seconds_alone grows with the pixels: bisect
            middle = (low + high + 1) // 2
            low, high = (middle, high) if self.seconds_alone(middle) <= self.heavy_budget_s else (low, middle - 1)
        return low

    def gatys(self, pixels: int):
        """Slot for a Gatys optimization producing ``pixels``: it holds its threads' cores, at
        most half the machine (see the module's cost model)."""
        reservation = Reservation(
            model=self.model, pixels=pixels, work=0.0, cores=min(self.threads, self.settings.cpus / 2),
            bytes=pixels * self.settings.gatys_bytes_per_pixel, threads=self.threads, budget_s=self.budget_s,
            heavy=True, pid_started=self._pid_started,
        )
        return self._slot(reservation)

    @contextmanager
    def _slot(self, reservation: Reservation, learn: bool = False) -> Iterator[float]:
        """Holds the reservation while the body runs; yields the seconds spent waiting.
        Raises ``InputError`` (413) at once for work that could not start even on an idle
        server, ``Overloaded`` if it does not fit within ``wait_s``. ``learn``: the body's
        time is the painting's, so a request that ran alone is an observation of the cost."""
        never = self._refused_alone(reservation)
        if never is not None:
            raise InputError(f"too large for this server: {ALONE[never]} ({reservation.pixels / 1e6:.1f} MP "
                             f"asked, {self._cost_source(reservation.pixels)})", status=413)
        started = self._clock()
        while True:
            refused = self.ledger.try_reserve(reservation, self.settings)
            if refused is None:
                break
            waited = self._clock() - started
            if waited >= self.settings.wait_s:
                reason, retry_after = refused
                raise Overloaded(
                    f"server busy: {REASONS[reason]} ({reservation.pixels / 1e6:.1f} MP asked; "
                    f"waited {waited:.0f}s); retry in {retry_after}s",
                    reason=reason, retry_after=retry_after,
                )
            self._sleep(min(0.25, self.settings.wait_s - waited))
        admitted = self._clock()
        finished = False
        try:
            hooks.reached("admitted", self.model)
            yield admitted - started
            finished = True
        finally:
            held = self.ledger.release(reservation.key)
            if learn and finished and held is not None and held.alone:
                self.cost.observe(reservation.pixels, self._clock() - admitted, self.threads)
