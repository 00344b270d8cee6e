#!/usr/bin/env python
"""The toolkit's train program in Paddle 3's new IR (PIR): what fails, and a pruned step.

    python bench/pir_train.py [--out bench/results/pir_train.json]

Part 1 builds, inside `paddle.pir_utils.IrGuard` (Paddle 3.3.1), the MobileNetV1-YOLOv3
train program at demo size (width 0.25, 5 classes, 160 px, batch 2) the way compress.py
does, and then each API it rests on alone (classic static layers, yolo_loss with its
backward, yolo_box, the multiclass_nms3 op appended through LayerHelper and through
`_C_ops`, Momentum + L2Decay, fleet's distributed optimizer): for each, whether it builds,
whether it runs, and the first line of the error.

Part 2 builds the same model in PIR with the two classic layers replaced by PIR-capable
equivalents of the same parameters (`paddle.static.create_parameter` under the classic
names + `paddle.nn.functional.conv2d` / `batch_norm`), checks the parameter names equal
the classic program's, appends the project's optimizer (Momentum 0.9, L2Decay 5e-4) with
`minimize`, takes steps, then prunes the whole train program (forward, backward,
velocities) through `slim.prune.pir.PirProgramView` with the seed's `pruned_params` regex
at ratio 0.5 and checks that one step of the pruned program equals one step of the
unpruned program from masked weights on every kept channel (loss, all parameters and
velocities, 1e-4 relative). Timings are medians of 3 steps on this machine. Writes the
findings to --out.
"""
import argparse
import contextlib
import json
import os
import sys
import time
import warnings

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import slim  # noqa: E402,F401  (classic static IR before paddle)

DEFAULT_OUT = os.path.join(ROOT, "bench", "results", "pir_train.json")
SIZE, BATCH, CLASSES, BOXES = 160, 2, 5, 10
SEEDS = (0, 1, 2)
SEED_REGEX = (r"conv2_1_sep_weights|conv2_2_sep_weights|conv3_1_sep_weights|"
              r"conv4_1_sep_weights|conv5_1_sep_weights|conv5_2_sep_weights|"
              r"conv5_3_sep_weights|conv5_4_sep_weights|conv5_5_sep_weights|"
              r"conv5_6_sep_weights|yolo_block.0.0.0.conv.weights|"
              r"yolo_block.0.0.1.conv.weights|yolo_block.0.1.0.conv.weights|"
              r"yolo_block.0.1.1.conv.weights|yolo_block.1.0.0.conv.weights|"
              r"yolo_block.1.0.1.conv.weights|yolo_block.1.1.0.conv.weights|"
              r"yolo_block.1.1.1.conv.weights|yolo_block.1.2.conv.weights|"
              r"yolo_block.2.0.0.conv.weights|yolo_block.2.0.1.conv.weights|"
              r"yolo_block.2.1.1.conv.weights|yolo_block.2.2.conv.weights|"
              r"yolo_block.2.tip.conv.weights")


def first_line(error):
    text = str(error).strip().splitlines()
    text = [line for line in text if line.strip() and not line.startswith(("----", "  "))]
    return f"{type(error).__name__}: {text[0][:300] if text else ''}"


def model():
    from slim.model import MobileNet, YOLOv3, YOLOv3Head
    return YOLOv3(MobileNet(conv_group_scale=0.25), YOLOv3Head(num_classes=CLASSES))


def feeds(rng):
    boxes = np.zeros((BATCH, BOXES, 4), "float32")
    boxes[:, :3] = [[0.3, 0.3, 0.2, 0.2], [0.6, 0.5, 0.3, 0.4], [0.5, 0.7, 0.1, 0.1]]
    labels = np.zeros((BATCH, BOXES), "int32")
    labels[:, :3] = [1, 2, 3]
    scores = np.zeros((BATCH, BOXES), "float32")
    scores[:, :3] = 1
    return {"image": rng.standard_normal((BATCH, 3, SIZE, SIZE)).astype("float32"),
            "gt_box": boxes, "gt_label": labels, "gt_score": scores}


