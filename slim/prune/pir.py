"""Paddle 3's new IR (PIR): a classic-looking view of a `pir.Program` for the engine.

    view = PirProgramView(pir_program)                 # what the rules read, by name
    graph = analyze_program(view)                      # the same channel groups
    plan = plan_pruning(view, scope, "auto", ratio=0.5)
    apply_plan(plan, [view], scope)                    # shapes, attrs (in the view), tensors
    view.commit()                                      # write them into the PIR program
    check_types(view.program, scope, feeds)            # every type = what really flows

The engine (`graph`, `apply`, `pruner`, `flops`, the channel rules of `ops` and the
attribute fixers of `op_attrs`) reads a classic `Program`: `global_block().ops` with a
`type`, slots of var names, attributes, and vars with shapes. `PirProgramView` gives it
exactly that over a PIR program, so every rule works unchanged on both IRs:

- op types: `pd_op.conv2d` -> `conv2d`, `pd_op.add` -> `elementwise_add`, `pd_op.reshape`
  -> `reshape2`, `pd_op.batch_norm_` -> `batch_norm` (`PIR_OP_TYPES`; an in-place `_`
  is dropped); backward ops `pd_op.X_grad` -> `X_grad`, their `out_grad` operands named
  after the forward slot (`Output@GRAD`), so `spec_for` derives their rules as today;
- slots: PIR operand and result names (`input`, `filter`, `out`) in classic spelling
  (`Input`, `Filter`, `Output`; `PIR_SLOT_NAMES`, else CamelCase); a `builtin.combine`
  feeding a concat is its list of inputs, a `builtin.split` the list of outputs;
- attributes, including those that became operands fed by constant ops (concat `axis`,
  reshape `shape`, pool2d `kernel_size` -> `ksize`, squeeze / unsqueeze `axes`, reduce
  `dim`, scale `scale`; `ATTRIBUTE_OPERANDS`). Such an operand fed by a computed tensor
  stays a slot (`AxisTensor`, `ShapeTensor` ...), which the rules refuse as they do today;
- names: parameters by `parameter_name` (so plans, keyed by parameter names, move
  between the IRs), feeds and persistable data by their `name`, every other value
  `<op>_<position>.<result>` by its op's place in the block (stable for one program).

Nothing is written to the PIR program until `commit()`: value types
(`set_type`, vector types of `builtin.combine` / `builtin.split` rebuilt), integer
attributes (`set_int_attr`: a depthwise conv's `groups`), and constant operands, whose
ops are rebuilt (`_C_ops.full_int_array` / `_C_ops.full` before the reader, the old op
erased when unused): `set_int_array_attr` on a `full_int_array` segfaults at run time.
Paddle does not check that a value's type matches what flows (a half-done rewrite runs
and saves silently), so `check_types` runs the program and compares every value's static
dims with the real ones, and with PIR's shape inference from the pruned inputs.

Shapes: a view's shapes are the program's types (-1 for dynamic dims) unless given;
`concrete_view` makes one with the shapes of one real run at given feed shapes (what
FLOPs need), over the same program, which never commits (`shadow`).

Everything here needs Paddle 3 (`paddle.pir`); paddle is imported inside functions.
"""
import collections
import contextlib

from slim.prune.errors import PruneError

# PIR op name (without `pd_op.`) -> the classic op type whose channel rule applies.
PIR_OP_TYPES = {
    "add": "elementwise_add", "subtract": "elementwise_sub", "multiply": "elementwise_mul",
    "divide": "elementwise_div", "maximum": "elementwise_max", "minimum": "elementwise_min",
    "elementwise_pow": "elementwise_pow", "add_n": "sum",
    "hardswish": "hard_swish", "hardsigmoid": "hard_sigmoid",
    "nearest_interp": "nearest_interp_v2", "bilinear_interp": "bilinear_interp_v2",
    "bicubic_interp": "bicubic_interp_v2", "linear_interp": "linear_interp_v2",
    "trilinear_interp": "trilinear_interp_v2",
    "matmul": "matmul_v2", "reshape": "reshape2", "flatten": "flatten_contiguous_range",
    "squeeze": "squeeze2", "unsqueeze": "unsqueeze2",
    "mean": "reduce_mean", "sum": "reduce_sum", "max": "reduce_max", "min": "reduce_min",
    "prod": "reduce_prod", "full": "fill_constant", "full_like": "fill_any_like",
    "transpose": "transpose2",
}

