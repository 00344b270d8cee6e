"""Latency tables and pruning to a latency target (HALP's latency-saliency knapsack).

    layers = conv_layers(eval_program, graph)          # each conv with its fused neighbours
    table = LatencyTable.load("table.json")           # measured by `python -m slim latency-table`
    model = LatencyModel(layers, selection_groups, table, "paddle-onednn", threads=1)
    keeps = choose_keeps(model, losses, target_ms=0.5 * model.predict_ms(model.full_keeps()))

A *layer* is one conv op of a program with the ops a runtime fuses into it (a batch_norm or
a bias add, then an activation); its *shape key* names everything but the channel counts
(op, input size, kernel, strides, paddings, dilations, depthwise or not, fused ops). The
table holds, per runtime context (`runtime|tTHREADS`) and shape key, the median ms of that
layer at each measured (input channels, output channels) pair, measured on a grid of
channel counts (`channel_grid`), so a rerun measures only what is missing. A model's
whole latency is predicted from the sum of its layers as fixed_ms + scale * sum: the ops
that are not convs (and what the runtime does between ops) cost a part that stays and a
part that shrinks with the channels; both are fitted once per model from whole-model runs.

Pruning to a latency target: each selected channel group may keep one of its grid counts
(the counts the table measured). Starting from the unpruned model, `choose_keeps`
repeatedly lowers the group count whose importance loss per predicted ms saved is least
(and, once one step reaches the target, takes the cheapest such step); a count whose
layers are not faster than a larger count is never chosen (snapping to where the runtime
is fast). Pure Python and numpy: measuring is done above (slim.workflow.latency_table).
"""
import dataclasses
import itertools
import json
import os

import numpy as np

from slim.errors import UserError, shorten
from slim.prune.apply import find_group
from slim.prune.plan import GroupPlan, PrunePlan
from slim.prune.pruner import kept_indices

TABLE_FORMAT = "slim-latency-table"
TABLE_VERSION = 1
RUNTIMES = ("paddle", "paddle-onednn", "onnxruntime")
DEFAULT_RUNTIME = "paddle-onednn"
DEFAULT_GRID = (1.0, 0.75, 0.5, 0.25)  # fractions of a group's channels the table measures
DEFAULT_STEP = 8                        # grid counts are multiples of this (or the full size)
CONV_TYPES = ("conv2d", "depthwise_conv2d")
NORMALIZERS = ("batch_norm",)
BIAS_ADDS = ("elementwise_add",)
ACTIVATIONS = ("relu", "relu6", "leaky_relu", "swish", "hard_swish", "sigmoid", "hard_sigmoid",
               "tanh", "mish", "silu", "gelu")


class LatencyTableError(UserError):
    """A latency table that cannot be read, or lacks what a prediction needs."""


@dataclasses.dataclass(frozen=True)
class ConvLayer:
    """One conv op and its fused neighbours, with what the channel counts come from.

    in_segments / out_segments: (group id or None, channels, block) for every segment of
    the conv input's / output's channel axis (None: a part no selected group prunes).
    fused: ((op type, attrs), ...) of the batch_norm / bias add and activation after it.
    """
    weight: str
    op_type: str
    in_channels: int
    out_channels: int
    height: int
    width: int
    kernel: tuple
    strides: tuple
    paddings: tuple
    dilations: tuple
    depthwise: bool
    multiplier: int          # depthwise: output channels per input channel
    fused: tuple
    in_segments: tuple
    out_segments: tuple

    @property
    def shape_key(self):
        """Everything but the channel counts; the table's key of this layer."""
        fused = "+".join(f"{kind}{''.join(f'_{k}{v}' for k, v in attrs)}"
                         for kind, attrs in self.fused) or "none"
        groups = f"dw{self.multiplier}" if self.depthwise else "g1"
        return (f"{self.op_type}|{self.height}x{self.width}|k{'x'.join(map(str, self.kernel))}"
                f"|s{'x'.join(map(str, self.strides))}|p{'x'.join(map(str, self.paddings))}"
                f"|d{'x'.join(map(str, self.dilations))}|{groups}|{fused}")

    def counts(self, keeps):
        """(input channels, output channels) when group g keeps keeps[g] channels."""
        def total(segments):
            return sum((keeps.get(group, length) if group is not None else length) * block
                       for group, length, block in segments)
        cin = total(self.in_segments)
        cout = cin * self.multiplier if self.depthwise else total(self.out_segments)
        return cin, cout

    @property
    def groups(self):
        """Ids of the selected groups this layer's channel counts depend on."""
        return {group for group, _, _ in self.in_segments + self.out_segments
                if group is not None}


