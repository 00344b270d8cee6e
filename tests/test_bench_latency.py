"""bench/latency.py's pure helpers (medians, p90 and speed-up of interleaved pairs, the
table), which are slim.io.latency's (tests/test_latency.py tests the verdict)."""
import os

import pytest
from bench_modules import load_bench

from slim.io.latency import NO_CHANGE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))




latency = load_bench("latency")


def test_speedup_is_the_median_of_per_pair_ratios_not_the_ratio_of_medians():
    # A load spike hits the 3rd pair (both runs slow): per-pair ratios are 2, 2, 2, 1, 1.
    baseline = [10.0, 12.0, 40.0, 11.0, 9.0]
    pruned = [5.0, 6.0, 20.0, 11.0, 9.0]
    summary = latency.pair_summary(baseline, pruned)
    assert summary["speedup"] == 2.0            # median of [2, 2, 2, 1, 1]
    assert summary["baseline_median_ms"] == 11.0
    assert summary["median_ms"] == 9.0           # 11 / 9 would be the ratio of medians
    assert summary["speedup_p10"] == pytest.approx(1.0)
    assert summary["speedup_p90"] == pytest.approx(2.0)
    assert summary["pairs"] == 5


def test_p90_interpolates_linearly():
    values = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 11.0]
    assert latency.percentile(values, 90) == 10.0
    assert latency.percentile([1.0, 2.0], 90) == pytest.approx(1.9)
    summary = latency.pair_summary(values, [v / 2 for v in values])
    assert summary["baseline_p90_ms"] == 10.0 and summary["p90_ms"] == 5.0
    assert summary["speedup"] == 2.0


def test_unpaired_timings_are_refused():
    with pytest.raises(ValueError, match="pair up: 3 baseline, 2 pruned"):
        latency.pair_summary([1.0, 2.0, 3.0], [1.0, 2.0])


def test_table_row():
    row = {"arch": "full", "size": 416, "model": "-50%", "round_to": 8, "flops_ratio": 0.4,
           "size_mb": 12.34, "onnx_size_mb": 11.96,
           "runtime": {"runtime": "paddle", "onednn": True, "threads": 2},
           "median_ms": 51.26, "p90_ms": 60.04, "speedup": 1.876}
    lines = latency.results_table([row])
    assert lines[0].count("|") == lines[1].count("|") == lines[2].count("|") == 12
    assert lines[2] == ("| full | 416 | -50% | 8 | 40.0% | 12.3 / 12.0 | paddle oneDNN 2t "
                        "| 51.3 | 60.0 | 1.88x | 2.50x |")
    noisy = dict(row, speedup=1.04, verdict=NO_CHANGE)
    assert "| 1.04x (n.s.) |" in latency.results_table([noisy])[2]
    assert latency.runtime_label({"runtime": "onnxruntime", "onednn": None, "threads": 1}) \
        == "onnxruntime 1t"
    assert [latency.runtime_name(r) for r in latency.RUNTIMES] == [
        "paddle-onednn", "paddle-onednn", "paddle", "paddle", "onnxruntime", "onnxruntime"]


def test_selected_architectures():
    every = {"full": ("f.yml", (320, 416), 416), "demo": ("d.yml", (160, 192), 192)}
    assert latency.selected_architectures(every) == every
    assert latency.selected_architectures(every, "full", 416) == {"full": ("f.yml", (416,), 416)}
    assert latency.selected_architectures(every, size=192) == {"demo": ("d.yml", (192,), 192)}
    with pytest.raises(ValueError, match="no architecture full at size 192"):
        latency.selected_architectures(every, "full", 192)


# The Event Summary of a real report (Paddle 3.3.1, 5 inferences of a small model), its
# last column (Ratio.) cut to fit the line length.
PADDLE_PROFILE = """
-------------------------       Event Summary       -------------------------

Event                                      Calls       Total       Min.        Max.        Ave.
thread0::conv2d                            250         35.2394     0.02453     4.37424     0.140958
thread0::multiclass_nms3                   5           13.2634     0.95209     5.17794     2.65268
thread0::Executor::Run                     1           6.15525     6.15525     6.15525     6.15525
  Executor::RunPartialPreparedContext      1           2.49332     2.49332     2.49332     2.49332
    load_combine                           1           2.24392     2.24392     2.24392     2.24392
thread0::yolo_box                          15          0.633924    0.025642    0.057968    0.0422616
"""


def test_paddle_profile_per_inference():
    ops = latency.parse_paddle_profile(PADDLE_PROFILE, runs=5)
    assert sorted(ops) == ["conv2d", "multiclass_nms3", "yolo_box"]  # no one-time Executor / load
    assert ops["conv2d"]["calls"] == 50 and ops["conv2d"]["ms"] == pytest.approx(7.04788)
    assert ops["yolo_box"] == {"calls": 3, "ms": pytest.approx(0.1267848)}


def test_profile_table_slowest_first_with_ratios():
    profiles = {"baseline": {"conv2d": {"calls": 50, "ms": 8.0}, "nms": {"calls": 1, "ms": 2.0}},
                "-50%": {"conv2d": {"calls": 50, "ms": 4.0}, "nms": {"calls": 1, "ms": 2.0}},
                "-50% r16": {"conv2d": {"calls": 50, "ms": 2.0}, "nms": {"calls": 1, "ms": 3.0}}}
    lines = latency.profile_table(profiles, "baseline", ["-50%", "-50% r16"])
    assert lines[0] == "| op | baseline ms | -50% ms | speed-up | -50% r16 ms | speed-up |"
    assert lines[1].count("|") == lines[0].count("|")
    assert lines[2:] == ["| conv2d | 8.00 | 4.00 | 2.00x | 2.00 | 4.00x |",
                         "| nms | 2.00 | 2.00 | 1.00x | 3.00 | 0.67x |",
                         "| total | 10.00 | 6.00 | 1.67x | 5.00 | 2.00x |"]


def test_activation_elements_and_depthwise_share():
    """A 3x8x8 image through a 4-channel conv (+ relu) and a depthwise 3x3 conv: activations
    are counted per op output, and the depthwise FLOPs share is exact."""
    import paddle
    program, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(program, startup):
        image = paddle.static.data("image", [1, 3, 8, 8], "float32")
        pointwise = paddle.nn.functional.relu(paddle.static.nn.conv2d(image, 4, 1, bias_attr=False))
        paddle.static.nn.conv2d(pointwise, 4, 3, padding=1, groups=4, bias_attr=False)
    # conv 4x8x8, relu 4x8x8, depthwise 4x8x8
    assert latency.activation_elements(program) == 3 * 4 * 8 * 8
    pointwise_flops, depthwise_flops = 4 * 3 * 64, 4 * 9 * 64
    assert latency.depthwise_share(program) == pytest.approx(
        depthwise_flops / (pointwise_flops + depthwise_flops))
