"""Channel propagation rules, one small function per op type.

The dependency analysis (`slim.prune.graph`) asks a rule: "channel axis `axis`
of variable `var` is being pruned; which other (variable, axis, range) must
lose the same channels?". A rule answers with `Link`s (two equally long
channel ranges that move together) and `Fixed` marks (ranges whose layout is
fixed, e.g. a yolo output feeding the loss). A rule raises `Unsupported`
when it cannot tell (an attribute or axis it does not handle); the analysis
then blocks the group with that reason instead of guessing.

Rules are written against `OpView`, a light read-only view of an operator.
Backward ops (`<type>_grad`) need no rules of their own: `grad_view` presents
a grad op under its forward op's slot names, so the forward rule applies, and
every `X@GRAD` variable is linked to its `X` (same shape).

Each op type's rule is named in its spec in `slim.prune.op_specs` (with its attribute
fixer, FLOPs counter and kind); a new op is one entry there.
"""
import math
from typing import NamedTuple

import numpy as np

GRAD_SUFFIX = "@GRAD"
EMPTY_VAR_NAME = "@EMPTY@"


class Segment(NamedTuple):
    """Channels [start, start + length) of axis `axis` of variable `var`.

    `block` > 1: each channel is `block` consecutive elements of that axis (a flattened
    [C, H, W] axis holds channel c at elements [c * H * W, (c + 1) * H * W)); start and
    length count channels, not elements.
    """
    var: str
    axis: int
    start: int
    length: int
    block: int = 1

    def element_indices(self, channels):
        """Element indices on `axis` of the given channel indices (relative to `start`)."""
        first = (self.start + np.asarray(channels, dtype=np.int64)) * self.block
        return (first[:, None] + np.arange(self.block, dtype=np.int64)).ravel()


class Link(NamedTuple):
    """Two equally long channel ranges whose channels are pruned together, index for index."""
    a: Segment
    b: Segment


class Fixed(NamedTuple):
    """A channel range whose layout is fixed (cannot be pruned), and why."""
    segment: Segment
    reason: str


class Unsupported(Exception):
    """A rule met a case it does not handle; the group is blocked with this reason."""


class OpView:
    """Read-only view of one operator: slots (inputs and outputs alike), attrs, var shapes."""
    __slots__ = ("type", "index", "slots", "raw_slots", "_attrs", "_shapes", "_grad_view",
                 "_producers")

    def __init__(self, op_type, index, slots, attrs, shapes, producers=None):
        self.type = op_type
        self.index = index
        self.raw_slots = slots  # slot name -> var names as the op lists them
        # the same without the empty placeholders of unused outputs
        self.slots = {slot: [name for name in names if name and name != EMPTY_VAR_NAME]
                      for slot, names in slots.items()}
        self._attrs = attrs  # attr name -> value
        self._shapes = shapes  # var name -> tuple shape (shared by the whole program index)
        self._grad_view = None
        self._producers = producers if producers is not None else {}  # var -> last OpView

    def producer(self, var):
        """The OpView of the op that last writes `var` in the program, or None."""
        return self._producers.get(var)

    def vars(self, slot):
        """Variable names in `slot` (empty when the slot is absent)."""
        return self.slots.get(slot, ())

    def var(self, slot):
        """The single variable of `slot`, or None."""
        names = self.vars(slot)
        return names[0] if names else None

    def slots_of(self, var):
        """[(slot, position)] where `var` appears in this op."""
        return [(slot, i) for slot, names in self.slots.items()
                for i, name in enumerate(names) if name == var]

    def attr(self, name, default=None):
        return self._attrs.get(name, default)

    def shape(self, var):
        return self._shapes[var]

    def describe(self):
        return f"op '{self.type}' (#{self.index})"


def whole(op, var, axis):
    """The full channel range of `var` along `axis`."""
    return Segment(var, axis, 0, op.shape(var)[axis])


def link_whole(op, var_a, axis_a, var_b, axis_b):
    """A Link between two full axes, checking that they have the same size."""
    a, b = whole(op, var_a, axis_a), whole(op, var_b, axis_b)
    if a.length != b.length:
        raise Unsupported(f"{op.describe()}: axis {axis_a} of '{var_a}' has {a.length} channels "
                          f"but axis {axis_b} of '{var_b}' has {b.length}")
    return Link(a, b)