# Slot names that are not the CamelCase of the PIR name, per classic op type.
PIR_SLOT_NAMES = {
    "conv2d": {"out": "Output"}, "depthwise_conv2d": {"out": "Output"},
    "conv3d": {"out": "Output"}, "conv2d_transpose": {"x": "Input", "out": "Output"},
    "depthwise_conv2d_transpose": {"x": "Input", "out": "Output"},
    "conv3d_transpose": {"x": "Input", "out": "Output"},
    "batch_norm": {"out": "Y"}, "sync_batch_norm": {"out": "Y"},
    "sum": {"inputs": "X"}, "fill_constant": {}, "fetch": {"x": "X"},
}
_INTERP_SLOTS = {"output": "Out", "out_size": "OutSize", "size_tensor": "SizeTensor",
                 "scale_tensor": "Scale"}
for _interp in ("nearest_interp_v2", "bilinear_interp_v2", "bicubic_interp_v2",
                "linear_interp_v2", "trilinear_interp_v2"):
    PIR_SLOT_NAMES[_interp] = _INTERP_SLOTS

# (classic op type, PIR operand name) -> (classic attr name, slot name when the operand is
# a computed tensor, not a constant). Attributes of the classic op that PIR made operands.
ATTRIBUTE_OPERANDS = {
    ("concat", "axis"): ("axis", "AxisTensor"),
    ("reshape2", "shape"): ("shape", "ShapeTensor"),
    ("pool2d", "kernel_size"): ("ksize", "KernelSizeTensor"),
    ("squeeze2", "axis"): ("axes", "AxesTensor"),
    ("unsqueeze2", "axis"): ("axes", "AxesTensor"),
    ("scale", "scale"): ("scale", "ScaleTensor"),
    ("conv2d_transpose", "output_size"): ("output_size", "OutputSize"),
    ("depthwise_conv2d_transpose", "output_size"): ("output_size", "OutputSize"),
    ("fill_constant", "shape"): ("shape", "ShapeTensor"),
}
for _reduce in ("reduce_mean", "reduce_sum", "reduce_max", "reduce_min", "reduce_prod"):
    ATTRIBUTE_OPERANDS[(_reduce, "axis")] = ("dim", "AxisTensor")

# PIR attribute name -> classic name, where they differ.
PIR_ATTR_NAMES = {"transpose_x": "trans_x", "transpose_y": "trans_y", "keepdim": "keep_dim",
                  "kernel_size": "ksize"}
CONSTANT_OPS = ("pd_op.full_int_array", "pd_op.full")
HIDDEN_OPS = ("builtin.parameter", "pd_op.data", "pd_op.feed", "builtin.combine", "builtin.split",
              "builtin.shadow_output", "builtin.constant")
_SKIP_ATTRS = ("stop_gradient", "struct_name", "op_callstack", "persistable", "place",
               "is_persistable")


def pir_supported():
    """True on Paddle 3.x. Paddle 2.6 ships an experimental `paddle.pir` without most of
    what this module uses (`Value.initialized`, operand names, shape inference), and saves
    no `.json` models: there is no PIR to prune there."""
    import paddle
    return int(paddle.__version__.split(".")[0]) >= 3 or paddle.__version__.startswith("0.0")


def is_pir_program(program):
    """True when `program` is a `paddle.pir.Program` (Paddle 3's new IR)."""
    import paddle
    pir = getattr(paddle, "pir", None)
    return pir is not None and isinstance(program, getattr(pir, "Program", ()))


def ir_guard(pir):
    """A context in which Paddle builds, loads and runs PIR programs when `pir` is true
    (`paddle.pir_utils.IrGuard`; this process otherwise runs the classic IR)."""
    if not pir:
        return contextlib.nullcontext()
    from paddle.pir_utils import IrGuard
    return IrGuard()


def classic_op_type(pir_name):
    """The classic op type the rules know `pir_name` (e.g. 'pd_op.conv2d_grad') by."""
    name = pir_name.split(".", 1)[1] if "." in pir_name else pir_name
    grad = ""
    if name.endswith("_grad"):
        name, grad = name[: -len("_grad")], "_grad"
    if name.endswith("_") and not name.endswith("__"):
        name = name[:-1]  # the in-place variant (batch_norm_, relu_, momentum_)
    return PIR_OP_TYPES.get(name, name) + grad


