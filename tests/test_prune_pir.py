"""The pruning engine on Paddle 3's new IR (PIR) through `slim.prune.pir.PirProgramView`.

A small PIR program with every kind of coupling the rules handle (conv + bias add, batch
norm, depthwise conv, a concat fed by `builtin.combine`, two summed convs, pooling, a
reshape whose constant `full_int_array` shape counts channels, a fully connected layer) is
pruned through the view and must equal the unpruned program with the removed channels
zeroed; `check_types` must catch a value whose type was left stale; a plan made on the
classic program applies to its PIR translation (plans are keyed by parameter names).
On Paddle 2.6 (no PIR) every test here skips with that reason.
"""
import numpy as np
import paddle
import pytest
from test_prune_exact import kept_part, persistables
from test_prune_exact import restore as put_back

from slim.prune import PrunePlan, analyze_program, apply_plan, plan_pruning
from slim.prune.flops import program_flops
from slim.prune.masking import zero_removed_channels
from slim.prune.pir import pir_supported

pytestmark = pytest.mark.skipif(not pir_supported(),
                                reason=f"Paddle {paddle.__version__} has no new IR (PIR)")
CPU = paddle.CPUPlace()
SHAPE = [2, 3, 16, 16]


@pytest.fixture()
def pir_mode():
    from paddle.pir_utils import IrGuard
    with IrGuard():
        yield


def build(channels=10):
    """The small model's layers, and its forward on the static input `x` (either IR)."""
    layers = {
        "c1": paddle.nn.Conv2D(3, 8, 3, padding=1), "bn": paddle.nn.BatchNorm2D(8),
        "dw": paddle.nn.Conv2D(8, 8, 3, padding=1, groups=8), "c2": paddle.nn.Conv2D(3, 6, 1),
        "c3": paddle.nn.Conv2D(14, channels, 1), "c4": paddle.nn.Conv2D(14, channels, 1),
        "fc": paddle.nn.Linear(channels * 4 * 4, 5),
    }
    layers["bn"].eval()

    def forward(x):
        h = layers["dw"](paddle.nn.functional.relu(layers["bn"](layers["c1"](x))))
        cat = paddle.concat([h, layers["c2"](x)], axis=1)
        s = paddle.nn.functional.max_pool2d(layers["c3"](cat) + layers["c4"](cat), 4)
        return layers["fc"](paddle.reshape(s, [-1, channels * 4 * 4]))
    return forward


def make_program():
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [-1] + SHAPE[1:], "float32")
        out = build()(x)
    return main, startup, out


def randomized(program, startup, scope, seed=0):
    exe = paddle.static.Executor(CPU)
    with paddle.static.scope_guard(scope):
        exe.run(startup)
    rng = np.random.default_rng(seed)
    for name, value in persistables(program, scope).items():
        if "w_2" in name:  # batch norm variance: positive
            new = rng.uniform(0.5, 2.0, value.shape)
        else:
            new = rng.standard_normal(value.shape) * 0.5
        scope.find_var(name).get_tensor().set(new.astype(value.dtype), CPU)
    return exe


FEED = {"x": np.random.RandomState(3).randn(*SHAPE).astype("float32")}


def run(exe, program, scope, out):
    with paddle.static.scope_guard(scope):
        return exe.run(program, feed=FEED, fetch_list=[out])[0]


def test_view_gives_the_rules_classic_ops_slots_and_attrs(pir_mode):
    from slim.prune.pir import PirProgramView
    main, _, _ = make_program()
    view = PirProgramView(main)
    ops = view.global_block().ops
    types = [op.type for op in ops]
    assert {"conv2d", "depthwise_conv2d", "batch_norm", "relu", "concat", "elementwise_add",
            "pool2d", "reshape2", "matmul_v2"} <= set(types)
    assert not [t for t in types if t.startswith(("builtin", "pd_op"))]  # no PIR spelling
    assert "full_int_array" not in types  # constants feeding attributes are attributes
    conv = ops[types.index("conv2d")]
    assert conv.input("Filter") == ["conv2d_0.w_0"] and len(conv.output("Output")) == 1
    assert view.global_block().var(conv.input("Input")[0]).shape == (-1, 3, 16, 16)
    concat = ops[types.index("concat")]
    assert concat.attr("axis") == 1 and len(concat.input("X")) == 2  # builtin.combine's inputs
    assert "AxisTensor" not in concat.input_names
    assert ops[types.index("pool2d")].attr("ksize") == [4, 4]
    reshapes = [op for op in ops if op.type == "reshape2"]
    assert [-1, 160] in [op.attr("shape") for op in reshapes]
    norm = ops[types.index("batch_norm")]
    assert norm.input("Scale") == ["batch_norm2d_0.w_0"] and norm.output("Y")
    assert ops[types.index("depthwise_conv2d")].attr("groups") == 8


