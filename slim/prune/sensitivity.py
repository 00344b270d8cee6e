"""Sensitivity analysis: how much the metric drops when one channel group alone is pruned,
and the per-group ratios that meet a FLOPs target with the least predicted drop.

    groups = selected_groups(train_program, "auto")              # [(name, ChannelGroup)]
    plan = plan_keeps(train_program, scope, "auto", {name: 5})   # that group alone, 5 kept
    metric = evaluate_masked(plan, eval_graph, scope, evaluate)  # as if pruned; scope restored

    curves = {"conv2_1_sep_weights": {0.1: 0.0, 0.2: 0.004, ...}, ...}  # loss per ratio
    ratios, threshold, removed = search_ratios_by_loss(curves, removed_fraction, 0.5)

Measuring uses the masking reference (`slim.prune.masking`): the removed channels are
zeroed in the scope, so the unpruned program computes what the pruned one would, and
the tensors are put back afterwards; no program is rebuilt.

The search is PaddleSlim's "ratios by loss": for a loss threshold t, every group takes the
largest ratio whose loss, linearly interpolated between measured ratios (and 0 at ratio
0), stays <= t, i.e. up to the first point where its curve rises above t; t is bisected
until the FLOPs removed meet the target. A loss below 0 (pruning raised the metric on the
eval subset, noise) counts as 0, and every loss gains TIE_SLOPE * ratio so that groups
whose losses tie (e.g. all 0) are pruned by the same ratio instead of all or nothing.
"""
import numpy as np

from slim.prune.criteria import group_importance, scope_reader
from slim.prune.errors import PruneError
from slim.prune.graph import analyze_program
from slim.prune.masking import MASKED_ROLES, zero_removed_channels
from slim.prune.plan import GroupPlan, PrunePlan
from slim.prune.pruner import FLOPS_TOLERANCE, FlopsCounter, keep_count, kept_indices, select_params

TIE_SLOPE = 1e-6  # loss added per unit of ratio: orders tied losses, far below any mAP step
RATIO_DECIMALS = 6


def sensitivity_ratios(delta_rate):
    """delta_rate, 2 * delta_rate, ... below 1 (rounded to 6 decimals): 0.1 -> 0.1 .. 0.9."""
    if not isinstance(delta_rate, (int, float)) or isinstance(delta_rate, bool) or \
            not 0 < delta_rate < 1:
        raise PruneError(f"delta_rate must be a number in (0, 1), got {delta_rate!r}")
    ratios, step = [], 1
    while step * delta_rate < 1 - 10 ** -RATIO_DECIMALS:
        ratios.append(round(step * delta_rate, RATIO_DECIMALS))
        step += 1
    return ratios


def ratio_key(ratio):
    """The text a ratio is stored under in a JSON file: 0.30000000000000004 -> '0.3'."""
    return format(round(float(ratio), RATIO_DECIMALS), "g")


def group_name(group):
    """A group's name in sensitivity files and tables: its first producing conv weight,
    with ':axis:start' when the group is not that weight's whole first axis."""
    var, axis, start = group.key
    return var if (axis, start) == (0, 0) else f"{var}:{axis}:{start}"


def selected_groups(program, pruned_params, graph=None):
    """[(name, ChannelGroup)] of the prunable groups `pruned_params` selects in `program`
    (see `slim.prune.pruner.select_params`), in graph order."""
    graph = graph or analyze_program(program)
    return [(group_name(group), group) for group in select_params(graph, pruned_params).groups]


def plan_keeps(program, scope, pruned_params, keeps, criterion="l1_norm", graph=None,
               target_ratio=None):
    """A PrunePlan in which each group named in `keeps` ({group name: channels kept}) keeps
    its `keeps[name]` most important channels under `criterion`; other groups stay whole
    and are not in the plan. A name not selected by `pruned_params` is a PruneError."""
    graph = graph or analyze_program(program)
    selection = select_params(graph, pruned_params)
    groups = {group_name(group): group for group in selection.groups}
    unknown = sorted(set(keeps) - set(groups))
    if unknown:
        raise PruneError(f"no selected channel group is named {unknown[0]!r} (groups: "
                         f"{', '.join(sorted(groups)[:6])}{' ...' if len(groups) > 6 else ''})")
    read_param = scope_reader(scope)
    plans, matched = [], []
    for name, group in groups.items():
        if name not in keeps:
            continue
        keep = int(keeps[name])
        if not 1 <= keep <= group.size:
            raise PruneError(f"group {name!r}: cannot keep {keep} of {group.size} channels")
        scores = group_importance(criterion, group, read_param)
        plans.append(GroupPlan(group.key, group.params, group.size, kept_indices(scores, keep)))
        matched.extend(w for w in group.filter_params if w in selection.matched)
    return PrunePlan(plans, criterion, list(dict.fromkeys(matched)), None, target_ratio,
                     dict(selection.skipped))


