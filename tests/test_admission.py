"""Admission control without a server: the cost bound, the shared ledger, the 503 it raises."""

from __future__ import annotations

import json
import multiprocessing
import subprocess
import sys
import time

import pytest
from ts.context import Context, RequestProcessor

from core import admission
from core.admission import Admission, Ledger, Settings
from core.errors import Overloaded
from core.torchserve import answer_error
from server.launch import ROOT

MP = 1_000_000
GIB = 2**30


def _settings(tmp_path, **overrides) -> Settings:
    """Two cores, 14 GiB for images: the numbers of the project's 24 GiB reference machine."""
    values = {"cpus": 2.0, "memory_bytes": 14 * GIB, "core_seconds_per_megapixel": 6.0,
              "ledger": str(tmp_path / "ledger.json"), **overrides}
    return Settings(**values)


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _admission(settings: Settings, clock: FakeClock | None = None, threads: float = 1, timeout: float = 300):
    clock = clock or FakeClock()
    return Admission(settings, "wave", timeout, threads, sleep=clock.sleep, clock=clock)


@pytest.mark.parametrize(
    "variable, value, words",
    [
        ("STYLE_ADMISSION_WAIT_S", "soon", "STYLE_ADMISSION_WAIT_S must be a float"),
        ("STYLE_ADMISSION_CPUS", "-2", "STYLE_ADMISSION_CPUS must be zero or more"),
        ("STYLE_ADMISSION_CPUS", "0", "STYLE_ADMISSION_CPUS must be more than zero"),
        ("STYLE_ADMISSION_CORE_SECONDS_PER_MEGAPIXEL", "nan", "CORE_SECONDS_PER_MEGAPIXEL must be zero or more"),
        ("STYLE_ADMISSION_MEMORY_FRACTION", "1.5", "MEMORY_FRACTION must be at most 1"),
        ("STYLE_ADMISSION_HEAVY_PIXELS", "lots", "STYLE_ADMISSION_HEAVY_PIXELS must be a int"),
    ],
)
def test_bad_settings_are_refused_at_start_up_by_name(variable, value, words):
    with pytest.raises(ValueError, match=words):
        Admission.for_worker("wave", {"responseTimeout": 300}, env={variable: value})


def test_settings_default_to_the_machine_and_read_overrides(tmp_path):
    settings = Settings.from_environment({"STYLE_ADMISSION_CPUS": "3", "STYLE_ADMISSION_LEDGER": str(tmp_path / "x")})
    assert settings.cpus == 3.0 and settings.ledger_path() == tmp_path / "x"
    assert 0 < settings.memory_bytes <= admission.machine_memory()
    assert Settings.from_environment({}).cpus == admission.machine_cpus() >= 1


def test_a_server_too_small_for_its_largest_image_refuses_to_start():
    with pytest.raises(ValueError, match=r"handler.max_pixels 16777216 .*STYLE_ADMISSION_CORE_SECONDS_PER_MEGAPIXEL"):
        Admission.for_worker("wave", {"responseTimeout": 60}, threads=1, max_pixels=4096 * 4096,
                             env={"STYLE_ADMISSION_CPUS": "2"})
    with pytest.raises(ValueError, match="more memory than the budget"):
        Admission.for_worker("wave", {"responseTimeout": 300}, threads=1, max_pixels=4096 * 4096,
                             env={"STYLE_ADMISSION_CPUS": "2", "STYLE_ADMISSION_MEMORY_BYTES": str(2 * GIB)})
    with pytest.raises(ValueError, match="responseTimeout 25s leaves no time"):
        Admission.for_worker("wave", {"responseTimeout": 25}, env={"STYLE_ADMISSION_CPUS": "2"})
    fits = Admission.for_worker("wave", {"responseTimeout": 300}, threads=2, max_pixels=4096 * 4096,
                                env={"STYLE_ADMISSION_CPUS": "2", "STYLE_ADMISSION_MEMORY_BYTES": str(14 * GIB)})
    assert fits.budget_s == 300 - 10 - 20


def test_two_16_megapixel_photos_fit_a_third_waits_then_gets_503(tmp_path):
    settings = _settings(tmp_path)
    clock = FakeClock()
    door = _admission(settings, clock)
    photo = 4096 * 4096
    with door.fast(photo), door.fast(photo):
        with pytest.raises(Overloaded) as refused, door.fast(photo):
            pass
        assert clock.now == pytest.approx(settings.wait_s)  # it waited the bounded time first
        assert refused.value.status == 503 and refused.value.reason in ("time", "memory")
        # Room comes when one of the two has surely finished: within the budget, not before it starts.
        assert 1 <= refused.value.retry_after <= door.budget_s
        with door.fast(192 * 192):  # a small photo still fits beside the burst (the reserve)
            assert len(door.ledger.entries()) == 3
    assert door.ledger.entries() == []