def channel_grid(size, fractions=DEFAULT_GRID, step=DEFAULT_STEP):
    """The channel counts measured for a group of `size`: `size` itself and, for each
    fraction f, f * size rounded to a multiple of `step` (at least `step`, at most size)."""
    counts = {int(size)}
    for fraction in fractions:
        count = int(round(size * fraction / step)) * step if step > 1 else int(round(size * fraction))
        counts.add(min(int(size), max(step, count, 1)))
    return sorted(counts)


def _single_reader(block_ops, readers, var):
    found = readers.get(var, [])
    return block_ops[found[0]] if len(found) == 1 else None


def conv_layers(program, graph, group_ids=None):
    """The ConvLayers of `program` (static shapes, batch 1) in op order. `graph` is its
    ChannelGraph; `group_ids` maps the ids of the graph's groups to the ids the caller
    uses (default: the graph's own ids); groups not in it count as unpruned."""
    block = program.global_block()
    ops = list(block.ops)
    readers = {}
    for index, op in enumerate(ops):
        for name in op.input_arg_names:
            readers.setdefault(name, []).append(index)
    layers = []
    for op in ops:
        if op.type not in CONV_TYPES:
            continue
        x, weight = op.input("Input")[0], op.input("Filter")[0]
        x_shape, w_shape = list(block.var(x).shape), list(block.var(weight).shape)
        groups = int(op.attr("groups") or 1)
        cin, cout = int(x_shape[1]), int(w_shape[0])
        depthwise = groups == cin and groups > 1
        if groups > 1 and not depthwise:
            continue  # grouped convs are not pruned by channel here; the remainder holds them
        fused, out = [], op.output("Output")[0]
        reader = _single_reader(ops, readers, out)
        if reader is not None and (reader.type in NORMALIZERS or (
                reader.type in BIAS_ADDS and reader.input("X")[0] == out
                and block.var(reader.input("Y")[0]).persistable)):
            fused.append((reader.type, ()))
            out = reader.output("Y" if reader.type in NORMALIZERS else "Out")[0]
            reader = _single_reader(ops, readers, out)
        if reader is not None and reader.type in ACTIVATIONS:
            attrs = (("alpha", round(float(reader.attr("alpha")), 4)),) \
                if reader.type == "leaky_relu" else ()
            fused.append((reader.type, attrs))

        def segments(var, axis, size):
            found = graph.segments(var, axis)
            if not found:
                return ((None, size, 1),)
            result = []
            for segment in found:
                group = graph.group_at(segment.var, segment.axis, segment.start)
                gid = None if group is None else group.id
                if gid is not None and group_ids is not None:
                    gid = group_ids.get(gid)
                result.append((gid, segment.length, segment.block))
            return tuple(result)
        paddings = [int(p) for p in op.attr("paddings")]
        layers.append(ConvLayer(
            weight=weight, op_type=op.type, in_channels=cin, out_channels=cout,
            height=int(x_shape[2]), width=int(x_shape[3]), kernel=(int(w_shape[2]), int(w_shape[3])),
            strides=tuple(int(s) for s in op.attr("strides")), paddings=tuple(paddings),
            dilations=tuple(int(d) for d in op.attr("dilations")), depthwise=depthwise,
            multiplier=cout // cin if depthwise else 1, fused=tuple(fused),
            in_segments=segments(x, 1, cin), out_segments=segments(weight, 0, cout)))
    return layers