def slot_name(op_type, pir_name):
    """The classic slot of PIR operand / result `pir_name` of an op of classic `op_type`;
    `x_grad` of a backward op is the forward slot's `X@GRAD`."""
    forward = op_type[: -len("_grad")] if op_type.endswith("_grad") else op_type
    if pir_name.endswith("_grad") and op_type.endswith("_grad"):
        return slot_name(forward, pir_name[: -len("_grad")]) + "@GRAD"
    special = PIR_SLOT_NAMES.get(forward, {})
    if pir_name in special:
        return special[pir_name]
    return "".join(part[:1].upper() + part[1:] for part in pir_name.split("_"))


class _VarDesc:
    """What the engine reads of a classic VarDesc, over a view's shape table."""
    __slots__ = ("_var",)

    def __init__(self, var):
        self._var = var

    def name(self):
        return self._var.name

    def shape(self):
        return list(self._var.shape)

    def set_shape(self, shape):
        self._var.view.shapes[self._var.name] = tuple(int(d) for d in shape)

    def persistable(self):
        return self._var.persistable

    def type(self):
        from paddle.base import core
        return core.VarDesc.VarType.LOD_TENSOR


class PirVar:
    """One PIR value under its view name: shape (from the view), dtype, persistable."""

    def __init__(self, view, name, value, persistable=False, is_parameter=False):
        self.view, self.name, self.value = view, name, value
        self.persistable, self.is_parameter = persistable, is_parameter
        self.desc = _VarDesc(self)

    @property
    def shape(self):
        return self.view.shapes[self.name]

    @property
    def dtype(self):
        return self.value.dtype

    def __repr__(self):
        return f"PirVar({self.name!r}, {list(self.shape)})"


class _OpDesc:
    """What the engine reads of a classic OpDesc (methods where the Operator has properties)."""
    __slots__ = ("_op",)

    def __init__(self, op):
        self._op = op

    def type(self):
        return self._op.type

    def input_names(self):
        return list(self._op._inputs)

    def output_names(self):
        return list(self._op._outputs)

    def input(self, slot):
        return self._op.input(slot)

    def output(self, slot):
        return self._op.output(slot)

    def has_attr(self, name):
        return self._op.has_attr(name)

    def attr(self, name):
        return self._op.attr(name)


class PirOp:
    """One PIR operation as the engine sees a classic Operator (`desc`: its OpDesc)."""

    def __init__(self, view, op, op_type, inputs, outputs, attrs, operand_attrs):
        self.view, self.op, self.type = view, op, op_type
        self._inputs, self._outputs = inputs, outputs  # slot -> [var names]
        self._attrs = attrs  # classic attr name -> value
        self._operand_attrs = operand_attrs  # classic attr name -> operand index
        self.changed_attrs = {}  # attrs set through _set_attr, written by commit()
        self.desc = _OpDesc(self)
        self.block = view.block

    @property
    def input_names(self):
        return list(self._inputs)

    @property
    def output_names(self):
        return list(self._outputs)

    def input(self, slot):
        return list(self._inputs.get(slot, ()))

    def output(self, slot):
        return list(self._outputs.get(slot, ()))

    @property
    def input_arg_names(self):
        return [name for names in self._inputs.values() for name in names]

    @property
    def output_arg_names(self):
        return [name for names in self._outputs.values() for name in names]

    def has_attr(self, name):
        return name in self._attrs

    def attr(self, name):
        return self._attrs.get(name)

    def _set_attr(self, name, value):
        self._attrs[name] = value
        self.changed_attrs[name] = value

    def __repr__(self):
        return f"PirOp({self.op.name()})"


class _Block:
    """The global block of a view: ops, vars by name, parameters."""

    def __init__(self, view):
        self.view = view
        self.ops = []
        self.vars = {}
        self.desc = self

    def all_vars(self):
        return [var.desc for var in self.vars.values()]

    def var(self, name):
        if name not in self.vars:
            raise ValueError(f"var {name} is not in this PIR program")
        return self.vars[name]

    def _find_var_recursive(self, name):
        return self.vars.get(name)

    def all_parameters(self):
        return [var for var in self.vars.values() if var.is_parameter]


