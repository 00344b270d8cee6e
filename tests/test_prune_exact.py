"""Exactness of pruning on small hand-built programs.

With random weights and random batch norm statistics, the pruned program must
compute what the unpruned program computes when the removed channels are
zeroed instead in the weights that read them (consumer convs' input slices,
fully connected rows; see slim.prune.masking). Checked for the eval program
(outputs) and the train program (loss, and every kept parameter, BN
statistic and optimizer accumulator after one optimizer step, with Momentum
and with Adam). The accumulators start random, as after some training, so a
wrong slice of them shows. The kept channels themselves are checked against
L1 norms computed here with numpy.
"""
import re
import warnings

import numpy as np
import paddle
import pytest

from slim.prune import PruneError, analyze_program, apply_plan, plan_pruning
from slim.prune.apply import plan_removals
from slim.prune.masking import zero_removed_channels
from slim.prune.ops import reshaped_axis

IMAGE = [-1, 3, 12, 12]


def _conv(x, channels, name, kernel=3, groups=1, use_cudnn=True, stride=1, bias=False):
    return paddle.static.nn.conv2d(
        x, channels, kernel, stride=stride, padding=kernel // 2, groups=groups,
        use_cudnn=use_cudnn, param_attr=paddle.ParamAttr(name=name + "_weights"),
        bias_attr=paddle.ParamAttr(name=name + "_bias") if bias else False)


def _bn(x, name, is_test, act=None):
    return paddle.static.nn.batch_norm(
        x, act=act, is_test=is_test, param_attr=paddle.ParamAttr(name=name + "_bn_scale"),
        bias_attr=paddle.ParamAttr(name=name + "_bn_offset"),
        moving_mean_name=name + "_bn_mean", moving_variance_name=name + "_bn_variance")


def _cbr(x, channels, name, is_test, kernel=3, groups=1, use_cudnn=True, leaky=False, stride=1):
    y = _bn(_conv(x, channels, name, kernel, groups, use_cudnn, stride), name, is_test,
            act=None if leaky else "relu")
    return paddle.nn.functional.leaky_relu(y, 0.1) if leaky else y


def chain(x, is_test):
    """Plain conv chain: conv-bn-relu x3, strided, then a biased conv."""
    y = _cbr(x, 8, "c1", is_test)
    y = _cbr(y, 12, "c2", is_test, stride=2)
    y = _cbr(y, 10, "c3", is_test, kernel=1, leaky=True)
    return _conv(y, 5, "head", kernel=1, bias=True)


def depthwise_separable(x, is_test):
    """conv, then depthwise (conv2d op with groups) + 1x1, then depthwise_conv2d op + 1x1."""
    y = _cbr(x, 8, "conv1", is_test)
    y = _cbr(y, 8, "conv2_dw", is_test, groups=8)
    y = _cbr(y, 12, "conv2_sep", is_test, kernel=1)
    y = _cbr(y, 12, "conv3_dw", is_test, groups=12, use_cudnn=False, stride=2)
    y = _cbr(y, 16, "conv3_sep", is_test, kernel=1)
    return _conv(y, 5, "head", kernel=1, bias=True)


def concat_route(x, is_test):
    """A pruned conv feeds a concat after upsampling (the YOLOv3 route), and another
    pruned conv feeds it directly; a pooled branch feeds it too."""
    stem = _cbr(x, 8, "stem", is_test)
    deep = _cbr(stem, 12, "deep", is_test, stride=2)
    route = _cbr(deep, 6, "route", is_test, kernel=1, leaky=True)
    up = paddle.nn.functional.interpolate(route, scale_factor=2, mode="nearest")
    side = _cbr(stem, 7, "side", is_test, kernel=1, leaky=True)
    pooled = paddle.nn.functional.avg_pool2d(
        paddle.nn.functional.interpolate(side, scale_factor=2, mode="bilinear"), 2, 2)
    merged = paddle.concat([up, side, pooled], axis=1)
    y = _cbr(merged, 9, "after", is_test, leaky=True)
    return _conv(y, 5, "head", kernel=1, bias=True)


