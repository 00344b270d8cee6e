#!/usr/bin/env python
"""Our pruning engine against PaddleSlim's static `Pruner` on MobileNetV1-YOLOv3.

    python bench/prune_vs_paddleslim.py [--out bench/results/prune_vs_paddleslim.json]

Both prune the same program and weights: the VOC config's eval program
(width 1, 608x608, initial weights, seed 0) saved as `__model__` +
`__params__` and loaded by each side. Compared, on the seed's 24 params at
the uniform ratio our FLOPs search finds for the seed's target_ratio 0.5:
the kept channel indices of every param (l1_norm: identical expected), the
FLOPs after, and the wall time to prune (analysis + criterion + rewriting the
program and the scope; median of --repeats). Then, one conv weight at a time
at ratio 0.5 on a 64x64 copy of the model: which params each engine prunes
at all, and whether the pruned program still runs.

PaddleSlim runs in its own venv (--paddleslim_python, default
.venv-paddleslim/bin/python), in a subprocess of this script in `--worker`
mode. PaddleSlim 2.6.0 pins opencv-python==4.6.0.66, whose cv2 fails under
numpy 2, and leaves out deps it imports, so that venv is made (when missing)
with: paddlepaddle==2.6.2, protobuf 4.25, numpy 1.26.4, then
`pip install --no-deps paddleslim==2.6.0` plus six, requests, decorator,
pyzmq, matplotlib, pyyaml. Prints a table, writes JSON.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)
from slim.io.latency import machine_info  # noqa: E402

DEFAULT_PADDLESLIM_PYTHON = os.path.join(ROOT, ".venv-paddleslim", "bin", "python")
PADDLESLIM_REQUIREMENTS = ["paddlepaddle==2.6.2", "protobuf>=4.25,<4.26", "numpy==1.26.4",
                           "six", "requests", "decorator", "pyzmq", "matplotlib", "pyyaml"]
VOC_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_voc.yml")
SLIM_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_slim.yaml")
CHECK_SIZE = 64
CHECK_RATIO = 0.5


# ---------------------------------------------------------------- shared helpers

def load_model(model_dir, executor, scope):
    import paddle
    with paddle.static.scope_guard(scope):
        return paddle.static.load_inference_model(model_dir, executor, model_filename="__model__",
                                                  params_filename="__params__")


def conv_weights(program):
    return [op.input("Filter")[0] for op in program.global_block().ops
            if op.type in ("conv2d", "depthwise_conv2d")]


def read(scope, name):
    import numpy as np
    return np.array(scope.find_var(name).get_tensor())


def check_feed():
    import numpy as np
    rng = np.random.RandomState(0)
    return {"image": rng.rand(1, 3, CHECK_SIZE, CHECK_SIZE).astype("float32"),
            "im_size": np.array([[CHECK_SIZE, CHECK_SIZE]], "int32")}


def runs(executor, program, scope, fetches, feed=None):
    """'runs' when the program computes its fetches on `feed` (default: check_feed()),
    else the last line of the error."""
    import paddle
    try:
        with paddle.static.scope_guard(scope):
            executor.run(program, feed=check_feed() if feed is None else feed,
                         fetch_list=fetches)
        return "runs"
    except Exception as error:  # any failure of a pruned program is the finding
        lines = str(error).strip().splitlines()
        return "fails: " + (lines[-1] if lines else type(error).__name__)[:160]


# ---------------------------------------------------------------- PaddleSlim worker

def capture_paddleslim_messages():
    """The messages PaddleSlim's loggers log from now on (a list that grows), not printed."""
    import logging

    import paddleslim.prune  # noqa: F401  (creates the loggers whose handlers are replaced)
    messages = []

    class Capture(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())
    for name in list(logging.Logger.manager.loggerDict):
        if name.startswith("paddleslim"):
            logger = logging.getLogger(name)
            logger.handlers = [Capture()]
            logger.propagate = False
    return messages