def _normalize_axis(axis, rank):
    return axis + rank if axis < 0 else axis


def channel_axis(op, rank, attr_names=("data_format", "data_layout")):
    """The channel axis of an activation of `rank` under the op's layout attr (NCHW -> 1)."""
    for name in attr_names:
        layout = op.attr(name)
        if isinstance(layout, str) and layout.upper() in ("NHWC", "NDHWC", "NLC"):
            return rank - 1
    return 1


def _same_axis_links(op, var, axis, slots):
    """Link axis `axis` of `var` to the same axis of every variable in `slots`."""
    links = []
    for slot in slots:
        for other in op.vars(slot):
            if other != var and len(op.shape(other)) > axis:
                links.append(link_whole(op, var, axis, other, axis))
    return links


# ---------------------------------------------------------------- convolutions

CONV_TYPES = ("conv2d", "depthwise_conv2d", "conv3d")
CONV_TRANSPOSE_TYPES = ("conv2d_transpose", "depthwise_conv2d_transpose", "conv3d_transpose")


def conv_kind(op):
    """'conv' (groups 1), 'depthwise' (groups == in == out channels) or 'grouped'."""
    weight, inp = op.var("Filter"), op.var("Input")
    groups = op.attr("groups", 1) or 1
    if groups == 1:
        return "conv"
    in_channels = op.shape(inp)[channel_axis(op, len(op.shape(inp)))]
    out_channels, in_per_group = op.shape(weight)[0], op.shape(weight)[1]
    if groups == in_channels == out_channels and in_per_group == 1:
        return "depthwise"
    return "grouped"


def conv_rule(op, var, axis):
    """Output channels <-> filters (axis 0); input channels <-> filter axis 1.

    Depthwise (groups == channels): input, output and filters move together and
    `groups` follows the channel count. Other grouped convs keep `groups` and
    prune the same positions inside every group (all groups stay equal).
    """
    weight, inp = op.var("Filter"), op.var("Input")
    out = op.var("Output")
    bias = op.var("Bias")
    act_axis = channel_axis(op, len(op.shape(inp)))
    kind = conv_kind(op)
    output_side = (var == weight and axis == 0) or (var == out and axis == act_axis) or \
                  (var == bias and axis == 0)
    input_side = (var == weight and axis == 1) or (var == inp and axis == act_axis)
    if not (output_side or input_side):
        raise Unsupported(f"{op.describe()}: axis {axis} of '{var}' is not a channel axis")
    links = []
    if kind == "depthwise":
        if var == weight and axis == 1:
            raise Unsupported(f"{op.describe()}: depthwise filter axis 1 has one channel")
        if out:
            links.append(link_whole(op, weight, 0, out, act_axis))
        links.append(link_whole(op, weight, 0, inp, act_axis))
        if bias:
            links.append(link_whole(op, weight, 0, bias, 0))
        return links
    if output_side:
        if out:
            links.append(link_whole(op, weight, 0, out, act_axis))
        if bias:
            links.append(link_whole(op, weight, 0, bias, 0))
        if kind == "grouped":
            links.extend(_tile_links(op, weight, 0, op.shape(weight)[0], op.attr("groups")))
        return links
    if kind == "conv":
        return [link_whole(op, inp, act_axis, weight, 1)]
    groups = op.attr("groups")
    per_group = op.shape(weight)[1]
    if op.shape(inp)[act_axis] != groups * per_group:
        raise Unsupported(f"{op.describe()}: {op.shape(inp)[act_axis]} input channels do not "
                          f"split into {groups} groups of {per_group}")
    return [Link(Segment(inp, act_axis, g * per_group, per_group),
                 Segment(weight, 1, 0, per_group)) for g in range(groups)]


def _tile_links(op, var, axis, size, groups):
    """Link the g-th block of `size // groups` channels to the first one, for every g."""
    if size % groups:
        raise Unsupported(f"{op.describe()}: {size} channels of '{var}' do not split into "
                          f"{groups} groups")
    block = size // groups
    return [Link(Segment(var, axis, 0, block), Segment(var, axis, g * block, block))
            for g in range(1, groups)]


