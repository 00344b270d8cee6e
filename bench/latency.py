#!/usr/bin/env python
"""CPU latency of pruned models against their baseline: Paddle Inference and onnxruntime.

    python bench/latency.py [--quick] [--rounds 15] [--out bench/results/latency.json]

Models: the full architecture (configs/yolov3_mobilenet_v1_voc.yml, width 1.0) at 320,
416 and 608 px and the demo architecture (configs/yolov3_mobilenet_v1_demo.yml, width
0.25) at its 160, 192 and 224 px, each as baseline and pruned to -50% and -70% FLOPs
with `auto` (every prunable conv, l1_norm, the uniform ratio slim.prune searches for the
FLOPs target). At the rounding size (416 full, 192 demo) the -50% model is also pruned
with round_to 8 and 16 (channel counts kept at multiples of 8 / 16) to see whether
aligned channel counts move latency.

Weights are random (latency does not depend on their values), made realistic where the
runtime's work would otherwise depend on them: every batch_norm's mean and variance are
set to the statistics of its input on a random image (so activations stay O(1), no
overflow and no denormals), and the objectness bias of the three YOLO outputs is -10,
with its weights 0, so no box reaches NMS's 0.01 score threshold (NMS then costs ~0 for
every model alike, as it costs little for a trained model on an image with few objects).

Each model is exported (`__model__.infer` + `__params__`, slim.io.export) and converted
to ONNX (slim.io.onnx_export). Runtimes: Paddle Inference with oneDNN on and off, and
onnxruntime (CPU), each with 1 and 2 threads; batch 1, one fixed random image. After
warm-up runs, the models of one size run INTERLEAVED (baseline, -50%, -70%, baseline ...,
slim.io.latency.interleaved_timings), so the speed-up is the median of the per-round
ratios baseline ms / pruned ms, which holds on a noisy machine; medians and p90 of the
times are reported beside it, and the verdict ("no significant change" when the ratios'
p10 and p90 straddle 1), with the FLOPs ratio and the size on disk. Prints a table,
writes JSON (with the machine's load average before and after).

`--quick`: the demo architecture at 192 px only, 3 rounds: a smoke run. `--arch`,
`--size`, `--threads` and `--runtime` measure one architecture / size / thread count /
runtime only.
"""
import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)
from slim.io import latency as latency_lib  # noqa: E402
from slim.workflow.latency_table import build_eval, init_realistic_weights  # noqa: E402

FULL_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_voc.yml")
DEMO_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml")
ARCHITECTURES = {  # name -> (detection config, sizes, the size of the round_to comparison)
    "full": (FULL_CONFIG, (320, 416, 608), 416),
    "demo": (DEMO_CONFIG, (160, 192, 224), 192),
}
QUICK = {"demo": (DEMO_CONFIG, (192,), 192)}
FLOPS_TARGETS = (0.5, 0.7)
ROUND_TOS = (8, 16)        # besides 1, at the rounding size and -50% FLOPs
RUNTIMES = (
    {"runtime": "paddle", "onednn": True, "threads": 1},
    {"runtime": "paddle", "onednn": True, "threads": 2},
    {"runtime": "paddle", "onednn": False, "threads": 1},
    {"runtime": "paddle", "onednn": False, "threads": 2},
    {"runtime": "onnxruntime", "onednn": None, "threads": 1},
    {"runtime": "onnxruntime", "onednn": None, "threads": 2},
)
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "latency.json")


# ---------------------------------------------------------------- pure helpers (tested)

# percentile, pair_summary (medians, p10 / p90, the speed-up of interleaved pairs and its
# verdict) are slim.io.latency's: the one latency module of the project.
percentile, pair_summary = latency_lib.percentile, latency_lib.pair_summary


RUNTIME_NAMES = ("paddle", "paddle-onednn", "onnxruntime")


def runtime_name(runtime):
    """'paddle-onednn', 'paddle' or 'onnxruntime': the --runtime name of a RUNTIMES entry."""
    return runtime["runtime"] + ("-onednn" if runtime.get("onednn") else "")


def runtime_label(runtime):
    """'paddle oneDNN 2t', 'paddle 1t', 'onnxruntime 2t'."""
    onednn = " oneDNN" if runtime.get("onednn") else ""
    return f"{runtime['runtime']}{onednn} {runtime['threads']}t"


