#!/usr/bin/env python
"""Our pruning engine against PaddleSlim's static `Pruner` on every zoo model.

    python bench/zoo.py [--models resnet18,densenet121] [--repeats 3] [--out bench/results/zoo.json]
    python bench/zoo.py --quick        # LeNet and MobileNetV1 x0.25, ours only (the test's run)

The models are those of tests/test_prune_zoo.py: every classifier family of
`paddle.vision.models` (num_classes 10, eval mode, the smallest width its
constructor offers) and the project's MobileNetV1-YOLOv3 (the VOC config: width 1, 20
classes), built as classic static programs on one image of 64x64 (the models whose fully
connected layers or pooling windows fix the size keep the test's size: LeNet 28, InceptionV3
75, AlexNet and GoogLeNet 224), with random weights (fan-in scale) and random batch norm
statistics, saved as `__model__` + `__params__` (fetching the classifier's logits, the
detector's three yolo head outputs) and loaded by each side, so both prune the same program
and weights. Per model:

- convs prunable. Ours: the conv weights `auto` selects (their output channel group can be
  pruned with the fetched outputs' layout fixed). PaddleSlim: "accepted" are the conv
  weights whose output channels its Pruner removes when given every conv weight at once at
  ratio 0.5 (it silently skips a conv whose channels reach an op it does not support, or a
  var with no consumer; the skip messages are kept in the JSON's `warnings`); "usable" are
  the accepted ones less the convs whose output a fetched var is (pruning them changes the
  model's output shape: no pruner may). Asking about all convs at once instead of one at a
  time (as bench/prune_vs_paddleslim.py does on one model) is one Pruner call per model
  instead of one per conv (770 in all), and a call takes seconds on these models (see the
  PaddleSlim prune times in the table).
- FLOPs removed at a -50% target. Ours: `plan_pruning(..., "auto", target_ratio=0.5)`.
  PaddleSlim: all its usable convs at one uniform ratio, searched by the same bisection
  (`slim.prune.search_uniform_ratio`: at most 6 halvings, each one `only_graph` Pruner call,
  aiming within 1% of the FLOPs; when it ends farther, the closest ratio it tried is used,
  and when even ratio 1 (one channel left per conv) does not remove half the FLOPs, ratio 1).
  FLOPs: `slim.prune.flops.program_flops` on both pruned programs.
- time to prune at that ratio: ours plan + apply (program and scope) on the channel graph
  analysed once per model (`analysis_time`, timed once, is not in it), PaddleSlim's
  `Pruner.prune` (program and scope, its analysis included: it redoes it on every call);
  the median of --repeats runs. The machine is 2 cores
  shared with other jobs: times are noisy, read the medians and their ratio, not the digits.
- whether the program pruned to -50% runs on the image, and for ours the largest
  |pruned - masked| over the outputs, relative to the largest |masked|, where masked is the
  unpruned program with the removed channels zeroed (`slim.prune.masking`).

PaddleSlim 2.6.0 runs in its own venv, made and called as bench/prune_vs_paddleslim.py
does (its `ensure_paddleslim_venv` and `run_worker`), in a subprocess running this script
with `--worker`. Prints a Markdown table, writes JSON.
"""
import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from prune_vs_paddleslim import (  # noqa: E402
    CHECK_RATIO,
    DEFAULT_PADDLESLIM_PYTHON,
    VOC_CONFIG,
    capture_paddleslim_messages,
    conv_weights,
    ensure_paddleslim_venv,
    load_model,
    run_worker,
    runs,
)

import slim  # noqa: E402,F401  (classic static IR before paddle)
from slim.errors import exit_on_user_error  # noqa: E402
from slim.io.latency import load_average, machine_info  # noqa: E402

DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "zoo.json")
TESTS = os.path.join(ROOT, "tests")
DETECTOR = "mobilenet_v1_yolov3"
SIZE = 64
TEST_SIZE = 32  # tests/test_prune_zoo.py's size for models that take any size
TARGET = 0.5
PADDLESLIM_TOLERANCE = 0.01  # its uniform ratio is searched to within 1% of the FLOPs,
PADDLESLIM_SEARCH_STEPS = 6  # in 6 halvings at most: each count is one slow Pruner.prune
QUICK_MODELS = ("lenet", "mobilenet_v1")
FEED_FILE = "feed.npz"


