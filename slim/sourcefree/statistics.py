"""Per-channel statistics on calibration images, read by the data-aware criteria.

A group's channels are measured where their consumers read them: the input of every conv
whose weight reads the group (role INPUT_FILTER) and the X of every fc (mul / matmul)
whose weight rows belong to the group. That is after every bias, learned affine
(PP-LCNetV3's scalar adds), activation and concat on the way, so a channel whose filter
has a large norm but whose activation is always ~0 scores low, and a channel that is
constant but read with a large weight still scores what it carries. A group without such
readers (its channels are fetched, or only added) is measured at its producing convs'
outputs.

- activation: mean over images and positions of |x| of the channel, summed over readers.
- taylor: with L = <r, outputs> (r a random normal vector, each output scaled by its RMS
  so outputs count alike), the first-order change of L when channel c is removed is
  -sum over positions of a_c * dL/da_c; its square, averaged over images and over
  `projections` draws of r, estimates the squared change of the outputs
  E_r[(r . J a_c)^2] = ||J a_c||^2. Summed over readers before squaring (they lose the
  channel together).
"""
import dataclasses
import sys

import numpy as np

from slim.prune.graph import ACTIVATION, INPUT_FILTER
from slim.sourcefree.images import batches
from slim.sourcefree.programs import ProgramRunner, append_op, new_feed, reduce_all

KINDS = ("activation", "taylor")
FC_TYPES = ("mul", "matmul", "matmul_v2")
DEFAULT_PROJECTIONS = 2
TAYLOR_SEED = 0


def consumer_segments(graph, group):
    """The activation segments of `group` that convs and fcs read (see module docstring);
    the producing convs' outputs when there are none."""
    index = graph.index
    members = group.members
    input_filters = {m.var for m in group.members_with_role(INPUT_FILTER)}
    params = set(group.params)
    activations = [m for m in members if group.roles[m] == ACTIVATION and "@GRAD" not in m.var]
    by_var = {}
    for member in activations:
        by_var.setdefault(member.var, []).append(member)
    found = []
    for conv in index.convs:
        if conv.weight in input_filters and conv.kind != "depthwise":
            found.extend(m for m in by_var.get(conv.input, ()) if m.axis == 1)
    for op in index.ops:
        if op.type in FC_TYPES and op.var("Y") in params:
            found.extend(by_var.get(op.var("X"), ()))
    if not found:
        outputs = {conv.output for conv in index.convs if conv.weight in set(group.filter_params)}
        found = [m for m in activations if m.var in outputs] or activations
    unique = {(m.var, m.axis, m.start): m for m in found}
    return [unique[key] for key in sorted(unique)]


def _segment_rows(values, segment):
    """values [..., elements of the segment's axis] -> [..., segment.length] (blocks summed)."""
    first = segment.start * segment.block
    part = values[..., first: first + segment.length * segment.block]
    return part.reshape(part.shape[:-1] + (segment.length, segment.block)).sum(-1)


@dataclasses.dataclass
class ChannelStatistics:
    """Measured statistics: `activation[(var, axis)]` = mean |x| per element of the axis;
    `taylor[(var, axis)]` = per image and projection, sum of a * dL/da per element
    ([draws, elements]); `segments[group key]` = the segments that were measured."""
    activation: dict
    taylor: dict
    segments: dict
    images: int

    def scores(self, kind, group):
        """Importance per channel of `group` under `kind` ('activation' or 'taylor')."""
        from slim.prune.errors import PruneError
        segments = self.segments.get(group.key)
        if segments is None:
            raise PruneError(f"no {kind} statistics for the group of {group.key[0]}: measure "
                             "them on the program being pruned")
        if kind == "activation":
            return sum(_segment_rows(self.activation[(s.var, s.axis)], s) for s in segments)
        if kind == "taylor":
            if not self.taylor:
                raise PruneError("taylor statistics were not measured (kinds=('taylor',))")
            change = sum(_segment_rows(self.taylor[(s.var, s.axis)], s) for s in segments)
            return (np.asarray(change, np.float64) ** 2).mean(axis=0)
        raise PruneError(f"unknown statistic '{kind}'; known: {', '.join(KINDS)}")


def _reduce_abs(array, axis):
    """Mean |array| over every axis but `axis` -> [array.shape[axis]]."""
    moved = np.moveaxis(np.abs(np.asarray(array, np.float64)), axis, -1)
    return moved.reshape(-1, moved.shape[-1]).mean(axis=0)


def _per_sample_products(values, grads, axis):
    """sum over every axis but 0 (the batch) and `axis` of values * grads -> [n, elements]."""
    product = np.asarray(values, np.float64) * np.asarray(grads, np.float64)
    moved = np.moveaxis(product, axis, -1)
    return moved.reshape(moved.shape[0], -1, moved.shape[-1]).sum(axis=1)


