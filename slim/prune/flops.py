"""FLOPs and parameter counts of a classic static Program: the one count used everywhere.

Convention: **FLOPs here are multiply-accumulates (MACs), one per multiply-add,
per image** (the batch dimension is excluded). Multiply by 2 to get the
"multiply and add counted separately" number. Each op type is counted by the
`count_flops` of its spec in `slim.prune.op_specs` (functions in
`slim.prune.op_flops`). Counted forward ops:

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

from slim.prune.op_flops import UnknownShapeError
from slim.prune.op_specs import op_table

__all__ = ["FlopsDetail", "OpFlops", "UnknownShapeError", "is_forward_op", "is_forward_role",
           "program_flops", "program_params"]

# Bits of the `op_role` attribute (paddle's OpRole): Backward=1, Optimize=2, RPC=4,
# Dist=8, LRSched=16. Forward is 0 and Loss (256) marks the loss op's forward part.
_NON_FORWARD_ROLE_BITS = 0x1F


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


def program_flops(program, detail=False, extra_ops=None):
    """FLOPs (multiply-accumulates per image, see the module docstring) of `program`'s forward ops.

    Returns an int, or a `FlopsDetail` when `detail` is true. Raises UnknownShapeError
    naming the op and var when a counted op has an unknown (-1) non-batch dimension:
    count a program with fixed feed shapes (the eval program at 608x608, or
    `slim.prune.shapes.concrete_program`, which runs the program once to learn them).
    Each op type is counted by its spec's `count_flops` (`slim.prune.op_specs`);
    `extra_ops` ({op type: OpSpec}) adds or overrides specs for this count only.
    """
    table = op_table(extra_ops)
    block = program.global_block()
    per_op = []
    for index, op in enumerate(block.ops):
        spec = table.find(op.type)
        if spec is None or spec.count_flops is None or not is_forward_op(op):
            continue
        flops, param, output = spec.count_flops(block, op)
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
    return is_forward_role(op.attr("op_role") if op.has_attr("op_role") else None)


def is_forward_role(role):
    """True for an `op_role` attribute value (None: no such attr) of a forward op."""
    return role is None or (int(role) & _NON_FORWARD_ROLE_BITS) == 0
