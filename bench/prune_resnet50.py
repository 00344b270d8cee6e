#!/usr/bin/env python
"""`python -m slim prune` on an exported ResNet50: -50% FLOPs, Paddle Inference latency.

    python bench/prune_resnet50.py [--latency_runs 30] [--threads 1]
                                   [--out bench/results/prune_resnet50.json]

Exports `paddle.vision.models.resnet50` (1000 classes, eval mode, random initial
weights: batch norm mean 0 and variance 1; seed 0) at 224x224 with
`paddle.static.save_inference_model` to output/prune_resnet50/model/
(inference.pdmodel + inference.pdiparams), then runs, as a user would:

    python -m slim prune --model_dir output/prune_resnet50/model --target_ratio 0.5 \\
        --out output/prune_resnet50/pruned --latency_runs 30 --threads 1

and copies the command's report.json to --out, with the command line and the machine's
load average before and after under "bench". The weights are random: FLOPs, params,
size and latency do not depend on their values (which channels l1_norm keeps does).
"""
import argparse
import json
import os
import shlex
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from slim.io.latency import load_average  # noqa: E402

WORK_DIR = os.path.join("output", "prune_resnet50")
MODEL_DIR = os.path.join(WORK_DIR, "model")
PRUNED_DIR = os.path.join(WORK_DIR, "pruned")
SIZE = 224
TARGET = 0.5
DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "prune_resnet50.json")


def export_resnet50(model_dir):
    """Save ResNet50 (random weights) at SIZE px as model_dir/inference.pdmodel + .pdiparams;
    model_dir is the tool's own (made as a whole, replaced on a rerun)."""
    import warnings

    import paddle
    import paddle.vision.models as zoo

    from slim.io.output_places import (
        check_replaceable_dir,
        make_owned_temp_dir,
        remove_owned_dir,
        replace_dir,
    )
    final = check_replaceable_dir(model_dir, "model dir")
    paddle.enable_static()
    paddle.seed(0)
    main, startup = paddle.static.Program(), paddle.static.Program()
    startup.random_seed = 0
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        image = paddle.static.data("image", [None, 3, SIZE, SIZE], "float32")
        net = zoo.resnet50()
        net.eval()
        logits = net(image)
    executor, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    temp_dir = make_owned_temp_dir(os.path.dirname(final), ".resnet50-")
    try:
        with paddle.static.scope_guard(scope):
            executor.run(startup)
            paddle.static.save_inference_model(os.path.join(temp_dir, "inference"), [image],
                                               [logits], executor, program=main)
        replace_dir(temp_dir, final, "model dir")
    finally:
        remove_owned_dir(temp_dir)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latency_runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT, help="where the report goes (JSON)")
    args = parser.parse_args(argv)
    from slim.io.output_places import check_output_file
    written, out_name = check_output_file(args.out, "--out")
    os.chdir(ROOT)  # the command line below is the one to type in the repo
    print(f"exporting resnet50 at {SIZE} px to {MODEL_DIR}", flush=True)
    export_resnet50(MODEL_DIR)
    command = [sys.executable, "-m", "slim", "prune", "--model_dir", MODEL_DIR,
               "--target_ratio", str(TARGET), "--out", PRUNED_DIR,
               "--latency_runs", str(args.latency_runs), "--threads", str(args.threads)]
    shown = "python " + shlex.join(command[1:])
    print(shown, flush=True)
    load_before = load_average()
    subprocess.run(command, check=True)
    with open(os.path.join(PRUNED_DIR, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    report["bench"] = {"script": "bench/prune_resnet50.py", "command": shown,
                       "load_average_before": load_before, "load_average_after": load_average()}
    path = written.write_bytes(out_name, json.dumps(report, indent=1).encode("utf-8"))
    print(f"load average before {load_before}, after {report['bench']['load_average_after']}; "
          f"wrote {path}")
    return report


if __name__ == "__main__":
    main()
