"""Concrete shapes: every var of a program at given feed shapes, for counting FLOPs.

    counted = concrete_program(program, scope, {"x": [1, 3, 48, 320]})
    program_flops(counted)

An exported model's program declares unknown (-1) dims wherever the exporter allowed
any size: the batch axis, image height and width, and everything computed from them.
Compile-time shape inference, rerun after the feed shapes are put in, fills most of
them, but not a `reshape2` whose target shape comes from `shape` + `slice` ops at run
time (an attention block's `[N, heads, -1, dim]`). So the program is also run once, on
zeros at the feed shapes, and every var still unknown takes the shape it had in that
run. The batch axis keeps its declared value: FLOPs are counted per image.
"""
import numpy as np

from slim.prune.errors import PruneError

FEED_FETCH_OPS = ("feed", "fetch")
# Output slots that hold no data at run time (reshape2 / transpose2's XShape) or only
# exist in training.
_NO_DATA_SLOTS = ("XShape", "ReserveSpace")


def unknown_vars(program):
    """Names of the global block's dense tensors with an unknown dim besides axis 0."""
    from paddle.base import core
    dense = core.VarDesc.VarType.LOD_TENSOR
    names = []
    for desc in program.global_block().desc.all_vars():
        if desc.type() == dense and not desc.persistable() and \
                any(dim < 0 for dim in desc.shape()[1:]):
            names.append(desc.name())
    return names


def concrete_program(program, scope, feed_shapes, executor=None):
    """A clone of `program` in which every var has the shape it takes when the feeds have
    `feed_shapes` ({feed name: full shape, batch axis included}); the batch axis (0) keeps
    the declared -1. Compile-time inference first, then one run (on zeros for float feeds,
    ones for integer feeds, in `scope`, which must hold the parameters) for the vars still
    unknown. A PruneError when that run fails. A PIR view (slim.prune.pir) makes its own
    copy with the shapes of one run."""
    if hasattr(program, "concrete_copy"):
        return program.concrete_copy(feed_shapes)
    copy = program.clone()
    block = copy.global_block()
    changed = False
    for name, shape in feed_shapes.items():
        var = block.var(name)
        wanted = [var.shape[0]] + list(shape[1:]) if var.shape else []
        if list(var.shape) != wanted:
            var.desc.set_shape(wanted)
            changed = True
    if changed:
        try:
            for op in block.ops:
                if op.type not in FEED_FETCH_OPS:
                    op.desc.infer_shape(block.desc)
        except Exception as error:  # noqa: BLE001 - Paddle raises many types; one line
            raise _shape_error(feed_shapes, error) from None
    missing = [name for name in unknown_vars(copy) if _has_data(copy, name)]
    if missing:
        measured = run_shapes(program, scope, feed_shapes, missing, executor)
        for name, shape in measured.items():
            var = block.var(name)
            declared = list(var.shape)
            var.desc.set_shape([declared[0] if declared else shape[0]] + list(shape[1:]))
    return copy


def _has_data(program, name):
    """False for vars only written to slots that carry no data (XShape), or never written."""
    for op in program.global_block().ops:
        for slot in op.output_names:
            if slot not in _NO_DATA_SLOTS and name in op.output(slot):
                return True
    return False


def run_shapes(program, scope, feed_shapes, names, executor=None):
    """{name: shape} of the vars `names` in one run of `program` (its feed and fetch ops
    left out) with zeros (ones for integer feeds) at `feed_shapes`."""
    import paddle
    runnable = program.clone()
    block = runnable.global_block()
    for index in reversed(range(len(block.ops))):
        if block.ops[index].type in FEED_FETCH_OPS:
            block._remove_op(index)
    feeds = {}
    for name, shape in feed_shapes.items():
        dtype = _numpy_dtype(block.var(name).dtype)
        feeds[name] = (np.zeros if np.issubdtype(dtype, np.floating) else np.ones)(shape, dtype)
    executor = executor or paddle.static.Executor(paddle.CPUPlace())
    try:
        values = executor.run(runnable, feed=feeds, fetch_list=list(names), scope=scope,
                              return_numpy=False)
    except Exception as error:  # noqa: BLE001 - Paddle raises many types; one line
        raise _shape_error(feed_shapes, error) from None
    return {name: list(np.array(value).shape) for name, value in zip(names, values)}


def _shape_error(feed_shapes, error):
    """The one-line PruneError of a program that does not run at `feed_shapes`."""
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    detail = next((line for line in lines if not line.startswith("[")), type(error).__name__)
    return PruneError(f"cannot run the program once at feed shapes {feed_shapes} to learn its "
                      f"shapes: {detail[:300]}")


def _numpy_dtype(var_dtype):
    """The numpy dtype of a Paddle var dtype (classic VarType)."""
    import paddle
    from paddle.base import core
    types = core.VarDesc.VarType
    table = {types.FP32: np.float32, types.FP64: np.float64, types.FP16: np.float16,
             types.INT32: np.int32, types.INT64: np.int64, types.INT8: np.int8,
             types.UINT8: np.uint8, types.BOOL: np.bool_}
    if var_dtype in table:
        return np.dtype(table[var_dtype])
    return np.dtype(paddle.base.data_feeder.convert_dtype(var_dtype))