def results_table(rows):
    """Markdown lines: one row per (architecture, size, model, runtime) of `rows` (dicts of
    arch, size, model, runtime (a RUNTIMES entry), flops_ratio, round_to, size_mb,
    onnx_size_mb and the pair_summary keys; the baseline's row has speedup 1). A speed-up
    whose pairs' p10 and p90 straddle 1 is marked "(n.s.)": no significant change."""
    lines = ["| arch | px | model | round_to | FLOPs | size MB (paddle / onnx) | runtime "
             "| median ms | p90 ms | speed-up (median of pairs) | FLOPs ratio |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['arch']} | {row['size']} | {row['model']} | {row['round_to']} "
            f"| {100 * row['flops_ratio']:.1f}% | {row['size_mb']:.1f} / {row['onnx_size_mb']:.1f} "
            f"| {runtime_label(row['runtime'])} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} "
            f"| {row['speedup']:.2f}x{_not_significant(row)} | {1 / row['flops_ratio']:.2f}x |")
    return lines


def _not_significant(row):
    """' (n.s.)' for a row whose speed-up is no significant change (not the baseline's 1)."""
    return " (n.s.)" if row.get("verdict") == latency_lib.NO_CHANGE and row["speedup"] != 1 \
        else ""


def selected_architectures(architectures, arch=None, size=None):
    """`architectures` ({name: (config, sizes, rounding size)}) limited to `arch` and `size`
    (None: all); ValueError when nothing is left."""
    selected = {name: (config, tuple(s for s in sizes if size is None or s == size), rounding)
                for name, (config, sizes, rounding) in architectures.items()
                if arch is None or name == arch}
    selected = {name: entry for name, entry in selected.items() if entry[1]}
    if not selected:
        raise ValueError(f"no architecture {arch or ''} at size {size} among "
                         f"{ {name: sizes for name, (_, sizes, _) in architectures.items()} }")
    return selected


# ---------------------------------------------------------------- models

def random_image(size, seed=0):
    """One preprocessed-looking image (standard normal) and its im_size, batch 1."""
    rng = np.random.RandomState(seed)
    return {"image": rng.standard_normal((1, 3, size, size)).astype(np.float32),
            "im_size": np.array([[size, size]], np.int32)}


def activation_elements(program):
    """Elements written per image by the program's conv, batch_norm and activation ops
    (batch 1): the memory traffic that scales with channel counts, not with FLOPs."""
    block = program.global_block()
    kinds = ("conv2d", "depthwise_conv2d", "batch_norm", "relu", "leaky_relu", "elementwise_add")
    total = 0
    for op in block.ops:
        if op.type in kinds:
            shape = block.var(op.output_arg_names[0]).shape
            total += int(np.prod([max(1, int(d)) for d in shape]))
    return total


def depthwise_share(program):
    """Fraction of the program's FLOPs in depthwise convs (groups == input channels > 1)."""
    from slim.prune.flops import program_flops
    detail = program_flops(program, detail=True)
    block = program.global_block()
    depthwise = sum(item.flops for item in detail.per_op
                    if block.ops[item.op_index].type in ("conv2d", "depthwise_conv2d")
                    and block.ops[item.op_index].attr("groups") > 1)
    return depthwise / detail.total


def model_files_mb(model_dir, names):
    """Size on disk of `names` in `model_dir`, in MB (10^6 bytes)."""
    return sum(os.path.getsize(os.path.join(model_dir, name)) for name in names) / 1e6


def export_variant(evaluation, scope, executor, out_dir):
    """Export the inference model and its ONNX copy; return (size MB, ONNX size MB)."""
    from slim.io import export
    from slim.io.onnx_export import ONNX_MODEL_NAME, export_onnx
    export.export_model(evaluation, scope, executor, out_dir, with_eval_model=False)
    export_onnx(out_dir)
    return (model_files_mb(out_dir, [export.INFER_MODEL_NAME, export.PARAMS_NAME]),
            model_files_mb(out_dir, [ONNX_MODEL_NAME]))


