#!/usr/bin/env python
"""Training throughput: what the compress/train loop costs over a bare `exe.run` loop, and
whether the data loader keeps up.

    python bench/train_throughput.py [--sizes 160 224] [--workers 0 2] [--quick]
        [--compare-prefetch] [--machine-note TEXT] [--json bench/results/train_throughput.json]

On the demo config (configs/yolov3_mobilenet_v1_demo.yml, generated demo data), per
input size:

- **bare**: `executor.run(train program, feed, fetch_list=[loss])` over batches held
  in memory, the least a training loop can do;
- **loop**: the same batches through what compress.py and train.py run:
  `slim.engine.Runner` with `slim.runs.loop.train_step` (four loss fetches turned
  into floats) and the hooks every run has (NaN guard, LR schedule, train log);
- **loader**: the training loader alone (decode, augment, batch), per worker count;
- **loop + loader**: the loop reading the loader's stream, as in a real run (the loader's
  background thread preparing the next batches while a step runs);
- with --compare-prefetch also **loop + loader without prefetch**: the same with the
  loader's `prefetch` off (each batch built when the loop asks for it), interleaved in the
  same rounds, so the prefetch thread's gain is measured side by side.

bare and loop run interleaved in chunks of --chunk iterations, alternating which goes
first, --rounds times; the overhead is the median over the pairs of 1 - bare / loop
(s/iter), and the loader's cost the same over (loop in memory, loop + loader) pairs.
"waiting for data" is the median share of a loop + loader round spent inside the loader's
next(): the part of the loader's cost the loop does not hide, measured directly (the
slowdown compares two runs and carries the machine's noise).
Prints a table and writes JSON.
"""
import argparse
import copy
import functools
import itertools
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slim.io.latency import load_average, machine_info  # noqa: E402

DEMO_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml")


def overhead(pairs):
    """The median over interleaved (fast, slow) timing pairs of 1 - fast / slow: the share of
    the slower loop's time it spends on what the faster one does not do. Per-pair ratios, so
    a load spike that slows both runs of a pair does not move it."""
    return statistics.median(1.0 - fast / slow for fast, slow in pairs)


def images_per_second(seconds_per_iteration, batch_size):
    return batch_size / statistics.median(seconds_per_iteration)


def interleaved(runs, rounds):
    """Per-round timings [(s/iter of runs[0], of runs[1], ...)]; each round starts one run
    later than the one before (two runs: alternating which goes first), so every run takes
    every place in the order equally often."""
    timings = []
    for index in range(rounds):
        start = index % len(runs)
        order = list(range(start, len(runs))) + list(range(start))
        seconds = {position: runs[position]() for position in order}
        timings.append(tuple(seconds[position] for position in range(len(runs))))
    return timings


def build_run(dataset_dir, size, workers, batch_size, log=lambda message: None):
    """The job of a plain training run of the demo config at `size` (one scale), no outputs."""
    import paddle

    from slim.commands.train import TrainSettings
    from slim.config import load_config
    from slim.data import set_dataset_dir
    from slim.engine.distributed import DistributedEnv
    from slim.runs.job import build_job
    paddle.enable_static()
    cfg = load_config(DEMO_CONFIG, [f"YoloTrainFeed.image_shape=[3, {size}, {size}]",
                                    "YoloTrainFeed.multi_scale_sizes=[]",
                                    f"YoloTrainFeed.num_workers={workers}",
                                    f"YoloTrainFeed.batch_size={batch_size}",
                                    "max_iters=100000", "log_iter=20"])
    set_dataset_dir(cfg, dataset_dir)
    args = argparse.Namespace(scale_lr=None, output_eval=None)
    return build_job(args, cfg, TrainSettings(checkpoint_path=None, epoch=1), [], DistributedEnv(),
                     log, "VOC", with_infer_model=False)


def bare_timer(job, batches):
    """s/iter of exe.run(train program, feed, [loss]) over `batches`."""
    from slim.engine.programs import TRAIN_FEEDS
    program, loss = job.programs.train.program, job.programs.train.fetches["loss"]

    def run():
        started = time.perf_counter()
        for batch in batches:
            job.executor.run(program, feed={name: batch[name] for name in TRAIN_FEEDS},
                             fetch_list=[loss], scope=job.scope)
        return (time.perf_counter() - started) / len(batches)
    return run