def layer_grid(layer, candidates):
    """The (cin, cout) pairs the table measures for `layer`, given each selected group's
    candidate counts ({group id: [counts]}): every combination of the input's and the
    output's grid counts (segments of several groups move together, by grid position)."""
    def axis_counts(segments):
        options = []
        for group, length, block in segments:
            counts = candidates.get(group, [length]) if group is not None else [length]
            options.append(sorted(count * block for count in counts))
        depth = max(len(option) for option in options)
        # the segments of one axis (a concat's inputs) are taken at the same grid position,
        # counted from the full size down
        return sorted({sum(option[max(len(option) - 1 - i, 0)] for option in options)
                       for i in range(depth)})
    cins = axis_counts(layer.in_segments)
    if layer.depthwise:
        return [(c, c * layer.multiplier) for c in cins]
    return list(itertools.product(cins, axis_counts(layer.out_segments)))


def context_key(runtime, threads):
    """The table's key of a runtime and thread count."""
    return f"{runtime}|t{int(threads)}"


class LatencyTable:
    """Measured layer latencies and model remainders (JSON). entries[context][shape key]
    [f"{cin}x{cout}"] = {"ms", "p10", "p90", "n"}; models[context][signature] = the model's
    whole-run measurement, remainder and check."""

    def __init__(self, entries=None, models=None, path=None):
        self.entries = entries or {}
        self.models = models or {}
        self.path = path

    @classmethod
    def load(cls, path, missing_ok=False):
        """The table at `path`; an empty one when it does not exist and `missing_ok`."""
        if not os.path.exists(path):
            if missing_ok:
                return cls(path=path)
            raise LatencyTableError(f"latency table '{shorten(path)}' does not exist; measure "
                                    "it with `python -m slim latency-table ... --out "
                                    f"{shorten(path, 60)}`")
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except (OSError, ValueError) as error:
            raise LatencyTableError(f"latency table '{shorten(path)}' is not readable JSON: "
                                    f"{shorten(str(error), 120)}") from None
        if not isinstance(data, dict) or data.get("format") != TABLE_FORMAT or \
                data.get("version") != TABLE_VERSION or not isinstance(data.get("entries"), dict) \
                or not isinstance(data.get("models", {}), dict):
            raise LatencyTableError(f"latency table '{shorten(path)}' is not a {TABLE_FORMAT} "
                                    f"version {TABLE_VERSION} file (written by `python -m slim "
                                    "latency-table`)")
        return cls(data["entries"], data.get("models", {}), path)

    def to_dict(self):
        return {"format": TABLE_FORMAT, "version": TABLE_VERSION, "entries": self.entries,
                "models": self.models}

    def get(self, context, shape_key, cin, cout):
        """The measured record of one layer at (cin, cout), or None."""
        return self.entries.get(context, {}).get(shape_key, {}).get(f"{cin}x{cout}")

    def put(self, context, shape_key, cin, cout, record):
        self.entries.setdefault(context, {}).setdefault(shape_key, {})[f"{cin}x{cout}"] = record

    def missing(self, context, layers, candidates):
        """[(layer, cin, cout)] of the grid not measured yet, each (shape key, pair) once."""
        seen, result = set(), []
        for layer in layers:
            for cin, cout in layer_grid(layer, candidates):
                key = (layer.shape_key, cin, cout)
                if key not in seen and self.get(context, layer.shape_key, cin, cout) is None:
                    seen.add(key)
                    result.append((layer, cin, cout))
        return result

    def layer_ms(self, context, layer, cin, cout):
        """The layer's ms at (cin, cout): the measured median, or bilinear interpolation
        between the measured pairs around it (clamped to the measured range)."""
        record = self.get(context, layer.shape_key, cin, cout)
        if record is not None:
            return float(record["ms"])
        measured = {}
        for pair, value in self.entries.get(context, {}).get(layer.shape_key, {}).items():
            a, b = pair.split("x")
            measured[(int(a), int(b))] = float(value["ms"])
        if not measured:
            raise LatencyTableError(
                f"latency table{'' if self.path is None else ' ' + repr(shorten(self.path))} "
                f"has no {context} entry for layer {layer.weight} ({layer.shape_key}); measure "
                "it with `python -m slim latency-table` for this model, runtime and threads")
        if layer.depthwise:
            points = sorted(measured)
            xs = [p[0] for p in points]
            return float(np.interp(cin, xs, [measured[p] for p in points]))
        cins = sorted({a for a, _ in measured})
        couts = sorted({b for _, b in measured})
        grid = np.full((len(cins), len(couts)), np.nan)
        for (a, b), value in measured.items():
            grid[cins.index(a), couts.index(b)] = value
        if np.isnan(grid).any():  # not a full grid: the nearest measured pair, scaled by MACs
            (a, b), value = min(measured.items(),
                                key=lambda item: abs(item[0][0] - cin) + abs(item[0][1] - cout))
            return value * (cin * cout) / float(a * b)
        along_cout = [np.interp(cout, couts, grid[i]) for i in range(len(cins))]
        return float(np.interp(cin, cins, along_cout))