def variants_of_size(size, rounding_size, quick):
    """[(model name, FLOPs target or None, round_to)] measured at `size`."""
    variants = [("baseline", None, 1)] + [(f"-{int(100 * t)}%", t, 1) for t in FLOPS_TARGETS]
    if size == rounding_size:
        variants += [(f"-50% r{r}", 0.5, r) for r in ROUND_TOS]
    return variants


def plan_for(program, scope, target, round_to, fallback_ratio):
    """The 'auto' plan removing `target` of the FLOPs with channel counts at multiples of
    `round_to`; when no uniform ratio reaches the target within the search's 0.5% at that
    rounding (few channels per conv), the plan of `fallback_ratio` (the unrounded plan's
    ratio) rounded the same way: its FLOPs are reported as reached."""
    from slim.prune import PruneError, plan_pruning
    try:
        return plan_pruning(program, scope, "auto", target_ratio=target, round_to=round_to)
    except PruneError:
        if fallback_ratio is None:
            raise
        return plan_pruning(program, scope, "auto", ratio=fallback_ratio, round_to=round_to)


def build_models(cfg, sizes, rounding_size, work_dir, quick, log):
    """Export every variant of every size under `work_dir`; return {size: [model record]}."""
    import paddle

    from slim.prune import apply_plan
    from slim.prune.flops import program_flops
    executor = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    init_realistic_weights(cfg, scope, executor)
    models = {}
    for size in sizes:
        evaluation = build_eval(cfg, size)
        base_flops = program_flops(evaluation.program)
        base_activations = activation_elements(evaluation.program)
        models[size] = []
        unrounded_ratio = {}
        for name, target, round_to in variants_of_size(size, rounding_size, quick):
            undo, plan = None, None
            if target is not None:
                plan = plan_for(evaluation.program, scope, target, round_to,
                                unrounded_ratio.get(target))
                unrounded_ratio.setdefault(target, plan.ratio)
                undo = apply_plan(plan, [evaluation.program], scope)
            out_dir = os.path.join(work_dir, f"{size}_{name.replace('%', '').replace(' ', '_')}")
            size_mb, onnx_mb = export_variant(evaluation, scope, executor, out_dir)
            flops = program_flops(evaluation.program)
            activations = activation_elements(evaluation.program)
            depthwise = depthwise_share(evaluation.program)
            if undo is not None:
                undo.restore()
            models[size].append({"model": name, "round_to": round_to, "dir": out_dir,
                                 "flops": int(flops), "flops_ratio": flops / base_flops,
                                 "prune_ratio": None if plan is None else plan.ratio,
                                 "flops_target": target,
                                 "activation_ratio": activations / base_activations,
                                 "depthwise_flops_share": depthwise,
                                 "size_mb": size_mb, "onnx_size_mb": onnx_mb})
            log(f"  {size} px {name}: {flops / 1e9:.3f} GFLOPs ({100 * flops / base_flops:.1f}%), "
                f"activations {100 * activations / base_activations:.1f}%, depthwise "
                f"{100 * depthwise:.1f}% of FLOPs, {size_mb:.1f} MB")
    return models


# ---------------------------------------------------------------- measuring

def runner(model_dir, runtime):
    """A function feeds -> outputs running the model in `model_dir` on `runtime`."""
    from slim.io import export
    from slim.io.onnx_export import ONNX_MODEL_NAME, onnx_session, run_onnx
    if runtime["runtime"] == "onnxruntime":
        session = onnx_session(os.path.join(model_dir, ONNX_MODEL_NAME), threads=runtime["threads"])
        return lambda feeds: run_onnx(session, feeds)
    predictor = export.inference_predictor(model_dir, cpu_threads=runtime["threads"],
                                           onednn=runtime["onednn"])
    return lambda feeds: export.run_predictor(predictor, feeds)


def measure_size(records, size, runtimes, rounds, warmup):
    """Rows (one per model and runtime) of the interleaved timings of `records` at `size`."""
    rows = []
    feeds = [random_image(size, seed=1)]
    for runtime in runtimes:
        runs = {record["model"]: runner(record["dir"], runtime) for record in records}
        timings = latency_lib.interleaved_timings(runs, feeds, rounds, warmup=warmup)
        baseline = timings[records[0]["model"]]
        for record in records:
            summary = pair_summary(baseline, timings[record["model"]])
            rows.append({**{k: v for k, v in record.items() if k != "dir"}, "size": size,
                         "runtime": dict(runtime), **summary})
    return rows