class WaitTimed:
    """Iterates `batches`, adding the seconds each next() took to `waited`: how long the
    loop waited for its data (the loader's cost the loop does not hide)."""

    def __init__(self, batches):
        self._iterator = iter(batches)
        self.waited = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        started = time.perf_counter()
        try:
            return next(self._iterator)
        finally:
            self.waited += time.perf_counter() - started


def loop_timer(job, batches_of_round, waits=None):
    """s/iter of the Runner with train_step and the hooks every run has, over the batches
    `batches_of_round()` returns; appends each run's wait for data (s/iter) to `waits`."""
    from slim.engine import Runner
    from slim.engine.hooks import LRSchedule, NanGuard, TrainLogger
    from slim.runs.job import RunState
    from slim.runs.loop import make_train_log, train_step
    step = train_step(job)

    def run():
        batches = batches_of_round()
        count = len(batches) if isinstance(batches, list) else None
        hooks = [NanGuard(), LRSchedule(job.scheduler), TrainLogger(lambda: make_train_log(job, 1), 1)]
        runner = Runner(step, hooks, RunState())
        timed = WaitTimed(batches)
        started = time.perf_counter()
        runner.train(1, lambda epoch: timed, lambda epoch: count)
        seconds = time.perf_counter() - started
        if waits is not None:
            waits.append(timed.waited / runner.state.iteration)
        return seconds / runner.state.iteration
    return run


def loader_timer(job, iterations):
    """s/iter of the training loader alone over `iterations` batches (after one warm-up)."""
    def run():
        stream = job.train_loader.batches(0, iterations + 1)
        next(stream)  # worker start-up excluded
        started = time.perf_counter()
        count = sum(1 for _ in stream)
        return (time.perf_counter() - started) / count
    return run


def streamed_cell(pairs, waits, batch_size):
    """Timings of the loop over a loader's stream, from interleaved (in memory, streamed) pairs
    and the loop's wait for data per iteration in each streamed run."""
    return {"loop_with_loader_s_per_iter": [b for _, b in pairs],
            "loop_with_loader_images_per_s": images_per_second([b for _, b in pairs], batch_size),
            "slowdown_vs_preloaded": overhead(pairs),
            "wait_for_data_s_per_iter": waits,
            "wait_for_data_share": statistics.median(wait / b for (_, b), wait in zip(pairs, waits))}


def measure(dataset_dir, size, workers_options, batch_size, chunk, rounds, compare_prefetch=False):
    """The row of one input size: bare vs loop over in-memory batches, and per worker count
    the loader alone and the loop over in-memory batches vs over the loader's stream (each
    pair interleaved; with `compare_prefetch` the loader without prefetch in the same rounds)."""
    job = build_run(dataset_dir, size, 0, batch_size)
    batches = list(itertools.islice(job.train_loader.batches(0, chunk), chunk))
    preloaded = loop_timer(job, lambda: batches)
    preloaded()  # first runs pay for program preparation
    bare_timer(job, batches)()
    pairs = interleaved([bare_timer(job, batches), preloaded], rounds)
    row = {"size": size, "batch_size": batch_size, "chunk": chunk, "rounds": rounds,
           "bare_s_per_iter": [a for a, _ in pairs], "loop_s_per_iter": [b for _, b in pairs],
           "bare_images_per_s": images_per_second([a for a, _ in pairs], batch_size),
           "loop_images_per_s": images_per_second([b for _, b in pairs], batch_size),
           "loop_overhead": overhead(pairs), "workers": {}}
    for workers in workers_options:
        job_w = build_run(dataset_dir, size, workers, batch_size)
        job_w.scope, job_w.executor, job_w.programs = job.scope, job.executor, job.programs
        loader = [loader_timer(job_w, chunk)() for _ in range(rounds)]
        waits, plain_waits = [], []
        runs = [preloaded, loop_timer(job_w, functools.partial(job_w.train_loader.batches, 0, chunk),
                                      waits)]
        if compare_prefetch:
            unprefetched = copy.copy(job_w.train_loader)
            unprefetched.prefetch = False
            runs.append(loop_timer(job_w, functools.partial(unprefetched.batches, 0, chunk),
                                   plain_waits))
        timings = interleaved(runs, rounds)
        cell = {"loader_s_per_iter": loader, "loader_images_per_s": images_per_second(loader, batch_size)}
        cell.update(streamed_cell([(t[0], t[1]) for t in timings], waits, batch_size))
        if compare_prefetch:
            cell["without_prefetch"] = streamed_cell([(t[0], t[2]) for t in timings], plain_waits,
                                                     batch_size)
        row["workers"][str(workers)] = cell
    return row


