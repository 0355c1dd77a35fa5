"""Admission control without a server: the cost bound, the shared ledger, the 503 it raises."""

from __future__ import annotations

import contextlib
import json
import math
import multiprocessing
import subprocess
import sys
import time
from types import SimpleNamespace

import pytest
from ts.context import Context, RequestProcessor

from core import admission
from core.admission import Admission, CostModel, Ledger, Settings, SpeedBook
from core.errors import InputError, Overloaded
from core.runtime_choice import Measurement
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


def test_a_server_too_small_for_its_largest_image_refuses_to_start(tmp_path):
    with pytest.raises(ValueError, match=r"handler.max_pixels 16777216 .*STYLE_ADMISSION_CORE_SECONDS_PER_MEGAPIXEL"):
        Admission.for_worker("wave", {"responseTimeout": 60}, threads=1, max_pixels=4096 * 4096,
                             env={"STYLE_ADMISSION_CPUS": "2", "STYLE_ADMISSION_COST": "fixed"})
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
    settings = _settings(tmp_path, wait_s=0, core_seconds_per_megapixel=7.0)
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


def test_a_video_costs_all_its_frames_in_time_but_only_the_frames_in_flight_in_memory(tmp_path):
    settings = _settings(tmp_path, wait_s=0)
    door = _admission(settings, threads=2)
    frame, frames = 512 * 512, 200
    with door.video(frame, frames, in_flight=4):
        [video] = door.ledger.entries()
        assert video.work == pytest.approx(settings.work(frames * frame))
        assert video.bytes == pytest.approx(4 * frame * settings.bytes_per_pixel)
        assert video.heavy  # it leaves the reserve to small requests
        with door.fast(192 * 192):
            pass
        with pytest.raises(Overloaded, match="would not leave"), door.video(frame, frames, in_flight=4):
            pass
    assert door.ledger.entries() == []