def conv_transpose_rule(op, var, axis):
    """Transposed conv: filter [in, out/groups, k, k]; groups 1 or depthwise only."""
    weight, inp, out = op.var("Filter"), op.var("Input"), op.var("Output")
    act_axis = channel_axis(op, len(op.shape(inp)))
    groups = op.attr("groups", 1) or 1
    in_channels = op.shape(inp)[act_axis]
    if groups != 1:
        depthwise = groups == in_channels == op.shape(out)[act_axis] and op.shape(weight)[1] == 1
        if not depthwise:
            raise Unsupported(f"{op.describe()}: grouped transposed conv (groups={groups})")
        if (var == weight and axis == 0) or (var in (inp, out) and axis == act_axis):
            return [link_whole(op, weight, 0, inp, act_axis),
                    link_whole(op, weight, 0, out, act_axis)]
        raise Unsupported(f"{op.describe()}: axis {axis} of '{var}' is not a channel axis")
    if (var == weight and axis == 0) or (var == inp and axis == act_axis):
        return [link_whole(op, weight, 0, inp, act_axis)]
    if (var == weight and axis == 1) or (var == out and axis == act_axis):
        return [link_whole(op, weight, 1, out, act_axis)]
    raise Unsupported(f"{op.describe()}: axis {axis} of '{var}' is not a channel axis")


# ---------------------------------------------------------------- normalization

BN_PARAM_SLOTS = ("Scale", "Bias", "Mean", "Variance", "MeanOut", "VarianceOut",
                  "SavedMean", "SavedVariance")


def batch_norm_rule(op, var, axis):
    """X and Y move together on every axis; on the channel axis so do the 1-D statistics
    (scale, bias, mean, variance and their saved/updated copies)."""
    x = op.var("X")
    c_axis = channel_axis(op, len(op.shape(x)))
    if any(var in op.vars(slot) for slot in BN_PARAM_SLOTS):
        if axis != 0:
            raise Unsupported(f"{op.describe()}: axis {axis} of statistic '{var}'")
        return [link_whole(op, var, 0, x, c_axis)]
    links = _same_axis_links(op, var, axis, ("X", "Y"))
    if axis == c_axis:
        links.extend(link_whole(op, var, axis, stat, 0) for slot in BN_PARAM_SLOTS
                     for stat in op.vars(slot) if len(op.shape(stat)) == 1)
    return links


# ---------------------------------------------------------------- element-wise

UNARY_TYPES = (
    "relu", "relu6", "leaky_relu", "sigmoid", "swish", "silu", "hard_swish", "hardswish",
    "hard_sigmoid", "tanh", "elu", "selu", "celu", "gelu", "mish", "softplus", "softsign",
    "logsigmoid", "thresholded_relu", "brelu", "scale", "cast", "assign", "abs", "exp", "log",
    "sqrt", "rsqrt", "square", "pow", "clip", "dropout", "fill_zeros_like", "fill_any_like",
    "sign", "floor", "ceil", "round", "reciprocal", "relu_", "share_data",
)


def unary_rule(op, var, axis):
    """Same-shape ops (activations, scale, dropout and its mask, cast, assign, ...)."""
    return _same_axis_links(op, var, axis, ("X", "Out", "Mask"))


ELEMENTWISE_TYPES = (
    "elementwise_add", "elementwise_sub", "elementwise_mul", "elementwise_div",
    "elementwise_max", "elementwise_min", "elementwise_pow",
)


def _broadcast_axis(op, var, axis):
    """Map `axis` of `var` (X, Y or Out) to the output axis, with Paddle's `axis` attr rule."""
    x, y = op.var("X"), op.var("Y")
    x_rank, y_rank = len(op.shape(x)), len(op.shape(y))
    big, small = (x, y) if x_rank >= y_rank else (y, x)
    big_rank, small_rank = max(x_rank, y_rank), min(x_rank, y_rank)
    offset = op.attr("axis", -1)
    if offset is None or offset < 0:
        offset = big_rank - small_rank
    return big, small, offset, big_rank, small_rank


