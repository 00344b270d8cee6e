"""A frozen copy of a program's forward pass inside another program: a distillation teacher.

    source = forward_source(train.program, ["image"], [train.fetches["output_0"].name, ...])
    teacher = add_frozen_copy(source, train.program, train.startup, prefix="teacher_")
    teacher.outputs["conv2d_20.tmp_1"]      # the teacher's var for that source output
    teacher.persistables                    # {source name: teacher name}, e.g. BN statistics

`forward_source` keeps the ops that compute the given outputs from the given feeds,
in test mode (batch norm reads its moving statistics and never updates them). The
copy gives every var of those ops the prefix, except the feeds, which the copy
reads from the target program (one image feeds student and teacher). Its tensors
are plain persistable vars, not Parameters, and every teacher var stops
gradients: no gradient, optimizer accumulator or weight decay ever reaches the
teacher. Its persistables start at zero (startup fill ops); the caller copies or
loads what the teacher should know.
"""
import dataclasses


@dataclasses.dataclass
class ForwardSource:
    """The forward pass to copy: a test-mode program, its feed names and output names."""
    program: object
    feeds: tuple
    outputs: tuple


@dataclasses.dataclass
class FrozenCopy:
    """What `add_frozen_copy` added: output vars by source output name, and the copy's
    persistables as {source name: teacher name}."""
    outputs: dict
    persistables: dict


def forward_source(program, feeds, outputs):
    """A test-mode clone of `program` keeping only the ops that compute `outputs` (var
    names) from `feeds` (var names); the clone is independent of later changes to
    `program` (pruning), so it stays the model as it was."""
    clone = program.clone(for_test=True)
    block = clone.global_block()
    needed = _needed_op_indices(block, outputs)
    for index in reversed(range(len(block.ops))):
        if index not in needed:
            block._remove_op(index)
    clone._sync_with_cpp()
    return ForwardSource(clone, tuple(feeds), tuple(outputs))


def _needed_op_indices(block, outputs):
    """Indices of the ops of `block` that `outputs` depend on (a reverse reachability walk)."""
    wanted, needed = set(outputs), set()
    for index in reversed(range(len(block.ops))):
        op = block.ops[index]
        if wanted.intersection(op.output_arg_names):
            needed.add(index)
            wanted.update(op.input_arg_names)
    return needed


def add_frozen_copy(source, program, startup, prefix):
    """Append `source`'s ops to `program` with every var renamed `prefix` + name (feeds
    shared), all stop_gradient; persistables as plain vars zero-filled by `startup`.
    Returns a FrozenCopy. ValueError when a renamed var already exists in `program`."""
    source_block, block = source.program.global_block(), program.global_block()
    shared = set(source.feeds)
    names = {name for op in source_block.ops
             for name in op.input_arg_names + op.output_arg_names if name not in shared}
    taken = sorted(prefix + name for name in names if block.has_var(prefix + name))
    if taken:
        raise ValueError(f"the program already has vars named {taken[:3]}: was the frozen copy "
                         "added twice, or is the prefix in use?")
    persistables = {}
    for name in sorted(names):
        var = source_block.var(name)
        copied = block.create_var(name=prefix + name, shape=var.shape, dtype=var.dtype,
                                  type=var.type, persistable=var.persistable, stop_gradient=True)
        if var.persistable:
            persistables[name] = copied.name
            _zero_filled(startup, copied)
    for op in source_block.ops:
        block.append_op(type=op.type, inputs=_renamed(op, op.input_names, op.input, shared, prefix),
                        outputs=_renamed(op, op.output_names, op.output, shared, prefix),
                        attrs={attr: op.attr(attr) for attr in op.attr_names})
    outputs = {name: block.var(prefix + name) for name in source.outputs}
    return FrozenCopy(outputs, persistables)


def _renamed(op, slots, args_of, shared, prefix):
    """{slot: [renamed var names]} of an op's inputs or outputs."""
    return {slot: [name if name in shared else prefix + name for name in args_of(slot)]
            for slot in slots}


def _zero_filled(startup, var):
    """Declare `var` in `startup` and fill it with zeros there."""
    block = startup.global_block()
    out = block.create_var(name=var.name, shape=var.shape, dtype=var.dtype, type=var.type,
                           persistable=True)
    block.append_op(type="fill_constant", outputs={"Out": [out]},
                    attrs={"shape": list(var.shape), "dtype": var.dtype, "value": 0.0})


def assign_tensor(scope, name, value):
    """Set the initialized tensor `name` of `scope` to `value` (an array or list), on the
    place it is on; its dtype is kept."""
    import numpy as np
    import paddle
    tensor = scope.find_var(name).get_tensor()
    place = tensor._place()
    if hasattr(place, "is_gpu_place") and place.is_gpu_place():
        place = paddle.CUDAPlace(place.gpu_device_id())
    else:
        place = paddle.CPUPlace()
    dtype = np.array(tensor).dtype
    tensor.set(np.ascontiguousarray(np.asarray(value, dtype=dtype)), place)