def test_seconds_alone_is_the_bound_an_idle_server_admits_by(tmp_path):
    settings = _settings(tmp_path, wait_s=0)
    door = _admission(settings, threads=2)
    # 10 MP at 6 core-seconds each: 60 core-seconds on this worker's threads.
    assert door.seconds_alone(10 * MP) == pytest.approx(60 / 2)
    assert _admission(settings, threads=1).seconds_alone(10 * MP) == pytest.approx(60 / 1)
    assert door.heavy_budget_s == pytest.approx(door.budget_s * (1 - settings.reserve))
    fits = int(door.heavy_budget_s * door.threads / settings.core_seconds_per_megapixel * MP)  # just fits
    assert door.seconds_alone(fits) == pytest.approx(door.heavy_budget_s)
    with door.video(fits // 100, 100, in_flight=2):
        pass
    with pytest.raises(InputError, match="would not finish inside the response timeout") as refused, \
            door.video(fits // 100 + 1000, 100, in_flight=2):
        pass
    assert refused.value.status == 413  # at once: waiting cannot help it


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


# -- the cost learned from this machine's speed -------------------------------------------

KEY = "wave openvino/bf16 2 threads"
PHOTO = 4096 * 4096


def _learning(tmp_path, measured: float | None, clock: FakeClock, **overrides):
    """A 2-thread worker whose engine was measured at ``measured`` core-seconds per megapixel."""
    settings = _settings(tmp_path, wait_s=0, **overrides)
    cost = CostModel(settings, measured, SpeedBook(tmp_path / "speed.json"), KEY)
    return Admission(settings, "wave", 300, 2, sleep=clock.sleep, clock=clock, cost=cost)


def _painting(door: Admission, clock: FakeClock, pixels: int, core_seconds_per_megapixel: float) -> None:
    """One request alone that truly costs ``core_seconds_per_megapixel`` on the worker's threads."""
    with door.fast(pixels):
        clock.now += pixels / MP * core_seconds_per_megapixel / door.threads


def _admitted_at_once(door: Admission, pixels: int) -> int:
    slots = []
    with contextlib.ExitStack() as held, contextlib.suppress(Overloaded):
        while len(slots) < 50:
            slots.append(held.enter_context(door.fast(pixels)))
    return len(slots)


def test_small_photos_are_charged_the_measured_speed_large_ones_the_fixed_cost_until_seen(tmp_path):
    door = _learning(tmp_path, 1.0, FakeClock())
    assert door.cost.core_seconds_per_megapixel(512 * 512) == pytest.approx(1.0 * door.settings.safety)
    assert door.cost.core_seconds_per_megapixel(PHOTO) == door.settings.core_seconds_per_megapixel


def test_a_fast_machine_admits_more_than_a_slow_one(tmp_path):
    """Each has painted one large photo alone, at its own speed."""
    clock = FakeClock()
    fast, slow = _learning(tmp_path / "fast", 1.0, clock), _learning(tmp_path / "slow", 8.0, clock)
    _painting(fast, clock, PHOTO, 2.0)
    _painting(slow, clock, PHOTO, 9.0)
    assert _admitted_at_once(fast, PHOTO) > _admitted_at_once(slow, PHOTO) >= 1
    assert fast.largest_alone() > slow.largest_alone()


@pytest.mark.parametrize("true_cost", [1.5, 3.0, 8.0, 11.0])
def test_admitted_work_finishes_inside_the_budget_at_the_true_cost(tmp_path, true_cost):
    """Whatever the machine's true speed, once it has painted a few photos alone (the first
    one admitted on the fixed cost), everything admitted at once finishes inside the budget,
    even though the measurement on a small photo said 1 core-second per megapixel."""
    clock = FakeClock()
    door = _learning(tmp_path, 1.0, clock)
    for _ in range(4):
        _painting(door, clock, PHOTO, true_cost)
    assert door.cost.core_seconds_per_megapixel(PHOTO) >= true_cost
    admitted = _admitted_at_once(door, PHOTO)
    # All of them share the two cores from the start: the last finishes when all work is done.
    assert admitted * PHOTO / MP * true_cost / door.settings.cpus <= door.budget_s
    assert admitted >= 1


def test_a_class_is_never_charged_less_than_a_smaller_one(tmp_path):
    clock = FakeClock()
    door = _learning(tmp_path, 1.0, clock)
    _painting(door, clock, 3 * MP, 6.0)  # mid-sized photos were slow: large ones are at least as slow
    _painting(door, clock, PHOTO, 2.0)
    assert door.cost.core_seconds_per_megapixel(PHOTO) == door.cost.core_seconds_per_megapixel(3 * MP)


def test_small_shared_or_failed_requests_teach_nothing(tmp_path):
    clock = FakeClock()
    door = _learning(tmp_path, 1.0, clock)
    _painting(door, clock, 192 * 192, 50.0)  # a small photo's time is mostly fixed overhead
    with door.fast(1 * MP), door.fast(1 * MP):  # two at once: neither ran alone
        clock.now += 100
    with pytest.raises(RuntimeError), door.fast(1 * MP):
        clock.now += 100
        raise RuntimeError("the engine failed")
    assert door.cost.learned == {}


def test_one_slow_request_moves_the_cost_a_bounded_step(tmp_path):
    clock = FakeClock()
    door = _learning(tmp_path, 1.0, clock)
    _painting(door, clock, 1 * MP, 1.0)
    _painting(door, clock, 1 * MP, 1000.0)  # a passing storm on a shared machine
    assert door.cost.learned[0] == pytest.approx(1.0 + admission.LEARNING_RATE * (admission.MAX_STEP - 1.0))


def test_the_learned_cost_survives_a_restart_and_is_shared_by_the_model_s_workers(tmp_path):
    clock = FakeClock()
    first = _learning(tmp_path, 1.0, clock)
    for _ in range(3):
        _painting(first, clock, PHOTO, 2.0)
    restarted = _learning(tmp_path, 1.0, clock)
    assert restarted.cost.learned == pytest.approx(first.cost.learned)
    assert restarted.cost.core_seconds_per_megapixel(PHOTO) < restarted.settings.core_seconds_per_megapixel
    _painting(restarted, clock, PHOTO, 2.0)
    assert json.loads((tmp_path / "speed.json").read_text())[f"{KEY}, up to 17 MP"]["samples"] == 4


def test_a_fixed_cost_setting_wins_over_the_measurement(tmp_path):
    clock = FakeClock()
    door = _learning(tmp_path, 1.0, clock, cost="fixed")
    _painting(door, clock, 4 * MP, 2.0)
    for pixels in (512 * 512, PHOTO):
        assert door.cost.core_seconds_per_megapixel(pixels) == door.settings.core_seconds_per_megapixel == 6.0
    with pytest.raises(ValueError, match="STYLE_ADMISSION_COST must be one of measured, fixed"):
        Settings.from_environment({"STYLE_ADMISSION_COST": "guess"})


def test_the_measured_speed_is_the_chosen_engine_s_time_per_megapixel(tmp_path):
    measured = [Measurement("onnxruntime/fp32", 0.4, math.inf), Measurement("openvino/bf16", 0.1, 60.0)]
    stylizer = SimpleNamespace(runtime="openvino/bf16", choice=SimpleNamespace(measurements=measured),
                               settings=SimpleNamespace(threads=2))
    pixels = admission.measuring_pixels()
    assert admission.measured_speed(stylizer) == pytest.approx(0.1 * 2 / (pixels / MP))
    stylizer.choice.measurements = []  # an engine given, not chosen: nothing measured
    assert admission.measured_speed(stylizer) is None


def test_a_slow_worker_still_starts_and_answers_413_over_what_fits(tmp_path, caplog):
    env = {"STYLE_ADMISSION_CPUS": "2", "STYLE_ADMISSION_MEMORY_BYTES": str(14 * GIB),
           "STYLE_ADMISSION_LEDGER": str(tmp_path / "ledger.json"), "STYLE_RUNTIME_DIR": str(tmp_path)}
    door = Admission.for_worker("wave", {"responseTimeout": 120}, threads=2, max_pixels=PHOTO, env=env)
    assert "photos over" in caplog.text
    with pytest.raises(InputError, match="too large for this server") as refused, door.fast(PHOTO):
        pass
    assert refused.value.status == 413
    largest = door.largest_alone()
    assert 0 < largest < PHOTO
    with pytest.raises(InputError), door.fast(largest + 1):
        pass
    with door.fast(largest):
        pass


def test_without_a_measurement_the_first_observation_replaces_the_fixed_guess(tmp_path):
    clock = FakeClock()
    door = _learning(tmp_path, None, clock)  # an engine given, not chosen
    assert door.cost.core_seconds_per_megapixel(512 * 512) == door.settings.core_seconds_per_megapixel
    _painting(door, clock, 512 * 512, 2.0)
    assert door.cost.learned == {0: pytest.approx(2.0)}
    assert door.cost.core_seconds_per_megapixel(512 * 512) == pytest.approx(2.0 * door.settings.safety)