def paddleslim_worker(args):
    """Runs inside the PaddleSlim venv: prune with paddleslim.prune.Pruner, write JSON."""
    import paddle
    paddle.enable_static()
    from paddleslim.prune import Pruner

    from slim.prune.flops import program_flops
    messages = capture_paddleslim_messages()
    from paddleslim.prune.idx_selector import IDX_SELECTOR
    default_selector = IDX_SELECTOR.get("default_idx_selector")
    pruned_indices = {}

    def recording_selector(group, scores, ratios):
        """PaddleSlim's default selector, recording the master param's pruned indices."""
        selected = default_selector(group, scores, ratios)
        master = group.master["name"]
        for name, axis, indices, _ in selected:
            if name == master and axis == group.master["axis"]:
                pruned_indices[name] = sorted(int(i) for i in indices)
        return selected
    params = json.loads(args.params)
    place = paddle.CPUPlace()
    exe = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    program, _, _ = load_model(args.model, exe, scope)
    originals = {name: read(scope, name) for name in params}
    kept = {}
    flops_before = program_flops(program)
    times, pruned_program = [], None
    for _ in range(args.repeats):
        start = time.perf_counter()
        pruned_program, backup, _ = Pruner("l1_norm", recording_selector).prune(
            program, scope, params, [args.ratio] * len(params), place, param_backup=True)
        times.append(time.perf_counter() - start)
        channels = {name: originals[name].shape[0] for name in params}
        kept = {name: [i for i in range(channels[name]) if i not in set(pruned_indices[name])]
                for name in params if name in pruned_indices}
        for name, value in backup.items():
            scope.find_var(name).get_tensor().set(value, place)
    result = {"paddle": paddle.__version__, "flops_before": flops_before,
              "flops_after": program_flops(pruned_program), "times": times, "kept": kept}

    check_scope = paddle.static.Scope()
    check_program, _, fetches = load_model(args.check_model, exe, check_scope)
    result["per_param"] = {}
    for name in conv_weights(check_program):
        del messages[:]
        before = check_program.global_block().var(name).shape[0]
        try:
            pruned, backup, _ = Pruner("l1_norm").prune(
                check_program, check_scope, [name], [CHECK_RATIO], place, param_backup=True)
        except Exception as error:
            result["per_param"][name] = {"pruned": False, "status": f"error: {error}"[:160]}
            continue
        after = pruned.global_block().var(name).shape[0]
        unsupported = [m for m in messages if "Unsupported" in m]
        status = runs(exe, pruned, check_scope, fetches) if after < before else \
            ("skipped: " + unsupported[0] if unsupported else "skipped")
        for param, value in backup.items():
            check_scope.find_var(param).get_tensor().set(value, place)
        result["per_param"][name] = {"pruned": after < before, "channels": [before, after],
                                     "status": status, "warnings": unsupported[:3]}
    with open(args.out, "w") as handle:
        json.dump(result, handle)


# ---------------------------------------------------------------- our engine