def activation_statistics(model, scope, executor, samples, graph, groups=None,
                          kinds=KINDS, batch_size=4, projections=DEFAULT_PROJECTIONS,
                          seed=TAYLOR_SEED, progress=None):
    """ChannelStatistics of `model` (an InferenceModel whose params are in `scope`) over
    `samples` (slim.sourcefree.images.Sample list) for `groups` (default: every prunable
    group of `graph`). `kinds` chooses what is measured; taylor runs a backward pass."""
    groups = [g for g in graph.groups if g.prunable] if groups is None else groups
    segments = {group.key: consumer_segments(graph, group) for group in groups}
    slots = sorted({(s.var, s.axis) for found in segments.values() for s in found})
    names = sorted({var for var, _ in slots})
    runner = ProgramRunner(model.program, scope, executor, model.feed_names)
    fetch_names = [var.name for var in model.fetch_vars]
    sums = {slot: 0.0 for slot in slots}
    output_squares = {name: 0.0 for name in fetch_names}
    output_sizes = {name: 0 for name in fetch_names}
    count = 0
    progress = progress or _Progress(len(samples), "activation statistics")
    for batch in batches(samples, batch_size):
        arrays = runner.run(batch, names + fetch_names)
        values = dict(zip(names + fetch_names, arrays))
        for var, axis in slots:
            sums[(var, axis)] = sums[(var, axis)] + _reduce_abs(values[var], axis) * len(batch)
        for name in fetch_names:
            array = np.asarray(values[name], np.float64)
            output_squares[name] += float((array ** 2).sum())
            output_sizes[name] += array.size
        count += len(batch)
        progress.update(len(batch))
    progress.close()
    activation = {slot: total / max(count, 1) for slot, total in sums.items()}
    taylor = {}
    if "taylor" in kinds:
        rms = {name: max(np.sqrt(output_squares[name] / max(output_sizes[name], 1)), 1e-12)
               for name in fetch_names}
        taylor = _taylor_terms(runner, samples, slots, fetch_names, rms, batch_size,
                               projections, seed)
    return ChannelStatistics(activation, taylor, segments, count)


def _taylor_terms(runner, samples, slots, fetch_names, rms, batch_size, projections, seed):
    """{(var, axis): [draws, elements]} of sum of a * dL/da per image and projection."""
    import paddle
    program = runner.program.clone()
    block = program.global_block()
    names = sorted({var for var, _ in slots})
    with paddle.static.program_guard(program):
        projection_feeds = []
        terms = []
        for name in fetch_names:
            out = block.var(name)
            feed = new_feed(block, "slim_taylor_r", out.shape, out.dtype)
            projection_feeds.append(feed.name)
            product = append_op(block, "elementwise_mul", {"X": out, "Y": feed}, {"axis": -1})
            terms.append(reduce_all(block, product))
        loss = terms[0] if len(terms) == 1 else append_op(block, "sum", {"X": terms})
        grads = paddle.static.gradients([loss], [block.var(name) for name in names])
    grad_names = {name: grad.name for name, grad in zip(names, grads) if grad is not None}
    rng = np.random.default_rng(seed)
    terms = {slot: [] for slot in slots}
    progress = _Progress(len(samples) * projections, "taylor statistics")
    for batch in batches(samples, batch_size):
        shapes = None
        for _ in range(projections):
            if shapes is None:
                shapes = [np.asarray(a).shape for a in runner.run(batch, fetch_names)]
            extra = {feed: (rng.standard_normal(shape) / (rms[name] * np.sqrt(
                np.prod(shape[1:]) or 1))).astype(np.float32)
                for feed, name, shape in zip(projection_feeds, fetch_names, shapes)}
            wanted = names + [grad_names[n] for n in names if n in grad_names]
            arrays = dict(zip(wanted, runner.run(batch, wanted, program=program,
                                                 extra_feeds=extra)))
            for var, axis in slots:
                if var not in grad_names:  # the outputs do not depend on it
                    product = np.zeros((len(batch), np.asarray(arrays[var]).shape[axis]))
                else:
                    product = _per_sample_products(arrays[var], arrays[grad_names[var]], axis)
                terms[(var, axis)].append(product)
            progress.update(len(batch))
    progress.close()
    return {slot: np.concatenate(parts, axis=0) for slot, parts in terms.items()}


class _Progress:
    """A tqdm bar on stderr (quiet when stderr is not a terminal)."""

    def __init__(self, total, what):
        from tqdm import tqdm
        self.bar = tqdm(total=total, desc=what, unit="img", file=sys.stderr,
                        disable=not sys.stderr.isatty(), leave=False)

    def update(self, count):
        self.bar.update(count)

    def close(self):
        self.bar.close()