def model_signature(layers):
    """A short id of a model's conv layers (shape keys, which hold the input sizes, and full
    channel counts): the same architecture at the same input size has the same signature in
    any program built from it (eval program, exported model)."""
    import hashlib
    text = json.dumps(sorted([layer.shape_key, layer.in_channels, layer.out_channels]
                             for layer in layers))
    return hashlib.sha1(text.encode("utf-8")).hexdigest()[:16]


class LatencyModel:
    """Predicted latency of one model on one runtime from a table: the layers' ms at the
    counts a choice of per-group keeps gives, plus the model's measured remainder."""

    def __init__(self, layers, sizes, table, runtime, threads, candidates, fixed_ms=0.0,
                 scale=1.0):
        self.layers = layers
        self.sizes = dict(sizes)  # group id -> channels
        self.table = table
        self.context = context_key(runtime, threads)
        self.candidates = candidates
        self.fixed_ms, self.scale = float(fixed_ms), float(scale)
        self.layers_of_group = {group: [i for i, layer in enumerate(layers)
                                        if group in layer.groups] for group in self.sizes}
        self._cache = {}

    def full_keeps(self):
        return dict(self.sizes)

    def layer_ms(self, index, keeps):
        layer = self.layers[index]
        cin, cout = layer.counts(keeps)
        key = (index, cin, cout)
        if key not in self._cache:
            self._cache[key] = self.table.layer_ms(self.context, layer, cin, cout)
        return self._cache[key]

    def layers_ms(self, keeps):
        """The sum of the layers' ms at `keeps`."""
        return sum(self.layer_ms(i, keeps) for i in range(len(self.layers)))

    def predict_ms(self, keeps):
        """Whole-model ms at `keeps`: fixed_ms + scale * the layers' sum (the model's fit of
        its other ops, slim.workflow.latency_table.check_model)."""
        return self.fixed_ms + self.scale * self.layers_ms(keeps)

    def delta_ms(self, keeps, group, count):
        """Change of the predicted ms when `group` keeps `count` instead of keeps[group]."""
        trial = dict(keeps)
        trial[group] = count
        return self.scale * sum(self.layer_ms(i, trial) - self.layer_ms(i, keeps)
                                for i in self.layers_of_group[group])


def importance_losses(scores):
    """{group: function(count) -> loss}: the fraction of the group's importance (scores
    normalised to sum 1) removed when the `count` most important channels stay."""
    return {group: _removed_importance(values) for group, values in scores.items()}


def _removed_importance(values):
    values = np.sort(np.abs(np.asarray(values, dtype=np.float64)))
    total = values.sum()
    shares = values / total if total > 0 else np.full(len(values), 1.0 / len(values))
    cumulative = np.concatenate([[0.0], np.cumsum(shares)])
    size = len(values)
    return lambda count: float(cumulative[size - int(count)])


def sensitivity_losses(sizes, sensitivities):
    """{group: function(count) -> loss} from a sensitivities mapping {group: {ratio: loss}}
    (the metric lost when that fraction of the group's channels goes), interpolated."""
    losses = {}
    for group, size in sizes.items():
        points = sorted((float(r), float(v)) for r, v in sensitivities.get(group, {}).items())
        points = [(0.0, 0.0)] + [p for p in points if p[0] > 0]
        xs, ys = [p[0] for p in points], [p[1] for p in points]
        losses[group] = (lambda count, xs=xs, ys=ys, size=size:
                         float(np.interp(1.0 - count / size, xs, ys)))
    return losses