def ours(model_dir, check_dir, repeats):
    import paddle

    from slim.config import load_slim_config
    from slim.prune import PruneError, analyze_program, apply_plan, plan_pruning
    from slim.prune.flops import program_flops
    strategy = load_slim_config(SLIM_CONFIG).strategies["uniform_pruning_strategy"]
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    program, _, _ = load_model(model_dir, exe, scope)
    flops_before = program_flops(program)
    start = time.perf_counter()
    searched = plan_pruning(program, scope, strategy.pruned_params,
                            target_ratio=strategy.target_ratio)
    search_time = time.perf_counter() - start
    ratio = searched.ratio
    plan_times, apply_times, kept, flops_after = [], [], {}, None
    for _ in range(repeats):
        start = time.perf_counter()
        plan = plan_pruning(program, scope, strategy.pruned_params, ratio=ratio)
        middle = time.perf_counter()
        undo = apply_plan(plan, [program], scope)
        end = time.perf_counter()
        plan_times.append(middle - start)
        apply_times.append(end - middle)
        flops_after = program_flops(program)
        kept = {group.key[0]: group.kept for group in plan.groups}
        undo.restore()
    result = {"paddle": paddle.__version__, "flops_before": flops_before,
              "flops_after": flops_after, "ratio": ratio, "matched": plan.matched,
              "search_time": search_time, "plan_times": plan_times,
              "apply_times": apply_times,
              "times": [p + a for p, a in zip(plan_times, apply_times)], "kept": kept}

    check_scope = paddle.static.Scope()
    check_program, _, fetches = load_model(check_dir, exe, check_scope)
    graph = analyze_program(check_program)
    result["per_param"] = {}
    for name in conv_weights(check_program):
        before = check_program.global_block().var(name).shape[0]
        try:
            plan = plan_pruning(check_program, check_scope, [name], ratio=CHECK_RATIO,
                                graph=graph)
        except PruneError:
            reasons = [g.blocked_reason for g in graph.output_groups(name) if g.blocked_reason]
            result["per_param"][name] = {"pruned": False,
                                         "status": "not prunable: " + "; ".join(reasons)}
            continue
        undo = apply_plan(plan, [check_program], check_scope, graphs=[graph])
        after = check_program.global_block().var(name).shape[0]
        status = runs(exe, check_program, check_scope, fetches)
        undo.restore()
        result["per_param"][name] = {"pruned": after < before, "channels": [before, after],
                                     "status": status}
    return result


# ---------------------------------------------------------------- driver

def save_models(directory):
    """The VOC config's eval program at 608 and at CHECK_SIZE, one set of initial weights."""
    import paddle

    from slim.io.export import export_model
    from slim.model import build_eval_program
    from slim.model.from_config import model_from_config
    model, shape = model_from_config(VOC_CONFIG, [])
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    paths = {}
    paddle.seed(0)
    for size in (shape[1], CHECK_SIZE):
        built = build_eval_program(model, [3, size, size])
        with paddle.static.scope_guard(scope):
            if not paths:
                exe.run(built.startup)
            paths[size] = os.path.join(directory, f"model_{size}")
            export_model(built, scope, exe, paths[size], with_infer_model=False)
    return paths[shape[1]], paths[CHECK_SIZE], shape


def ensure_paddleslim_venv(python):
    if os.path.exists(python):
        return
    venv = os.path.dirname(os.path.dirname(python))
    print(f"creating {venv} for PaddleSlim (its own venv, see the module docstring)")
    subprocess.run([sys.executable if sys.version_info[:2] == (3, 11) else "python3.11",
                    "-m", "venv", venv], check=True)
    pip = [python, "-m", "pip", "install", "--quiet"]
    subprocess.run(pip + PADDLESLIM_REQUIREMENTS, check=True)
    subprocess.run(pip + ["--no-deps", "paddleslim==2.6.0"], check=True)


def run_worker(python, script, arguments, out):
    """Run `script --worker ARGUMENTS --out OUT` with the PaddleSlim venv's `python`; the JSON
    it wrote to `out`."""
    command = [python, script, "--worker", *arguments, "--out", out]
    completed = subprocess.run(command, capture_output=True, text=True)
    if completed.returncode != 0:
        raise SystemExit("PaddleSlim worker failed:\n" + completed.stderr[-3000:])
    with open(out) as handle:
        return json.load(handle)


def run_paddleslim(python, model_dir, check_dir, params, ratio, repeats, workdir):
    return run_worker(python, os.path.abspath(__file__),
                      ["--model", model_dir, "--check_model", check_dir,
                       "--params", json.dumps(params), "--ratio", str(ratio),
                       "--repeats", str(repeats)], os.path.join(workdir, "paddleslim.json"))


def median_ms(times):
    return 1000.0 * statistics.median(times)


