"""Measuring latency tables on this machine (`python -m slim latency-table`).

For a model (an exported inference model dir, or a detection config's eval program with
random weights) and a runtime (paddle: Paddle Inference's plain CPU kernels,
paddle-onednn: with oneDNN, onnxruntime: the model converted by paddle2onnx), every conv
layer (slim.prune.latency.ConvLayer: the conv with its batch_norm / bias add and
activation) is rebuilt as a small program of its own shapes at each (input, output)
channel count of the grid and timed in that runtime: all counts of one layer interleaved
(A, B, C, A, B, C ...) after warm-up, median ms per count. Only what the table lacks is
measured. Then the whole model is timed interleaved with a copy pruned to the grid's
middle counts: the unpruned run gives the remainder (whole ms minus the sum of the
layers), the pruned one checks the prediction (error printed and stored).

Times are of the runtime's run call only: inputs are copied in before and outputs read
after, as a deployed model's inputs are ready when it runs.
"""
import os
import tempfile
import time

import numpy as np

from slim.errors import UserError, shorten
from slim.io.export import first_line
from slim.io.inference_model import (
    find_model_files,
    inference_config,
    load_inference_model,
    random_feeds,
    save_inference_model,
)
from slim.io.latency import interleaved_timings, load_average, percentile
from slim.io.scopes import temporary_scope
from slim.prune.latency import (
    DEFAULT_GRID,
    DEFAULT_STEP,
    RUNTIMES,
    LatencyModel,
    channel_grid,
    context_key,
    conv_layers,
    model_signature,
)

LAYER_ROUNDS = 5
LAYER_WARMUP = 2
MODEL_ROUNDS = 10
MODEL_WARMUP = 3
CHECK_FRACTION = 0.5          # the checked pruned model keeps this fraction (grid count)
LAYER_MODEL = "layer.pdmodel"
LAYER_PARAMS = "layer.pdiparams"
CALIBRATION_SIZE = 128        # px of the random image batch_norm statistics come from
OBJECTNESS_BIAS = -10.0       # sigmoid(-10) = 4.5e-5 < NMS score threshold 0.01
PADDLE_ACTIVATIONS = {"hard_swish": "hardswish", "hard_sigmoid": "hardsigmoid"}


# ---------------------------------------------------------------- runtimes

class TimedRun:
    """One model loaded in one runtime with its inputs set: calling it runs the model once
    (the run call only; inputs stay bound)."""

    def __init__(self, runtime, files, feeds, threads):
        self.runtime = runtime
        if runtime == "onnxruntime":
            self._init_onnx(files, feeds, threads)
        else:
            self._init_paddle(files, feeds, threads, runtime == "paddle-onednn")

    def _init_paddle(self, files, feeds, threads, onednn):
        import paddle.inference as paddle_infer
        config = inference_config(files, threads, onednn=onednn)
        self.predictor = paddle_infer.create_predictor(config)
        for name in self.predictor.get_input_names():
            handle = self.predictor.get_input_handle(name)
            handle.reshape(list(feeds[name].shape))
            handle.copy_from_cpu(feeds[name])
        self._call = self.predictor.run

    def _init_onnx(self, files, feeds, threads):
        from slim.io.onnx_export import onnx_model_bytes, onnx_session_of_bytes
        if not files.params_filename:
            raise UserError(f"--runtime onnxruntime needs a model with combined params; "
                            f"'{shorten(files.model_path)}' has one file per parameter")
        data = onnx_model_bytes(files.directory, model_name=files.model_filename,
                                params_name=files.params_filename)
        self.session = onnx_session_of_bytes(data, threads, files.model_path)
        self.binding = self.session.io_binding()
        for item in self.session.get_inputs():
            self.binding.bind_cpu_input(item.name, np.ascontiguousarray(feeds[item.name]))
        for item in self.session.get_outputs():
            self.binding.bind_output(item.name)
        self._call = lambda: self.session.run_with_iobinding(self.binding)

    def __call__(self, _feeds=None):
        self._call()