def summed(x, is_test):
    """Two convs summed (a residual): one channel set; then a grouped conv (groups 2)."""
    stem = _cbr(x, 8, "stem", is_test)
    left = _bn(_conv(stem, 10, "left", kernel=1), "left", is_test)
    right = _bn(_conv(stem, 10, "right"), "right", is_test)
    y = paddle.nn.functional.relu(left + right)
    y = _cbr(y, 10, "third", is_test, kernel=1)
    y = paddle.nn.functional.relu(y + paddle.nn.functional.relu(left + right))
    y = _cbr(y, 12, "grouped", is_test, groups=2)
    return _conv(y, 5, "head", kernel=1, bias=True)


def detached(x, is_test):
    """A branch without gradient (stop_gradient) feeds a concat: the backward pass has an
    empty (@EMPTY@) gradient slot there, which must not shift the other inputs' gradients."""
    kept = _cbr(x, 8, "kept", is_test)
    frozen = _cbr(x, 6, "frozen", is_test, kernel=1)
    frozen.stop_gradient = True
    y = _cbr(paddle.concat([kept, frozen], axis=1), 9, "after", is_test)
    return _conv(y, 5, "head", kernel=1, bias=True)


def transposed(x, is_test):
    """A biased conv, channel-wise PReLU, a transposed conv (its filter's axis 1 holds the
    output channels), batch norm, adaptive average pooling, a spatial mean multiplied back."""
    y = _conv(x, 8, "c1", bias=True)
    y = paddle.static.nn.prelu(y, mode="channel", param_attr=paddle.ParamAttr(name="c1_alpha"))
    y = paddle.static.nn.conv2d_transpose(
        y, 6, filter_size=2, stride=2, param_attr=paddle.ParamAttr(name="up_weights"),
        bias_attr=False)
    y = paddle.nn.functional.adaptive_avg_pool2d(_bn(y, "up", is_test, act="relu"), 6)
    y = y * paddle.mean(y, axis=[2, 3], keepdim=True)  # channel attention (broadcast multiply)
    return _conv(y, 5, "head", kernel=1, bias=True)


def fc_head(x, is_test):
    """A conv whose bias is added through a reshape2 of it (paddle.nn.Conv2D), pooled to 3x3,
    then two fully connected layers on the flattened [C, 3, 3]: flatten + matmul_v2 (linear)
    and mul on the 4-D tensor (static fc): their weight rows are pruned in blocks of 9."""
    y = _cbr(x, 8, "c1", is_test, stride=2)
    y = paddle.nn.Conv2D(8, 6, 3, padding=1, weight_attr=paddle.ParamAttr(name="biased_weights"),
                         bias_attr=paddle.ParamAttr(name="biased_bias"))(y)
    y = paddle.nn.functional.max_pool2d(paddle.nn.functional.relu(y), 2, 2)
    weight = paddle.static.create_parameter([6 * 9, 5], "float32", name="linear_weights")
    linear = paddle.nn.functional.linear(paddle.flatten(y, 1), weight)
    fc = paddle.static.nn.fc(y, 5, num_flatten_dims=1, weight_attr=paddle.ParamAttr(name="fc_w"),
                             bias_attr=False)
    return linear + fc


CASES = {"chain": chain, "transposed": transposed, "depthwise_separable": depthwise_separable,
         "concat": concat_route, "summed": summed, "detached": detached, "fc_head": fc_head}


OPTIMIZERS = {
    "momentum": lambda: paddle.optimizer.Momentum(
        0.05, 0.9, weight_decay=paddle.regularizer.L2Decay(1e-3)),
    "adam": lambda: paddle.optimizer.Adam(0.01, weight_decay=paddle.regularizer.L2Decay(1e-3)),
}
# Optimizer op input slots holding per-parameter state shaped like the parameter.
ACCUMULATOR_SLOTS = {"momentum": ("Velocity",), "adam": ("Moment1", "Moment2")}