def test_pir_prune_equals_masked_reference(pir_mode):
    from slim.prune.pir import PirProgramView, check_types
    main, startup, out = make_program()
    scope = paddle.static.Scope()
    exe = randomized(main, startup, scope)
    view = PirProgramView(main)
    graph = analyze_program(view, fixed_vars=[view.name_of[out.id]])
    assert len([g for g in graph.groups if g.prunable]) == 3
    unpruned = run(exe, main, scope, out)
    state = persistables(view, scope)
    flops_before = program_flops(view)
    plan = plan_pruning(view, scope, "auto", ratio=0.5, graph=graph)
    zero_removed_channels(plan, graph, scope)
    masked = run(exe, main, scope, out)
    put_back(state, scope)
    apply_plan(plan, [view], scope, graphs=[graph])
    assert program_flops(view) < 0.6 * flops_before
    assert view.commit() > 0
    assert check_types(main, scope, FEED) > 40
    pruned = run(exe, main, scope, out)
    assert np.abs(unpruned - masked).max() > 1e-2  # the masking changes the output
    np.testing.assert_allclose(pruned, masked, rtol=1e-5, atol=1e-5 * np.abs(masked).max())
    values = {op.name(): op for op in main.global_block().ops}
    assert values["pd_op.depthwise_conv2d"].attrs()["groups"] == 4  # set_int_attr
    shapes = [op.attrs()["value"] for op in main.global_block().ops
              if op.name() == "pd_op.full_int_array"]
    assert [-1, 80] in shapes and [-1, 160] not in shapes  # rebuilt, not edited in place


def test_check_types_catches_a_stale_type(pir_mode):
    """Paddle runs a program whose types lie; the self-check must not."""
    from slim.prune.pir import PirProgramView, TypeMismatchError, check_types
    main, startup, out = make_program()
    scope = paddle.static.Scope()
    randomized(main, startup, scope)
    view = PirProgramView(main)
    graph = analyze_program(view, fixed_vars=[view.name_of[out.id]])
    plan = plan_pruning(view, scope, "auto", ratio=0.5, graph=graph)
    apply_plan(plan, [view], scope, graphs=[graph])
    view.commit()
    assert check_types(main, scope, FEED)
    conv = next(op for op in main.global_block().ops if op.name() == "pd_op.conv2d")
    value = conv.result(0)
    stale = list(value.shape)
    stale[1] = 8  # the unpruned channel count
    value.set_type(paddle.pir.create_shaped_type(value.type(), stale))
    with pytest.raises(TypeMismatchError, match="pd_op.conv2d"):
        check_types(main, scope, FEED)


def test_classic_plan_applies_to_the_pir_translation():
    """A plan made on the classic program prunes its PIR translation (same parameter names)
    to the same outputs as the pruned classic program."""
    from paddle.pir_utils import IrGuard

    from slim.prune.pir import PirProgramView, check_types, runtime_shapes, type_mismatches
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [-1] + SHAPE[1:], "float32")
        out = build()(x)
    scope = paddle.static.Scope()
    exe = randomized(main, startup, scope)
    graph = analyze_program(main, fixed_vars=[out.name])
    plan = plan_pruning(main, scope, "auto", ratio=0.5, graph=graph)
    assert plan.groups and all(group.removed for group in plan.groups)
    state = persistables(main, scope)
    translated = paddle.pir.translate_to_pir(main.desc)
    apply_plan(plan, [main], scope, graphs=[graph])
    classic = run(exe, main, scope, out)
    put_back(state, scope)
    with IrGuard():
        # the translation itself types a batch norm's saved statistics [] (they run as [C])
        known = type_mismatches(translated, FEED, runtime_shapes(translated, scope, FEED))
        view = PirProgramView(translated)
        fetched = [op.operand_source(0) for op in translated.global_block().ops
                   if op.name() == "pd_op.fetch"]
        target = fetched[0] if fetched else translated.global_block().ops[-1].result(0)
        pir_graph = analyze_program(view, fixed_vars=[view.name_of[target.id]])
        apply_plan(plan, [view], scope, graphs=[pir_graph])
        view.commit()
        check_types(translated, scope, FEED, known=known)
        with paddle.static.scope_guard(scope):
            pir_out = paddle.static.Executor(CPU).run(translated, feed=FEED,
                                                      fetch_list=[target])[0]
    np.testing.assert_allclose(pir_out, classic, rtol=1e-5, atol=1e-6)