def timed_run(runtime, files, feeds, threads):
    """A TimedRun; a one-line UserError when the runtime cannot load or run the model."""
    try:
        run = TimedRun(runtime, files, feeds, threads)
        run()
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001 - runtimes raise many types; one line
        raise UserError(f"{runtime} cannot run '{shorten(files.model_path)}': "
                        f"{first_line(error)}") from None
    return run


def summary(values):
    """{"ms": median, "p10", "p90", "n"} of timings in ms."""
    return {"ms": round(percentile(values, 50), 5), "p10": round(percentile(values, 10), 5),
            "p90": round(percentile(values, 90), 5), "n": int(len(values))}


# ---------------------------------------------------------------- layer programs

def layer_program(layer, cin, cout):
    """(main, startup, feed var, fetch var) of `layer` alone at cin -> cout channels, batch
    1, its fused ops after it (batch_norm in inference form)."""
    import paddle
    import paddle.nn.functional as functional
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [1, cin, layer.height, layer.width], "float32")
        kinds = [kind for kind, _ in layer.fused]
        out = paddle.static.nn.conv2d(
            x, num_filters=cout, filter_size=list(layer.kernel), stride=list(layer.strides),
            padding=list(layer.paddings), dilation=list(layer.dilations),
            groups=cin if layer.depthwise else 1,
            bias_attr=None if "elementwise_add" in kinds else False)
        for kind, attrs in layer.fused:
            if kind == "batch_norm":
                out = paddle.static.nn.batch_norm(out, is_test=True)
            elif kind == "leaky_relu":
                out = functional.leaky_relu(out, negative_slope=dict(attrs)["alpha"])
            elif kind != "elementwise_add":
                out = getattr(functional, PADDLE_ACTIVATIONS.get(kind, kind))(out)
    return main, startup, x, out


def save_layer(layer, cin, cout, directory):
    """`layer` at (cin, cout) saved as an inference model in `directory`; its ModelFiles."""
    import paddle
    main, startup, x, out = layer_program(layer, cin, cout)
    executor = paddle.static.Executor(paddle.CPUPlace())
    with temporary_scope() as scope, paddle.static.scope_guard(scope):
        executor.run(startup)
        paddle.static.save_inference_model(os.path.join(directory, "layer"), [x], [out],
                                           executor, program=main)
    return find_model_files(directory, LAYER_MODEL, LAYER_PARAMS)


def save_overhead_program(directory):
    """A program that does next to nothing (a 1x1 conv of one element), saved in `directory`: its
    run time is the runtime's cost of one run call, which a layer timed alone pays and the
    same layer inside a model does not."""
    import paddle
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [1, 1, 1, 1], "float32")
        out = paddle.static.nn.conv2d(x, 1, 1, bias_attr=False)
    executor = paddle.static.Executor(paddle.CPUPlace())
    with temporary_scope() as scope, paddle.static.scope_guard(scope):
        executor.run(startup)
        paddle.static.save_inference_model(os.path.join(directory, "layer"), [x], [out],
                                           executor, program=main)
    return find_model_files(directory, LAYER_MODEL, LAYER_PARAMS)


OVERHEAD = "run call"


