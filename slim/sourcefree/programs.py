"""Running a loaded inference program on calibration images, fetching any of its vars."""
import numpy as np

from slim.sourcefree.images import batches, feeds_of

FEED_FETCH = ("feed", "fetch")


def forward_clone(program):
    """A clone of the inference `program` without its feed / fetch ops (the Executor adds
    its own for whatever is fetched) and with every non-persistable var differentiable."""
    clone = program.clone()
    block = clone.global_block()
    for index in reversed(range(len(block.ops))):
        if block.ops[index].type in FEED_FETCH:
            block._remove_op(index)
    for var in block.vars.values():
        if not var.persistable:
            var.stop_gradient = False
    clone._sync_with_cpp()
    return clone


def feed_dtypes(program, feed_names):
    """{feed: (numpy dtype name, ndim)} of the program's feeds."""
    from slim.io.weights import numpy_dtype
    block = program.global_block()
    return {name: (np.dtype(numpy_dtype(block.var(name).dtype)).name, len(block.var(name).shape))
            for name in feed_names}


class ProgramRunner:
    """Runs one program in one scope on batches of samples and returns fetched arrays."""

    def __init__(self, program, scope, executor, feed_names):
        self._values = None  # a PIR view's program: {name: Value} to fetch by name
        if getattr(program, "is_pir_view", False):
            self.program, self._values = program.runnable_clone()
        else:
            self.program = forward_clone(program)
        self.scope = scope
        self.executor = executor
        self.feed_names = list(feed_names)
        self.dtypes = feed_dtypes(program, feed_names)

    def feeds(self, samples):
        return feeds_of(samples, self.feed_names, self.dtypes)

    def run(self, samples, names, program=None, extra_feeds=None):
        """[arrays of `names`] for one batch of same-shaped samples."""
        import paddle
        feeds = self.feeds(samples)
        feeds.update(extra_feeds or {})
        fetches = list(names) if self._values is None else [self._values[n] for n in names]
        with paddle.static.scope_guard(self.scope):
            # use_prune: only the ops the fetched vars need run (an early layer's input
            # costs a fraction of the whole model); classic programs only
            return self.executor.run(program or self.program, feed=feeds, fetch_list=fetches,
                                     return_numpy=True,
                                     use_prune=program is None and self._values is None)

    def outputs(self, samples, names, batch_size=8):
        """{name: [one array per sample]} over all `samples` (batched by shape)."""
        position = {id(sample): index for index, sample in enumerate(samples)}
        result = {name: [None] * len(samples) for name in names}
        for batch in batches(samples, batch_size):
            arrays = self.run(batch, names)
            for name, array in zip(names, arrays):
                for sample, row in zip(batch, np.asarray(array)):
                    result[name][position[id(sample)]] = row
        return result


def fresh_name(block, base):
    """A var name of `base` that `block` does not have (loaded programs already hold
    names such as tmp_0, which Paddle's own name generator would hand out again)."""
    index = 0
    while block.has_var(f"{base}_{index}"):
        index += 1
    return f"{base}_{index}"


def append_op(block, op_type, inputs, attrs=None, base="slim_sf"):
    """Append `op_type` (inputs {slot: var}, output slot Out) with a freshly named float
    output; returns the output var."""
    first = next(iter(inputs.values()))
    out = block.create_var(name=fresh_name(block, base), dtype=first.dtype,
                           stop_gradient=False)
    block.append_op(type=op_type, inputs={slot: [var] for slot, var in inputs.items()},
                    outputs={"Out": [out]}, attrs=attrs or {})
    return out


def reduce_all(block, value, op_type="reduce_sum"):
    """The classic `op_type` over every element of `value` (Paddle 3's paddle.sum and
    paddle.mean build PIR programs only)."""
    return append_op(block, op_type, {"X": value},
                     {"dim": [0], "keep_dim": False, "reduce_all": True})


def new_feed(block, base, shape, dtype):
    """A freshly named data var (fed by the Executor)."""
    return block.create_var(name=fresh_name(block, base), shape=list(shape), dtype=dtype,
                            stop_gradient=True, is_data=True, need_check_feed=False)
