"""FLOPs and parameter counts of a classic static Program: the one count used everywhere.

Convention: **FLOPs here are multiply-accumulates (MACs), one per multiply-add,
per image** (the batch dimension is excluded). Multiply by 2 to get the
"multiply and add counted separately" number. Counted forward ops:

- conv2d / depthwise_conv2d: Cout * Cin/groups * kh * kw * Hout * Wout
  (the filter already holds Cin/groups);
- conv2d_transpose: Cin * Cout/groups * kh * kw * Hin * Win;
- mul / matmul / matmul_v2 (fully connected): rows * K * N per image;
- batch_norm: one per output element (the scale-and-shift it folds into);
- elementwise add / sub / mul / div (e.g. a conv bias): one per output element;
- pool2d: window size per output element (global pooling: the input size).

Not counted (no multiply-adds, or negligible and not channel-prunable):
activations (relu, leaky_relu, sigmoid ...), concat, resize/upsample,
reshape/transpose, yolo_box, NMS and the loss. Backward, optimizer and
learning-rate ops are skipped (by `op_role`), so a train program that already
has its optimizer appended counts the same as its forward part. Only the
global block is counted.

`program_params` counts every Parameter of the program (conv weights and
biases, batch norm scale/offset and its moving mean/variance): what gets saved.
"""
import dataclasses
import math

from slim.errors import UserError

CONV_OP_TYPES = ("conv2d", "depthwise_conv2d")
ELEMENTWISE_OP_TYPES = ("elementwise_add", "elementwise_sub", "elementwise_mul",
                        "elementwise_div")
MATMUL_OP_TYPES = ("mul", "matmul", "matmul_v2")
COUNTED_OP_TYPES = CONV_OP_TYPES + ("conv2d_transpose", "batch_norm", "pool2d") \
    + ELEMENTWISE_OP_TYPES + MATMUL_OP_TYPES

# Bits of the `op_role` attribute (paddle's OpRole): Backward=1, Optimize=2, RPC=4,
# Dist=8, LRSched=16. Forward is 0 and Loss (256) marks the loss op's forward part.
_NON_FORWARD_ROLE_BITS = 0x1F


class UnknownShapeError(UserError):
    """FLOPs need static shapes, and a counted op has an unknown (-1) dimension."""


@dataclasses.dataclass(frozen=True)
class OpFlops:
    """FLOPs (MACs per image) of one counted op."""
    op_index: int        # index in the global block
    op_type: str
    param: object        # the op's weight-like parameter (Filter, Scale, Y) or None
    output: str          # the op's output var
    flops: int


@dataclasses.dataclass(frozen=True)
class FlopsDetail:
    """Total FLOPs of a program and their breakdown per op and per parameter."""
    total: int
    per_op: list            # [OpFlops], program order
    per_param: dict         # weight-like param name -> FLOPs of the ops that use it
    per_op_type: dict       # op type -> FLOPs


def program_flops(program, detail=False):
    """FLOPs (multiply-accumulates per image, see the module docstring) of `program`'s forward ops.

    Returns an int, or a `FlopsDetail` when `detail` is true. Raises UnknownShapeError
    naming the op and var when a counted op has an unknown (-1) non-batch dimension:
    count a program built with a fixed image shape (e.g. the eval program at 608x608).
    """
    block = program.global_block()
    per_op = []
    for index, op in enumerate(block.ops):
        if op.type not in COUNTED_OP_TYPES or not is_forward_op(op):
            continue
        flops, param, output = _OP_COUNTERS[op.type](block, op)
        per_op.append(OpFlops(index, op.type, param, output, int(flops)))
    total = sum(item.flops for item in per_op)
    if not detail:
        return total
    per_param, per_op_type = {}, {}
    for item in per_op:
        if item.param is not None:
            per_param[item.param] = per_param.get(item.param, 0) + item.flops
        per_op_type[item.op_type] = per_op_type.get(item.op_type, 0) + item.flops
    return FlopsDetail(total, per_op, per_param, per_op_type)


def program_params(program, detail=False):
    """Number of parameter values in `program` (all Parameters, incl. batch norm statistics).

    Returns an int, or (total, {param name: count}) when `detail` is true.
    """
    counts = {}
    for param in program.global_block().all_parameters():
        if any(dim < 0 for dim in param.shape):
            raise UnknownShapeError(f"parameter '{param.name}' has unknown shape {list(param.shape)}")
        counts[param.name] = math.prod(param.shape)
    total = sum(counts.values())
    return (total, counts) if detail else total


def is_forward_op(op):
    """True for ops of the forward pass (not backward, optimizer, LR or loss-scaling ops)."""
    if not op.has_attr("op_role"):
        return True
    return (int(op.attr("op_role")) & _NON_FORWARD_ROLE_BITS) == 0


def _shape(block, op, var_name):
    """Static shape of `var_name`; dims after the batch dim must be known."""
    shape = list(block._find_var_recursive(var_name).shape)
    if any(dim < 0 for dim in shape[1:]):
        raise UnknownShapeError(
            f"cannot count FLOPs: op '{op.type}' var '{var_name}' has unknown dims {shape}; "
            f"count a program built with a fixed image shape (e.g. the eval program at "
            f"image_shape [3, 608, 608])")
    return shape


def _per_image(shape):
    return math.prod(shape[1:])


def _spatial(op, shape):
    """(H, W) of a 4-D activation shape, honouring data_format NHWC."""
    data_format = op.attr("data_format") if op.has_attr("data_format") else "NCHW"
    return (shape[1], shape[2]) if data_format == "NHWC" else (shape[2], shape[3])


def _count_conv(block, op):
    filter_name = op.input("Filter")[0]
    out_channels, in_channels_per_group, kernel_h, kernel_w = _shape(block, op, filter_name)
    output = op.output("Output")[0]
    out_h, out_w = _spatial(op, _shape(block, op, output))
    flops = out_channels * in_channels_per_group * kernel_h * kernel_w * out_h * out_w
    return flops, filter_name, output


def _count_conv_transpose(block, op):
    filter_name = op.input("Filter")[0]
    in_channels, out_channels_per_group, kernel_h, kernel_w = _shape(block, op, filter_name)
    in_h, in_w = _spatial(op, _shape(block, op, op.input("Input")[0]))
    flops = in_channels * out_channels_per_group * kernel_h * kernel_w * in_h * in_w
    return flops, filter_name, op.output("Output")[0]


def _count_batch_norm(block, op):
    output = op.output("Y")[0]
    return _per_image(_shape(block, op, output)), op.input("Scale")[0], output


def _count_elementwise(block, op):
    output = op.output("Out")[0]
    param = _parameter_input(block, op, ("Y", "X"))
    return _per_image(_shape(block, op, output)), param, output


def _count_pool(block, op):
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


def _count_matmul(block, op):
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
    """The first input in `slots` that is a Parameter, else None."""
    import paddle
    for slot in slots:
        for name in op.input(slot):
            if isinstance(block._find_var_recursive(name), paddle.static.Parameter):
                return name
    return None


_OP_COUNTERS = {
    "conv2d": _count_conv,
    "depthwise_conv2d": _count_conv,
    "conv2d_transpose": _count_conv_transpose,
    "batch_norm": _count_batch_norm,
    "pool2d": _count_pool,
    **{op_type: _count_elementwise for op_type in ELEMENTWISE_OP_TYPES},
    **{op_type: _count_matmul for op_type in MATMUL_OP_TYPES},
}
