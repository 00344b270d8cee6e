"""Attribute fixers, one per op type that counts channels in an attribute: after
`slim.prune.apply` shrank var shapes, `fix(op, changes, undo)` rewrites the op's
attributes to match (`changes` maps var -> {axis: (old size, new size)}; `undo` is the
PruneUndo that records the old value). `slim.prune.op_specs` names the fixer of each
op type.
"""
from slim.prune.ops import channel_axis


def fix_conv_groups(op, changes, undo):
    """A depthwise conv (groups == input channels) keeps groups == input channels."""
    groups = op.attr("groups") if op.has_attr("groups") else 1
    inputs = op.input("Input") if "Input" in op.input_names else []
    if groups <= 1 or not inputs or inputs[0] not in changes:
        return
    rank = len(op.block.var(inputs[0]).shape)
    axis = channel_axis(_AttrReader(op), rank)
    old, new = changes[inputs[0]].get(axis, (None, None))
    if old is not None and groups == old:
        undo.set_attr(op, "groups", new)


def fix_shape_attr(op, changes, undo):
    """Ops that create (fill ops) or reshape (reshape2) a tensor to a `shape` attr produce
    the pruned shape: a dim equal to a pruned axis's old size becomes its new size (0 =
    "copy the input dim" and -1 = "infer" stay). A reshape given its shape as a list of
    tensors (ShapeTensor) gets the `fill_constant` of a pruned dim rewritten too."""
    if "Out" not in op.output_names:  # a grad op
        return
    out = op.output("Out")
    if not out or out[0] not in changes or not op.has_attr("shape"):
        return
    shape = list(op.attr("shape"))
    new_shape = list(shape)
    for axis, (old, new) in changes[out[0]].items():
        if axis < len(shape) and shape[axis] == old:
            new_shape[axis] = new
    if new_shape != shape:
        undo.set_attr(op, "shape", new_shape)
    dims = op.input("ShapeTensor") if "ShapeTensor" in op.input_names else []
    for axis, (old, new) in changes[out[0]].items():
        producer = _fill_constant_of(op.block, dims[axis]) if axis < len(dims) else None
        if producer is None:
            continue
        text = producer.attr("str_value") if producer.has_attr("str_value") else ""
        if float(text or producer.attr("value")) == float(old):  # the shape tensor's dim
            undo.set_attr(producer, "value", float(new))
            if text:  # it wins over `value` when set
                undo.set_attr(producer, "str_value", str(new) if "." not in text else
                              str(float(new)))


def _fill_constant_of(block, name):
    """The fill_constant op writing `name` in `block`, or None."""
    for candidate in block.ops:
        if candidate.type == "fill_constant" and name in candidate.output("Out"):
            return candidate
    return None


class _AttrReader:
    """Give an Operator the `attr(name, default)` interface of OpView."""

    def __init__(self, op):
        self._op = op

    def attr(self, name, default=None):
        return self._op.attr(name) if self._op.has_attr(name) else default