def zoo_tests():
    """tests/test_prune_zoo.py (its model table, batch norm fix and weight randomizer);
    imported on demand: it imports paddle and pytest, which the PaddleSlim venv lacks."""
    if TESTS not in sys.path:
        sys.path.insert(0, TESTS)
    import test_prune_zoo
    return test_prune_zoo


def model_names():
    """Every model of the bench, in table order: the classifiers, then the detector."""
    return sorted(zoo_tests().CLASSIFIERS) + [DETECTOR]


def input_size(test_size):
    """The bench's input size for a model the zoo test builds at `test_size`."""
    return SIZE if test_size == TEST_SIZE else test_size


# ---------------------------------------------------------------- building the models

def build_classifier(name):
    """(program, startup, image var, output vars: the logits, and GoogLeNet's auxiliary
    logits) of zoo classifier `name` on one image."""
    import warnings

    import paddle
    zoo = zoo_tests()
    constructor, test_size, *channels = zoo.CLASSIFIERS[name]
    size = input_size(test_size)
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        image = paddle.static.data("image", [1, channels[0] if channels else 3, size, size],
                                   "float32")
        net = constructor()
        zoo.evaluate_batch_norms(net)
        out = net(image)
    return main, startup, image, list(out) if isinstance(out, (list, tuple)) else [out]


def build_detector():
    """(program, startup, image var, the three yolo head outputs) of the VOC config's
    MobileNetV1-YOLOv3 at SIZE."""
    from slim.model import build_eval_program
    from slim.model.from_config import model_from_config
    model, _ = model_from_config(VOC_CONFIG, [])
    built = build_eval_program(model, [3, SIZE, SIZE])
    return (built.program, built.startup, built.feeds["image"],
            [built.fetches[f"output_{i}"] for i in range(3)])


def save_model(name, directory):
    """Build `name` with random weights and save it to `directory` (`__model__`,
    `__params__` and the random image in FEED_FILE); its input shape."""
    import numpy as np
    import paddle
    program, startup, image, outputs = build_detector() if name == DETECTOR else \
        build_classifier(name)
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    paddle.seed(0)
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        zoo_tests().randomize(program, scope)
        model = paddle.static.serialize_program([image], outputs, program=program)
        params = paddle.static.serialize_persistables([image], outputs, exe, program=program)
    os.makedirs(directory)
    for file_name, data in (("__model__", model), ("__params__", params)):
        with open(os.path.join(directory, file_name), "wb") as handle:
            handle.write(data)
    shape = [1 if n is None or n < 0 else n for n in image.shape]  # the detector: batch -1
    np.savez(os.path.join(directory, FEED_FILE),
             image=np.random.RandomState(1).rand(*shape).astype("float32"))
    return shape


def load_saved(directory, executor, scope):
    """(program, fetch vars, feed) of a model written by save_model."""
    import numpy as np
    program, _, fetches = load_model(directory, executor, scope)
    with np.load(os.path.join(directory, FEED_FILE)) as feed:
        return program, fetches, dict(feed)


# ---------------------------------------------------------------- our engine

def relative_error(actual, expected):
    """Largest |actual - expected| over all outputs, relative to the largest |expected|."""
    import numpy as np
    error = max(float(np.abs(a - e).max()) for a, e in zip(actual, expected))
    return error / max(float(np.abs(e).max()) for e in expected)


