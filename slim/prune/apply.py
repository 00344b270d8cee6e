"""Apply a PrunePlan to programs and to the scope, and undo it.

For every program the plan's groups are found again by key in that program's
own channel graph (train, eval and infer programs have different
intermediate vars but the same parameters), so one plan prunes all of them
consistently: var shapes, op attributes that count channels (conv `groups`
of depthwise convs, `shape` of fill/initializer ops), and, in the scope,
every persistable tensor of the groups (weights, batch norm statistics,
optimizer accumulators such as momentum velocity).

`apply_plan` returns a `PruneUndo`; `restore()` puts shapes, attributes and
tensors back, so sensitivity analysis can prune, evaluate and restore. To
keep an unpruned model beside a pruned one (distillation), apply the plan
to clones of the programs and give the pruned model its own scope.
"""
import collections
import contextlib

import numpy as np

from slim.prune.errors import PruneError
from slim.prune.graph import analyze_program, check_graph_options
from slim.prune.op_specs import OP_SPECS, op_table, spec_for


class PruneUndo:
    """Everything `apply_plan` changed, to put back with `restore()`."""

    def __init__(self):
        self.shapes = []   # (var desc, old shape)
        self.attrs = []    # (op, attr name, old value)
        self.tensors = []  # (tensor, old array, place)

    def record_shape(self, var, shape):
        self.shapes.append((var.desc, list(shape)))

    def set_attr(self, op, name, value):
        self.attrs.append((op, name, op.attr(name)))
        op._set_attr(name, value)

    def restore(self):
        """Undo every change, newest first."""
        for tensor, value, place in reversed(self.tensors):
            tensor.set(value, place)
        for op, name, value in reversed(self.attrs):
            op._set_attr(name, value)
        for desc, shape in reversed(self.shapes):
            desc.set_shape(shape)
        self.shapes, self.attrs, self.tensors = [], [], []


def plan_removals(plan, graph):
    """{(var, axis): sorted array of removed channel indices} over every member of every
    group of `plan` found in `graph`. Groups whose params are all absent from the program
    are skipped; a group that does not match, or cannot be pruned here, is an error."""
    removals = collections.defaultdict(list)
    for group_plan in plan.groups:
        group = find_group(group_plan, graph)
        removed = np.asarray(group_plan.removed, dtype=np.int64)
        if group is None or removed.size == 0:
            continue
        for member in group.members:
            removals[(member.var, member.axis)].append(member.element_indices(removed))
    return {slot: np.unique(np.concatenate(parts)) for slot, parts in removals.items()}


def find_group(group_plan, graph):
    """The group of `graph` that `group_plan` prunes, checked to match; None when none of
    its params are in the program (e.g. a program without that part of the model)."""
    group = graph.group_at(*group_plan.key)
    present = {name for name in group_plan.params if name in graph.index.parameters}
    if group is None:
        if not present and group_plan.key[0] not in graph.index.shapes:
            return None
        raise PruneError(f"pruning plan group '{group_plan.key[0]}' (axis {group_plan.key[1]}, "
                         f"offset {group_plan.key[2]}) is not a channel group of this program")
    _check_group_matches(group_plan, group, present)
    return group


def _check_group_matches(group_plan, group, present_params):
    name = group_plan.key[0]
    if group.size != group_plan.channels_before:
        raise PruneError(f"pruning plan group '{name}' has {group_plan.channels_before} channels "
                         f"but the program has {group.size} (was the plan already applied, or "
                         f"made for another model?)")
    if set(group.params) != present_params:
        extra = sorted(set(group.params) - present_params)
        missing = sorted(present_params - set(group.params))
        raise PruneError(f"pruning plan group '{name}' does not match the program's group: "
                         f"params only in the program {extra}, only in the plan {missing}")
    if group.blocked_reason is not None and group_plan.removed:
        raise PruneError(f"cannot prune group '{name}' in this program: {group.blocked_reason}")


def apply_plan(plan, programs, scope=None, place=None, startup_programs=(), graphs=None,
               extra_ops=None):
    """Prune `programs` (and their persistable tensors in `scope`) as `plan` says.

    programs: the programs to rewrite (train, eval, infer ...); each is analysed.
    scope: the scope holding the parameters (None: rewrite programs only).
    place: where to put the sliced tensors (default: where each tensor already is).
    startup_programs: programs rewritten by name only (initializer shapes), not analysed.
    graphs: optional ChannelGraphs of `programs` (same order) to skip re-analysis, built
        with the same `extra_ops` (a PruneError otherwise).
    extra_ops: {op type: OpSpec} added to the op specs for this call only.

    Returns a PruneUndo whose `restore()` reverts all of it.
    """
    programs = list(programs)
    table = op_table(extra_ops)
    graphs = list(graphs) if graphs is not None else \
        [analyze_program(p, extra_ops=extra_ops) for p in programs]
    for graph in graphs:
        check_graph_options(graph, extra_ops=extra_ops)
    per_program, persistable = [], {}
    for graph in graphs:
        removals = plan_removals(plan, graph)
        per_program.append(removals)
        for (var, axis), removed in removals.items():
            if var not in graph.index.persistable:
                continue
            known = persistable.setdefault(var, {})
            if axis in known and not np.array_equal(known[axis], removed):
                raise PruneError(f"programs disagree on the channels to remove from '{var}'")
            known[axis] = removed
    undo = PruneUndo()
    old_shapes = {}
    for program, removals in zip(programs + list(startup_programs),
                                 per_program + [{}] * len(startup_programs)):
        by_var = collections.defaultdict(dict)
        for (var, axis), removed in removals.items():
            by_var[var][axis] = removed
        for var, axes in persistable.items():
            by_var[var].update(axes)
        shapes = rewrite_program(program, by_var, undo, table)
        for var, shape in shapes.items():
            old_shapes.setdefault(var, shape)
    if scope is not None:
        slice_scope(scope, persistable, old_shapes, place, undo)
    return undo


