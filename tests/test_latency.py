"""slim.io.latency: interleaved timing, the median of per-pair ratios, p10 / p90, and the
verdict, on synthetic timings (no model is run)."""
import pytest

from slim.io.latency import (
    FASTER,
    NO_CHANGE,
    SLOWER,
    interleaved_timings,
    medians,
    pair_summary,
    speedup_text,
    verdict,
)


def test_ratios_straddling_one_are_no_significant_change():
    """Per-pair ratios 0.9 ... 1.4 (median 1.1): p10 0.99 < 1 < p90 1.31, so the noise is
    larger than the difference and the verdict says so, not '1.10x faster'."""
    ratios = [0.9, 1.0, 1.1, 1.1, 1.1, 1.1, 1.2, 1.2, 1.3, 1.4]
    pruned = [50.0 + i for i in range(10)]
    summary = pair_summary([r * p for r, p in zip(ratios, pruned)], pruned)
    assert summary["speedup"] == pytest.approx(1.1)
    assert summary["speedup_p10"] == pytest.approx(0.99)
    assert summary["speedup_p90"] == pytest.approx(1.31)
    assert summary["verdict"] == NO_CHANGE
    assert speedup_text(summary) == "no significant change (median 1.10x)"


def test_clear_speed_up_and_slow_down():
    faster = pair_summary([20.0, 22.0, 80.0, 21.0], [10.0, 10.5, 41.0, 10.0])
    assert faster["verdict"] == FASTER and faster["speedup_p10"] > 1
    assert speedup_text(faster) == f"{faster['speedup']:.2f}x faster"
    slower = pair_summary([10.0, 10.0, 10.0], [20.0, 20.0, 20.0])
    assert slower["verdict"] == SLOWER and speedup_text(slower) == "2.00x slower"


def test_identical_timings_and_the_edges():
    same = pair_summary([5.0, 6.0, 7.0], [5.0, 6.0, 7.0])
    assert same["speedup"] == 1.0 and same["verdict"] == NO_CHANGE
    assert verdict(1.0, 1.3, 1.2) == NO_CHANGE      # p10 exactly 1: not shown faster
    assert verdict(1.01, 1.3, 1.2) == FASTER
    assert verdict(0.7, 0.99, 0.8) == SLOWER
    assert verdict(0.7, 1.0, 0.9) == NO_CHANGE


def test_summary_keys_take_the_callers_prefixes():
    summary = pair_summary([4.0, 8.0], [2.0, 4.0], ("before_", "after_"))
    assert summary["before_median_ms"] == 6.0 and summary["after_median_ms"] == 3.0
    assert summary["before_p10_ms"] == pytest.approx(4.4)
    assert summary["after_p90_ms"] == pytest.approx(3.8)
    assert summary["pairs"] == 2 and summary["speedup"] == 2.0
    with pytest.raises(ValueError, match="pair up: 2 baseline, 1 pruned"):
        pair_summary([1.0, 2.0], [1.0])


def test_interleaved_timings_alternate_after_warmup():
    calls = []
    runs = {name: (lambda feed, name=name: calls.append((name, feed))) for name in "AB"}
    timings = interleaved_timings(runs, ["x", "y"], rounds=2, warmup=3)
    assert calls[:6] == [("A", "x")] * 3 + [("B", "x")] * 3
    assert calls[6:] == [("A", "x"), ("B", "x"), ("A", "y"), ("B", "y")] * 2
    assert {name: len(values) for name, values in timings.items()} == {"A": 4, "B": 4}
    assert medians({"A": [3.0, 1.0, 2.0]}) == {"A": 2.0}