PROFILE_LINE = re.compile(r"^thread\d+::(\S+)\s+(\d+)\s+([0-9.]+)\s")


def parse_paddle_profile(text, runs):
    """{op type: {"calls", "ms"}} per inference from the Event Summary of Paddle Inference's
    profiling report (`config.enable_profile()`) over `runs` inferences; the one-time
    Executor::Run / load ops of the first run are left out."""
    ops = {}
    for line in text.splitlines():
        match = PROFILE_LINE.match(line.strip())
        if not match or match.group(1).startswith("Executor"):
            continue
        entry = ops.setdefault(match.group(1), {"calls": 0, "ms": 0.0})
        entry["calls"] += int(match.group(2)) / runs
        entry["ms"] += float(match.group(3)) / runs
    return ops


def profile_table(profiles, baseline, pruned):
    """Markdown lines: ms per inference of each op type in the `baseline` profile and in each
    of the `pruned` ones ({model: {op: {"calls", "ms"}}}, `pruned` a list of model names)
    with its speed-up, slowest first in the baseline, then the totals."""
    def cells(op):
        before = profiles[baseline].get(op, {}).get("ms", 0.0)
        row = [f"{before:.2f}"]
        for name in pruned:
            after = profiles[name].get(op, {}).get("ms", 0.0)
            row.append(f"{after:.2f} | {before / after:.2f}x" if after > 0 else f"{after:.2f} | -")
        return row
    header = " | ".join(f"{name} ms | speed-up" for name in pruned)
    lines = [f"| op | {baseline} ms | {header} |", "|---" * (2 + 2 * len(pruned)) + "|"]
    ops = sorted(set().union(*(profiles[name] for name in [baseline, *pruned])),
                 key=lambda op: -profiles[baseline].get(op, {}).get("ms", 0.0))
    for op in ops:
        lines.append(f"| {op} | {' | '.join(cells(op))} |")
    totals = {name: {"total": {"ms": sum(entry["ms"] for entry in profiles[name].values())}}
              for name in [baseline, *pruned]}
    before = totals[baseline]["total"]["ms"]
    total_cells = [f"{before:.2f}"] + [f"{totals[name]['total']['ms']:.2f} | "
                                       f"{before / totals[name]['total']['ms']:.2f}x"
                                       for name in pruned]
    lines.append(f"| total | {' | '.join(total_cells)} |")
    return lines


def paddle_profile(model_dir, runtime, size, runs):
    """Per-op profile of Paddle Inference running `model_dir` (`runs` inferences after one
    warm-up), taken in a subprocess: the report is printed by Paddle's C++ side when the
    predictor is destroyed."""
    command = [sys.executable, os.path.abspath(__file__), "--profile_worker", model_dir,
               str(runtime["threads"]), "on" if runtime["onednn"] else "off", str(size), str(runs)]
    with tempfile.TemporaryDirectory(prefix="slim-profile-") as scratch:
        # Paddle's profiler also writes profile.log into the working directory.
        finished = subprocess.run(command, capture_output=True, text=True, check=True,
                                  cwd=scratch)
    return parse_paddle_profile(finished.stdout, runs)


def profile_worker(model_dir, threads, onednn, size, runs):
    """In the subprocess: `runs` profiled inferences. The first (oneDNN primitive creation)
    is among them: Paddle's profiler cannot start later; --profile_runs 10 dilutes it."""
    import paddle.inference as paddle_infer

    from slim.io import export
    config = paddle_infer.Config(os.path.join(model_dir, export.INFER_MODEL_NAME),
                                 os.path.join(model_dir, export.PARAMS_NAME))
    export.set_cpu_kernels(config, threads, onednn == "on")
    config.disable_glog_info()
    config.enable_profile()
    predictor = paddle_infer.create_predictor(config)
    feeds = random_image(int(size), seed=1)
    for _ in range(int(runs)):
        export.run_predictor(predictor, feeds)
    del predictor