def build(case, is_test, optimizer="momentum"):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
            image = paddle.static.data("image", IMAGE, "float32")
            out = CASES[case](image, is_test)
            loss = paddle.mean(out * out)
            if not is_test:
                OPTIMIZERS[optimizer]().minimize(loss)
    return main, startup, out, loss


def randomize(program, scope, seed=0):
    """Random weights and random batch norm statistics (variance > 0)."""
    rng = np.random.RandomState(seed)
    for param in program.global_block().all_parameters():
        shape = param.shape
        if param.name.endswith("variance"):
            value = rng.uniform(0.5, 2.0, shape)
        elif param.name.endswith("scale"):
            value = rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)
        else:
            value = rng.randn(*shape) * 0.5
        scope.find_var(param.name).get_tensor().set(value.astype("float32"), paddle.CPUPlace())


def accumulators(program):
    """{accumulator var: (its parameter, slot)} read from the optimizer ops' own slots."""
    found = {}
    for op in program.global_block().ops:
        for slot in ACCUMULATOR_SLOTS.get(op.type, ()):
            for name in op.input(slot):
                found[name] = (op.input("Param")[0], slot)
    return found


def randomize_accumulators(program, scope, seed=2):
    """Optimizer state as after some training: velocities and first moments of either sign,
    second moments positive. (Fresh from the startup program they are all zero, and a
    wrong slice of zeros is still zeros.)"""
    rng = np.random.RandomState(seed)
    for name, (_, slot) in accumulators(program).items():
        shape = np.array(scope.find_var(name).get_tensor()).shape
        value = rng.uniform(0.5, 1.5, shape) if slot == "Moment2" else rng.randn(*shape)
        scope.find_var(name).get_tensor().set(value.astype("float32"), paddle.CPUPlace())


def persistables(program, scope):
    return {var.name: np.array(scope.find_var(var.name).get_tensor())
            for var in program.list_vars()
            if var.persistable and scope.find_var(var.name) is not None
            and scope.find_var(var.name).get_tensor()._is_initialized()}


def restore(values, scope):
    for name, value in values.items():
        scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())


def assert_close(actual, expected):
    scale = max(1.0, float(np.abs(expected).max()))
    np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * scale)


def kept_part(value, removals, name):
    for (var, axis), removed in removals.items():
        if var == name:
            value = np.delete(value, removed, axis=axis)
    return value