def elementwise_rule(op, var, axis):
    """Binary element-wise ops with Paddle broadcasting: channels of X, Y and Out line up
    along the broadcast alignment; an operand of size 1 on that axis is not coupled."""
    out = op.var("Out")
    big, small, offset, big_rank, small_rank = _broadcast_axis(op, var, axis)
    if var == small and var != big:
        out_axis = axis + offset
    else:
        out_axis = axis
    members = []
    if out is not None:
        members.append((out, out_axis))
    if out_axis < big_rank:
        members.append((big, out_axis))
    small_axis = out_axis - offset
    if 0 <= small_axis < small_rank:
        members.append((small, small_axis))
    size = op.shape(var)[axis]
    coupled = [(v, a) for v, a in members if op.shape(v)[a] == size]
    if any(op.shape(v)[a] not in (1, size) for v, a in members):
        raise Unsupported(f"{op.describe()}: cannot broadcast axis {axis} of '{var}'")
    return [link_whole(op, var, axis, v, a) for v, a in coupled if (v, a) != (var, axis)]


PAIRED_TYPES = (
    "c_allreduce_sum", "c_allreduce_avg", "c_allreduce_max", "c_allreduce_min",
    "c_allreduce_prod", "c_broadcast", "c_identity", "c_sync_calc_stream",
    "c_sync_comm_stream", "all_reduce", "check_finite_and_unscale", "update_loss_scaling",
)


def paired_rule(op, var, axis):
    """Ops mapping X[i] to Out[i] unchanged (collective all-reduce and stream syncs of
    multi-card training, AMP loss-scaling checks): each pair moves together."""
    inputs = op.vars("X") or op.vars("x")  # Paddle 3's all_reduce names its slots x / out
    outputs = op.vars("Out") or op.vars("out")
    if len(inputs) != len(outputs):
        raise Unsupported(f"{op.describe()}: {len(inputs)} inputs but {len(outputs)} outputs")
    return [link_whole(op, x, axis, out, axis) for x, out in zip(inputs, outputs)
            if var in (x, out) and x != out]


def sum_rule(op, var, axis):
    """Sum of same-shape tensors (also the backward pass's gradient accumulation)."""
    return _same_axis_links(op, var, axis, ("X", "Out"))


def prelu_rule(op, var, axis):
    """PReLU: X <-> Out; in 'channel' mode the 1-D or [1, C, 1, 1] Alpha follows."""
    x, alpha = op.var("X"), op.var("Alpha")
    mode = op.attr("mode", "all")
    c_axis = channel_axis(op, len(op.shape(x)))
    if var == alpha:
        alpha_axis = 0 if len(op.shape(alpha)) == 1 else c_axis
        if mode != "channel" or axis != alpha_axis:
            raise Unsupported(f"{op.describe()}: prelu alpha in mode '{mode}'")
        return [link_whole(op, alpha, axis, x, c_axis)]
    links = _same_axis_links(op, var, axis, ("X", "Out"))
    if mode == "channel" and axis == c_axis and alpha:
        alpha_axis = 0 if len(op.shape(alpha)) == 1 else c_axis
        links.append(link_whole(op, var, axis, alpha, alpha_axis))
    elif mode == "element" and alpha and op.shape(alpha)[axis] != 1:
        links.append(link_whole(op, var, axis, alpha, axis))
    return links


# ---------------------------------------------------------------- structure

def concat_rule(op, var, axis):
    """Along the concat axis each input owns a slice of the output at its offset;
    along any other axis all inputs and the output move together."""
    if op.vars("AxisTensor"):
        raise Unsupported(f"{op.describe()}: concat axis given as a tensor")
    inputs, out = op.vars("X"), op.var("Out")
    rank = len(op.shape(out if out else inputs[0]))
    cat_axis = _normalize_axis(op.attr("axis", 0), rank)
    if axis != cat_axis:
        return _same_axis_links(op, var, axis, ("X", "Out"))
    links, offset = [], 0
    for name in inputs:
        size = op.shape(name)[axis]
        if out is not None:
            links.append(Link(Segment(name, axis, 0, size), Segment(out, axis, offset, size)))
        offset += size
    if out is not None and offset != op.shape(out)[axis]:
        raise Unsupported(f"{op.describe()}: inputs have {offset} channels, output "
                          f"{op.shape(out)[axis]}")
    return links