def test_json_model_round_trips_through_slim_prune_and_paddle_inference(tmp_path, capsys):
    """A `.json` model saved by Paddle 3 (MobileNetV2 x0.25) -> `python -m slim prune` ->
    `.json` + `.pdiparams` whose Paddle Inference output equals the original run by the
    Executor with the removed channels zeroed."""
    import json
    import os

    from test_prune_command import predict, prune

    from slim.io.inference_model import find_model_files, load_inference_model
    from slim.prune.pir import ir_guard
    model_dir = str(tmp_path / "model")
    with ir_guard(True):
        save_mobilenet_v2(model_dir)
    assert sorted(os.listdir(model_dir)) == ["inference.json", "inference.pdiparams"]
    out = str(tmp_path / "pruned")
    assert prune(["--model_dir", model_dir, "--target_ratio", "0.4", "--out", out,
                  "--latency_runs", "2"]) == 0
    assert "latency ms" in capsys.readouterr().out
    assert {"inference.json", "inference.pdiparams"} <= set(os.listdir(out))
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    assert abs(report["flops_removed"] - 0.4) <= 0.01
    plan = PrunePlan.load(os.path.join(out, "plan.json"))
    feeds = {"image": np.random.RandomState(3).rand(2, 3, 32, 32).astype("float32")}
    (pruned,) = predict(out, feeds)
    with ir_guard(True):
        scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
        model = load_inference_model(find_model_files(model_dir), executor, scope)
        graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
        fetches = [var.value for var in model.fetch_vars]
        with paddle.static.scope_guard(scope):
            (unpruned,) = executor.run(model.program.program, feed=feeds, fetch_list=fetches)
            zero_removed_channels(plan, graph, scope)
            (masked,) = executor.run(model.program.program, feed=feeds, fetch_list=fetches)
    assert pruned.shape == unpruned.shape == (2, 10)
    assert np.abs(unpruned - masked).max() > 1e-3 * np.abs(unpruned).max()  # masking matters
    assert np.abs(pruned - masked).max() <= 1e-5 * np.abs(masked).max()