def choose_keeps(model, losses, target_ms):
    """Per-group channel counts (each one of the group's candidates) predicted to run in
    at most `target_ms`, chosen greedily with the least importance loss: every step lowers
    one group to a smaller candidate, the one with the least loss per ms saved; when that
    step would reach the target, the least-loss step that reaches it ends the search. Steps that
    save no time are never taken, so counts stay where the runtime is fast. Returns
    (keeps, predicted ms); a LatencyTableError when the smallest counts miss the target."""
    keeps = model.full_keeps()
    current = model.predict_ms(keeps)
    while current > target_ms + 1e-9:
        best, finishing = None, None
        for group, counts in model.candidates.items():
            here = losses[group](keeps[group])
            for count in counts:
                if count >= keeps[group]:
                    continue
                saved = -model.delta_ms(keeps, group, count)
                if saved <= 1e-9:
                    continue
                lost = max(losses[group](count) - here, 0.0)
                ends = current - saved <= target_ms + 1e-9
                if ends and (finishing is None or lost < finishing[0]):
                    finishing = (lost, group, count, saved)
                if best is None or lost / saved < best[0]:
                    best = (lost / saved, group, count, saved, ends)
        # the best step by loss per ms; once it would reach the target, the least-loss step
        # that reaches it ends the search
        step = finishing if best is not None and best[4] else (best and best[:4])
        if step is None:
            raise LatencyTableError(
                f"the latency target {target_ms:.2f} ms is out of reach: the smallest channel "
                f"counts of the table's grid give {current:.2f} ms (measure a finer or lower "
                "grid, or select more params)")
        _, group, count, saved = step
        keeps[group] = count
        current -= saved
    return keeps, current


def plan_from_keeps(selection, scores, keeps, criterion, target=None):
    """The PrunePlan keeping keeps[group.id] channels of every selected group (the highest
    scoring ones); `target` is recorded as the plan's target_ratio (None for latency)."""
    plans = []
    for group in selection.groups:
        kept = kept_indices(scores[group.id], int(keeps.get(group.id, group.size)))
        plans.append(GroupPlan(group.key, group.params, group.size, kept))
    return PrunePlan(plans, criterion, selection.matched, None, target, dict(selection.skipped))


def mapped_group_ids(selection, graph):
    """{id of the group in `graph`: id of the selection's group} for the selection's groups
    (made on another program of the same model, e.g. the train program)."""
    result = {}
    for group in selection.groups:
        probe = GroupPlan(group.key, group.params, group.size, [0])
        found = find_group(probe, graph)
        if found is not None:
            result[found.id] = group.id
    return result


@dataclasses.dataclass
class LatencyTarget:
    """A latency target: `ratio` of the unpruned model's predicted ms, or `ms`; on `runtime`
    with `threads`, predicted from the table at `table` (a path)."""
    table: str
    runtime: str = DEFAULT_RUNTIME
    threads: int = 1
    ratio: object = None
    ms: object = None

    def check(self, where="latency target"):
        """One-line errors for a bad target (before any work)."""
        given = [name for name in ("ratio", "ms") if getattr(self, name) is not None]
        if len(given) != 1:
            raise LatencyTableError(f"{where}: give one of target_latency_ratio, "
                                    f"target_latency_ms (got {', '.join(given) or 'none'})")
        if self.ratio is not None and not 0 < float(self.ratio) < 1:
            raise LatencyTableError(f"{where}: target_latency_ratio must be in (0, 1) (the "
                                    f"pruned model's predicted ms over the unpruned one's), "
                                    f"got {self.ratio:g}")
        if self.ms is not None and not float(self.ms) > 0:
            raise LatencyTableError(f"{where}: target_latency_ms must be > 0, got {self.ms:g}")
        if self.runtime not in RUNTIMES:
            raise LatencyTableError(f"{where}: runtime '{shorten(str(self.runtime), 40)}' is not "
                                    f"one of {', '.join(RUNTIMES)}")
        if not isinstance(self.threads, int) or self.threads < 1:
            raise LatencyTableError(f"{where}: threads must be >= 1, got {self.threads!r}")
        return self

    def describe(self):
        goal = f"{self.ratio:g}x the predicted ms" if self.ratio is not None else \
            f"{self.ms:g} ms"
        return f"{goal} on {self.runtime}, {self.threads} thread(s)"