def measure_layers(table, runtime, threads, missing, work_dir, rounds=LAYER_ROUNDS,
                   warmup=LAYER_WARMUP, progress=None, save=None):
    """Measure the (layer, cin, cout) of `missing` into `table`: the counts of one shape
    key interleaved with the overhead program (save_overhead_program), whose median is
    taken off each count's (`ms`; `raw_ms` keeps the time of the run call).
    `progress(done, total, shape_key)` after each shape key; `save()` after each (a rerun
    after Ctrl-C measures only the rest)."""
    context = context_key(runtime, threads)
    by_key = {}
    for layer, cin, cout in missing:
        by_key.setdefault(layer.shape_key, (layer, []))[1].append((cin, cout))
    if not by_key:
        return
    done = 0
    rng = np.random.default_rng(0)
    overhead_dir = tempfile.mkdtemp(prefix="overhead-", dir=work_dir)
    overhead = timed_run(runtime, save_overhead_program(overhead_dir),
                         {"x": np.ones((1, 1, 1, 1), np.float32)}, threads)
    for shape_key, (layer, pairs) in by_key.items():
        runs = {OVERHEAD: overhead}
        for cin, cout in pairs:
            directory = tempfile.mkdtemp(prefix="layer-", dir=work_dir)
            files = save_layer(layer, cin, cout, directory)
            feeds = {"x": rng.standard_normal((1, cin, layer.height, layer.width))
                     .astype(np.float32)}
            runs[(cin, cout)] = timed_run(runtime, files, feeds, threads)
        timings = interleaved_timings(runs, [None], rounds, warmup=warmup)
        cost = float(np.median(timings.pop(OVERHEAD)))
        for (cin, cout), values in timings.items():
            record = summary(values)
            record.update(raw_ms=record["ms"], overhead_ms=round(cost, 5),
                          ms=round(max(record["ms"] - cost, 0.0), 5))
            table.put(context, shape_key, cin, cout, record)
        del runs
        done += len(pairs)
        if progress is not None:
            progress(done, len(missing), shape_key)
        if save is not None:
            save()


# ---------------------------------------------------------------- models

class LoadedModel:
    """An inference model loaded for latency work: files, program, scope, feeds, its
    concrete-shape copy, channel graph, selection (every prunable conv) and layers."""

    def __init__(self, files, input_shape=None):
        import paddle

        from slim.io.inference_model import feed_shapes
        from slim.prune import analyze_program, select_params
        from slim.prune.shapes import concrete_program
        self.files = files
        self.executor = paddle.static.Executor(paddle.CPUPlace())
        self.scope = paddle.static.Scope()
        self.model = load_inference_model(files, self.executor, self.scope)
        self.shapes = feed_shapes(self.model, input_shape)
        self.feeds = random_feeds(self.model, self.shapes)
        self.counted = concrete_program(self.model.program, self.scope, self.shapes,
                                        self.executor)
        fixed = [var.name for var in self.model.fetch_vars]
        self.graph = analyze_program(self.model.program, fixed_vars=fixed)
        self.counted_graph = analyze_program(self.counted, fixed_vars=fixed)
        self.selection = select_params(self.graph, "auto", on_unknown="skip")
        from slim.prune.latency import mapped_group_ids
        self.layers = conv_layers(self.counted, self.counted_graph,
                                  mapped_group_ids(self.selection, self.counted_graph))
        self.sizes = {group.id: group.size for group in self.selection.groups}
        self.signature = model_signature(self.layers)


def candidates_of(sizes, grid=DEFAULT_GRID, step=DEFAULT_STEP):
    """{group id: its grid counts}."""
    return {group: channel_grid(size, grid, step) for group, size in sizes.items()}


def middle_keeps(candidates, sizes, fraction=CHECK_FRACTION):
    """Each group at its grid count nearest `fraction` of its size."""
    return {group: min(counts, key=lambda c: (abs(c - fraction * sizes[group]), -c))
            for group, counts in candidates.items()}


def save_pruned(loaded, keeps, directory):
    """The model with each group keeping keeps[group] channels (l1_norm's choice) saved in
    `directory`; its ModelFiles. The loaded model is left unpruned."""
    import dataclasses

    from slim.prune import apply_plan
    from slim.prune.criteria import group_importance, scope_reader
    from slim.prune.latency import plan_from_keeps
    read = scope_reader(loaded.scope)
    scores = {group.id: group_importance("l1_norm", group, read)
              for group in loaded.selection.groups}
    plan = plan_from_keeps(loaded.selection, scores, keeps, "l1_norm")
    undo = apply_plan(plan, [loaded.model.program], loaded.scope, graphs=[loaded.graph])
    try:
        save_inference_model(loaded.model, loaded.executor, loaded.scope, directory,
                             loaded.files.model_filename, loaded.files.params_filename)
    finally:
        undo.restore()
    return dataclasses.replace(loaded.files, directory=directory)


