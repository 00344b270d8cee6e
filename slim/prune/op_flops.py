"""FLOPs counters of single ops, one per op type (see `slim.prune.flops` for the convention:
multiply-accumulates per image). Each is `count(block, op) -> (flops, weight-like param or
None, output var)`; `slim.prune.op_specs` names the counter of each op type.
"""
import math

from slim.errors import UserError


class UnknownShapeError(UserError):
    """FLOPs need static shapes, and a counted op has an unknown (-1) dimension."""


def _shape(block, op, var_name):
    """Static shape of `var_name`; dims after the batch dim must be known."""
    shape = list(block._find_var_recursive(var_name).shape)
    if any(dim < 0 for dim in shape[1:]):
        raise UnknownShapeError(
            f"cannot count FLOPs: op '{op.type}' var '{var_name}' has unknown dims {shape}; "
            f"FLOPs need every dim but the batch axis: give the feeds' sizes (slim prune "
            f"--input_shape C,H,W; a slim config's image_shape; from Python, count "
            f"slim.prune.shapes.concrete_program(program, scope, feed_shapes))")
    return shape


def _per_image(shape):
    return math.prod(shape[1:])


def _spatial(op, shape):
    """(H, W) of a 4-D activation shape, honouring data_format NHWC."""
    data_format = op.attr("data_format") if op.has_attr("data_format") else "NCHW"
    return (shape[1], shape[2]) if data_format == "NHWC" else (shape[2], shape[3])


def count_conv(block, op):
    filter_name = op.input("Filter")[0]
    out_channels, in_channels_per_group, kernel_h, kernel_w = _shape(block, op, filter_name)
    output = op.output("Output")[0]
    out_h, out_w = _spatial(op, _shape(block, op, output))
    flops = out_channels * in_channels_per_group * kernel_h * kernel_w * out_h * out_w
    return flops, filter_name, output


def count_conv_transpose(block, op):
    filter_name = op.input("Filter")[0]
    in_channels, out_channels_per_group, kernel_h, kernel_w = _shape(block, op, filter_name)
    in_h, in_w = _spatial(op, _shape(block, op, op.input("Input")[0]))
    flops = in_channels * out_channels_per_group * kernel_h * kernel_w * in_h * in_w
    return flops, filter_name, op.output("Output")[0]


def count_batch_norm(block, op):
    output = op.output("Y")[0]
    return _per_image(_shape(block, op, output)), op.input("Scale")[0], output


def count_elementwise(block, op):
    output = op.output("Out")[0]
    param = _parameter_input(block, op, ("Y", "X"))
    return _per_image(_shape(block, op, output)), param, output


def count_pool(block, op):
    output = op.output("Out")[0]
    out_shape = _shape(block, op, output)
    in_h, in_w = _spatial(op, _shape(block, op, op.input("X")[0]))
    out_h, out_w = _spatial(op, out_shape)
    global_pooling = op.has_attr("global_pooling") and op.attr("global_pooling")
    adaptive = op.has_attr("adaptive") and op.attr("adaptive")
    if global_pooling:
        window = in_h * in_w
    elif adaptive:
        window = math.ceil(in_h / out_h) * math.ceil(in_w / out_w)
    else:
        kernel = list(op.attr("ksize"))
        window = kernel[0] * kernel[1]
    return _per_image(out_shape) * window, None, output


def count_matmul(block, op):
    x_shape = _shape(block, op, op.input("X")[0])
    output = op.output("Out")[0]
    out_shape = _shape(block, op, output)
    if op.type == "mul":
        x_num_col_dims = op.attr("x_num_col_dims")
        reduce_size = math.prod(x_shape[x_num_col_dims:])
    else:
        transposed = op.attr("trans_x") if op.type == "matmul_v2" else op.attr("transpose_X")
        reduce_size = x_shape[-2] if transposed and len(x_shape) > 1 else x_shape[-1]
    out_per_image = _per_image(out_shape) if len(out_shape) > 1 else out_shape[0]
    return out_per_image * reduce_size, _parameter_input(block, op, ("Y", "X")), output


def _parameter_input(block, op, slots):
    """The first input in `slots` that is a Parameter, else None (`is_parameter`: a classic
    Variable's, or a PIR view's var)."""
    for slot in slots:
        for name in op.input(slot):
            if getattr(block._find_var_recursive(name), "is_parameter", False):
                return name
    return None