def ours(directory, repeats):
    """Our engine on a saved model: prunable convs, `auto` to -50% FLOPs, its timing, and
    the pruned program's run and error against the masked reference."""
    import paddle

    from slim.prune import AUTO, analyze_program, apply_plan, plan_pruning, select_params
    from slim.prune.flops import program_flops
    from slim.prune.masking import zero_removed_channels
    exe = paddle.static.Executor(paddle.CPUPlace())
    scope, masked_scope = paddle.static.Scope(), paddle.static.Scope()
    program, fetches, feed = load_saved(directory, exe, scope)
    load_model(directory, exe, masked_scope)
    start = time.perf_counter()
    graph = analyze_program(program, fixed_vars=[var.name for var in fetches])
    analysis_time = time.perf_counter() - start
    flops_before = program_flops(program)
    start = time.perf_counter()
    plan = plan_pruning(program, scope, AUTO, target_ratio=TARGET, graph=graph)
    search_time = time.perf_counter() - start
    zero_removed_channels(plan, graph, masked_scope)
    with paddle.static.scope_guard(masked_scope):
        masked = exe.run(program, feed=feed, fetch_list=fetches)
    times, status, error, flops_after = [], None, None, None
    for repeat in range(repeats):
        start = time.perf_counter()
        plan = plan_pruning(program, scope, AUTO, ratio=plan.ratio, graph=graph)
        undo = apply_plan(plan, [program], scope, graphs=[graph])
        times.append(time.perf_counter() - start)
        if repeat == repeats - 1:
            flops_after = program_flops(program)
            status = runs(exe, program, scope, fetches, feed)
            if status == "runs":
                with paddle.static.scope_guard(scope):
                    error = relative_error(exe.run(program, feed=feed, fetch_list=fetches),
                                           masked)
        undo.restore()
    return {"paddle": paddle.__version__, "convs": len(conv_weights(program)),
            "prunable": len(select_params(graph, AUTO).matched), "groups": len(plan.groups),
            "flops_before": flops_before, "flops_after": flops_after, "ratio": plan.ratio,
            "analysis_time": analysis_time, "search_time": search_time, "times": times,
            "status": status, "max_relative_error": error}


# ---------------------------------------------------------------- PaddleSlim worker

class PaddleSlimFlops:
    """FLOPs of a program after PaddleSlim prunes `params` at one ratio (its `only_graph`
    mode: the program's shapes, not the scope), for `search_uniform_ratio`; every count is
    kept in `counted` ({ratio: FLOPs})."""

    def __init__(self, program, scope, params):
        from slim.prune.flops import program_flops
        self.program, self.scope, self.params = program, scope, params
        self.base = program_flops(program)
        self.counted = {}

    def at_ratio(self, ratio):
        from slim.prune.flops import program_flops
        self.counted[ratio] = program_flops(paddleslim_prune(self.program, self.scope,
                                                             self.params, ratio))
        return self.counted[ratio]


def paddleslim_prune(program, scope, params, ratio, backup=False):
    """PaddleSlim's Pruner (l1_norm) on `params` at one `ratio`: the pruned program (a
    clone), and with `backup` the scope's values it changed (else only the program)."""
    import paddle
    from paddleslim.prune import Pruner
    pruned, values, _ = Pruner("l1_norm").prune(program, scope, params, [ratio] * len(params),
                                                paddle.CPUPlace(), only_graph=not backup,
                                                param_backup=backup)
    return (pruned, values) if backup else pruned


def output_convs(program, fetches, pruned):
    """Conv weights whose output a fetched var is, through single-input ops and bias adds,
    for the fetched vars whose shape differs in `pruned` (pruning them changes the model's
    output: SqueezeNet's classifier conv, the detector's yolo output convs)."""
    block = program.global_block()
    producer = {name: op for op in block.ops for name in op.output_arg_names}
    found = []
    for var in fetches:
        if tuple(pruned.global_block().var(var.name).shape) == tuple(var.shape):
            continue
        name = var.name
        while name in producer:
            op = producer[name]
            if op.type in ("conv2d", "depthwise_conv2d"):
                found.append(op.input("Filter")[0])
                break
            name = op.input_arg_names[0]
    return found


