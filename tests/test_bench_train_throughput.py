"""bench/train_throughput.py's pure helpers: the overhead, the interleaving, the table."""
import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench"))
import train_throughput  # noqa: E402


def test_overhead_is_the_median_of_per_pair_shares():
    # load spikes slow both runs of a pair: per-pair shares 0, 0.1, 0.2, 0.2, 0.5 (median
    # 0.2), while the medians of each side, 1.0 and 2.0, would say 0.5
    pairs = [(2.0, 2.0), (0.9, 1.0), (4.0, 5.0), (0.8, 1.0), (1.0, 2.0)]
    assert train_throughput.overhead(pairs) == pytest.approx(0.2)
    assert train_throughput.images_per_second([0.5, 0.25, 1.0], 8) == pytest.approx(16.0)


def test_interleaved_alternates_which_runs_first():
    calls = []
    pairs = train_throughput.interleaved(lambda: calls.append("a") or 1.0,
                                         lambda: calls.append("b") or 2.0, 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert pairs == [(1.0, 2.0)] * 3


def test_table_has_a_line_per_size_and_worker_count():
    cell = {"loader_images_per_s": 200.0, "loop_with_loader_images_per_s": 11.0,
            "slowdown_vs_preloaded": 0.02}
    rows = [{"size": 160, "bare_images_per_s": 12.0, "loop_images_per_s": 11.5,
             "loop_overhead": 0.04, "workers": {"0": cell, "2": cell}}]
    lines = train_throughput.format_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[2] == "| 160 | 12.0 | 11.5 | +4.0% | 0 | 200.0 | 11.0 | +2.0% |"