def assert_accumulators_follow_params(program, initial, pruned, removals, optimizer):
    """Every optimizer accumulator of `program` (state before pruning in `initial`, after in
    `pruned`) keeps exactly the rows its parameter keeps, before any step mixes them; and
    some were sliced."""
    state_of = accumulators(program)
    assert {slot for _, slot in state_of.values()} == set(ACCUMULATOR_SLOTS[optimizer])
    sliced = 0
    for name, (param, _) in state_of.items():
        expected = kept_part(initial[name], removals, param)
        assert pruned[name].shape == pruned[param].shape == expected.shape, name
        np.testing.assert_array_equal(pruned[name], expected, err_msg=name)
        sliced += expected.shape != initial[name].shape
    assert sliced > 0


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("selection", ["auto", "listed"])
@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_pruned_equals_masked(case, selection, optimizer):
    train, startup, train_out, loss = build(case, is_test=False, optimizer=optimizer)
    evaluation, _, eval_out, _ = build(case, is_test=True)
    scope = paddle.static.Scope()
    exe = paddle.static.Executor(paddle.CPUPlace())
    image = np.random.RandomState(1).rand(2, *IMAGE[1:]).astype("float32")
    with paddle.static.scope_guard(scope):
        exe.run(startup)
        randomize(train, scope)
        randomize_accumulators(train, scope)
        initial = persistables(train, scope)
        conv_weights = [c.weight for c in analyze_program(train).convs]
        pruned_params = "auto" if selection == "auto" else \
            [w for w in conv_weights if w != "head_weights"][::2]
        plan = plan_pruning(train, scope, pruned_params, ratio=0.4,
                            fixed_vars=[train_out.name])
        assert plan.groups and all(g.channels_after < g.channels_before for g in plan.groups)
        assert "head_weights" not in plan.matched
        if selection == "auto":  # every other conv is prunable, fc_head's biased one too
            assert sorted(plan.matched) == sorted(w for w in conv_weights if w != "head_weights")

        unpruned_out = exe.run(evaluation, feed={"image": image}, fetch_list=[eval_out])[0]
        zero_removed_channels(plan, analyze_program(evaluation), scope)
        masked_out = exe.run(evaluation, feed={"image": image}, fetch_list=[eval_out])[0]
        masked_loss = exe.run(train, feed={"image": image}, fetch_list=[loss])[0]
        masked_after_step = persistables(train, scope)
        restore(initial, scope)

        train_graph = analyze_program(train)
        removals = plan_removals(plan, train_graph)
        apply_plan(plan, [train, evaluation], scope)
        pruned_state = persistables(train, scope)
        pruned_out = exe.run(evaluation, feed={"image": image}, fetch_list=[eval_out])[0]
        pruned_loss = exe.run(train, feed={"image": image}, fetch_list=[loss])[0]
        pruned_after_step = persistables(train, scope)

    # (The parameters' own slicing is checked by the outputs below.)
    assert_accumulators_follow_params(train, initial, pruned_state, removals, optimizer)

    # masking changed the output, so equality below is not vacuous
    assert np.abs(unpruned_out - masked_out).max() > 1e-2
    assert pruned_out.shape == masked_out.shape
    assert_close(pruned_out, masked_out)
    assert_close(pruned_loss, masked_loss)
    shrunk = 0
    for name, value in pruned_after_step.items():
        expected = kept_part(masked_after_step[name], removals, name)
        assert value.shape == expected.shape, name
        shrunk += value.shape != masked_after_step[name].shape
        assert_close(value, expected)
    assert shrunk > 0


# Channel groups worked out by hand from the case definitions: the convs whose output channels
# are one set (summed: left + right, and third added to that sum), the channels each group
# keeps at ratio 0.4 (n - round(0.4 n)), and how many equal slices of the channels are tied
# (summed: the grouped conv with groups 2 reading them ties channel j to channel j + 5).
L1_CASES = {
    "chain": ({("c1",): 5, ("c2",): 7, ("c3",): 6}, 1),
    "summed": ({("left", "right", "third"): 3}, 2),
}


@pytest.mark.parametrize("case", sorted(L1_CASES))
def test_kept_channels_have_the_largest_l1_norms(case):
    """The plan keeps the channels whose filters have the largest L1 norms (summed over the
    convs of a group), computed here with numpy, not with the engine's criteria or graph."""
    keeps, slices = L1_CASES[case]
    train, startup, out, _ = build(case, is_test=False)
    convs = [name + "_weights" for group in keeps for name in group]
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        randomize(train, scope)
        plan = plan_pruning(train, scope, convs, ratio=0.4, fixed_vars=[out.name])
        weights = {name: np.array(scope.find_var(name).get_tensor()) for name in convs}
    kept = {group.key[0]: group.kept for group in plan.groups}
    assert len(kept) == len(keeps)
    for group, keep in keeps.items():
        norms = 0
        for name in group:
            weight = weights[name + "_weights"].astype(np.float64)
            per_filter = np.abs(weight).reshape(len(weight), -1).sum(axis=1)
            norms = norms + per_filter.reshape(slices, -1).sum(axis=0)
        largest = sorted(int(i) for i in np.argsort(-norms)[:keep])
        assert np.unique(np.round(norms, 6)).size == norms.size  # no ties to break
        assert kept[group[0] + "_weights"] == largest, group