def evaluate_masked(plan, graph, scope, evaluate, place=None):
    """`evaluate()` with the removed channels of `plan` zeroed in `scope` (the unpruned
    program then computes what the pruned one would); every tensor it zeroed is put back,
    also when evaluate raises. `graph` is a ChannelGraph of the evaluated program."""
    saved = _saved_tensors(plan, graph, scope)
    try:
        zero_removed_channels(plan, graph, scope, place, strict=False)
        return evaluate()
    finally:
        _restore_tensors(saved, scope, place)


def _saved_tensors(plan, graph, scope):
    """{var: copy of its value} of every tensor `zero_removed_channels` may change."""
    saved = {}
    for group_plan in plan.groups:
        group = graph.group_at(*group_plan.key)
        if group is None:
            raise PruneError(f"plan group '{group_plan.key[0]}' is not in this program")
        for member in group.members_with_role(*MASKED_ROLES):
            if member.var not in saved:
                saved[member.var] = np.array(scope.find_var(member.var).get_tensor())
    return saved


def _restore_tensors(saved, scope, place=None):
    import paddle
    for name, value in saved.items():
        scope.find_var(name).get_tensor().set(value, place or paddle.CPUPlace())


def removed_flops_fraction(flops_program, groups):
    """`removed(ratios) -> fraction of the FLOPs of `flops_program` removed` when each of
    `groups` ([(name, ChannelGroup)]) loses ratios[name] of its channels (absent: 0)."""
    counter = FlopsCounter(flops_program, [group for _, group in groups])

    def removed(ratios):
        keeps = [keep_count(group.size, ratios.get(name, 0.0)) for name, group in groups]
        return 1.0 - counter.at_keep(keeps) / counter.base
    return removed


def _effective_points(curve):
    """[(ratio, loss)] of `curve` ({ratio: loss}) sorted, from (0, 0), losses clipped at 0
    and raised by TIE_SLOPE * ratio (see the module docstring)."""
    points = sorted((float(ratio), float(loss)) for ratio, loss in curve.items())
    return [(0.0, 0.0)] + [(ratio, max(loss, 0.0) + TIE_SLOPE * ratio) for ratio, loss in points]


def ratio_for_loss(curve, threshold):
    """The largest ratio of `curve` ({ratio: loss}) whose loss stays <= `threshold` up to
    it, interpolating linearly between measured ratios; the last ratio when it never rises
    above `threshold`."""
    points = _effective_points(curve)
    previous_ratio, previous_loss = points[0]
    for ratio, loss in points[1:]:
        if loss > threshold:
            share = (threshold - previous_loss) / (loss - previous_loss)
            return previous_ratio + max(0.0, share) * (ratio - previous_ratio)
        previous_ratio, previous_loss = ratio, loss
    return previous_ratio


def ratios_for_loss(curves, threshold):
    """{group: ratio_for_loss(curve, threshold)} for curves {group: {ratio: loss}}."""
    return {name: ratio_for_loss(curve, threshold) for name, curve in curves.items()}


def search_ratios_by_loss(curves, removed, target_ratio, tolerance=FLOPS_TOLERANCE,
                          max_steps=60):
    """(ratios, threshold, fraction removed): the per-group ratios of the loss threshold
    whose FLOPs removed (`removed(ratios)`, a fraction of the total) come closest to
    `target_ratio`. PruneError when even the largest measured ratios fall short, or when no
    threshold comes within `tolerance`."""
    if not curves or not all(curves.values()):
        raise PruneError("no sensitivity curve to search (no group, or a group without losses)")
    low, high = 0.0, max(loss for curve in curves.values() for _, loss in _effective_points(curve))
    most = removed(ratios_for_loss(curves, high))
    if most < target_ratio - tolerance:
        raise PruneError(f"target_ratio {target_ratio} is out of reach: pruning every group to "
                         f"its largest measured ratio removes only {100 * most:.1f}% of the FLOPs")
    high_removed, low_removed = most, removed(ratios_for_loss(curves, low))
    for _ in range(max_steps):  # removed() grows with the threshold: keep low < target <= high
        if high_removed < target_ratio or low_removed >= target_ratio:
            break
        middle = (low + high) / 2.0
        middle_removed = removed(ratios_for_loss(curves, middle))
        if middle_removed >= target_ratio:
            high, high_removed = middle, middle_removed
        else:
            low, low_removed = middle, middle_removed
    threshold, fraction = min(((high, high_removed), (low, low_removed)),
                              key=lambda item: abs(item[1] - target_ratio))
    if abs(fraction - target_ratio) > tolerance:
        raise PruneError(f"no loss threshold removes {100 * target_ratio:.1f}% of the FLOPs within "
                         f"{100 * tolerance:.1f}%: the closest removes {100 * fraction:.2f}%")
    return ratios_for_loss(curves, threshold), threshold, fraction