class PirProgramView:
    """A classic-Program-like view of `program`'s global block (see the module docstring).

    shapes: {view var name: shape} to use instead of the program's types (a concrete run's
    shapes); shadow: never write to the program (a view for counting only).
    """

    is_pir_view = True

    def __init__(self, program, shapes=None, shadow=False):
        if not is_pir_program(program):
            raise PruneError(f"expected a paddle.pir.Program, got {type(program).__name__}")
        self.program = program
        self.shadow = shadow
        self.runner = None  # (scope, executor) that run the program, for concrete_copy
        self.check_feeds = None  # feeds of concrete_copy: what check_types runs on
        self.known_mismatches = frozenset()  # value ids whose type disagreed before pruning
        self.block = _Block(self)
        self.shapes = {}
        self.name_of = {}  # pir Value id -> view name (Values hash by wrapper, ids are stable)
        self._vectors = {}  # vec Value id -> [element Values] (combine inputs / split outputs)
        self._constants = {}  # Value id -> python value of a full / full_int_array op
        self._vector_values = []  # (vec Value, [element Values])
        self._build()
        self.original_shapes = dict(self.shapes)
        if shapes:
            for name, shape in shapes.items():
                if name in self.shapes:
                    self.shapes[name] = tuple(shape)
            self.original_shapes = dict(self.shapes)

    def global_block(self):
        return self.block

    def runnable_clone(self):
        """(a clone of the program as this view says it, without its fetch ops; {view name:
        Value of the clone}): a program to run and fetch any value of by name. The view is
        committed first (idempotent: a restored view writes the restored types back)."""
        self.commit()
        clone = self.program.clone()
        names = PirProgramView(clone).name_of  # the same positions, so the same names
        values = {}
        for op in list(clone.global_block().ops):
            for value in op.results():
                if value.id in names:
                    values[names[value.id]] = value
            if op.name() == "pd_op.fetch":
                op.erase()
        return clone, values

    def concrete_copy(self, shapes, seed=0):
        """A shadow view with the shapes of one run at feed `shapes` ({feed: shape}; floats
        standard normal, integers ones) in `self.runner`; the unpruned program's own type
        disagreements on that run are kept in `known_mismatches`, the feeds in
        `check_feeds` (for `check_types` after pruning)."""
        import numpy as np
        from paddle.base.data_feeder import convert_dtype
        if self.runner is None:
            raise PruneError("concrete_copy needs view.runner = (scope, executor)")
        scope, executor = self.runner
        rng = np.random.default_rng(seed)
        feeds = {}
        for name, shape in shapes.items():
            dtype = np.dtype(convert_dtype(self.block.var(name).dtype))
            feeds[name] = rng.standard_normal(shape).astype(dtype) \
                if np.issubdtype(dtype, np.floating) else np.ones(shape, dtype)
        measured = runtime_shapes(self.program, scope, feeds, executor)
        self.check_feeds = feeds
        self.known_mismatches = frozenset(type_mismatches(self.program, feeds, measured))
        return PirProgramView(self.program, shadow=True, shapes={
            self.name_of[key]: shape for key, (_, shape) in measured.items()
            if key in self.name_of})

    def list_vars(self):
        return list(self.block.vars.values())

    def var_of(self, value):
        """The PirVar of a PIR value, or None."""
        name = self.name_of.get(value.id)
        return self.block.vars.get(name) if name else None

    # -- building
    def _build(self):
        ops = list(self.program.global_block().ops)
        for op in ops:
            name = op.name()
            attrs = op.attrs()
            if name == "builtin.parameter":
                self._add_var(op.result(0), attrs["parameter_name"], True, True)
            elif name in ("pd_op.data", "pd_op.feed"):  # feed: a translated program's input
                persistable = bool(_first(attrs.get("persistable", False)))
                self._add_var(op.result(0), attrs["name"], persistable)
            elif name == "builtin.combine":
                self._vectors[op.result(0).id] = list(op.operands_source())
                self._vector_values.append((op.result(0), self._vectors[op.result(0).id]))
            elif name == "builtin.split":
                self._vectors[op.operand_source(0).id] = list(op.results())
                self._vector_values.append((op.operand_source(0), list(op.results())))
            elif name in CONSTANT_OPS:
                self._constants[op.result(0).id] = attrs.get("value")
        for position, op in enumerate(ops):
            name = op.name()
            if name in HIDDEN_OPS:
                continue
            if name in CONSTANT_OPS and self._only_attribute_uses(op):
                continue
            self.block.ops.append(self._make_op(position, op))

    def _add_var(self, value, name, persistable=False, is_parameter=False):
        if name in self.block.vars:
            raise PruneError(f"two values of the PIR program are named '{name}'")
        self.name_of[value.id] = name
        self.block.vars[name] = PirVar(self, name, value, persistable, is_parameter)
        self.shapes[name] = tuple(int(d) for d in value.shape)
        return name

    def _value_name(self, value, default):
        if value.id in self.name_of:
            return self.name_of[value.id]
        producer = value.get_defining_op()
        persistable = bool(getattr(value, "persistable", False)) and \
            (producer is None or producer.name() != "pd_op.fetch")  # fetch results: not state
        return self._add_var(value, default, persistable)

    def _only_attribute_uses(self, op):
        """A constant op whose every reader takes it as an attribute operand."""
        users = op.result(0).all_used_ops()
        for user in users:
            op_type = classic_op_type(user.name())
            names = _operand_names(user)
            for index in range(user.num_operands()):
                if user.operand_source(index).is_same(op.result(0)):
                    pir_name = names[index] if index < len(names) else ""
                    if (op_type.removesuffix("_grad"), pir_name) not in ATTRIBUTE_OPERANDS:
                        return False
        return bool(users)

    def _make_op(self, position, op):
        op_type = classic_op_type(op.name())
        base = op.name().split(".", 1)[-1]
        inputs, attrs, operand_attrs = collections.OrderedDict(), {}, {}
        names = _operand_names(op)
        for index in range(op.num_operands()):
            value = op.operand_source(index)
            pir_name = names[index] if index < len(names) else f"operand{index}"
            if not value.initialized():
                continue
            attribute = ATTRIBUTE_OPERANDS.get((op_type.removesuffix("_grad"), pir_name))
            if attribute is not None:
                attr_name, tensor_slot = attribute
                if value.id in self._constants:
                    attrs[attr_name] = _as_attr(self._constants[value.id])
                    operand_attrs[attr_name] = index
                    continue
                inputs[tensor_slot] = [self._element_name(value, position, index)]
                continue
            slot = slot_name(op_type, pir_name)
            if value.id in self._vectors:
                inputs[slot] = [self._element_name(element, position, f"{index}_{i}")
                                for i, element in enumerate(self._vectors[value.id])]
            else:
                inputs[slot] = [self._element_name(value, position, index)]
        outputs = collections.OrderedDict()
        out_names = _result_names(op)
        for index, value in enumerate(op.results()):
            pir_name = out_names[index] if index < len(out_names) else f"out{index}"
            slot = slot_name(op_type, pir_name)
            default = f"{base}_{position}.{index}"
            if value.id in self._vectors:
                outputs[slot] = [self._value_name(element, f"{default}.{i}")
                                 for i, element in enumerate(self._vectors[value.id])]
            elif value.initialized() and value.is_dense_tensor_type():
                outputs[slot] = [self._value_name(value, default)]
        for key, value in op.attrs().items():
            if key in _SKIP_ATTRS:
                continue
            attrs[PIR_ATTR_NAMES.get(key, key)] = _as_attr(value)
        role = op.op_role
        attrs["op_role"] = role if role is not None and role >= 0 else None
        if attrs["op_role"] is None:
            del attrs["op_role"]
        return PirOp(self, op, op_type, inputs, outputs, attrs, operand_attrs)

    def _element_name(self, value, position, index):
        if value.id in self.name_of:
            return self.name_of[value.id]
        producer = value.get_defining_op()
        base = producer.name().split(".", 1)[-1] if producer is not None else "value"
        return self._value_name(value, f"{base}_in{position}.{index}")

    # -- writing back
    def commit(self):
        """Write the view's shapes and changed attributes into the PIR program (no-op for a
        shadow view). Returns the number of values whose type changed."""
        import paddle
        from paddle.base import libpaddle
        if self.shadow:
            return 0
        changed = 0
        for name, var in self.block.vars.items():
            shape = list(self.shapes[name])
            if list(var.value.shape) != shape:
                var.value.set_type(paddle.pir.create_shaped_type(var.value.type(), shape))
                changed += 1
        for vector, elements in self._vector_values:
            types = [element.type() for element in elements]
            vector.set_type(libpaddle.pir.create_vec_type(types))
        for op in self.block.ops:
            for name, value in list(op.changed_attrs.items()):
                self._commit_attr(op, name, value)
            op.changed_attrs.clear()
        self.original_shapes = dict(self.shapes)
        return changed

    def _commit_attr(self, op, name, value):
        if name in op._operand_attrs:
            _replace_constant_operand(self.program, op.op, op._operand_attrs[name], value)
        elif op.type == "fill_constant" and name == "shape":
            _rebuild_full(self.program, op, value)
        elif isinstance(value, bool) or not isinstance(value, int):
            raise PruneError(f"cannot write attribute '{name}' = {value!r} of PIR op "
                             f"{op.op.name()}")
        else:
            op.op.set_int_attr(name, int(value))


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) and value else value


