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

- a fast-style request of ``p`` pixels is ``p * core_seconds_per_megapixel / 1e6``
  core-seconds of work and ``p * bytes_per_pixel`` bytes of memory;
- a Gatys request holds cores for its whole run (it stops at its own time budget) and
  ``p * gatys_bytes_per_pixel`` bytes. It runs with every core when the server is idle, but
  its threads time-share the cores with the fast styles' (the scheduler gives runnable
  threads equal shares), so it is charged at most half the machine: the other half stays
  for the fast styles' requests beside it.

A request may start only if, with it, every fast request in flight still finishes inside
its own budget (``responseTimeout - wait_s - margin_s``). Request ``r``'s finishing time is
bounded by ``load_r / free_cores + work_r / threads_r``: while the cores are oversubscribed
all work drains at ``free_cores`` per second, and ``load_r`` is all the work that ever ran
beside ``r`` (everything in flight when it started plus everything admitted since, counted
whole); the rest of the time ``r`` runs at its own speed. ``free_cores`` is what Gatys
leaves. Heavy requests (over ``heavy_pixels``) must fit in ``1 - reserve`` of the budget, so
small interactive ones still find room beside a burst of large photos. Memory: the
reservations' sum stays under ``memory_bytes``.
"""

from __future__ import annotations

import fcntl
import json
import math
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import psutil

from core import hooks
from core.errors import Overloaded
from core.settings import RESPONSE_TIMEOUT_S, default
from core.settings import env as setting

ENV_PREFIX = "STYLE_ADMISSION_"
LEDGER_NAME = "style-admission.json"
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


@dataclass(frozen=True)
class Settings:
    """The bound's inputs. ``cpus``/``memory_bytes`` default to the machine's (see
    ``machine_cpus``/``machine_memory``; ``memory_fraction`` of the memory goes to heavy
    work, the rest is the idle server and headroom); the per-pixel costs are measured by
    ``python -m bench.load --mode calibrate`` and rounded up; the time cost about twice what
    a quiet machine shows, so a machine shared with other work still finishes in time.
    Each field is the variable ``STYLE_ADMISSION_<FIELD>``; its default is declared there."""

    cpus: float = field(default_factory=machine_cpus)
    memory_bytes: int = default("STYLE_ADMISSION_MEMORY_BYTES")  # 0: memory_fraction of machine_memory()
    memory_fraction: float = default("STYLE_ADMISSION_MEMORY_FRACTION")
    core_seconds_per_megapixel: float = default("STYLE_ADMISSION_CORE_SECONDS_PER_MEGAPIXEL")
    bytes_per_pixel: float = default("STYLE_ADMISSION_BYTES_PER_PIXEL")
    gatys_bytes_per_pixel: float = default("STYLE_ADMISSION_GATYS_BYTES_PER_PIXEL")
    wait_s: float = default("STYLE_ADMISSION_WAIT_S")
    margin_s: float = default("STYLE_ADMISSION_MARGIN_S")
    heavy_pixels: int = default("STYLE_ADMISSION_HEAVY_PIXELS")
    reserve: float = default("STYLE_ADMISSION_RESERVE")
    ledger: str = default("STYLE_ADMISSION_LEDGER")  # "": style-admission.json in the server's temp folder

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
        for name in ("cpus", "core_seconds_per_megapixel", "bytes_per_pixel", "memory_fraction"):
            if getattr(settings, name) <= 0:
                raise ValueError(f"${ENV_PREFIX}{name.upper()} must be more than zero, got {getattr(settings, name)}")
        if not settings.memory_fraction <= 1 or not settings.reserve < 1:
            raise ValueError(f"${ENV_PREFIX}MEMORY_FRACTION must be at most 1 and ${ENV_PREFIX}RESERVE "
                             f"below 1, got {settings.memory_fraction} and {settings.reserve}")
        if not settings.memory_bytes:
            settings = replace(settings, memory_bytes=int(settings.memory_fraction * machine_memory()))
        return settings

    def work(self, pixels: int) -> float:
        """Core-seconds a fast-style request of ``pixels`` costs."""
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


def _finish_bound(entry: Reservation, free_cores: float) -> float:
    """Seconds from its start by which ``entry`` has finished (see the module doc)."""
    return entry.load / free_cores + entry.work / min(entry.threads, free_cores)


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


class Ledger:
    """The reservations of every worker of this server, in one locked JSON file."""

    def __init__(self, path: Path):
        self.path = Path(path)

    @contextmanager
    def _open(self) -> Iterator[list[Reservation]]:
        """Yields the live reservations under the lock; what the caller leaves is written back."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a+") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            file.seek(0)
            text = file.read()
            try:
                entries = [Reservation(**row) for row in json.loads(text)] if text.strip() else []
            except (ValueError, TypeError):
                entries = []  # a torn or foreign file: start afresh rather than block forever
            live = [e for e in entries if _alive(e.pid, e.pid_started)]
            yield live
            file.seek(0)
            file.truncate()
            file.write(json.dumps([asdict(e) for e in live]))

    def try_reserve(self, candidate: Reservation, settings: Settings) -> tuple[str, int] | None:
        """Adds ``candidate`` if it fits; else returns (reason, retry-after seconds)."""
        with self._open() as entries:
            candidate.load = sum(e.work for e in entries) + candidate.work
            reason = refusal(entries, candidate, settings)
            if reason is not None:
                return reason, _retry_after(entries, candidate, settings, time.time())
            for entry in entries:
                entry.load += candidate.work
            candidate.started = time.time()
            entries.append(candidate)
        return None

    def release(self, key: str) -> None:
        with self._open() as entries:
            entries[:] = [e for e in entries if e.key != key]

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
                 sleep: Callable[[float], None] = time.sleep, clock: Callable[[], float] = time.monotonic):
        self.settings = settings
        self.model = model
        self.budget_s = response_timeout_s - settings.wait_s - settings.margin_s
        self.threads = min(threads or settings.cpus, settings.cpus)
        self.ledger = Ledger(settings.ledger_path())
        self._sleep, self._clock = sleep, clock
        self._pid_started = psutil.Process().create_time()

    @classmethod
    def for_worker(cls, model: str, model_config: Mapping | None, threads: float = 0,
                   max_pixels: int | None = None, env: Mapping[str, str] | None = None) -> Admission:
        """Reads and checks the settings at worker start-up (``ValueError`` naming the setting):
        the budget must be positive and, on an idle server, the largest image the handler
        accepts (``max_pixels``) must fit, or it could never be painted."""
        hooks.worker_starting(model, env)  # every worker passes here first: plugins load now
        settings = Settings.from_environment(env)
        timeout = float((model_config or {}).get("responseTimeout", DEFAULT_RESPONSE_TIMEOUT_S))
        admission = cls(settings, model, timeout, threads)
        if admission.budget_s <= 0:
            raise ValueError(f"responseTimeout {timeout:g}s leaves no time after ${ENV_PREFIX}WAIT_S "
                             f"{settings.wait_s:g}s and ${ENV_PREFIX}MARGIN_S {settings.margin_s:g}s")
        if max_pixels:
            largest = admission._fast_reservation(max_pixels)
            largest.load = largest.work
            reason = refusal([], largest, settings)
            if reason is not None:
                raise ValueError(
                    f"handler.max_pixels {max_pixels} cannot be painted on this server even when idle "
                    f"({ALONE[reason]}: {settings.cpus:g} cores, {settings.memory_bytes / 2**30:.1f} GiB for "
                    f"images, responseTimeout {timeout:g}s, ${ENV_PREFIX}CORE_SECONDS_PER_MEGAPIXEL "
                    f"{settings.core_seconds_per_megapixel:g}, ${ENV_PREFIX}BYTES_PER_PIXEL "
                    f"{settings.bytes_per_pixel:g}); lower handler.max_pixels or give the server more"
                )
        return admission

    def _fast_reservation(self, pixels: int) -> Reservation:
        return Reservation(
            model=self.model, pixels=pixels, work=self.settings.work(pixels), cores=0.0,
            bytes=pixels * self.settings.bytes_per_pixel, threads=self.threads, budget_s=self.budget_s,
            heavy=pixels > self.settings.heavy_pixels, pid_started=self._pid_started,
        )

    def fast(self, pixels: int):
        """Slot for a fast-style request of ``pixels`` (all its images together)."""
        return self._slot(self._fast_reservation(pixels))

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
    def _slot(self, reservation: Reservation) -> Iterator[float]:
        """Holds the reservation while the body runs; yields the seconds spent waiting.
        Raises ``Overloaded`` if it does not fit within ``wait_s``."""
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
        try:
            hooks.reached("admitted", self.model)
            yield self._clock() - started
        finally:
            self.ledger.release(reservation.key)