def paddleslim_model(directory, repeats):
    """PaddleSlim on a saved model (inside its venv): which convs it prunes, then those at the
    uniform ratio nearest -50% FLOPs, timed and run."""
    import paddle

    from slim.prune import PruneError, search_uniform_ratio
    from slim.prune.flops import program_flops
    place = paddle.CPUPlace()
    exe, scope = paddle.static.Executor(place), paddle.static.Scope()
    program, fetches, feed = load_saved(directory, exe, scope)
    messages = capture_paddleslim_messages()
    convs = conv_weights(program)
    block = program.global_block()
    every = paddleslim_prune(program, scope, convs, CHECK_RATIO).global_block()
    accepted = [name for name in convs if every.var(name).shape[0] < block.var(name).shape[0]]
    outputs = output_convs(program, fetches, every.program)
    usable = [name for name in accepted if name not in outputs]
    result = {"paddle": paddle.__version__, "convs": len(convs), "accepted": len(accepted),
              "output_convs": outputs, "usable": len(usable),
              "not_accepted": [name for name in convs if name not in accepted],
              "warnings": sorted({m for m in messages if "Unsupported" in m or "skip" in m}),
              "flops_before": program_flops(program)}
    if not usable:
        return result
    counter = PaddleSlimFlops(program, scope, usable)
    try:
        ratio = search_uniform_ratio(counter, TARGET, tolerance=PADDLESLIM_TOLERANCE,
                                     max_steps=PADDLESLIM_SEARCH_STEPS)
    except PruneError as error:  # out of reach, or no step came within the tolerance
        ratio = min(counter.counted, key=lambda r: abs(counter.counted[r] -
                                                        counter.base * (1 - TARGET)))
        result["search"] = str(error)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        pruned, backup = paddleslim_prune(program, scope, usable, ratio, backup=True)
        times.append(time.perf_counter() - start)
        if len(times) == repeats:
            result["status"] = runs(exe, pruned, scope, fetches, feed)
            result["flops_after"] = program_flops(pruned)
        for name, value in backup.items():
            scope.find_var(name).get_tensor().set(value, place)
    result.update({"ratio": ratio, "times": times})
    return result


def paddleslim_worker(args):
    """Runs inside the PaddleSlim venv: paddleslim_model for each of --model_dirs, JSON to
    --out."""
    import paddle
    paddle.enable_static()
    results = {}
    for name, directory in json.loads(args.model_dirs).items():
        try:
            results[name] = paddleslim_model(directory, args.repeats)
        except Exception as error:  # noqa: BLE001 - a model PaddleSlim cannot take is a finding
            results[name] = {"error": f"{type(error).__name__}: {error}"[:300]}
        print(f"PaddleSlim: {name} done", file=sys.stderr, flush=True)
    with open(args.out, "w") as handle:
        json.dump(results, handle)


# ---------------------------------------------------------------- table

def removed_share(side):
    """Fraction of the FLOPs one side's -50% prune removed (None when it did not prune)."""
    if not side or side.get("flops_after") is None:
        return None
    return 1.0 - side["flops_after"] / side["flops_before"]


def median_ms(side):
    return 1000.0 * statistics.median(side["times"]) if side and side.get("times") else None


def table_row(name, entry):
    """One model's table values from its JSON entry ({"input", "ours", "paddleslim"?})."""
    our, theirs = entry["ours"], entry.get("paddleslim")
    row = {"model": name, "input": "x".join(str(n) for n in entry["input"][2:]),
           "convs": our["convs"], "ours_prunable": our["prunable"],
           "ours_removed": removed_share(our), "ours_ratio": our["ratio"],
           "ours_ms": median_ms(our), "ours_status": our["status"],
           "ours_error": our["max_relative_error"],
           "paddleslim_accepted": None, "paddleslim_usable": None, "paddleslim_removed": None,
           "paddleslim_ratio": None, "paddleslim_ms": None, "paddleslim_status": None}
    if theirs is not None and "error" in theirs:
        row["paddleslim_status"] = "error: " + theirs["error"]
    elif theirs is not None:
        row.update({"paddleslim_accepted": theirs["accepted"],
                    "paddleslim_usable": theirs["usable"],
                    "paddleslim_removed": removed_share(theirs),
                    "paddleslim_ratio": theirs.get("ratio"), "paddleslim_ms": median_ms(theirs),
                    "paddleslim_status": theirs.get("status", "nothing to prune")})
    return row


def _percent(share, ratio):
    return "—" if share is None else f"-{100 * share:.1f}% (ratio {ratio:.3f})"


def _ms(value):
    return "—" if value is None else f"{value:.0f}"


def _status(status):
    """'runs', or the failure shortened to its first 60 characters."""
    if status is None:
        return "—"
    return status if len(status) <= 60 else status[:57] + "..."