def _batch_and_channel_links(op, var, axis, in_slot="X", out_slot="Out"):
    rank = len(op.shape(var))
    c_axis = channel_axis(op, rank)
    if axis not in (0, c_axis):
        raise Unsupported(f"{op.describe()}: axis {axis} of '{var}' is spatial")
    return _same_axis_links(op, var, axis, (in_slot, out_slot))


INTERP_TYPES = (
    "nearest_interp", "nearest_interp_v2", "bilinear_interp", "bilinear_interp_v2",
    "bicubic_interp", "bicubic_interp_v2", "linear_interp", "linear_interp_v2",
    "trilinear_interp", "trilinear_interp_v2",
)


def interp_rule(op, var, axis):
    """Up/down-sampling keeps batch and channel axes."""
    return _batch_and_channel_links(op, var, axis)


def pool_rule(op, var, axis):
    """Pooling (including global) keeps batch and channel axes."""
    return _batch_and_channel_links(op, var, axis)


REDUCE_TYPES = ("reduce_sum", "reduce_mean", "reduce_max", "reduce_min", "reduce_prod",
                "mean", "squared_l2_norm", "p_norm", "frobenius_norm")


def reduce_rule(op, var, axis):
    """A reduced axis ends the coupling (any channel count reduces fine); a kept axis maps
    to its position in the output."""
    x, out = op.var("X"), op.var("Out")
    rank = len(op.shape(x))
    if op.type in ("mean", "squared_l2_norm") or op.attr("reduce_all", False):
        return []
    dims = op.attr("dim", op.attr("axis", []))
    dims = [dims] if isinstance(dims, int) else list(dims or [])
    dims = {_normalize_axis(d, rank) for d in dims} if dims else set(range(rank))
    if op.type == "p_norm":
        dims = {_normalize_axis(op.attr("axis", -1), rank)}
    keep_dim = op.attr("keep_dim", op.attr("keepdim", False))
    if var == x:
        if axis in dims:
            return []
        out_axis = axis if keep_dim else axis - sum(1 for d in dims if d < axis)
        return [link_whole(op, x, axis, out, out_axis)] if out else []
    kept = [a for a in range(rank) if keep_dim or a not in dims]
    in_axis = kept[axis] if not keep_dim else axis
    if in_axis in dims:
        return []
    return [link_whole(op, out, axis, x, in_axis)]


# ---------------------------------------------------------------- reshapes and matmul




def _prefix_key(shape):
    """What a shape prefix holds: (number of unknown dims, product of the known ones)."""
    known = [dim for dim in shape if dim >= 0]
    return len(shape) - len(known), math.prod(known)


def _merged_block(src_shape, axis, size):
    """`size` is `src_shape[axis]` times the dims right after it, up to some axis: their
    product (the block each channel of `axis` spans there), or None."""
    block = 1
    for dim in src_shape[axis + 1:]:
        if src_shape[axis] * block == size or dim < 0:
            break
        block *= dim
    return block if src_shape[axis] * block == size else None


def reshaped_axis(src_shape, axis, dst_shape):
    """Where channel axis `axis` of a tensor lands after a row-major reshape to `dst_shape`:
    (axis of the result, block), block > 1 when later dims merged into it; None when it is
    split or mixed with earlier dims."""
    size = src_shape[axis]
    prefix = _prefix_key(src_shape[:axis])
    for dst_axis, dst_size in enumerate(dst_shape):
        if _prefix_key(dst_shape[:dst_axis]) != prefix or (dst_size == 1 and size != 1):
            continue
        if dst_size == size:
            return dst_axis, 1
        block = _merged_block(src_shape, axis, dst_size) if dst_size > size > 0 else None
        return (dst_axis, block) if block else None
    return None


