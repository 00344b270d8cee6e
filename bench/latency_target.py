#!/usr/bin/env python
"""Pruning to a latency target, measured: the speed-up reached against the target.

    python bench/latency_target.py [--quick] [--arch demo|full] [--size PX]
        [--runtime paddle-onednn|onnxruntime|paddle] [--rounds 10]
        [--table output/latency/tables.json] [--out bench/results/latency_target.json]

For each model (the demo architecture at 192 px, the full architecture at 320 and 416 px:
configs' YOLOv3 eval programs with random weights made realistic, as bench/latency.py) and
runtime (paddle-onednn, onnxruntime; 1 thread): the latency table is completed
(`python -m slim latency-table`'s library: only what --table lacks is measured; the model's
fit refitted each run), then the model is pruned to target_latency_ratio 0.5 and 0.3
(`slim.prune.latency.plan_for_latency`, l1_norm) and the baseline and both pruned models are
timed interleaved on that runtime (the run call only, inputs bound, after warm-up): the
measured speed-up is the median of per-round ratios, beside the target's (1 / ratio), the
table's prediction, and the FLOPs and params reached. Then, once, NetAdapt's measure-and-adjust: each
target is planned again at target x (measured / predicted speed-up), the table's bias on
this model, and timed again (rows with refined: true). The machine's load average is
stored with every row: on a shared machine the medians move with it.

`--quick`: the demo architecture on paddle-onednn, 3 rounds, target 0.5 (a smoke run).
"""
import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)
from slim.errors import UserError  # noqa: E402

