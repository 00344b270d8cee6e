"""bench/latency_target.py's pure helpers: a row against its target, and the table."""
import pytest
from bench_modules import load_bench

bench = load_bench("latency_target")


def test_row_compares_the_measured_speedup_with_the_targets():
    measured = {"speedup": 1.9, "speedup_p10": 1.5, "speedup_p90": 2.3, "verdict": "faster",
                "baseline_median_ms": 100.0, "median_ms": 52.0}
    predicted = {"predicted_speedup": 2.05, "predicted_after_ms": 48.8}
    row = bench.target_row(0.5, measured, predicted, 0.41, 0.37)
    assert row["target_speedup"] == pytest.approx(2.0)
    assert row["measured_vs_target"] == pytest.approx(-0.05)  # 1.9x is 5% short of 2x
    assert (row["flops_ratio"], row["params_ratio"]) == (0.41, 0.37)
    row.update(arch="full", size=416, runtime="onnxruntime", load_average=[9.5, 9, 8])
    (line,) = bench.results_table([row])[2:]
    assert line == ("| full | 416 | onnxruntime | 0.5x | 1.90x (1.50-2.30) | 2.00x | 2.05x "
                    "| 41.0% | 37.0% | 9.5 |")


def test_refined_ratio_corrects_by_the_measured_bias():
    # target 0.5, predicted 2.0x, measured 1.6x: plan for 2.0 / 0.8 = 2.5x predicted
    assert bench.refined_ratio(0.5, 1.6, 2.0) == pytest.approx(0.4)
    assert bench.refined_ratio(0.3, 0.1, 3.3) == pytest.approx(0.05)  # clamped
    assert bench.refined_ratio(0.5, 3.0, 1.0) == pytest.approx(0.95)  # clamped above