def test_depthwise_groups_follow_channels():
    train, startup, out, _ = build("depthwise_separable", is_test=False)
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        plan = plan_pruning(train, scope, ["conv1_weights", "conv2_sep_weights"], ratio=0.5)
        apply_plan(plan, [train], scope)
    groups = {op.input("Filter")[0]: op.attr("groups") for op in train.global_block().ops
              if op.type in ("conv2d", "depthwise_conv2d", "conv2d_grad",
                             "depthwise_conv2d_grad")}
    assert groups["conv2_dw_weights"] == 4
    assert groups["conv3_dw_weights"] == 6
    assert groups["conv2_sep_weights"] == 1
    assert train.global_block().var("conv2_dw_weights").shape[:2] == (4, 1)
    assert np.array(scope.find_var("conv3_dw_weights").get_tensor()).shape[:2] == (6, 1)


def test_split_channels_are_a_one_line_error_naming_op_and_conv():
    """A reshape that splits the channel axis (ShuffleNet's channel shuffle) has no rule for
    it: selecting the conv before it is a one-line PruneError naming the op and the conv."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        y = _conv(paddle.static.data("image", IMAGE, "float32"), 8, "shuffled")
        y = paddle.reshape(y, [-1, 2, 4, 12, 12])
        out = _conv(paddle.reshape(paddle.transpose(y, [0, 2, 1, 3, 4]), [-1, 8, 12, 12]), 5,
                    "head")
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        with pytest.raises(PruneError) as error:
            plan_pruning(main, scope, ["shuffled_weights"], ratio=0.5, fixed_vars=[out.name])
    message = str(error.value)
    assert "\n" not in message
    assert "'shuffled_weights'" in message and "op 'reshape2'" in message
    assert "split or reordered" in message


@pytest.mark.parametrize("source, axis, target, expected", [
    ([8], 0, [1, 8, 1, 1], (1, 1)),           # a conv bias reshaped for the add
    ([-1, 8, 3, 3], 1, [-1, 72], (1, 9)),     # flatten: 9 elements per channel
    ([2, 8, 3, 3], 1, [2, 8, 9], (1, 1)),     # only the spatial dims merge
    ([2, 8, 3, 3], 1, [2, 24, 3], (1, 3)),    # channels merge with H only
    ([2, 8, 1, 1], 1, [2, 8], (1, 1)),        # squeeze
    ([2, 8, 3, 3], 1, [2, 2, 4, 3, 3], None),  # split (channel shuffle)
    ([2, 8, 3, 3], 1, [16, 3, 3], None),      # merged with the batch dim
])
def test_reshaped_channel_axis(source, axis, target, expected):
    """Where a reshape puts a channel axis (row-major), worked out by hand."""
    assert reshaped_axis(source, axis, target) == expected


def _scalar_affine(x, name):
    """PP-LCNetV3's learnable affine block: a learned [1] scale and [1] bias on a tensor."""
    scale = paddle.static.create_parameter([1], "float32", name=name + "_lab_scale")
    bias = paddle.static.create_parameter([1], "float32", name=name + "_lab_bias")
    return x * scale + bias


def _sigmoid(x):
    """A sigmoid op (paddle 3.3's functional sigmoid refuses classic static Variables)."""
    helper = paddle.base.layer_helper.LayerHelper("sigmoid")
    out = helper.create_variable_for_type_inference(x.dtype)
    helper.append_op(type="sigmoid", inputs={"X": [x]}, outputs={"Out": [out]})
    return out


def scalar_bias(x, is_test):
    """Convs followed by a learned per-tensor scale and bias (a [1] parameter added after
    the conv, PP-LCNetV3), sigmoid, hard_sigmoid and a squeeze-excite product: a removed
    channel zeroed at its producing filters is not zero where the next conv reads it."""
    y = _scalar_affine(_bn(_conv(x, 8, "c1"), "c1", is_test), "c1")
    y = _sigmoid(y)
    y = _scalar_affine(_conv(y, 10, "c2", bias=True), "c2")
    gate = paddle.nn.functional.hardsigmoid(_conv(paddle.mean(y, axis=[2, 3], keepdim=True), 10,
                                                  "se", kernel=1))
    y = paddle.nn.functional.hardswish(y * gate)
    return _conv(y, 5, "head", kernel=1, bias=True)