def _as_attr(value):
    if isinstance(value, tuple):
        return list(value)
    return value


def _operand_names(op):
    try:
        return list(op.get_input_names())
    except (ValueError, RuntimeError):
        return []


def _result_names(op):
    try:
        return list(op.get_output_names())
    except (ValueError, RuntimeError):
        return []


def _replace_constant_operand(program, op, index, value):
    """Feed operand `index` of `op` from a new constant op holding `value` (built before
    `op`); the old constant op is erased when nothing else reads it."""
    import paddle
    old = op.operand_source(index)
    producer = old.get_defining_op()
    attrs = producer.attrs()
    with paddle.static.program_guard(program):
        paddle.pir.set_insertion_point(op)
        try:
            if producer.name() == "pd_op.full_int_array":
                new = paddle._C_ops.full_int_array(list(value), attrs["dtype"], attrs["place"])
            else:
                new = paddle._C_ops.full(list(old.shape), float(_first(value)), attrs["dtype"],
                                         attrs["place"])
        finally:
            paddle.pir.reset_insertion_point_to_end()
    new.stop_gradient = True
    op.operand(index).set_source(new)
    if old.use_empty():
        producer.erase()


def _rebuild_full(program, pir_op, shape):
    """A `full` (fill_constant) op rebuilt with `shape`, its readers moved to it."""
    import paddle
    op = pir_op.op
    attrs = op.attrs()
    with paddle.static.program_guard(program):
        paddle.pir.set_insertion_point(op)
        try:
            new = paddle._C_ops.full(list(shape), attrs["value"], attrs["dtype"], attrs["place"])
        finally:
            paddle.pir.reset_insertion_point_to_end()
    old = op.result(0)
    new.stop_gradient = old.stop_gradient
    old.replace_all_uses_with(new)
    view = pir_op.view
    name = view.name_of.pop(old.id)
    view.name_of[new.id] = name
    view.block.vars[name].value = new
    pir_op.op = new.get_defining_op()
    op.erase()