def reshape_rule(op, var, axis):
    """Reshapes (reshape2, flatten, squeeze, unsqueeze): a channel axis that keeps its place
    in the row-major order moves with its new axis ([C] -> [1, C, 1, 1] of a conv bias); one
    merged with the dims after it (flatten of [N, C, H, W]) owns a block of H * W elements
    per channel. A split or reordered channel axis is not handled."""
    if op.vars("Shape"):
        raise Unsupported(f"{op.describe()}: shape given as one tensor")
    x, out = op.var("X"), op.var("Out")
    x_shape, out_shape = op.shape(x), op.shape(out)
    if var == x:
        x_axis, mapped = axis, reshaped_axis(x_shape, axis, out_shape)
    else:
        x_axis, mapped = _source_axis(x_shape, out_shape, axis)
    if mapped is None:
        raise Unsupported(f"{op.describe()}: axis {axis} of '{var}' is split or reordered "
                          f"({list(x_shape)} -> {list(out_shape)})")
    out_axis, block = mapped
    channels = x_shape[x_axis]
    if op.vars("ShapeTensor"):
        _check_shape_tensor_dim(op, out_axis, channels * block)
    return [Link(Segment(x, x_axis, 0, channels), Segment(out, out_axis, 0, channels, block))]


def _check_shape_tensor_dim(op, out_axis, size):
    """A reshape whose target shape is a list of 1-element tensors (ShapeTensor) can follow
    pruned channels only when the dim holding them is a `fill_constant` of that size: the
    attribute fixer rewrites its value (`slim.prune.op_attrs.fix_shape_attr`)."""
    dims = op.vars("ShapeTensor")
    producer = op.producer(dims[out_axis]) if out_axis < len(dims) else None
    if producer is None or producer.type != "fill_constant" or \
            float(producer.attr("str_value", "") or producer.attr("value", -1)) != float(size):
        raise Unsupported(f"{op.describe()}: dim {out_axis} of its shape tensor, which holds "
                          f"{size} channel elements, is not a constant")


def _source_axis(x_shape, out_shape, out_axis):
    """(input axis, (out_axis, block)) of the input axis a reshape maps onto `out_axis`."""
    for x_axis, size in enumerate(x_shape):
        if size == 1 and out_shape[out_axis] != 1:
            continue
        mapped = reshaped_axis(x_shape, x_axis, out_shape)
        if mapped is not None and mapped[0] == out_axis:
            return x_axis, mapped
    return None, None


MATMUL_TYPES = ("mul", "matmul", "matmul_v2")


def matmul_rule(op, var, axis):
    """A fully connected layer: the contracted axis of X moves with the matching axis of Y
    (the weight's input rows). `mul` flattens X from `x_num_col_dims` on, so channel c of a
    4-D X owns the block of H * W rows c * H * W ... of a 2-D weight. Output features and
    batched matmuls are not handled."""
    x, y = op.var("X"), op.var("Y")
    x_shape, y_shape = op.shape(x), op.shape(y)
    if op.type == "mul":
        x_axis, y_axis = op.attr("x_num_col_dims", 1), 0
        if op.attr("y_num_col_dims", 1) != 1 or len(y_shape) != 2:
            raise Unsupported(f"{op.describe()}: a weight of shape {list(y_shape)}")
        block = math.prod(x_shape[x_axis + 1:])
    else:
        x_axis, y_axis = _matmul_axes(op, len(x_shape), len(y_shape))
        block = 1
    if (var, axis) not in ((x, x_axis), (y, y_axis)) or len(y_shape) != 2 or block < 1:
        raise Unsupported(f"{op.describe()}: axis {axis} of '{var}' is not the contracted axis "
                          f"of a fully connected layer")
    channels = x_shape[x_axis]
    if channels * block != y_shape[y_axis]:
        raise Unsupported(f"{op.describe()}: {list(x_shape)} does not contract with "
                          f"{list(y_shape)}")
    return [Link(Segment(x, x_axis, 0, channels), Segment(y, y_axis, 0, channels, block))]


