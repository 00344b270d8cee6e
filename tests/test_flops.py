"""FLOPs (multiply-accumulates per image) and params of static programs equal hand counts."""
import paddle
import pytest

from slim.prune.flops import UnknownShapeError, program_flops, program_params


def _small_program(spatial=8):
    """conv3x3 (3->4) + bn + relu, depthwise 3x3 s2 + bn, conv1x1 (4->5) with bias,
    max pool 2x2, fc (20->6), and an elementwise add of two activations."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [-1, 3, spatial, spatial], "float32")
        conv = paddle.static.nn.conv2d(image, 4, 3, padding=1, bias_attr=False,
                                       param_attr=paddle.ParamAttr(name="conv_weights"))
        bn = paddle.static.nn.batch_norm(conv, act="relu",
                                         param_attr=paddle.ParamAttr(name="bn_scale"))
        dw = paddle.static.nn.conv2d(bn, 4, 3, stride=2, padding=1, groups=4, bias_attr=False,
                                     param_attr=paddle.ParamAttr(name="dw_weights"))
        dw_bn = paddle.static.nn.batch_norm(dw, param_attr=paddle.ParamAttr(name="dw_bn_scale"))
        doubled = paddle.add(dw_bn, dw)
        pw = paddle.static.nn.conv2d(doubled, 5, 1, param_attr=paddle.ParamAttr(name="pw_weights"),
                                     bias_attr=paddle.ParamAttr(name="pw_bias"))
        pooled = paddle.nn.functional.max_pool2d(pw, kernel_size=2, stride=2)
        logits = paddle.static.nn.fc(paddle.flatten(pooled, 1), 6,
                                     weight_attr=paddle.ParamAttr(name="fc_weights"),
                                     bias_attr=paddle.ParamAttr(name="fc_bias"))
        loss = paddle.mean(logits)
    return main, startup, loss


# Hand count for an 8x8 input (per image, one per multiply-add):
CONV = 4 * 3 * 3 * 3 * 8 * 8          # Cout * Cin * kh * kw * Hout * Wout = 6912
BN = 4 * 8 * 8                         # one per element = 256
DEPTHWISE = 4 * 1 * 3 * 3 * 4 * 4      # groups=4: Cin/groups = 1, stride 2 -> 4x4 = 576
DW_BN = 4 * 4 * 4                      # 64
ADD = 4 * 4 * 4                        # elementwise add of two activations = 64
POINTWISE = 5 * 4 * 1 * 1 * 4 * 4     # 320
POINTWISE_BIAS = 5 * 4 * 4             # bias add, one per output element = 80
POOL = 5 * 2 * 2 * (2 * 2)             # output elements x window = 80
FC = 20 * 6                            # rows(1) * K(20) * N(6) = 120
FC_BIAS = 6
HAND_TOTAL = CONV + BN + DEPTHWISE + DW_BN + ADD + POINTWISE + POINTWISE_BIAS + POOL + FC + FC_BIAS


def test_flops_equal_hand_count():
    main, _, _ = _small_program()
    assert HAND_TOTAL == 8478
    assert program_flops(main) == HAND_TOTAL


def test_flops_detail_per_param_and_op_type():
    main, _, _ = _small_program()
    detail = program_flops(main, detail=True)
    assert detail.total == HAND_TOTAL
    assert detail.per_param["conv_weights"] == CONV
    assert detail.per_param["dw_weights"] == DEPTHWISE
    assert detail.per_param["pw_weights"] == POINTWISE
    assert detail.per_param["pw_bias"] == POINTWISE_BIAS
    assert detail.per_param["bn_scale"] == BN
    assert detail.per_param["fc_weights"] == FC
    assert detail.per_op_type["pool2d"] == POOL
    assert detail.per_op_type["elementwise_add"] == ADD + POINTWISE_BIAS + FC_BIAS
    assert sum(item.flops for item in detail.per_op) == HAND_TOTAL
    # relu, flatten and the mean are not counted
    assert {item.op_type for item in detail.per_op} == {
        "conv2d", "batch_norm", "elementwise_add", "pool2d", "mul"}


def test_flops_scale_with_input_size():
    # every counted op here scales with the spatial area, except the fc (fixed 20 inputs
    # only at 8x8), so compare the conv part at 16x16: 4x the 8x8 count
    small = program_flops(_small_program(8)[0], detail=True)
    large = program_flops(_small_program(16)[0], detail=True)
    assert large.per_param["conv_weights"] == 4 * small.per_param["conv_weights"]
    assert large.per_param["dw_weights"] == 4 * small.per_param["dw_weights"]


def test_backward_and_optimizer_ops_are_not_counted():
    main, startup, loss = _small_program()
    with paddle.static.program_guard(main, startup):
        paddle.optimizer.Momentum(0.01, 0.9, weight_decay=paddle.regularizer.L2Decay(1e-4)) \
            .minimize(loss)
    assert any(op.type.endswith("_grad") for op in main.global_block().ops)
    assert program_flops(main) == HAND_TOTAL


def test_params_equal_hand_count():
    main, _, _ = _small_program()
    conv, bn = 4 * 3 * 3 * 3, 4 * 4          # bn: scale, offset, mean, variance
    dw, dw_bn = 4 * 1 * 3 * 3, 4 * 4
    pw, pw_bias = 5 * 4, 5
    fc, fc_bias = 20 * 6, 6
    hand = conv + bn + dw + dw_bn + pw + pw_bias + fc + fc_bias
    assert program_params(main) == hand == 327
    total, per_param = program_params(main, detail=True)
    assert total == hand
    assert per_param["conv_weights"] == conv and per_param["fc_bias"] == fc_bias


def test_unknown_spatial_dims_raise_a_clear_error():
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data("image", [-1, 3, -1, -1], "float32")
        paddle.static.nn.conv2d(image, 4, 3, bias_attr=False,
                                param_attr=paddle.ParamAttr(name="w"))
    with pytest.raises(UnknownShapeError, match=r"op 'conv2d' .*unknown dims \[-1, 4, -1, -1\]"
                                                 r".*--input_shape C,H,W.*concrete_program"):
        program_flops(main)


def test_extra_ops_count_for_one_call_only():
    from slim.prune.op_specs import OP_SPECS, OpSpec
    main, _, _ = _small_program()
    relus = sum(op.type == "relu" for op in main.global_block().ops)
    assert relus == 1
    relu = OP_SPECS.get("relu")

    def seven(block, op):
        return 7, None, op.output("Out")[0]
    extra = {"relu": relu._replace(count_flops=seven), "my_op": OpSpec(count_flops=seven)}
    assert program_flops(main, extra_ops=extra) == HAND_TOTAL + 7
    assert program_flops(main) == HAND_TOTAL  # the global table is unchanged
    assert OP_SPECS.get("relu") is relu and "my_op" not in OP_SPECS