# ---------------------------------------------------------------- running and checking

def runtime_shapes(program, scope, feeds, executor=None):
    """{Value id: (Value, shape)} of every dense tensor value of `program`, from one run of a clone of
    `program` on `feeds` ({name: array}) with the parameters in `scope`."""
    import paddle
    executor = executor or paddle.static.Executor(paddle.CPUPlace())
    clone = program.clone()
    originals = list(program.global_block().ops)
    copies = list(clone.global_block().ops)
    if len(originals) != len(copies):
        raise AssertionError("a clone of the PIR program has another number of ops")
    for op in copies:
        if op.name() == "pd_op.fetch":
            op.erase()
    pairs, fetches = [], []
    with paddle.static.program_guard(clone):
        paddle.pir.set_insertion_point_to_block_end(clone.global_block())
        try:
            for original, copy in zip(originals, copies):
                if original.name() in ("pd_op.fetch",):
                    continue
                for value, copied in zip(original.results(), copy.results()):
                    if copied.initialized() and copied.is_dense_tensor_type():
                        pairs.append(value)
                        fetches.append(paddle.shape(copied))
        finally:
            paddle.pir.reset_insertion_point_to_end()
    with paddle.static.scope_guard(scope):
        shapes = executor.run(clone, feed=feeds, fetch_list=fetches)
    return {value.id: (value, tuple(int(d) for d in shape)) for value, shape in zip(pairs, shapes)}