def _matmul_axes(op, x_rank, y_rank):
    """(contracted axis of X, of Y) of matmul / matmul_v2 with their transpose attrs."""
    names = ("trans_x", "trans_y") if op.type == "matmul_v2" else ("transpose_X", "transpose_Y")
    trans_x, trans_y = (bool(op.attr(name, False)) for name in names)
    x_axis = x_rank - 2 if trans_x else x_rank - 1
    y_axis = y_rank - 1 if trans_y else y_rank - 2
    return x_axis, y_axis


SHAPE_TYPES = ("shape", "shape64")


def shape_rule(op, var, axis):
    """`shape` reads only its input's size, never its values: the channels go no further
    and nothing is blocked (the shape it gives follows the pruned size at run time)."""
    if var in op.vars("Input"):
        return []
    raise Unsupported(f"{op.describe()}: '{var}' is a shape, not channels")


TRANSPOSE_TYPES = ("transpose", "transpose2")


def transpose_rule(op, var, axis):
    """A permutation moves the channel axis: axis a of X is axis perm.index(a) of Out."""
    x, out = op.var("X"), op.var("Out")
    perm = [_normalize_axis(a, len(op.shape(x))) for a in op.attr("axis")]
    if var == x:
        return [link_whole(op, x, axis, out, perm.index(axis))] if out else []
    if var == out:
        return [link_whole(op, out, axis, x, perm[axis])]
    raise Unsupported(f"{op.describe()}: '{var}' is not its data")


def layer_norm_rule(op, var, axis):
    """Layer norm keeps the axes before `begin_norm_axis` (X <-> Y); the normalized axes
    are not prunable: removing channels there changes the mean and variance it divides by."""
    x = op.var("X")
    begin = _normalize_axis(op.attr("begin_norm_axis", 1), len(op.shape(x)))
    if var in op.vars("X") + op.vars("Y") and axis < begin:
        return _same_axis_links(op, var, axis, ("X", "Y"))
    raise Unsupported(f"{op.describe()}: layer_norm normalizes axis {axis} of '{var}' "
                      "(removing channels there changes its statistics)")


SOFTMAX_TYPES = ("softmax", "log_softmax")


def softmax_rule(op, var, axis):
    """Softmax keeps every axis but the one it normalizes over (not prunable: the
    remaining values would sum to one over fewer channels)."""
    rank = len(op.shape(op.var("X")))
    if axis == _normalize_axis(op.attr("axis", -1), rank):
        raise Unsupported(f"{op.describe()}: softmax normalizes over axis {axis} of '{var}'")
    return _same_axis_links(op, var, axis, ("X", "Out"))


_SLICE_TENSOR_SLOTS = ("StartsTensor", "EndsTensor", "StartsTensorList", "EndsTensorList")


def slice_rule(op, var, axis):
    """`slice`: an axis it does not cut moves to its place in the output (after the
    dropped `decrease_axis` dims); a cut axis is handled only when the cut keeps all of
    it (a partial cut would need its bounds moved as channels go)."""
    x, out = op.var("Input"), op.var("Out")
    rank = len(op.shape(x))
    decrease = {_normalize_axis(a, rank) for a in (op.attr("decrease_axis") or [])}
    kept = [a for a in range(rank) if a not in decrease]
    in_axis = axis if var == x else kept[axis]
    axes = [_normalize_axis(a, rank) for a in op.attr("axes", [])]
    if in_axis in axes:
        if any(op.vars(slot) for slot in _SLICE_TENSOR_SLOTS):
            raise Unsupported(f"{op.describe()}: slice bounds given as tensors")
        size = op.shape(x)[in_axis]
        position = axes.index(in_axis)
        start, end = op.attr("starts")[position], op.attr("ends")[position]
        start, end = (min(max(bound + size if bound < 0 else bound, 0), size)
                      for bound in (start, end))
        if start > 0 or end < size:
            raise Unsupported(f"{op.describe()}: slice cuts axis {in_axis} of '{x}' "
                              f"to [{start}, {end})")
    if in_axis in decrease or out is None:
        return []
    return [link_whole(op, x, in_axis, out, kept.index(in_axis))]