def _eval_program(builder):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        out = builder(paddle.static.data("image", IMAGE, "float32"), True)
    return main, startup, out


def _planned(main, startup, out, scope, exe, ratio):
    """(initial persistables, graph, plan of 'auto' at `ratio`) of an eval program with
    random weights in `scope` (the current scope), its output fixed."""
    exe.run(startup)
    randomize(main, scope)
    initial = persistables(main, scope)
    graph = analyze_program(main, fixed_vars=[out.name])
    return initial, graph, plan_pruning(main, scope, "auto", ratio=ratio, graph=graph)


def test_masking_reference_zeroes_readers_after_a_scalar_bias():
    """The masking reference zeroes the removed channels in the weights that read them, so it
    equals the pruned program behind a learned [1] bias and sigmoids, where zeroing the
    producing filters (and BN, biases) leaves a constant in every removed channel."""
    main, startup, out = _eval_program(scalar_bias)
    scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    image = np.random.RandomState(1).rand(2, *IMAGE[1:]).astype("float32")
    with paddle.static.scope_guard(scope):
        initial, graph, plan = _planned(main, startup, out, scope, exe, 0.5)
        assert {g.key[0] for g in plan.groups} >= {"c1_weights", "c2_weights"}
        unpruned = exe.run(main, feed={"image": image}, fetch_list=[out])[0]
        for group_plan in plan.groups:  # the producer side: filters, BN, biases of the channels
            group = graph.group_at(*group_plan.key)
            for member in group.members_with_role("filter", "bn_scale", "bn_offset", "param"):
                value = np.array(scope.find_var(member.var).get_tensor())
                index = [slice(None)] * value.ndim
                index[member.axis] = member.element_indices(group_plan.removed)
                value[tuple(index)] = 0
                scope.find_var(member.var).get_tensor().set(value, paddle.CPUPlace())
        producer_masked = exe.run(main, feed={"image": image}, fetch_list=[out])[0]
        restore(initial, scope)
        assert zero_removed_channels(plan, graph, scope) == ["c2_weights", "head_weights",
                                                             "se_weights"]
        masked = exe.run(main, feed={"image": image}, fetch_list=[out])[0]
        restore(initial, scope)
        apply_plan(plan, [main], scope, graphs=[graph])
        pruned = exe.run(main, feed={"image": image}, fetch_list=[out])[0]
    assert np.abs(unpruned - masked).max() > 1e-2  # masking matters
    assert_close(pruned, masked)
    assert np.abs(pruned - producer_masked).max() > 1e-2  # the old reference is wrong here