def check_model(table, loaded, runtime, threads, candidates, work_dir, grid, step,
                rounds=MODEL_ROUNDS, warmup=MODEL_WARMUP):
    """Time the whole model, a copy at the grid's lowest counts and one at its middle counts
    (CHECK_FRACTION), interleaved. The first two fit the model's prediction, whole ms =
    fixed_ms + scale * (sum of the layers' ms): the ops that are not convs cost a part that
    stays and a part that shrinks with the channels. The middle copy checks it: predicted
    beside measured (the copies' ms taken as the full model's median over the median of the
    per-round ratios, which the load of the moment cancels from). Stored in `table.models`;
    returns that record."""
    context = context_key(runtime, threads)
    lowest = min(fraction for fraction in _grid_fractions(candidates, loaded.sizes))
    keeps = {"middle": middle_keeps(candidates, loaded.sizes),
             "lowest": {group: counts[0] for group, counts in candidates.items()}}
    runs = {"full": timed_run(runtime, loaded.files, loaded.feeds, threads)}
    for name, chosen in keeps.items():
        directory = tempfile.mkdtemp(prefix=f"{name}-", dir=work_dir)
        runs[name] = timed_run(runtime, save_pruned(loaded, chosen, directory), loaded.feeds,
                               threads)
    load_before = load_average()
    timings = interleaved_timings(runs, [None], rounds, warmup=warmup)
    model = LatencyModel(loaded.layers, loaded.sizes, table, runtime, threads, candidates)
    measured = {name: summary(values) for name, values in timings.items()}
    layers = {"full": model.layers_ms(model.full_keeps()),
              **{name: model.layers_ms(chosen) for name, chosen in keeps.items()}}
    # the lowest model's ms as the full one's over the median per-round ratio: rounds slowed
    # by the machine's load slow all three models of the round alike
    low_ratio = float(np.median(np.asarray(timings["full"]) / np.asarray(timings["lowest"])))
    fixed_ms, scale = fit_remainder(layers["full"], measured["full"]["ms"], layers["lowest"],
                                    measured["full"]["ms"] / low_ratio)
    predicted = fixed_ms + scale * layers["middle"]
    ratios = np.asarray(timings["full"]) / np.asarray(timings["middle"])
    measured["middle"]["paired_ms"] = round(measured["full"]["ms"] / float(np.median(ratios)), 5)
    record = {
        "feeds": loaded.shapes, "layers": len(loaded.layers), "groups": len(loaded.sizes),
        "full": measured["full"], "lowest": measured["lowest"], "lowest_fraction": lowest,
        "layers_ms": {name: round(value, 5) for name, value in layers.items()},
        "fixed_ms": round(fixed_ms, 5), "scale": round(scale, 5),
        "check": {"fraction": CHECK_FRACTION, "measured": measured["middle"],
                  "predicted_ms": round(predicted, 5),
                  "error": round(predicted / measured["middle"]["paired_ms"] - 1.0, 5),
                  "speedup_measured": round(float(np.median(ratios)), 5),
                  "speedup_predicted": round(measured["full"]["ms"] / predicted, 5)},
        "grid": list(grid), "step": int(step),
        "rounds": rounds, "load_average": [load_before, load_average()],
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    table.models.setdefault(context, {})[loaded.signature] = record
    return record


def fit_remainder(layers_full, whole_full, layers_low, whole_low):
    """(fixed_ms, scale) with whole = fixed_ms + scale * layers through the full point and
    as near the low one as 0 <= fixed_ms <= whole_full allows (a noisy pair cannot make the
    fixed part negative, nor pruning slower)."""
    if layers_full <= 0:
        return whole_full, 1.0
    if abs(layers_full - layers_low) < 1e-9:  # nothing prunable changed: the plain remainder
        scale = 1.0
    else:
        scale = (whole_full - whole_low) / (layers_full - layers_low)
    fixed = min(max(whole_full - scale * layers_full, 0.0), whole_full)
    return fixed, (whole_full - fixed) / layers_full


def _grid_fractions(candidates, sizes):
    return [counts[0] / sizes[group] for group, counts in candidates.items()] or [1.0]


def check_runtime(runtime):
    """`runtime` if it is one of RUNTIMES, else a one-line error."""
    if runtime not in RUNTIMES:
        raise UserError(f"--runtime '{shorten(str(runtime), 40)}' is not a runtime; choose one "
                        f"of {', '.join(RUNTIMES)}")
    return runtime


# ---------------------------------------------------------------- configs

def calibrate_batch_norms(evaluation, scope, executor):
    """Set every batch_norm's mean / variance to the per-channel statistics of its input on a
    random image, in program order (each after the ones before it are set): random weights
    then keep activations O(1) (no overflow, no denormals)."""
    import paddle
    block = evaluation.program.global_block()
    size = int(block.var("image").shape[2])
    rng = np.random.RandomState(0)
    feeds = {"image": rng.standard_normal((1, 3, size, size)).astype(np.float32),
             "im_size": np.array([[size, size]], np.int32)}
    for op in [op for op in block.ops if op.type == "batch_norm"]:
        with paddle.static.scope_guard(scope):
            (value,) = executor.run(evaluation.program, feed=feeds, fetch_list=[op.input("X")[0]],
                                    scope=scope)
        scope.find_var(op.input("Mean")[0]).get_tensor().set(
            value.mean(axis=(0, 2, 3)).astype(np.float32), paddle.CPUPlace())
        scope.find_var(op.input("Variance")[0]).get_tensor().set(
            (value.var(axis=(0, 2, 3)) + 1e-3).astype(np.float32), paddle.CPUPlace())


def silence_objectness(evaluation, scope, num_classes):
    """In the output conv of every yolo_box input: objectness weights 0 and bias
    OBJECTNESS_BIAS, so no box reaches NMS (whose cost would otherwise depend on the random
    weights, alike for every model: it costs little for a trained model on a usual image)."""
    import paddle
    block = evaluation.program.global_block()
    producer = {name: op for op in block.ops for name in op.output_arg_names}
    for op in block.ops:
        if op.type != "yolo_box":
            continue
        add = producer[op.input("X")[0]]
        conv = producer.get(add.input("X")[0]) if add.type == "elementwise_add" else None
        if conv is None or conv.type != "conv2d":
            raise RuntimeError(f"yolo_box input {op.input('X')[0]} is not a conv plus a bias")
        for name, value in ((conv.input("Filter")[0], 0.0), (add.input("Y")[0], OBJECTNESS_BIAS)):
            tensor = scope.find_var(name).get_tensor()
            array = np.array(tensor)
            array[4::5 + num_classes] = value
            tensor.set(array, paddle.CPUPlace())


def build_eval(cfg, size):
    """The eval BuiltProgram of the config's YOLOv3 at `size` px (parameter names are fixed
    by the model, so programs of every size share one scope)."""
    import paddle

    from slim.config import create
    from slim.model import build_eval_program
    with paddle.utils.unique_name.guard():
        return build_eval_program(create("YOLOv3", cfg), image_shape=[3, size, size])


def init_realistic_weights(cfg, scope, executor):
    """Random weights (seed 0) of the config's YOLOv3 in `scope`, batch_norm statistics
    calibrated on a random image and objectness silenced (the parameters are the same at
    every input size)."""
    import paddle
    calibration = build_eval(cfg, CALIBRATION_SIZE)
    paddle.seed(0)
    calibration.startup.random_seed = 0
    executor.run(calibration.startup, scope=scope)
    calibrate_batch_norms(calibration, scope, executor)
    silence_objectness(calibration, scope, int(cfg["num_classes"]))


def export_config_model(cfg, size, out_dir):
    """The config's YOLOv3 at `size` px with random weights made realistic
    (calibrate_batch_norms, silence_objectness), exported to `out_dir`; its ModelFiles."""
    import paddle

    from slim.io import export
    executor = paddle.static.Executor(paddle.CPUPlace())
    scope = paddle.static.Scope()
    init_realistic_weights(cfg, scope, executor)
    evaluation = build_eval(cfg, size)
    export.export_model(evaluation, scope, executor, out_dir, with_eval_model=False)
    return find_model_files(out_dir, export.INFER_MODEL_NAME, export.PARAMS_NAME)