def stack_rule(op, var, axis):
    """`stack` adds a new axis: every input's axis a moves together and lands at a (or
    a + 1 after the new axis) of the output; the new axis itself is not channels."""
    inputs, out = op.vars("X"), op.var("Y")
    new_axis = _normalize_axis(op.attr("axis", 0), len(op.shape(inputs[0])) + 1)
    if var == out:
        if axis == new_axis:
            raise Unsupported(f"{op.describe()}: axis {axis} of '{var}' is the stacked axis")
        in_axis = axis if axis < new_axis else axis - 1
        return [link_whole(op, out, axis, name, in_axis) for name in dict.fromkeys(inputs)]
    out_axis = axis if axis < new_axis else axis + 1
    links = [link_whole(op, var, axis, name, axis) for name in dict.fromkeys(inputs)
             if name != var]
    if out is not None:
        links.append(link_whole(op, var, axis, out, out_axis))
    return links


# ---------------------------------------------------------------- optimizers

OPTIMIZER_TYPES = ("momentum", "sgd", "adam", "adamw", "lamb", "rmsprop", "adagrad",
                   "adadelta", "adamax", "lars_momentum", "dgc_momentum", "ftrl")


_OPTIMIZER_SCALAR_SLOT_PARTS = ("LearningRate", "Pow", "SkipUpdate", "Found")


def optimizer_rule(op, var, axis):
    """Param, Grad, ParamOut and every accumulator shaped like Param (Velocity, Moment1,
    ...) move together; scalars (LearningRate, Beta1Pow) are untouched."""
    param = op.var("Param")
    shape = op.shape(param)
    links = []
    for slot, names in op.slots.items():
        if any(part in slot for part in _OPTIMIZER_SCALAR_SLOT_PARTS):
            continue
        for name in names:
            if name and name != var and name != EMPTY_VAR_NAME and op.shape(name) == shape:
                links.append(link_whole(op, var, axis, name, axis))
    return links


# ---------------------------------------------------------------- fixed layouts

FIXED_LAYOUT_TYPES = ("yolov3_loss", "yolo_loss", "yolo_box", "multiclass_nms",
                      "multiclass_nms2", "multiclass_nms3", "matrix_nms", "fetch", "feed",
                      "prior_box", "density_prior_box", "anchor_generator", "box_coder")


def fixed_layout_rule(op, var, axis):
    """Ops whose inputs have a fixed channel layout (anchors x (5 + classes), boxes, ...)."""
    return [Fixed(whole(op, var, axis), f"{op.describe()} needs a fixed layout of '{var}'")]


FILLED_TYPES = ("fill_constant", "gaussian_random", "uniform_random",
                "truncated_gaussian_random", "fill_constant_batch_size_like")


def filled_rule(op, var, axis):
    """Tensors created from a `shape` attr: no coupling; the apply step rewrites the attr."""
    return []


def grad_view(op):
    """A `<type>_grad` op presented under its forward op's slots: a forward slot missing
    from the grad op is stood in for by its `@GRAD` slot (same shape). Cached on `op`."""
    if op._grad_view is None:
        op._grad_view = _make_grad_view(op)
    return op._grad_view


def _make_grad_view(op):
    forward_type = op.type[: -len("_grad")]
    slots = {slot: names for slot, names in op.raw_slots.items()
             if not slot.endswith(GRAD_SUFFIX)}
    for slot, names in op.raw_slots.items():
        if slot.endswith(GRAD_SUFFIX):
            base = slot[: -len(GRAD_SUFFIX)]
            if base not in slots:
                slots[base] = names
    return OpView(forward_type, op.index, slots, op._attrs, op._shapes, op._producers)


def grad_pair_links(op, var, axis):
    """Link every `X@GRAD` variable of a grad op with its `X` (they share a shape)."""
    links = []
    for slot, grad_names in op.raw_slots.items():
        if not slot.endswith(GRAD_SUFFIX):
            continue
        base_names = op.raw_slots.get(slot[: -len(GRAD_SUFFIX)])
        if not base_names or len(base_names) != len(grad_names):
            continue
        for base, grad in zip(base_names, grad_names):
            if (var != base and var != grad) or EMPTY_VAR_NAME in (base, grad) \
                    or not base or not grad:
                continue
            other = grad if var == base else base
            if other != var:
                links.append(link_whole(op, var, axis, other, axis))
    return links
