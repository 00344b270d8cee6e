"""One spec per op type: everything pruning, FLOPs counting and inspect need to know about it.

An `OpSpec` holds
- `rule(op, var, axis)`: how channels propagate through the op (`slim.prune.ops`); None for
  an op the channel analysis does not handle (a group reaching it is blocked);
- `fix_attrs(op, changes, undo)`: rewrites attributes that count channels after the var
  shapes were pruned (`slim.prune.op_attrs`), or None;
- `count_flops(block, op)`: its FLOPs (`slim.prune.op_flops`), or None (not counted);
- `kind`: CONV / CONV_TRANSPOSE (the analysis starts from their weights; inspect lists
  them), CHANNEL_PRESERVING (output channel i is input channel i: inspect's `reaches`
  walks through it) or OTHER.

Supporting a new op type is one `register_op` entry below. A caller can add or override
specs for one analysis without touching this table: `analyze_program(program,
extra_ops={"my_op": OpSpec(rule=...)})` (like Torch-Pruning's customized pruners).
Backward ops (`<type>_grad`) get a spec derived from their forward op's (`spec_for`).
"""
import functools
from typing import Callable, NamedTuple, Optional

from slim.prune import ops
from slim.prune.errors import PruneError
from slim.prune.op_attrs import fix_conv_groups, fix_shape_attr
from slim.prune.op_flops import (
    count_batch_norm,
    count_conv,
    count_conv_transpose,
    count_elementwise,
    count_matmul,
    count_pool,
)
from slim.registry import Registry

CONV, CONV_TRANSPOSE, CHANNEL_PRESERVING, OTHER = (
    "conv", "conv_transpose", "channel_preserving", "other")
GRAD_SUFFIX = "_grad"


class OpSpec(NamedTuple):
    """What one op type needs: channel rule, attribute fixer, FLOPs counter, kind."""
    rule: Optional[Callable] = None
    fix_attrs: Optional[Callable] = None
    count_flops: Optional[Callable] = None
    kind: str = OTHER


OP_SPECS = Registry("op type", error=PruneError)  # op type -> OpSpec; filled below at import


def register_op(op_types, rule=None, fix_attrs=None, count_flops=None, kind=OTHER, table=OP_SPECS):
    """Register one OpSpec for every type in `op_types`."""
    spec = OpSpec(rule, fix_attrs, count_flops, kind)
    for op_type in op_types:
        table.add(op_type, spec)
    return spec


def op_table(extra_ops=None):
    """The spec table, with `extra_ops` ({op type: OpSpec}) added for this caller only."""
    return OP_SPECS.with_extra(extra_ops) if extra_ops else OP_SPECS


def spec_for(op_type, table=OP_SPECS):
    """The OpSpec of `op_type` in `table`, or None. A `<type>_grad` op without its own spec
    gets its forward op's attribute fixer and a rule that links every `X@GRAD` to its `X`
    and applies the forward rule to the grad op's forward view; no FLOPs (not forward)."""
    spec = table.find(op_type)
    if spec is not None or not op_type.endswith(GRAD_SUFFIX):
        return spec
    forward = table.find(op_type[: -len(GRAD_SUFFIX)])
    if forward is None:
        return None
    rule = functools.partial(backward_rule, forward.rule) if forward.rule is not None else None
    return OpSpec(rule=rule, fix_attrs=forward.fix_attrs)


def backward_rule(forward_rule, op, var, axis):
    """Rule of a grad op: X@GRAD <-> X pairs, plus the forward rule on the forward view."""
    links = ops.grad_pair_links(op, var, axis)
    view = ops.grad_view(op)
    if view.slots_of(var):
        links.extend(forward_rule(view, var, axis))
    return links


# ---------------------------------------------------------------- the table

register_op(("conv2d", "depthwise_conv2d"), ops.conv_rule, fix_conv_groups, count_conv, CONV)
register_op(("conv3d",), ops.conv_rule, fix_conv_groups, kind=CONV)
register_op(("conv2d_transpose",), ops.conv_transpose_rule, fix_conv_groups,
            count_conv_transpose, CONV_TRANSPOSE)
register_op(("depthwise_conv2d_transpose", "conv3d_transpose"), ops.conv_transpose_rule,
            fix_conv_groups, kind=CONV_TRANSPOSE)
register_op(("batch_norm",), ops.batch_norm_rule, count_flops=count_batch_norm,
            kind=CHANNEL_PRESERVING)
register_op(("sync_batch_norm",), ops.batch_norm_rule, kind=CHANNEL_PRESERVING)
register_op(ops.UNARY_TYPES, ops.unary_rule, kind=CHANNEL_PRESERVING)
register_op(("elementwise_add", "elementwise_sub", "elementwise_mul", "elementwise_div"),
            ops.elementwise_rule, count_flops=count_elementwise, kind=CHANNEL_PRESERVING)
register_op(("elementwise_max", "elementwise_min", "elementwise_pow"), ops.elementwise_rule,
            kind=CHANNEL_PRESERVING)
register_op(ops.PAIRED_TYPES, ops.paired_rule, kind=CHANNEL_PRESERVING)
register_op(("sum",), ops.sum_rule, kind=CHANNEL_PRESERVING)
register_op(("prelu",), ops.prelu_rule, kind=CHANNEL_PRESERVING)
register_op(ops.INTERP_TYPES, ops.interp_rule, kind=CHANNEL_PRESERVING)
register_op(("pool2d",), ops.pool_rule, count_flops=count_pool, kind=CHANNEL_PRESERVING)
register_op(("pool3d",), ops.pool_rule, kind=CHANNEL_PRESERVING)
register_op(("concat",), ops.concat_rule)
register_op(ops.REDUCE_TYPES, ops.reduce_rule)
register_op(ops.OPTIMIZER_TYPES, ops.optimizer_rule)
register_op(ops.FIXED_LAYOUT_TYPES, ops.fixed_layout_rule)
register_op(ops.FILLED_TYPES, ops.filled_rule, fix_shape_attr)
register_op(("reshape", "reshape2"), ops.reshape_rule, fix_shape_attr)
register_op(("flatten", "flatten2", "flatten_contiguous_range", "squeeze", "squeeze2",
             "unsqueeze", "unsqueeze2"), ops.reshape_rule)
register_op(ops.MATMUL_TYPES, ops.matmul_rule, count_flops=count_matmul)
register_op(ops.SHAPE_TYPES, ops.shape_rule)
register_op(ops.TRANSPOSE_TYPES, ops.transpose_rule)
register_op(("layer_norm",), ops.layer_norm_rule)
register_op(ops.SOFTMAX_TYPES, ops.softmax_rule)
register_op(("slice",), ops.slice_rule)
register_op(("stack",), ops.stack_rule)