def probe(name, build, run=None):
    """{'api', 'builds', 'runs', 'error'} of one API inside IrGuard."""
    import paddle
    from paddle.pir_utils import IrGuard
    result = {"api": name, "builds": False, "runs": None, "error": None}
    with IrGuard(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        main, startup = paddle.static.Program(), paddle.static.Program()
        try:
            with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
                fetch, feed = build()
            result["builds"] = True
        except Exception as error:  # noqa: BLE001 - the finding is the error
            result["error"] = first_line(error)
            return result
        if run is False:
            return result
        try:
            scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
            with paddle.static.scope_guard(scope):
                exe.run(startup)
                exe.run(main, feed=feed, fetch_list=fetch)
            result["runs"] = True
        except Exception as error:  # noqa: BLE001
            result["runs"] = False
            result["error"] = first_line(error)
    return result


def part_one():
    import paddle
    rng = np.random.default_rng(0)
    data = feeds(rng)

    def train_program():
        from slim.model import build_train_program
        build_train_program(model(), image_shape=[3, SIZE, SIZE])
        return [], {}

    def yolo_model_outputs():
        image = paddle.static.data("image", [-1, 3, SIZE, SIZE], "float32")
        model().outputs(image, is_test=False)
        return [], {}

    def static_conv():
        x = paddle.static.data("x", [1, 3, 8, 8], "float32")
        return [paddle.static.nn.conv2d(x, 4, 3)], {"x": np.ones((1, 3, 8, 8), "float32")}

    def static_batch_norm():
        x = paddle.static.data("x", [1, 3, 8, 8], "float32")
        return [paddle.static.nn.batch_norm(x)], {"x": np.ones((1, 3, 8, 8), "float32")}

    def yolo_loss():
        x = paddle.static.data("x", [BATCH, 3, 5, 5], "float32")
        conv = paddle.nn.Conv2D(3, 3 * (5 + CLASSES), 1)
        gt = [paddle.static.data(n, list(data[n].shape), str(data[n].dtype))
              for n in ("gt_box", "gt_label", "gt_score")]
        loss = paddle.vision.ops.yolo_loss(
            conv(x), *gt[:2], anchors=[10, 13, 16, 30, 33, 23], anchor_mask=[0, 1, 2],
            class_num=CLASSES, ignore_thresh=0.7, downsample_ratio=32, gt_score=gt[2]).mean()
        paddle.optimizer.Momentum(0.01, 0.9).minimize(loss)
        feed = {n: data[n] for n in ("gt_box", "gt_label", "gt_score")}
        feed["x"] = rng.standard_normal((BATCH, 3, 5, 5)).astype("float32")
        return [loss], feed

    def yolo_box():
        x = paddle.static.data("x", [1, 3 * (5 + CLASSES), 5, 5], "float32")
        size = paddle.static.data("im_size", [1, 2], "int32")
        boxes, scores = paddle.vision.ops.yolo_box(
            x, size, anchors=[10, 13, 16, 30, 33, 23], class_num=CLASSES, conf_thresh=0.01,
            downsample_ratio=32)
        return [boxes, scores], {"x": rng.standard_normal((1, 30, 5, 5)).astype("float32"),
                                 "im_size": np.array([[160, 160]], "int32")}

    def nms_inputs():
        boxes = paddle.static.data("boxes", [1, 20, 4], "float32")
        scores = paddle.static.data("scores", [1, CLASSES, 20], "float32")
        corner = rng.uniform(0, 100, (1, 20, 2)).astype("float32")
        feed = {"boxes": np.concatenate([corner, corner + 20], axis=2),
                "scores": rng.uniform(0, 1, (1, CLASSES, 20)).astype("float32")}
        return boxes, scores, feed

    def nms_layer_helper():
        from slim.model.layers import multiclass_nms
        from slim.model.yolo_head import MultiClassNMS
        boxes, scores, feed = nms_inputs()
        detections, count = multiclass_nms(boxes, scores, MultiClassNMS())
        return [detections, count], feed

    def nms_c_ops():
        boxes, scores, feed = nms_inputs()
        out, _, count = paddle._C_ops.multiclass_nms3(boxes, scores, None, 0.01, 1000, 100,
                                                      0.45, False, 1.0, -1)
        return [out, count], feed

    def momentum_l2():
        x = paddle.static.data("x", [2, 3, 8, 8], "float32")
        conv = paddle.nn.Conv2D(3, 4, 3, weight_attr=paddle.ParamAttr(
            name="w", regularizer=paddle.regularizer.L2Decay(0.0)))
        loss = conv(x).mean()
        paddle.optimizer.Momentum(0.01, 0.9, weight_decay=paddle.regularizer.L2Decay(5e-4)
                                  ).minimize(loss)
        return [loss], {"x": np.ones((2, 3, 8, 8), "float32")}

    def fleet_optimizer():
        from paddle.distributed import fleet
        fleet.init(is_collective=True)
        x = paddle.static.data("x", [2, 3, 8, 8], "float32")
        loss = paddle.nn.Conv2D(3, 4, 3)(x).mean()
        fleet.distributed_optimizer(paddle.optimizer.Momentum(0.01, 0.9)).minimize(loss)
        return [loss], {"x": np.ones((2, 3, 8, 8), "float32")}

    return [
        probe("slim.model.build_train_program (MobileNetV1-YOLOv3, demo size)", train_program,
              run=False),
        probe("YOLOv3.outputs (the model's layers, bypassing the program check)",
              yolo_model_outputs, run=False),
        probe("paddle.static.nn.conv2d", static_conv),
        probe("paddle.static.nn.batch_norm", static_batch_norm),
        probe("paddle.vision.ops.yolo_loss + backward + Momentum", yolo_loss),
        probe("paddle.vision.ops.yolo_box", yolo_box),
        probe("multiclass_nms3 through LayerHelper.append_op (slim.model.layers)",
              nms_layer_helper),
        probe("paddle._C_ops.multiclass_nms3", nms_c_ops),
        probe("paddle.optimizer.Momentum + L2Decay (and a ParamAttr regularizer)", momentum_l2),
        probe("fleet.init(is_collective=True) + fleet.distributed_optimizer(...).minimize",
              fleet_optimizer),
    ]


@contextlib.contextmanager
def pir_layers():
    """paddle.static.nn.conv2d / batch_norm replaced, for the model's calls, by the same
    parameters (names, shapes, initializers, regularizers) built with create_parameter and
    the functional ops, which PIR has; and LayerHelper's multiclass_nms3 by `_C_ops`."""
    import paddle
    from paddle.nn import functional

    import slim.model.layers as layers

    def conv2d(input, num_filters, filter_size, stride=1, padding=0, groups=1,
               param_attr=None, bias_attr=None, act=None, **_):
        channels = input.shape[1]
        fan_in = channels // groups * filter_size * filter_size
        weight = paddle.static.create_parameter(
            [num_filters, channels // groups, filter_size, filter_size], "float32",
            attr=param_attr, default_initializer=paddle.nn.initializer.Normal(
                0.0, (2.0 / fan_in) ** 0.5))
        bias = None
        if bias_attr is not False:
            bias = paddle.static.create_parameter([num_filters], "float32", attr=bias_attr,
                                                  is_bias=True)
        out = functional.conv2d(input, weight, bias, stride, padding, groups=groups)
        return getattr(functional, act)(out) if act else out

    def batch_norm(input, act=None, is_test=False, param_attr=None, bias_attr=None,
                   moving_mean_name=None, moving_variance_name=None, use_global_stats=False,
                   momentum=0.9, epsilon=1e-5, **_):
        channels = [input.shape[1]]
        one, zero = paddle.nn.initializer.Constant(1.0), paddle.nn.initializer.Constant(0.0)
        scale = paddle.static.create_parameter(channels, "float32", attr=param_attr,
                                               default_initializer=one)
        offset = paddle.static.create_parameter(channels, "float32", attr=bias_attr,
                                                is_bias=True)
        statistics = [paddle.static.create_parameter(
            channels, "float32", attr=paddle.ParamAttr(name=name, trainable=False,
                                                       initializer=init))
            for name, init in ((moving_mean_name, zero), (moving_variance_name, one))]
        for value in statistics:
            value.stop_gradient = True
        out = functional.batch_norm(input, *statistics, scale, offset, training=not is_test,
                                    momentum=momentum, epsilon=epsilon,
                                    use_global_stats=use_global_stats)
        return getattr(functional, act)(out) if act else out

    def multiclass_nms(bboxes, scores, nms):
        out, _, count = paddle._C_ops.multiclass_nms3(
            bboxes, scores, None, float(nms.score_threshold), int(nms.nms_top_k),
            int(nms.keep_top_k), float(nms.nms_threshold), bool(nms.normalized), 1.0,
            int(nms.background_label))
        return out, count

    saved = (paddle.static.nn.conv2d, paddle.static.nn.batch_norm, layers.multiclass_nms)
    paddle.static.nn.conv2d, paddle.static.nn.batch_norm = conv2d, batch_norm
    layers.multiclass_nms = multiclass_nms
    try:
        yield
    finally:
        paddle.static.nn.conv2d, paddle.static.nn.batch_norm, layers.multiclass_nms = saved


def build_pir_train():
    """(main, startup, feeds dict of values, loss, outputs) of the YOLOv3 train program in
    PIR through `pir_layers`, with the project's Momentum + L2Decay appended."""
    import paddle

    from slim.engine.optimizer import OptimizerBuilder, build_optimizer
    main, startup = paddle.static.Program(), paddle.static.Program()
    net = model()
    with pir_layers(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [-1, 3, SIZE, SIZE], "float32")
        gt_box = paddle.static.data("gt_box", [-1, BOXES, 4], "float32")
        gt_label = paddle.static.data("gt_label", [-1, BOXES], "int32")
        gt_score = paddle.static.data("gt_score", [-1, BOXES], "float32")
        outputs = net.outputs(image, is_test=False)
        loss = paddle.add_n(net.yolo_head.losses(outputs, gt_box, gt_label, gt_score))
        build_optimizer(OptimizerBuilder(), 0.001).minimize(loss)
    return main, startup, loss, outputs


def classic_parameter_names():
    from slim.model import build_train_program
    built = build_train_program(model(), image_shape=[3, SIZE, SIZE])
    return sorted(p.name for p in built.program.global_block().all_parameters())


def part_two(seed):
    import paddle
    from paddle.pir_utils import IrGuard

    from slim.prune import analyze_program, apply_plan, plan_pruning
    from slim.prune.apply import plan_removals
    from slim.prune.masking import zero_removed_channels
    from slim.prune.pir import PirProgramView, check_types
    found = {}
    classic_names = classic_parameter_names()
    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    data = feeds(rng)
    with IrGuard(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        started = time.time()
        main, startup, loss, outputs = build_pir_train()
        found["build_seconds"] = round(time.time() - started, 2)
        view = PirProgramView(main)
        names = sorted(v.name for v in view.list_vars() if v.is_parameter)
        found["parameters"] = len(names)
        found["parameter_names_equal_classic"] = names == classic_names
        found["ops"] = len(list(main.global_block().ops))
        found["grad_ops"] = sum(op.type.endswith("_grad") for op in view.global_block().ops)
        found["velocities"] = sum(v.name.endswith("_velocity_0") for v in view.list_vars())
        scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            exe.run(startup)
            times = []
            for _ in range(3):  # a few steps: velocities and statistics are not initial
                tick = time.time()
                exe.run(main, feed=data, fetch_list=[loss])
                times.append(time.time() - tick)
        found["step_seconds_median"] = round(float(np.median(times)), 3)
        fixed = [view.name_of[out.id] for out in outputs]
        graph = analyze_program(view, fixed_vars=fixed)
        plan = plan_pruning(view, scope, SEED_REGEX, ratio=0.5, graph=graph)
        found["pruned_groups"] = len(plan.groups)
        found["matched"] = len(plan.matched)
        state = {v.name: np.array(scope.find_var(v.name).get_tensor())
                 for v in view.list_vars() if v.persistable and scope.find_var(v.name)}
        zero_removed_channels(plan, graph, scope)
        with paddle.static.scope_guard(scope):
            masked_loss = float(exe.run(main, feed=data, fetch_list=[loss])[0])
        masked = {name: np.array(scope.find_var(name).get_tensor()) for name in state}
        for name, value in state.items():  # the masked step on an image moved by ~1 ulp:
            scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())  # rounding's reach
        zero_removed_channels(plan, graph, scope)
        nudged = dict(data, image=data["image"] * np.float32(1 + 2 ** -23))
        with paddle.static.scope_guard(scope):
            exe.run(main, feed=nudged, fetch_list=[loss])
        again = {name: np.array(scope.find_var(name).get_tensor()) for name in state}
        for name, value in state.items():
            scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
        apply_plan(plan, [view], scope, graphs=[graph])
        found["values_retyped"] = view.commit()
        pruned_state = {name: np.array(scope.find_var(name).get_tensor()) for name in state}
        found["values_checked"] = check_types(main, scope, data, exe)
        for name, value in pruned_state.items():
            scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            times = []
            tick = time.time()
            pruned_loss = float(exe.run(main, feed=data, fetch_list=[loss])[0])
            times.append(time.time() - tick)
        pruned = {name: np.array(scope.find_var(name).get_tensor()) for name in state}
    removals = plan_removals(plan, graph)
    worst, compared, worst_name, worst_noise, noise_there = 0.0, 0, None, 0.0, None
    for name, value in pruned.items():
        if not name.endswith(("_velocity_0",)) and name not in names:
            continue
        param = name.removesuffix("_velocity_0")
        expected = masked[name]
        for (var, axis), removed in removals.items():
            if var == param:
                expected = np.delete(expected, removed, axis=axis)
        scale = max(float(np.abs(expected).max()), 1e-12)
        difference = float(np.abs(value - expected).max()) / scale
        noise = float(np.abs(again[name] - masked[name]).max()) / \
            max(float(np.abs(masked[name]).max()), 1e-12)
        worst_noise = max(worst_noise, noise)
        if difference > worst:
            worst, worst_name, noise_there = difference, name, noise
        compared += 1
    found.update({"masked_loss": masked_loss, "pruned_loss": pruned_loss,
                  "loss_relative_difference": abs(pruned_loss - masked_loss) / abs(masked_loss),
                  "tensors_compared": compared, "worst_relative_difference": worst,
                  "worst_tensor": worst_name, "one_ulp_input_nudge_difference_there": noise_there,
                  "one_ulp_input_nudge_worst_difference": worst_noise,
                  "pruned_step_seconds": round(times[0], 3),
                  "equal_within_1e-4": worst <= 1e-4 and
                  abs(pruned_loss - masked_loss) <= 1e-4 * abs(masked_loss)})
    return found


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    import paddle
    paddle.enable_static()
    result = {"paddle": paddle.__version__, "size": SIZE, "batch": BATCH, "classes": CLASSES,
              "apis": part_one(), "pir_port": [part_two(seed) for seed in SEEDS]}
    for item in result["apis"]:
        state = "builds" if item["builds"] else "does not build"
        if item["builds"] and item["runs"] is not None:
            state += ", runs" if item["runs"] else ", does not run"
        print(f"{item['api']}: {state}{'; ' + item['error'] if item['error'] else ''}")
    for seed, found in zip(SEEDS, result["pir_port"]):
        print(f"seed {seed}: loss {found['masked_loss']:.6f} masked, {found['pruned_loss']:.6f} "
              f"pruned ({found['loss_relative_difference']:.1e}); worst tensor "
              f"{found['worst_tensor']} {found['worst_relative_difference']:.1e} (a 1-ulp input "
              f"nudge moves it {found['one_ulp_input_nudge_difference_there']:.1e}; worst nudge "
              f"{found['one_ulp_input_nudge_worst_difference']:.1e})")
    with open(args.out, "w", encoding="utf-8") as handle:
        json.dump(result, handle, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