def build_train_program():
    """A PIR train program: conv + BN + ReLU, depthwise conv, conv with bias, global pool,
    fc, cross entropy; Momentum with L2Decay appended by `minimize` (its backward ops have
    regular slots: `conv2d_grad` reads `out_grad`; the velocities are persistable
    `pd_op.data` ops)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [4, 3, 16, 16], "float32")
        label = paddle.static.data("label", [4, 1], "int64")
        conv = paddle.nn.Conv2D(3, 8, 3, padding=1, bias_attr=False)
        norm = paddle.nn.BatchNorm2D(8)
        depthwise = paddle.nn.Conv2D(8, 8, 3, padding=1, groups=8, bias_attr=False)
        head = paddle.nn.Conv2D(8, 6, 1)
        fc = paddle.nn.Linear(6, 5)
        hidden = head(depthwise(paddle.nn.functional.relu(norm(conv(x)))))
        pooled = paddle.nn.functional.adaptive_avg_pool2d(hidden, 1)
        logits = fc(paddle.flatten(pooled, 1))
        loss = paddle.nn.functional.cross_entropy(logits, label).mean()
        paddle.optimizer.Momentum(0.1, 0.9, weight_decay=paddle.regularizer.L2Decay(5e-4)
                                  ).minimize(loss)
    return main, startup, logits, loss


def test_pir_train_step_equals_masked_reference(pir_mode):
    """Pruning a PIR train program (forward, `*_grad` ops, Momentum velocities) and taking
    one step gives, for every kept channel, the parameters and velocities the unpruned
    program reaches from the masked weights in one step."""
    from slim.prune.apply import plan_removals
    from slim.prune.pir import PirProgramView, check_types
    main, startup, logits, loss = build_train_program()
    scope = paddle.static.Scope()
    exe = randomized(main, startup, scope, seed=1)
    view = PirProgramView(main)
    velocities = [v.name for v in view.list_vars() if v.name.endswith("_velocity_0")]
    assert len(velocities) == 8 and all(view.global_block().var(v).persistable
                                        for v in velocities)
    assert any(op.type == "conv2d_grad" for op in view.global_block().ops)
    graph = analyze_program(view, fixed_vars=[view.name_of[logits.id]])
    plan = plan_pruning(view, scope, "auto", ratio=0.5, graph=graph)
    removals = plan_removals(plan, graph)
    group = graph.group_at(*plan.groups[0].key)
    assert {"conv2d_0.w_0_velocity_0", "batch_norm2d_0.w_0_velocity_0"} <= \
        {m.var for m in group.members}  # velocities found by the grad ops' structure
    feed = {"x": np.random.RandomState(5).randn(4, 3, 16, 16).astype("float32"),
            "label": np.array([[0], [1], [2], [3]], "int64")}
    for name in velocities:  # a step after others: velocities are not zero
        scope.find_var(name).get_tensor().set(
            np.random.RandomState(7).randn(*view.global_block().var(name).shape)
            .astype("float32"), CPU)
    state = persistables(view, scope)
    zero_removed_channels(plan, graph, scope)
    with paddle.static.scope_guard(scope):
        masked_loss = exe.run(main, feed=feed, fetch_list=[loss])[0]
    masked = persistables(view, scope)
    put_back(state, scope)
    apply_plan(plan, [view], scope, graphs=[graph])
    view.commit()
    pruned_state = persistables(view, scope)
    assert check_types(main, scope, feed) > 50  # runs a step: put the state back after it
    put_back(pruned_state, scope)
    with paddle.static.scope_guard(scope):
        pruned_loss = exe.run(main, feed=feed, fetch_list=[loss])[0]
    pruned = persistables(view, scope)
    np.testing.assert_allclose(pruned_loss, masked_loss, rtol=1e-5)
    compared = 0
    for name, value in pruned.items():
        if name == "learning_rate_0":
            continue
        param = name.removesuffix("_velocity_0")
        expected = kept_part(masked[name], removals, param)
        assert value.shape == expected.shape, name
        np.testing.assert_allclose(value, expected, rtol=1e-4, atol=1e-6, err_msg=name)
        assert not np.array_equal(value, pruned_state[name]), name  # the step moved it
        compared += 1
    assert compared == 18  # 10 parameters (BN statistics included) and 8 velocities


def test_images_fidelity_of_a_json_model_equals_its_classic_twin(tmp_path, capsys):
    """`--images` on a `.json` model: the fidelity report (and the plan) equal those of the
    same model saved classic; the options that rewrite programs classic-style are one line."""
    import json
    import os
    import shutil

    import cv2
    from test_pir_exports import save_as_pir
    from test_prune_command import error_line, prune
    classic_dir, pir_dir = str(tmp_path / "classic"), str(tmp_path / "pir")
    save_mobilenet_v2(classic_dir)
    save_as_pir(classic_dir, "inference.pdmodel", "inference.pdiparams", ("image",), "net")
    os.makedirs(pir_dir)
    for name in ("net.json", "net.pdiparams"):
        shutil.move(os.path.join(classic_dir, name), os.path.join(pir_dir, name))
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for index in range(6):
        cv2.imwrite(str(images / f"{index}.png"), rng.integers(0, 255, (40, 40, 3), np.uint8))
    reports = {}
    for name, model_dir in (("classic", classic_dir), ("pir", pir_dir)):
        out = str(tmp_path / f"out_{name}")
        assert prune(["--model_dir", model_dir, "--target_ratio", "0.4", "--out", out,
                      "--latency_runs", "0", "--images", str(images), "--held_out", "2",
                      "--task", "classify"]) == 0
        with open(os.path.join(out, "report.json")) as handle:
            reports[name] = json.load(handle)
    capsys.readouterr()
    classic, pir = (reports[n]["fidelity"]["one_shot"] for n in ("classic", "pir"))
    assert classic["relative_l2"] > 1e-3  # the prune changes the outputs
    assert pir["agreement"] == classic["agreement"]
    assert pir["relative_l2"] == pytest.approx(classic["relative_l2"], rel=1e-4)
    assert reports["pir"]["after"]["flops"] == reports["classic"]["after"]["flops"]
    plans = {name: PrunePlan.load(str(tmp_path / f"out_{name}" / "plan.json"))
             for name in ("classic", "pir")}
    assert plans["classic"].groups
    assert [(g.key, g.kept) for g in plans["pir"].groups] == \
        [(g.key, g.kept) for g in plans["classic"].groups]
    code, error = error_line(capsys, ["--model_dir", pir_dir, "--target_ratio", "0.4", "--out",
                                      str(tmp_path / "refused"), "--images", str(images),
                                      "--reconstruct"])
    assert code == 2 and "--reconstruct works on classic models only" in error


def test_view_maps_the_recognizer_ops(pir_mode):
    """The ops of PP-OCRv5's recognizer as the rules read them on classic programs:
    transpose `perm` is `axis`, slice `starts` / `ends` constant operands are attrs,
    layer_norm's and stack's outputs are `Y`; and a conv pruned through a transpose into a
    fully connected layer equals the masked reference."""
    from slim.prune.pir import PirProgramView, check_types
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [2, 3, 8, 8], "float32")
        conv = paddle.nn.Conv2D(3, 8, 3, padding=1)
        sequence = paddle.transpose(paddle.flatten(conv(x), 2), [0, 2, 1])  # [2, 64, 8]
        out = paddle.nn.Linear(8, 5)(sequence)
        normed = paddle.nn.LayerNorm(8)(sequence)
        stacked = paddle.stack([out, out], axis=0)
        sliced = paddle.slice(stacked, axes=[0], starts=[0], ends=[1])
    view = PirProgramView(main)
    ops = {op.type: op for op in view.global_block().ops}
    assert ops["transpose2"].attr("axis") == [0, 2, 1]
    assert ops["slice"].attr("starts") == [0] and ops["slice"].attr("ends") == [1]
    assert "StartsTensor" not in ops["slice"].input_names
    assert ops["layer_norm"].output("Y") and ops["stack"].output("Y")
    scope = paddle.static.Scope()
    exe = randomized(main, startup, scope, seed=2)
    graph = analyze_program(view, fixed_vars=[view.name_of[v.id] for v in (out, normed, sliced)])
    assert not graph.groups_of("conv2d_0.w_0")[0].prunable  # layer_norm normalizes over them
    main2, startup2 = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main2, startup2), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [2, 3, 8, 8], "float32")
        sequence = paddle.transpose(paddle.flatten(paddle.nn.Conv2D(3, 8, 3, padding=1)(x), 2),
                                    [0, 2, 1])
        out = paddle.nn.Linear(8, 5)(sequence)
    exe = randomized(main2, startup2, scope, seed=2)
    view = PirProgramView(main2)
    graph = analyze_program(view, fixed_vars=[view.name_of[out.id]])
    plan = plan_pruning(view, scope, "auto", ratio=0.5, graph=graph)
    feed = {"x": np.random.RandomState(1).randn(2, 3, 8, 8).astype("float32")}
    state = persistables(view, scope)
    zero_removed_channels(plan, graph, scope)
    with paddle.static.scope_guard(scope):
        masked = exe.run(main2, feed=feed, fetch_list=[out])[0]
    put_back(state, scope)
    apply_plan(plan, [view], scope, graphs=[graph])
    view.commit()
    check_types(main2, scope, feed)
    with paddle.static.scope_guard(scope):
        pruned = exe.run(main2, feed=feed, fetch_list=[out])[0]
    assert scope.find_var("linear_0.w_0").get_tensor().shape()[0] == 4
    np.testing.assert_allclose(pruned, masked, rtol=1e-5, atol=1e-6)


def test_yolov3_programs_build_in_pir_and_a_pruned_step_equals_the_masked_one():
    """slim.model builds MobileNetV1-YOLOv3's train and eval programs in PIR (`pir=True`)
    with the classic programs' parameters; the eval program detects (NMS through
    `_C_ops`), and the train program with the project's Momentum + L2Decay, pruned with the
    seed's 24-parameter regex at ratio 0.5, takes the masked program's step (loss)."""
    from test_prune_model import NUM_CLASSES, eval_feed

    from slim.engine.optimizer import OptimizerBuilder, build_optimizer
    from slim.model import MobileNet, YOLOv3, YOLOv3Head, build_eval_program, build_train_program
    from slim.prune.pir import PirProgramView, check_types, ir_guard
    from slim.prune.pruner import plan_pruning as plan

    def model():
        return YOLOv3(MobileNet(conv_group_scale=0.25), YOLOv3Head(num_classes=NUM_CLASSES))
    classic = build_train_program(model(), image_shape=[3, 64, 64])
    classic_names = sorted(p.name for p in classic.program.global_block().all_parameters())
    rng = np.random.default_rng(0)
    images = rng.random((2, 3, 64, 64), dtype=np.float32)
    boxes = np.zeros((2, 50, 4), "float32")
    boxes[:, 0] = [0.5, 0.5, 0.3, 0.4]
    labels, scores = np.zeros((2, 50), "int32"), np.zeros((2, 50), "float32")
    scores[:, 0] = 1
    feed = {"image": images, "gt_box": boxes, "gt_label": labels, "gt_score": scores}
    with ir_guard(True):
        train = build_train_program(model(), image_shape=[3, 64, 64], pir=True)
        with paddle.static.program_guard(train.program, train.startup):
            build_optimizer(OptimizerBuilder(), 0.001).minimize(train.fetches["loss"])
        evaluation = build_eval_program(model(), image_shape=[3, 64, 64], pir=True)
        view = PirProgramView(train.program)
        assert sorted(v.name for v in view.list_vars() if v.is_parameter) == classic_names
        scope, exe = paddle.static.Scope(), paddle.static.Executor(CPU)
        loss = train.fetches["loss"]
        with paddle.static.scope_guard(scope):
            exe.run(train.startup)
            exe.run(train.program, feed=feed, fetch_list=[loss])  # velocities not zero
            bbox, count = exe.run(evaluation.program, feed=eval_feed(images),
                                  fetch_list=[evaluation.fetches["bbox"],
                                              evaluation.fetches["bbox_num"]])
        assert bbox.shape[1] == 6 and count.shape == (2,)
        outputs = [view.name_of[train.fetches[f"output_{i}"].id] for i in range(3)]
        graph = analyze_program(view, fixed_vars=outputs)
        from seed_facts import SEED_REGEX
        pruning = plan(view, scope, SEED_REGEX, ratio=0.5, graph=graph)
        assert len(pruning.matched) == 24
        state = persistables(view, scope)
        zero_removed_channels(pruning, graph, scope)
        with paddle.static.scope_guard(scope):
            masked = exe.run(train.program, feed=feed, fetch_list=[loss])[0]
        put_back(state, scope)
        apply_plan(pruning, [view], scope, graphs=[graph])
        view.commit()
        pruned_state = persistables(view, scope)
        check_types(train.program, scope, feed, exe)
        put_back(pruned_state, scope)
        with paddle.static.scope_guard(scope):
            pruned = exe.run(train.program, feed=feed, fetch_list=[loss])[0]
    np.testing.assert_allclose(pruned, masked, rtol=1e-5)

def save_mobilenet_v2(model_dir):
    """MobileNetV2 x0.25 (10 classes, 32 px, random weights) saved as an inference model in
    the IR this runs in (inside `ir_guard(True)`: `.json`; else `.pdmodel`)."""
    import os
    import warnings

    import paddle.vision.models as zoo
    from test_prune_zoo import randomize

    from slim.prune.pir import PirProgramView, is_pir_program
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        image = paddle.static.data("image", [None, 3, 32, 32], "float32")
        net = zoo.mobilenet_v2(scale=0.25, num_classes=10)
        net.eval()
        logits = net(image)
    scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
    with paddle.static.scope_guard(scope):
        executor.run(startup)
        randomize(PirProgramView(main) if is_pir_program(main) else main, scope)
        paddle.static.save_inference_model(os.path.join(model_dir, "inference"), [image],
                                           [logits], executor, program=main)