def waiting(cell):
    """The loop's median wait for data as a share of its time per iteration (- if not measured)."""
    share = cell.get("wait_for_data_share")
    return "-" if share is None else f"{100 * share:.1f}%"


def format_table(rows):
    """Markdown table, a line per size and worker count; two more columns (the loop + loader
    without prefetch) when the rows were measured with --compare-prefetch."""
    compared = any("without_prefetch" in cell for row in rows for cell in row["workers"].values())
    header = ("| size | bare img/s | loop img/s | loop overhead | workers | loader img/s | "
              "loop+loader img/s | loader slowdown | waiting for data |")
    if compared:
        header += " without prefetch: loop+loader img/s | loader slowdown | waiting for data |"
    lines = [header, "|---" * (header.count("|") - 1) + "|"]
    for row in rows:
        for workers, cell in row["workers"].items():
            line = (f"| {row['size']} | {row['bare_images_per_s']:.1f} | "
                    f"{row['loop_images_per_s']:.1f} | {100 * row['loop_overhead']:+.1f}% | "
                    f"{workers} | {cell['loader_images_per_s']:.1f} | "
                    f"{cell['loop_with_loader_images_per_s']:.1f} | "
                    f"{100 * cell['slowdown_vs_preloaded']:+.1f}% | {waiting(cell)} |")
            if compared:
                plain = cell.get("without_prefetch")
                line += (f" {plain['loop_with_loader_images_per_s']:.1f} | "
                         f"{100 * plain['slowdown_vs_preloaded']:+.1f}% | {waiting(plain)} |"
                         if plain else " - | - | - |")
            lines.append(line)
    return "\n".join(lines)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[160, 224])
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--chunk", type=int, default=20, help="iterations per timed chunk")
    parser.add_argument("--rounds", type=int, default=9, help="interleaved rounds per cell")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads of Paddle (default: all cores)")
    parser.add_argument("--quick", action="store_true", help="one size, 2 rounds of 3 iterations")
    parser.add_argument("--compare-prefetch", action="store_true",
                        help="also time the loop + loader with the loader's prefetch thread off, "
                             "interleaved in the same rounds")
    parser.add_argument("--machine-note", default=None,
                        help="what else ran on the machine, stored with the load averages")
    parser.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "train_throughput.json"))
    return parser.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    if args.threads:  # before paddle is imported: its CPU kernels read these once
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "CPU_NUM"):
            os.environ[name] = str(args.threads)
    from slim.data.demo import main as make_demo_dataset
    from slim.engine.distributed import use_all_cpu_threads
    if args.quick:
        args.sizes, args.workers, args.chunk, args.rounds = args.sizes[:1], args.workers[:1], 3, 2
    if not args.threads:
        use_all_cpu_threads()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as temp:
        dataset_dir = os.path.join(temp, "demo")
        make_demo_dataset(["--out", dataset_dir, "--train", "200", "--test", "1"])
        rows = [measure(dataset_dir, size, args.workers, args.batch_size, args.chunk, args.rounds,
                        args.compare_prefetch)
                for size in args.sizes]
    table = format_table(rows)
    print(table)
    result = {"rows": rows, "threads": args.threads or os.cpu_count(),
              "machine": machine_info(load_average_before=load_before,
                                      load_average_after=load_average(),
                                      note=args.machine_note),
              "command": "python bench/train_throughput.py " + " ".join(argv or sys.argv[1:])}
    if not args.quick:
        with open(args.json, "w") as handle:
            json.dump(result, handle, indent=1)
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