def format_table(rows):
    """The Markdown table of table_row rows."""
    lines = ["| model | input | convs | prunable: ours | prunable: PaddleSlim accepted / usable "
             "| FLOPs removed at -50%: ours | PaddleSlim | prune ms: ours | PaddleSlim "
             "| pruned program: ours | PaddleSlim | ours vs masked (max rel. error) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        paddleslim_prunable = "—" if row["paddleslim_accepted"] is None else \
            f"{row['paddleslim_accepted']} / {row['paddleslim_usable']}"
        error = "—" if row["ours_error"] is None else f"{row['ours_error']:.1e}"
        lines.append(
            f"| {row['model']} | {row['input']} | {row['convs']} | {row['ours_prunable']} "
            f"| {paddleslim_prunable} | {_percent(row['ours_removed'], row['ours_ratio'])} "
            f"| {_percent(row['paddleslim_removed'], row['paddleslim_ratio'])} "
            f"| {_ms(row['ours_ms'])} | {_ms(row['paddleslim_ms'])} "
            f"| {_status(row['ours_status'])} | {_status(row['paddleslim_status'])} | {error} |")
    return "\n".join(lines)


# ---------------------------------------------------------------- driver

def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default=None,
                        help="comma-separated model names (default: all; see --list)")
    parser.add_argument("--list", action="store_true", help="print the model names and exit")
    parser.add_argument("--quick", action="store_true",
                        help=f"{' and '.join(QUICK_MODELS)} only, ours only, 1 repeat")
    parser.add_argument("--ours_only", action="store_true", help="leave PaddleSlim out")
    parser.add_argument("--repeats", type=int, default=3, help="timed prunes per model and side")
    parser.add_argument("--paddleslim_python", default=DEFAULT_PADDLESLIM_PYTHON)
    parser.add_argument("--out", default=DEFAULT_OUT, help="results JSON")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--model_dirs", help=argparse.SUPPRESS)  # the worker's {name: dir}
    return parser.parse_args(argv)


def selected_models(models, quick):
    """The model names to run: QUICK_MODELS, all, or the comma-separated `models`."""
    from slim.errors import UserError
    if quick:
        return list(QUICK_MODELS)
    names = model_names()
    if models is None:
        return names
    chosen = [name.strip() for name in models.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in names]
    if unknown or not chosen:
        raise UserError(f"--models: unknown model {unknown[0] if unknown else repr(models)}; "
                        f"valid: {', '.join(names)}")
    return chosen


@exit_on_user_error
def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        return paddleslim_worker(args)
    if args.list:
        print("\n".join(model_names()))
        return None
    import paddle

    from slim.io.output_places import check_output_file
    paddle.enable_static()
    names = selected_models(args.models, args.quick)
    repeats = 1 if args.quick else args.repeats
    with_paddleslim = not (args.quick or args.ours_only)
    written, out_name = check_output_file(args.out, "--out")
    if with_paddleslim:
        ensure_paddleslim_venv(args.paddleslim_python)
    started = time.time()
    models = {}
    with tempfile.TemporaryDirectory(prefix="slim-zoo-") as workdir:
        directories = {name: os.path.join(workdir, name) for name in names}
        for name in names:
            shape = save_model(name, directories[name])
            models[name] = {"input": shape, "ours": ours(directories[name], repeats)}
            print(f"ours: {name} done", flush=True)
        if with_paddleslim:
            theirs = run_worker(args.paddleslim_python, os.path.abspath(__file__),
                                ["--model_dirs", json.dumps(directories), "--repeats", str(repeats)],
                                os.path.join(workdir, "paddleslim.json"))
            for name in names:
                models[name]["paddleslim"] = theirs[name]
    rows = [table_row(name, models[name]) for name in names]
    table = format_table(rows)
    print(table)
    result = {"target_ratio": TARGET, "repeats": repeats, "quick": args.quick,
              "seconds": round(time.time() - started, 1),
              "machine": machine_info(load_average=load_average()),
              "models": models, "rows": rows, "table": table.splitlines()}
    path = written.write_bytes(out_name, json.dumps(result, indent=1).encode("utf-8"))
    print(f"wrote {path}")
    return result


if __name__ == "__main__":
    main()