MODELS = {"demo": (os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml"), (192,)),
          "full": (os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_voc.yml"), (320, 416))}
RUNTIMES = ("paddle-onednn", "onnxruntime")
TARGETS = (0.5, 0.3)
DEFAULT_TABLE = os.path.join(ROOT, "output", "latency", "tables.json")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "latency_target.json")


def target_row(target, measured, predicted, flops, params):
    """One result row: the target, the measured and predicted speed-ups and what they miss
    the target's speed-up (1 / target) by, FLOPs and params ratios."""
    wanted = 1.0 / target
    return {"target_latency_ratio": target, "target_speedup": wanted,
            "measured_speedup": measured["speedup"],
            "measured_speedup_p10": measured["speedup_p10"],
            "measured_speedup_p90": measured["speedup_p90"],
            "verdict": measured["verdict"],
            "measured_vs_target": measured["speedup"] / wanted - 1.0,
            "predicted_speedup": predicted["predicted_speedup"],
            "predicted_ms": predicted["predicted_after_ms"],
            "baseline_median_ms": measured["baseline_median_ms"],
            "median_ms": measured["median_ms"],
            "flops_ratio": flops, "params_ratio": params}


def refined_ratio(target, measured_speedup, predicted_speedup):
    """The ratio to plan with so that the measured speed-up reaches 1 / target, when the
    first plan measured `measured_speedup` against its predicted one (the table's bias on
    this model, assumed to stay: NetAdapt's measure-and-adjust, once)."""
    bias = measured_speedup / predicted_speedup
    return min(max(target * bias, 0.05), 0.95)


def results_table(rows):
    """Markdown lines of the rows."""
    lines = ["| arch | px | runtime | target (planned) | speed-up measured (p10-p90) | target | "
             "predicted | FLOPs | params | load |", "|---" * 10 + "|"]
    for row in rows:
        planned = f" ({row['planned_ratio']:.3f})" if row.get("refined") else ""
        if "error" in row:
            lines.append(f"| {row['arch']} | {row['size']} | {row['runtime']} | "
                         f"{row['target_latency_ratio']:g}x{planned} | {row['error'][:80]} |"
                         " | | | | |")
            continue
        lines.append(
            f"| {row['arch']} | {row['size']} | {row['runtime']} | {row['target_latency_ratio']:g}x{planned} "
            f"| {row['measured_speedup']:.2f}x ({row['measured_speedup_p10']:.2f}-"
            f"{row['measured_speedup_p90']:.2f}) | {row['target_speedup']:.2f}x "
            f"| {row['predicted_speedup']:.2f}x | {100 * row['flops_ratio']:.1f}% "
            f"| {100 * row['params_ratio']:.1f}% | {row['load_average'][0]} |")
    return lines


def measure(arch, config, size, runtime, targets, rounds, table_path, work_dir, log):
    """Rows of one model and runtime (the table completed and saved first)."""
    import dataclasses

    from slim.config import load_config
    from slim.io.inference_model import save_inference_model
    from slim.io.latency import interleaved_timings, pair_summary
    from slim.prune import apply_plan
    from slim.prune.flops import program_flops, program_params
    from slim.prune.latency import LatencyTable, LatencyTarget, plan_for_latency
    from slim.workflow import latency_table as lt
    cfg = load_config(config, ["weights=null", "use_gpu=false"])
    files = lt.export_config_model(cfg, size, os.path.join(work_dir, f"{arch}{size}"))
    loaded = lt.LoadedModel(files)
    table = LatencyTable.load(table_path, missing_ok=True)
    candidates = lt.candidates_of(loaded.sizes)
    missing = table.missing(lt.context_key(runtime, 1), loaded.layers, candidates)
    log(f"{arch} {size} px {runtime}: {len(missing)} layer counts to measure "
        f"(load {lt.load_average()})")

    def save():
        with open(table_path + ".tmp", "w", encoding="utf-8") as handle:
            json.dump(table.to_dict(), handle, indent=1, sort_keys=True)
        os.replace(table_path + ".tmp", table_path)
    lt.measure_layers(table, runtime, 1, missing, work_dir, save=save,
                      progress=lambda done, total, key: log(f"  {done}/{total} {key}"))
    fit = lt.check_model(table, loaded, runtime, 1, candidates, work_dir, lt.DEFAULT_GRID,
                         lt.DEFAULT_STEP, rounds=rounds)
    save()
    base_flops = program_flops(loaded.counted)
    base_params = program_params(loaded.model.program)
    baseline = lt.timed_run(runtime, files, loaded.feeds, 1)

    def pruned(ratio):
        """(TimedRun, predicted, FLOPs ratio, params ratio) of the model pruned to `ratio`."""
        plan, predicted = plan_for_latency(
            loaded.model.program, loaded.scope, "auto",
            LatencyTarget(table_path, runtime, 1, ratio=ratio), flops_program=loaded.counted,
            graph=loaded.graph, flops_graph=loaded.counted_graph, on_unknown="skip")
        undo = apply_plan(plan, [loaded.model.program, loaded.counted], loaded.scope,
                          graphs=[loaded.graph, loaded.counted_graph])
        try:
            flops = program_flops(loaded.counted) / base_flops
            params = program_params(loaded.model.program) / base_params
            directory = tempfile.mkdtemp(prefix=f"t{ratio:.3f}-", dir=work_dir)
            save_inference_model(loaded.model, loaded.executor, loaded.scope, directory,
                                 files.model_filename, files.params_filename)
        finally:
            undo.restore()
        run = lt.timed_run(runtime, dataclasses.replace(files, directory=directory),
                           loaded.feeds, 1)
        return run, predicted, flops, params

    rows, ratios = [], {target: target for target in targets}
    for refined in (False, True):
        runs, reached = {"baseline": baseline}, {}
        for target, ratio in ratios.items():
            try:
                run, predicted, flops, params = pruned(ratio)
            except UserError as error:  # e.g. out of the grid's reach: a row saying so
                rows.append({"arch": arch, "size": size, "runtime": runtime, "refined": refined,
                             "target_latency_ratio": target, "planned_ratio": ratio,
                             "error": str(error)})
                continue
            runs[target] = run
            reached[target] = (predicted, flops, params)
        load = lt.load_average()
        timings = interleaved_timings(runs, [None], rounds, warmup=3)
        for target, (predicted, flops, params) in reached.items():
            summary = pair_summary(timings["baseline"], timings[target])
            row = {"arch": arch, "size": size, "runtime": runtime, "threads": 1,
                   "rounds": rounds, "load_average": [load, lt.load_average()],
                   "fit_check_error": fit["check"]["error"], "refined": refined,
                   "planned_ratio": ratios[target],
                   **target_row(target, summary, predicted, flops, params)}
            rows.append(row)
            # once: the table's bias measured here, the plan's ratio corrected by it
            ratios[target] = refined_ratio(target, row["measured_speedup"],
                                           row["predicted_speedup"])
    return rows, {"arch": arch, "size": size, "runtime": runtime, **fit}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--arch", choices=sorted(MODELS), default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--runtime", choices=("paddle", *RUNTIMES), default=None)
    parser.add_argument("--rounds", type=int, default=None, help="default 10 (--quick: 3)")
    parser.add_argument("--table", default=DEFAULT_TABLE)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    import paddle

    from slim.io.latency import load_average, machine_info
    from slim.io.output_places import check_output_file
    paddle.enable_static()
    written, out_name = check_output_file(args.out, "--out")
    os.makedirs(os.path.dirname(os.path.abspath(args.table)), exist_ok=True)
    rounds = args.rounds or (3 if args.quick else 10)
    models = {"demo": MODELS["demo"]} if args.quick else MODELS
    runtimes = ("paddle-onednn",) if args.quick else RUNTIMES
    targets = (0.5,) if args.quick else TARGETS
    load_before, started = load_average(), time.time()
    rows, fits = [], []
    with tempfile.TemporaryDirectory(prefix="slim-latency-target-") as work_dir:
        for arch, (config, sizes) in models.items():
            if args.arch and arch != args.arch:
                continue
            for size in sizes:
                if args.size and size != args.size:
                    continue
                for runtime in runtimes:
                    if args.runtime and runtime != args.runtime:
                        continue
                    got, fit = measure(arch, config, size, runtime, targets, rounds, args.table,
                                       work_dir, log=lambda message: print(message, flush=True))
                    rows.extend(got)
                    fits.append(fit)
                    print("\n".join(results_table(got)), flush=True)
    lines = results_table(rows)
    print("\n".join(lines))
    result = {"machine": machine_info(
                  paddle=paddle.__version__, onnxruntime=__import__("onnxruntime").__version__,
                  load_average_before=load_before, load_average_after=load_average()),
              "seconds": round(time.time() - started, 1), "rounds": rounds, "rows": rows,
              "fits": fits, "table": lines}
    path = written.write_bytes(out_name, json.dumps(result, indent=1).encode("utf-8"))
    print(f"load average before {load_before}, after {result['machine']['load_average_after']}; "
          f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
