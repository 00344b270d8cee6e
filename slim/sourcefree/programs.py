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
        with paddle.static.scope_guard(self.scope):
            return self.executor.run(program or self.program, feed=feeds, fetch_list=list(names),
                                     return_numpy=True)

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