def profile_size(arch, size, records, runs):
    """Per-op profiles of the baseline, the -50% model and its round_to 16 twin on Paddle
    Inference, 1 thread, oneDNN on and off: where the time goes and which ops do not
    speed up."""
    models = {record["model"]: record for record in records}
    profiles = []
    for runtime in [r for r in RUNTIMES if r["runtime"] == "paddle" and r["threads"] == 1]:
        names = [name for name in ("baseline", "-50%", "-50% r16") if name in models]
        ops = {name: paddle_profile(models[name]["dir"], runtime, size, runs) for name in names}
        if not all(ops.values()):  # Paddle 2.6.2's CPU wheel prints no report
            import paddle
            table = [f"(Paddle {paddle.__version__} printed no per-op report with "
                     "config.enable_profile())"]
        else:
            table = profile_table(ops, names[0], names[1:])
        profiles.append({"arch": arch, "size": size, "runtime": dict(runtime), "runs": runs,
                         "ops": ops, "table": table})
    return profiles


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="demo architecture, 192 px, 3 rounds")
    parser.add_argument("--rounds", type=int, default=None,
                        help="interleaved rounds per runtime (default 15; --quick: 3)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs of each model first")
    parser.add_argument("--arch", choices=sorted(ARCHITECTURES), default=None,
                        help="measure this architecture only")
    parser.add_argument("--size", type=int, default=None, help="measure this size only")
    parser.add_argument("--threads", type=int, choices=(1, 2), default=None,
                        help="measure the runtimes with this many threads only")
    parser.add_argument("--runtime", choices=sorted(RUNTIME_NAMES), default=None,
                        help="measure this runtime only")
    parser.add_argument("--out", default=DEFAULT_OUT, help="results JSON")
    parser.add_argument("--profile_runs", type=int, default=10,
                        help="inferences in each per-op profile (0: no profile)")
    parser.add_argument("--profile_worker", nargs=5, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.profile_worker:
        return profile_worker(*args.profile_worker)
    import paddle

    from slim.config import load_config
    from slim.io.output_places import check_output_file
    paddle.enable_static()
    written, out_name = check_output_file(args.out, "--out")
    rounds = args.rounds or (3 if args.quick else 15)
    runtimes = [r for r in RUNTIMES if (args.threads is None or r["threads"] == args.threads)
                and (args.runtime is None or runtime_name(r) == args.runtime)]
    architectures = selected_architectures(QUICK if args.quick else ARCHITECTURES, args.arch,
                                           args.size)
    load_before, started = latency_lib.load_average(), time.time()
    rows, profiles = [], []
    with tempfile.TemporaryDirectory(prefix="slim-latency-") as work_dir:
        for arch, (config, sizes, rounding_size) in architectures.items():
            print(f"{arch}: building and exporting {len(sizes)} sizes", flush=True)
            cfg = load_config(config, ["weights=null", "use_gpu=false"])
            models = build_models(cfg, sizes, rounding_size, os.path.join(work_dir, arch),
                                  args.quick, log=lambda message: print(message, flush=True))
            for size in sizes:
                print(f"{arch} {size} px: measuring {len(models[size])} models x "
                      f"{len(runtimes)} runtimes x {rounds} rounds", flush=True)
                for row in measure_size(models[size], size, runtimes, rounds, args.warmup):
                    rows.append({"arch": arch, **row})
                if size == rounding_size and args.profile_runs > 0:
                    profiles.extend(profile_size(arch, size, models[size], args.profile_runs))
    lines = results_table(rows)
    print("\n".join(lines))
    for profile in profiles:
        print(f"\nper-op profile, {profile['arch']} {profile['size']} px, "
              f"{runtime_label(profile['runtime'])}:")
        print("\n".join(profile["table"]))
    result = {"machine": latency_lib.machine_info(
                  paddle=paddle.__version__, onnxruntime=__import__("onnxruntime").__version__,
                  load_average_before=load_before, load_average_after=latency_lib.load_average()),
              "seconds": round(time.time() - started, 1), "rounds": rounds,
              "warmup": args.warmup, "quick": args.quick, "rows": rows, "table": lines,
              "profiles": profiles}
    path = written.write_bytes(out_name, json.dumps(result, indent=1).encode("utf-8"))
    print(f"load average before {load_before}, after {result['machine']['load_average_after']}; "
          f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