def _group_name(group):
    from slim.prune.sensitivity import group_name
    return group_name(group)


def model_fit(table, layers, context):
    """The table's whole-model record of the model of `layers` on `context`; a one-line
    error saying how to measure it when there is none."""
    record = table.models.get(context, {}).get(model_signature(layers))
    if record is None:
        known = len(table.models.get(context, {}))
        raise LatencyTableError(
            f"latency table '{shorten(str(table.path))}' has no whole-model fit of this model "
            f"({len(layers)} conv layers at its input size) on {context} ({known} other "
            "model(s) there): run `python -m slim latency-table` on this model, runtime, "
            "threads and input size with this --out first")
    return record


def plan_for_latency(program, scope, pruned_params, target, *, flops_program, criterion="l1_norm",
                     graph=None, flops_graph=None, on_unknown="error", statistics=None,
                     sensitivities=None):
    """(PrunePlan, summary) meeting the LatencyTarget `target` with the least importance
    loss (choose_keeps): per-group counts from the table's grid, channels kept by
    `criterion`; the loss of a count is the fraction of the group's criterion scores
    removed, or with `sensitivities` ({group name (slim.prune.sensitivity.group_name):
    {ratio: metric loss}}, a sensitivities file's curves) the metric lost.

    program: the program the plan is for (train or inference); flops_program: one with the
    static input size the latency is for (the eval program, or a concrete-shape copy);
    graph / flops_graph: their ChannelGraphs if already built. summary: predicted ms before
    and after, the target ms, the counts per group and the model's fit."""
    from slim.prune.criteria import group_importance, scope_reader
    from slim.prune.graph import analyze_program
    from slim.prune.pruner import select_params
    target.check()
    table = LatencyTable.load(target.table)
    graph = graph if graph is not None else analyze_program(program)
    selection = select_params(graph, pruned_params, on_unknown)
    if flops_graph is None:
        flops_graph = graph if flops_program is program else analyze_program(flops_program)
    ids = mapped_group_ids(selection, flops_graph)
    layers = conv_layers(flops_program, flops_graph, ids)
    context = context_key(target.runtime, target.threads)
    fit = model_fit(table, layers, context)
    grid = tuple(fit.get("grid", DEFAULT_GRID))
    step = int(fit.get("step", DEFAULT_STEP))
    sizes = {group.id: group.size for group in selection.groups}
    candidates = {group: channel_grid(size, grid, step) for group, size in sizes.items()}
    model = LatencyModel(layers, sizes, table, target.runtime, target.threads, candidates,
                         fit["fixed_ms"], fit["scale"])
    read = scope_reader(scope, statistics)
    scores = {group.id: group_importance(criterion, group, read) for group in selection.groups}
    if sensitivities is not None:
        from slim.prune.sensitivity import group_name
        losses = sensitivity_losses(sizes, {group.id: sensitivities.get(group_name(group), {})
                                            for group in selection.groups})
    else:
        losses = importance_losses(scores)
    before = model.predict_ms(model.full_keeps())
    target_ms = float(target.ms) if target.ms is not None else float(target.ratio) * before
    keeps, after = choose_keeps(model, losses, target_ms)
    plan = plan_from_keeps(selection, scores, keeps, criterion)
    summary = {"runtime": target.runtime, "threads": target.threads, "table": target.table,
               "target_latency_ratio": target.ratio, "target_latency_ms": target.ms,
               "target_ms": round(target_ms, 5), "predicted_before_ms": round(before, 5),
               "predicted_after_ms": round(after, 5),
               "predicted_speedup": round(before / after, 5) if after > 0 else None,
               "fit": {"fixed_ms": fit["fixed_ms"], "scale": fit["scale"],
                       "check_error": fit.get("check", {}).get("error")},
               "grid": list(grid), "step": step,
               "keeps": {_group_name(group): [int(keeps[group.id]), group.size]
                         for group in selection.groups}}
    return plan, summary
