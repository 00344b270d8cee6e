"""Latency measured side by side: interleaved pairs after warm-up, medians, p10 / p90, and
a verdict that says "no significant change" when the machine's noise is larger than the
difference.

    timings = interleaved_timings({"before": run_a, "after": run_b}, [feeds], rounds=20,
                                  warmup=WARMUP_RUNS)
    summary = pair_summary(timings["before"], timings["after"], ("before_", "after_"))
    print(speedup_text(summary))         # "1.42x faster" / "no significant change (...)"

On a shared machine a load spike slows whatever runs during it. Timing the models
interleaved (A, B, A, B ...) puts the i-th runs of all models in the same moment, so
the speed-up is the median of the per-pair ratios A / B, not the ratio of two medians
taken at different times. When the 10th and 90th percentiles of those ratios straddle 1
(p10 <= 1 <= p90), the measurement cannot tell the models apart: the verdict is
NO_CHANGE, whatever the median says (issue 21: 20 pairs on a loaded machine printed
"1.11x faster" for a model whose median was slower).

The demo (`slim.workflow.latency`), `python -m slim prune` and bench/latency.py measure
with this module. No paddle here: the runs are any functions of one feed.
"""
import os
import platform
import time

import numpy as np

WARMUP_RUNS = 3
FASTER, SLOWER, NO_CHANGE = "faster", "slower", "no significant change"


def load_average():
    """The 1, 5 and 15 minute load averages (None where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def machine_info(**extra):
    """{"platform", "cpus", "python"} of this machine and process, and `extra` (versions of
    the runtimes, load averages): what a report or bench result says it was measured on."""
    return {"platform": platform.platform(), "cpus": os.cpu_count(),
            "python": platform.python_version(), **extra}


def interleaved_timings(runs, feeds, rounds, warmup=1):
    """{name: [ms of each run]} of the functions `runs` ({name: run(feed)}), each timed on
    every feed of `feeds` for `rounds` rounds, interleaved (A, B, A, B ...: the i-th
    timings of all names were taken back to back), after `warmup` untimed runs of each on
    the first feed (first runs allocate and optimise)."""
    for run in runs.values():
        for _ in range(warmup):
            run(feeds[0])
    timings = {name: [] for name in runs}
    for _ in range(rounds):
        for feed in feeds:
            for name, run in runs.items():
                started = time.perf_counter()
                run(feed)
                timings[name].append(1000.0 * (time.perf_counter() - started))
    return timings


def percentile(values, q):
    """The q-th percentile (0-100) of `values`, linear interpolation (numpy's default)."""
    return float(np.percentile(np.asarray(values, dtype=np.float64), q))


def medians(timings):
    """{name: median ms} of `interleaved_timings`' result."""
    return {name: percentile(values, 50) for name, values in timings.items()}


def verdict(speedup_p10, speedup_p90, speedup):
    """FASTER / SLOWER, or NO_CHANGE when the per-pair ratios' p10 and p90 straddle 1."""
    if speedup_p10 <= 1.0 <= speedup_p90:
        return NO_CHANGE
    return FASTER if speedup > 1.0 else SLOWER


def pair_summary(baseline_ms, other_ms, prefixes=("baseline_", "")):
    """Medians, p10 and p90 of two timing lists whose i-th entries were measured back to
    back (keys `{prefix}median_ms`, `{prefix}p10_ms`, `{prefix}p90_ms` with `prefixes` for
    the baseline and the other), the speed-up as the median (`speedup`) and p10 / p90 of
    the per-pair ratios baseline / other, `pairs`, and `verdict` (see `verdict`)."""
    baseline_ms = np.asarray(baseline_ms, dtype=np.float64)
    other_ms = np.asarray(other_ms, dtype=np.float64)
    if len(baseline_ms) != len(other_ms) or not len(baseline_ms):
        raise ValueError(f"timings must pair up: {len(baseline_ms)} baseline, "
                         f"{len(other_ms)} pruned")
    summary = {}
    for prefix, values in zip(prefixes, (baseline_ms, other_ms)):
        for q, name in ((50, "median"), (10, "p10"), (90, "p90")):
            summary[f"{prefix}{name}_ms"] = percentile(values, q)
    ratios = baseline_ms / other_ms
    summary.update(speedup=percentile(ratios, 50), speedup_p10=percentile(ratios, 10),
                   speedup_p90=percentile(ratios, 90), pairs=int(len(ratios)))
    summary["verdict"] = verdict(summary["speedup_p10"], summary["speedup_p90"],
                                 summary["speedup"])
    return summary


def speedup_text(summary):
    """'1.42x faster', '1.10x slower' or 'no significant change (median 1.03x)' of a
    `pair_summary`."""
    speedup = summary["speedup"]
    if summary["verdict"] == NO_CHANGE:
        return f"{NO_CHANGE} (median {speedup:.2f}x)"
    if summary["verdict"] == FASTER:
        return f"{speedup:.2f}x faster"
    return f"{1.0 / speedup:.2f}x slower"