@contextlib.contextmanager
def pruned_shapes(plan, program, graph=None):
    """Within the block, `program`'s var shapes and attrs are pruned as `plan` says
    (no scope, no clone); on exit they are restored. For counting FLOPs and params."""
    graph = graph or analyze_program(program)
    by_var = collections.defaultdict(dict)
    for (var, axis), removed in plan_removals(plan, graph).items():
        by_var[var][axis] = removed
    undo = PruneUndo()
    try:
        rewrite_program(program, by_var, undo, graph.index.table)
        yield program
    finally:
        undo.restore()


def rewrite_program(program, removals_by_var, undo, table=OP_SPECS):
    """Shrink var shapes and fix channel-counting attrs of `program`'s global block.

    removals_by_var: var -> {axis: removed indices}. Vars absent from the block are
    ignored. `table`: the op specs whose attribute fixers run. Returns {var: old shape}
    of the vars it changed.
    """
    block = program.global_block()
    changes, old_shapes = {}, {}
    for var_name, axes in removals_by_var.items():
        var = block.vars.get(var_name)
        if var is None:
            continue
        shape = list(var.desc.shape())
        new_shape = list(shape)
        for axis, removed in axes.items():
            if axis >= len(shape) or shape[axis] < 0 or len(removed) >= shape[axis] or \
                    (len(removed) and removed[-1] >= shape[axis]):
                raise PruneError(f"cannot remove {len(removed)} channels from axis {axis} of "
                                 f"'{var_name}' with shape {shape}")
            new_shape[axis] = shape[axis] - len(removed)
        if new_shape == shape:
            continue
        undo.record_shape(var, shape)
        var.desc.set_shape(new_shape)
        old_shapes[var_name] = tuple(shape)
        changes[var_name] = {axis: (shape[axis], new_shape[axis]) for axis in axes}
    if changes:
        for op in block.ops:
            fixer = attr_fixer_of(op.type, table)
            if fixer is not None and any(name in changes for name in op.input_arg_names +
                                         op.output_arg_names):
                fixer(op, changes, undo)
    return old_shapes


def slice_scope(scope, removals_by_var, old_shapes, place, undo):
    """Delete the removed channels from every initialized tensor of `removals_by_var`."""
    for var_name, axes in removals_by_var.items():
        scope_var = scope.find_var(var_name)
        if scope_var is None:
            continue
        tensor = scope_var.get_tensor()
        if not tensor._is_initialized():
            continue
        value = np.array(tensor)
        expected = old_shapes.get(var_name)
        if expected is not None and tuple(value.shape) != tuple(expected):
            raise PruneError(f"tensor '{var_name}' in the scope has shape {list(value.shape)}, "
                             f"the program says {list(expected)} (already pruned?)")
        new_value = value
        for axis, removed in sorted(axes.items()):
            kept = np.ones(value.shape[axis], dtype=bool)
            kept[removed] = False
            new_value = np.compress(kept, new_value, axis=axis)
        target = _concrete_place(place if place is not None else tensor._place())
        undo.tensors.append((tensor, value, target))
        tensor.set(new_value if new_value.flags.c_contiguous else
                   np.ascontiguousarray(new_value), target)


def _concrete_place(place):
    """tensor.set() wants a CPUPlace/CUDAPlace, not the generic Place a tensor reports."""
    import paddle
    if isinstance(place, (paddle.CPUPlace, paddle.CUDAPlace)):
        return place
    if hasattr(place, "is_gpu_place") and place.is_gpu_place():
        return paddle.CUDAPlace(place.gpu_device_id())
    if hasattr(place, "is_cuda_pinned_place") and place.is_cuda_pinned_place():
        return paddle.CUDAPinnedPlace()
    return paddle.CPUPlace()


def attr_fixer_of(op_type, table=OP_SPECS):
    """The attribute fixer of `op_type` in the op specs `table`, or None."""
    spec = spec_for(op_type, table)
    return spec.fix_attrs if spec is not None else None