def test_masking_reference_refuses_a_weightless_channel_reduction():
    """A reduction over the channel axis reads the removed channels without a weight to
    zero: the reference says it is not exact instead of comparing against a wrong value."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        y = _conv(paddle.static.data("image", IMAGE, "float32"), 8, "c1")
        out = _conv(y, 5, "head", kernel=1) + paddle.mean(y, axis=1, keepdim=True)
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.static.Executor(paddle.CPUPlace()).run(startup)
        graph = analyze_program(main, fixed_vars=[out.name])
        plan = plan_pruning(main, scope, ["c1_weights"], ratio=0.5, graph=graph)
        with pytest.raises(PruneError, match=r"op 'reduce_mean' .* reads the channels of group "
                                             r"'c1_weights'"):
            zero_removed_channels(plan, graph, scope)
        assert zero_removed_channels(plan, graph, scope, strict=False) == ["head_weights"]


# ------------------------------------------------ ops of PaddleOCR's detector / recognizer / classifier

def shape_head(x, is_test):
    """The classifier's head (PP-OCR mobile cls): global pooling, then a reshape to
    [shape(x)[0], C] whose C is a fill_constant in its shape tensor, then a linear layer."""
    y = paddle.nn.functional.adaptive_avg_pool2d(_cbr(x, 8, "c1", is_test), 1)
    y = paddle.reshape(y, [paddle.shape(y)[0], 8])
    weight = paddle.static.create_parameter([8, 5], "float32", name="fc_w")
    return paddle.nn.functional.linear(y, weight)


def tokens(x, is_test):
    """The recognizer's neck: a conv map flattened to tokens, transposed to [N, HW, C]
    (transpose2 moves the channel axis last), a linear layer on the channels."""
    y = paddle.transpose(paddle.flatten(_cbr(x, 8, "c1", is_test), 2), [0, 2, 1])
    weight = paddle.static.create_parameter([8, 5], "float32", name="fc_w")
    return paddle.nn.functional.linear(y, weight)


def spatial_ops(x, is_test):
    """Layer norm and softmax over the spatial axes, a slice of rows, a stack of two convs
    averaged over the stacked axis: none of them mixes channels."""
    a, b = _cbr(x, 8, "a", is_test), _cbr(x, 8, "b", is_test)
    y = paddle.mean(paddle.stack([a, b], axis=0), axis=0)
    y = paddle.nn.functional.layer_norm(y, [12, 12], weight=paddle.static.create_parameter(
        [144], "float32", name="ln_scale"), bias=paddle.static.create_parameter(
        [144], "float32", name="ln_bias"))
    y = paddle.nn.functional.softmax(y, axis=-1)[:, :, 1:, :]
    return _conv(y, 5, "head", kernel=1, bias=True)


OCR_CASES = {"shape_head": (shape_head, {"c1_weights"}), "tokens": (tokens, {"c1_weights"}),
             "spatial_ops": (spatial_ops, {"a_weights"})}




@pytest.mark.parametrize("case", sorted(OCR_CASES))
def test_ocr_ops_pruned_equal_masked(case):
    """shape, transpose2, a reshape sized by a shape tensor, layer_norm, softmax, slice and
    stack carry the channels: the pruned program equals the masked one."""
    builder, groups = OCR_CASES[case]
    main, startup, out = _eval_program(builder)
    scope, exe = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    image = np.random.RandomState(1).rand(2, *IMAGE[1:]).astype("float32")
    with paddle.static.scope_guard(scope):
        initial, graph, plan = _planned(main, startup, out, scope, exe, 0.4)
        assert {group.key[0] for group in plan.groups} == groups
        unpruned = exe.run(main, feed={"image": image}, fetch_list=[out])[0]
        zero_removed_channels(plan, graph, scope)
        masked = exe.run(main, feed={"image": image}, fetch_list=[out])[0]
        restore(initial, scope)
        apply_plan(plan, [main], scope, graphs=[graph])
        pruned = exe.run(main, feed={"image": image}, fetch_list=[out])[0]
    assert np.abs(unpruned - masked).max() > 1e-3 * np.abs(unpruned).max()  # masking matters
    assert pruned.shape == masked.shape
    assert_close(pruned, masked)


def _channels_last_norm(y):
    return paddle.nn.functional.layer_norm(paddle.transpose(y, [0, 2, 3, 1]), [8])


@pytest.mark.parametrize("tail, reason", [
    (_channels_last_norm, r"op 'layer_norm' .*normalizes axis 3"),
    (lambda y: paddle.nn.functional.softmax(y, axis=1), r"op 'softmax' .*normalizes over axis 1"),
    (lambda y: y[:, 2:, :, :], r"op 'slice' .*cuts axis 1 of '.*' to \[2, 8\)"),
])
def test_ops_that_mix_or_cut_channels_block_the_group(tail, reason):
    """Layer norm or softmax over the channels, and a slice of some channels, are not
    channel-wise: the group stays unpruned with the op named."""
    main, _, _ = _eval_program(lambda x, is_test: tail(_conv(x, 8, "c1")))
    (group,) = analyze_program(main).groups_of("c1_weights", 0)
    assert not group.prunable
    assert re.search(reason, group.blocked_reason), group.blocked_reason
