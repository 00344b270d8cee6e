"""bench/train_throughput.py's pure helpers: the overhead, the interleaving, the table."""
import os
import sys
import time

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
    pairs = train_throughput.interleaved([lambda: calls.append("a") or 1.0,
                                          lambda: calls.append("b") or 2.0], 3)
    assert calls == ["a", "b", "b", "a", "a", "b"]
    assert pairs == [(1.0, 2.0)] * 3


def test_interleaved_rotates_three_runs_through_every_place():
    calls = []
    runs = [lambda name=name, seconds=seconds: calls.append(name) or seconds
            for name, seconds in (("a", 1.0), ("b", 2.0), ("c", 3.0))]
    timings = train_throughput.interleaved(runs, 3)
    assert calls == ["a", "b", "c", "b", "c", "a", "c", "a", "b"]
    assert timings == [(1.0, 2.0, 3.0)] * 3


CELL = {"loader_images_per_s": 200.0, "loop_with_loader_images_per_s": 11.0,
        "slowdown_vs_preloaded": 0.02, "wait_for_data_share": 0.004}


def test_table_has_a_line_per_size_and_worker_count():
    rows = [{"size": 160, "bare_images_per_s": 12.0, "loop_images_per_s": 11.5,
             "loop_overhead": 0.04, "workers": {"0": CELL, "2": CELL}}]
    lines = train_throughput.format_table(rows).splitlines()
    assert len(lines) == 4
    assert lines[1] == "|---" * 9 + "|"
    assert lines[2] == "| 160 | 12.0 | 11.5 | +4.0% | 0 | 200.0 | 11.0 | +2.0% | 0.4% |"


def test_table_shows_the_loader_without_prefetch_when_compared():
    compared = dict(CELL, without_prefetch={"loop_with_loader_images_per_s": 10.0,
                                            "slowdown_vs_preloaded": 0.075,
                                            "wait_for_data_share": 0.031})
    rows = [{"size": 224, "bare_images_per_s": 12.0, "loop_images_per_s": 11.5,
             "loop_overhead": 0.04, "workers": {"0": compared, "2": CELL}}]
    lines = train_throughput.format_table(rows).splitlines()
    assert lines[0].endswith("| without prefetch: loop+loader img/s | loader slowdown | waiting for data |")
    assert lines[1] == "|---" * 12 + "|"
    assert lines[2] == ("| 224 | 12.0 | 11.5 | +4.0% | 0 | 200.0 | 11.0 | +2.0% | 0.4% | 10.0 | +7.5% "
                        "| 3.1% |")
    assert lines[3].endswith("| +2.0% | 0.4% | - | - | - |")


def test_streamed_cell_is_the_loader_slowdown_of_the_pairs():
    cell = train_throughput.streamed_cell([(1.0, 1.25), (2.0, 2.0), (1.0, 1.1)], [0.25, 0.0, 0.011], 8)
    assert cell["slowdown_vs_preloaded"] == pytest.approx(1 - 1 / 1.1)
    assert cell["loop_with_loader_s_per_iter"] == [1.25, 2.0, 1.1]
    assert cell["loop_with_loader_images_per_s"] == pytest.approx(8 / 1.25)
    # wait shares 0.2, 0.0, 0.01: median 0.01
    assert cell["wait_for_data_share"] == pytest.approx(0.01)
    assert cell["wait_for_data_s_per_iter"] == [0.25, 0.0, 0.011]


def test_wait_timed_adds_up_the_time_spent_in_next():
    def slow_numbers():
        for number in range(3):
            time.sleep(0.02)
            yield number
    timed = train_throughput.WaitTimed(slow_numbers())
    assert list(timed) == [0, 1, 2]
    assert 0.06 <= timed.waited < 1.0
    quick = train_throughput.WaitTimed([1, 2, 3])
    assert list(quick) == [1, 2, 3] and quick.waited < 0.01