def compare(our, theirs, params):
    identical = [name for name in params if our["kept"][name] == theirs["kept"].get(name)]
    names = list(our["per_param"])
    per_param = {name: {"ours": our["per_param"][name], "paddleslim": theirs["per_param"][name]}
                 for name in names}
    return {
        "params": params,
        "kept_identical": len(identical),
        "kept_differ": [name for name in params if name not in identical],
        "flops_before": our["flops_before"],
        "flops_after": {"ours": our["flops_after"], "paddleslim": theirs["flops_after"]},
        "time_ms": {"ours": median_ms(our["times"]),
                    "ours_plan": median_ms(our["plan_times"]),
                    "ours_apply": median_ms(our["apply_times"]),
                    "ours_flops_search": 1000.0 * our["search_time"],
                    "paddleslim": median_ms(theirs["times"])},
        "prunable": {"ours": sum(v["ours"]["pruned"] for v in per_param.values()),
                     "paddleslim": sum(v["paddleslim"]["pruned"] for v in per_param.values()),
                     "convs": len(names)},
        "runs_after_pruning": {
            "ours": sum(v["ours"].get("status") == "runs" for v in per_param.values()),
            "paddleslim": sum(v["paddleslim"].get("status") == "runs"
                              for v in per_param.values())},
        "per_param": per_param,
    }


def print_table(result):
    flops = result["flops_before"]
    times = result["time_ms"]
    rows = [
        ("", "ours", "PaddleSlim 2.6.0"),
        ("kept indices, seed's 24 params", f"{result['kept_identical']}/24 identical", ""),
        ("FLOPs after (MACs, 608)",
         f"{result['flops_after']['ours'] / 1e9:.3f}G "
         f"({100 * (result['flops_after']['ours'] / flops - 1):+.2f}%)",
         f"{result['flops_after']['paddleslim'] / 1e9:.3f}G "
         f"({100 * (result['flops_after']['paddleslim'] / flops - 1):+.2f}%)"),
        ("time to prune, median", f"{times['ours']:.0f} ms (plan {times['ours_plan']:.0f} + "
                                  f"apply {times['ours_apply']:.0f})",
         f"{times['paddleslim']:.0f} ms"),
        ("convs prunable alone (of {})".format(result["prunable"]["convs"]),
         str(result["prunable"]["ours"]), str(result["prunable"]["paddleslim"])),
        ("pruned program runs", str(result["runs_after_pruning"]["ours"]),
         str(result["runs_after_pruning"]["paddleslim"])),
    ]
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"uniform ratio {result['ratio']:.4f} (our FLOPs search for target_ratio 0.5, "
          f"{times['ours_flops_search']:.0f} ms)")
    differ = [(name, v["ours"]["status"], v["paddleslim"]["status"])
              for name, v in result["per_param"].items()
              if v["ours"]["pruned"] != v["paddleslim"]["pruned"]
              or v["ours"].get("status") != v["paddleslim"].get("status")]
    if differ:
        print("convs where the engines differ (ours | PaddleSlim):")
        for name, mine, theirs in differ:
            print(f"  {name}: {mine} | {theirs}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results",
                                                      "prune_vs_paddleslim.json"))
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--paddleslim_python", default=DEFAULT_PADDLESLIM_PYTHON)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model", help=argparse.SUPPRESS)
    parser.add_argument("--check_model", help=argparse.SUPPRESS)
    parser.add_argument("--params", help=argparse.SUPPRESS)
    parser.add_argument("--ratio", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return paddleslim_worker(args)
    import paddle
    paddle.enable_static()
    ensure_paddleslim_venv(args.paddleslim_python)
    with tempfile.TemporaryDirectory() as workdir:
        model_dir, check_dir, shape = save_models(workdir)
        our = ours(model_dir, check_dir, args.repeats)
        params = our["matched"]
        theirs = run_paddleslim(args.paddleslim_python, model_dir, check_dir, params,
                                our["ratio"], max(1, args.repeats // 2 + 1), workdir)
    result = compare(our, theirs, params)
    result.update({"ratio": our["ratio"], "image_shape": list(shape),
                   "paddle": {"ours": our["paddle"], "paddleslim": theirs["paddle"]},
                   "machine": machine_info(),
                   "kept": {"ours": our["kept"], "paddleslim": theirs["kept"]}})
    print_table(result)
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as handle:
        json.dump(result, handle, indent=1)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