def test_every_admitted_request_keeps_its_finishing_bound_inside_its_budget(tmp_path):
    """Whatever order requests of mixed sizes arrive in, the admitted set keeps the invariant."""
    settings = _settings(tmp_path, wait_s=0)
    door = _admission(settings)
    ledger = Ledger(settings.ledger_path())
    sizes = [16 * MP, 9 * MP, 2 * MP, 16 * MP, 0.04 * MP, 4 * MP, 12 * MP, 0.2 * MP] * 3
    admitted = refused = 0
    held = []
    for size in sizes:
        slot = door.fast(int(size))
        try:
            slot.__enter__()
            held.append(slot)
            admitted += 1
        except Overloaded:
            refused += 1
        entries = ledger.entries()
        free = settings.cpus - sum(e.cores for e in entries)
        for entry in entries:
            assert admission._finish_bound(entry, free) <= entry.budget_s + 1e-9
        assert sum(e.bytes for e in entries) <= settings.memory_bytes
    for slot in held:
        slot.__exit__(None, None, None)
    assert admitted >= 3 and refused >= 3


def test_gatys_leaves_fast_work_its_deadlines(tmp_path):
    settings = _settings(tmp_path, wait_s=0)
    fast, gatys = _admission(settings), _admission(settings, threads=1)
    two = 4096 * 4096
    with fast.fast(two), fast.fast(two), pytest.raises(Overloaded, match="would not leave"), gatys.gatys(512**2):
        pass
    with gatys.gatys(512 * 512):
        # One large photo still fits on the core Gatys leaves; a second does not.
        with fast.fast(4096 * 4096), pytest.raises(Overloaded), fast.fast(4096 * 4096):
            pass
        with fast.fast(192 * 192):
            pass


def test_memory_is_bounded_apart_from_time(tmp_path):
    settings = _settings(tmp_path, memory_bytes=8 * GIB, wait_s=0)
    door = _admission(settings)
    with door.fast(4096 * 4096), pytest.raises(Overloaded) as refused, door.fast(4096 * 4096):
        pass
    assert refused.value.reason == "memory" and "memory budget" in str(refused.value)


def _reserve_and_hang(ledger_path: str, ready) -> None:
    settings = Settings(cpus=2.0, memory_bytes=14 * GIB, core_seconds_per_megapixel=6.0, ledger=ledger_path)
    with Admission(settings, "wave", 300, 1).fast(4096 * 4096):
        ready.set()
        time.sleep(600)


def test_reservations_of_a_killed_worker_are_reclaimed(tmp_path):
    settings = _settings(tmp_path, wait_s=0)
    ready = multiprocessing.get_context("fork").Event()
    worker = multiprocessing.get_context("fork").Process(target=_reserve_and_hang,
                                                         args=(settings.ledger, ready))
    worker.start()
    assert ready.wait(30)
    door = _admission(settings)
    assert [e.pid for e in door.ledger.entries()] == [worker.pid]
    worker.kill()
    worker.join()
    assert door.ledger.entries() == []
    with door.fast(4096 * 4096), door.fast(4096 * 4096):
        pass


def test_processes_racing_for_the_ledger_never_overbook_it(tmp_path):
    """Six processes ask at once for a 16 MP slot each and hold what they get until the four
    refused ones have exited: exactly two fit."""
    ledger, release = tmp_path / "ledger.json", tmp_path / "release"
    script = (
        "import time; from pathlib import Path; from core.admission import Admission, Settings\n"
        "from core.errors import Overloaded\n"
        f"s = Settings(cpus=2.0, memory_bytes={14 * GIB}, core_seconds_per_megapixel=6.0, wait_s=0, "
        f"ledger={str(ledger)!r})\n"
        "try:\n"
        "    with Admission(s, 'wave', 300, 1).fast(4096 * 4096):\n"
        "        print('admitted', flush=True)\n"
        f"        while not Path({str(release)!r}).exists(): time.sleep(0.05)\n"
        "except Overloaded:\n"
        "    print('refused', flush=True)\n"
    )
    runs = [subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stdout=subprocess.PIPE, text=True)
            for _ in range(6)]
    deadline = time.monotonic() + 60
    while sum(run.poll() is not None for run in runs) < 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    release.write_text("")
    outcomes = sorted(run.communicate(timeout=60)[0].strip() for run in runs)
    assert outcomes == ["admitted"] * 2 + ["refused"] * 4


def test_the_503_names_the_reason_and_carries_retry_after():
    context = Context("wave", "/tmp", {"model": {}}, 1, None, "0.12.0")
    context.request_processor = [RequestProcessor({})]
    error = Overloaded("server busy: memory", reason="memory", retry_after=42)
    body = json.loads(answer_error(context, 0, error))
    assert body == {"code": 503, "type": "Overloaded", "message": "server busy: memory", "reason": "memory",
                    "retry_after_s": 42}
    assert context.get_response_status(0)[0] == 503
    assert context.get_response_headers(0)["Retry-After"] == "42"