def concrete_view(view, scope, feeds, executor=None):
    """A shadow view over `view.program` whose shapes are those of one run on `feeds`:
    every dim known, for counting FLOPs."""
    measured = runtime_shapes(view.program, scope, feeds, executor)
    shapes = {view.name_of[key]: shape for key, (_, shape) in measured.items()
              if key in view.name_of}
    return PirProgramView(view.program, shapes=shapes, shadow=True)


class TypeMismatchError(PruneError):
    """A PIR value's type does not say what flows through it (a stale rewrite)."""


def check_types(program, scope, feeds, executor=None, known=(), limit=5):
    """Run `program` on `feeds` and check every value: each static dim of its type equals
    the dim that flows, and PIR's shape inference (the symbolic shape pass on a copy with
    the feeds' shapes) gives the same shape. `known`: value ids that disagreed already
    before the rewrite (`type_mismatches` of the unpruned program; e.g. the rank-0 saved
    statistics of a translated batch_norm), not counted. Returns the number of values
    checked; raises TypeMismatchError listing the first `limit` new mismatches."""
    measured = runtime_shapes(program, scope, feeds, executor)
    problems = [text for key, text in type_mismatches(program, feeds, measured).items()
                if key not in known]
    if problems:
        raise TypeMismatchError(f"{len(problems)} PIR value(s) disagree with their type: "
                                + "; ".join(problems[:limit]))
    return len(measured)


def type_mismatches(program, feeds, measured):
    """{value id: what disagrees} for the values whose type or inferred shape differs from
    the `measured` shapes (`runtime_shapes` of `program` on `feeds`)."""
    problems = {}
    for key, (value, shape) in measured.items():
        declared = list(value.shape)
        if len(declared) != len(shape) or any(d >= 0 and d != s for d, s in zip(declared, shape)):
            problems[key] = f"{_describe_value(value)}: type {declared}, runs as {list(shape)}"
    for key, text in inferred_shapes_agree(program, feeds, measured).items():
        problems.setdefault(key, text)
    return problems


def inferred_shapes_agree(program, feeds, measured):
    """Mismatches between PIR's shape inference on a copy of `program` with static feed
    shapes and the `measured` shapes ({Value: shape}); [] when all agree."""
    import paddle
    from paddle.base import libpaddle
    originals = list(program.global_block().ops)
    if any(op.name().endswith(("_grad", "_grad_")) for op in originals):
        # backward and optimizer ops have no symbolic shape rules (the pass logs a warning
        # per op); the run's shapes checked their types
        return {}
    clone = program.clone()
    copies = list(clone.global_block().ops)
    for op in copies:
        if op.name() == "pd_op.data" and op.attrs()["name"] in feeds:
            value = op.result(0)
            shape = list(feeds[op.attrs()["name"]].shape)
            value.set_type(paddle.pir.create_shaped_type(value.type(), shape))
    manager = paddle.pir.PassManager()
    libpaddle.pir.infer_symbolic_shape_pass(manager, clone)
    manager.run(clone)
    analysis = libpaddle.pir.get_shape_constraint_ir_analysis(clone)
    problems = {}
    for original, copy in zip(originals, copies):
        for value, copied in zip(original.results(), copy.results()):
            if value.id not in measured:
                continue
            shape = list(measured[value.id][1])
            if original.name() == "pd_op.full" or 0 in shape:
                continue  # a fill value is no integer list; an empty tensor has no dims to infer
            data = [int(v) for v in original.attrs()["value"]] \
                if original.name() == "pd_op.full_int_array" else []
            try:
                same = analysis.get_shape_or_data_for_var(copied).is_equal(shape, data)
            except (ValueError, RuntimeError):
                same = True  # a symbolic dim the binding cannot compare; the run checked it
            if not same:
                problems[value.id] = (f"{_describe_value(value)}: shape inference disagrees "
                                      f"with {shape}")
    return problems


def _describe_value(value):
    producer = value.get_defining_op()
    return f"result of {producer.name() if producer is not None else '?'}"

