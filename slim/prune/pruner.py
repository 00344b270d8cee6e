"""Selection, ratios and planning: from `pruned_params` + a ratio to a PrunePlan.

    graph = analyze_program(train_program)
    plan = plan_pruning(train_program, scope, SEED_REGEX, target_ratio=0.5,
                        flops_program=eval_program)
    undo = apply_plan(plan, [train_program, eval_program], scope)

Selection (`pruned_params`): a regex matched in full against every conv
weight name, dots unescaped as users write them (the seed's form); a list of
such names/regexes; or `auto` for every prunable conv. Ratios: one `ratio`
for all groups, `ratios` per param (name or regex -> ratio), or a FLOPs
`target_ratio`, met within 0.5% of the FLOPs: the uniform ratio is searched,
then single groups' counts move a step at a time (greedy by the criterion)
where the uniform counts step past the target. At least one channel of
every group stays; `round_to` rounds kept channel counts to a multiple.
"""
import collections
import dataclasses
import re
import warnings

try:  # the regex parser: public as sre_parse before Python 3.11
    from re import _constants as sre_constants
    from re import _parser as sre_parse
except ImportError:  # pragma: no cover - Python < 3.11
    import sre_constants
    import sre_parse

import numpy as np

from slim.errors import did_you_mean
from slim.prune.apply import PruneUndo, attr_fixer_of, find_group
from slim.prune.criteria import get_criterion, group_importance, scope_reader
from slim.prune.errors import PruneError
from slim.prune.flops import program_flops
from slim.prune.graph import analyze_program, check_graph_options
from slim.prune.plan import GroupPlan, PrunePlan

AUTO = "auto"
FLOPS_TOLERANCE = 0.005  # a FLOPs target is met within 0.5% of the total FLOPs
ON_UNKNOWN_CHOICES = ("error", "skip")


class PruneWarning(UserWarning):
    """A matched parameter is left unpruned (fixed layout, or an op skipped on request)."""


@dataclasses.dataclass
class Selection:
    """The outcome of matching `pruned_params` against a program's conv weights.

    matched: selected conv weights that can be pruned, program order.
    groups: their distinct prunable channel groups, in graph order.
    skipped: matched conv weights left unpruned -> reason.
    """
    matched: list
    groups: list
    skipped: dict


def select_params(graph, pruned_params, on_unknown="error"):
    """Match `pruned_params` (regex, list of names/regexes, or 'auto') against the conv
    weights of `graph`; see the module docstring. Raises PruneError when nothing prunable
    matches, or (on_unknown='error') when a matched conv reaches an op without a rule."""
    if on_unknown not in ON_UNKNOWN_CHOICES:
        raise PruneError(f"on_unknown must be one of {', '.join(ON_UNKNOWN_CHOICES)}, "
                         f"got {on_unknown!r}")
    weights = list(dict.fromkeys(conv.weight for conv in graph.convs))
    auto = isinstance(pruned_params, str) and pruned_params.strip().lower() == AUTO
    if auto:
        candidates = weights
    else:
        candidates = _match(pruned_params, weights, graph.index.parameters)
    matched, skipped, groups, seen = [], {}, [], set()
    for weight in candidates:
        weight_groups = graph.output_groups(weight)
        prunable = [group for group in weight_groups if group.prunable]
        blocked = [group for group in weight_groups if not group.prunable]
        unknown = [group for group in blocked if group.unknown]
        if unknown and on_unknown == "error" and not auto:
            raise PruneError(f"cannot prune '{weight}': {unknown[0].unknown[0]} (register a rule "
                             "for it in slim.prune.ops, or set on_unknown: skip to leave such "
                             "channels unpruned)")
        if not prunable:
            reason = blocked[0].blocked_reason if blocked else "no channel group"
            skipped[weight] = reason
            continue
        matched.append(weight)
        for group in prunable:
            if group.id not in seen:
                seen.add(group.id)
                groups.append(group)
    if not matched:
        listing = "; ".join(f"{name}: {reason}" for name, reason in list(skipped.items())[:6])
        raise PruneError(f"pruned_params {_describe(pruned_params)} matches only unprunable conv "
                         f"weights ({listing}{' ...' if len(skipped) > 6 else ''})")
    if skipped and not auto:
        warnings.warn(f"{len(skipped)} matched conv weight(s) left unpruned: " +
                      "; ".join(f"{name} ({reason})" for name, reason in skipped.items()),
                      PruneWarning, stacklevel=2)
    groups.sort(key=lambda group: group.id)
    return Selection(matched, groups, skipped)


def _describe(pruned_params):
    text = repr(pruned_params)
    return text if len(text) <= 80 else text[:77] + "...'"


def _compile(pattern):
    try:
        compiled = re.compile(pattern)
    except re.error as error:
        raise PruneError(f"pruned_params: invalid regex {_describe(pattern)}: {error}") from None
    if _has_nested_repeat(sre_parse.parse(pattern)):
        raise PruneError(f"pruned_params: regex {_describe(pattern)} repeats a group that itself "
                         "repeats (like '(a*)*'), which can take exponential time to match; "
                         "simplify it or list the parameter names")
    return compiled


def _has_nested_repeat(parsed, inside_repeat=False):
    """True when an unbounded repeat (*, +, {n,}) sits inside another repeat: the shape of
    regexes whose matching time explodes (catastrophic backtracking) even on short names."""
    for op, value in parsed:
        if op in (sre_constants.MAX_REPEAT, sre_constants.MIN_REPEAT):
            low, high, body = value
            unbounded = high == sre_constants.MAXREPEAT
            if inside_repeat and unbounded:
                return True
            if _has_nested_repeat(body, inside_repeat or high > 1):
                return True
        elif op == sre_constants.SUBPATTERN:
            if _has_nested_repeat(value[-1], inside_repeat):
                return True
        elif op == sre_constants.BRANCH:
            if any(_has_nested_repeat(branch, inside_repeat) for branch in value[1]):
                return True
        elif op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
            if _has_nested_repeat(value[1], inside_repeat):
                return True
    return False


def _match(pruned_params, weights, parameters):
    """Conv weights fully matched by a regex or by any item of a list, program order."""
    if isinstance(pruned_params, str):
        patterns = [pruned_params]
    elif isinstance(pruned_params, (list, tuple)) and pruned_params and \
            all(isinstance(item, str) for item in pruned_params):
        patterns = list(pruned_params)
    else:
        raise PruneError(f"pruned_params must be a regex, a list of names or '{AUTO}', "
                         f"got {pruned_params!r}")
    compiled = [_compile(pattern) for pattern in patterns]
    matched = [w for w in weights if any(regex.fullmatch(w) for regex in compiled)]
    for pattern, regex in zip(patterns, compiled):
        if any(regex.fullmatch(w) for w in weights):
            continue
        other = sorted(name for name in parameters if regex.fullmatch(name))
        hint = did_you_mean(pattern, weights)
        if other:
            detail = ("it matches only parameters that are not conv weights "
                      f"({', '.join(other[:4])})")
        else:
            detail = f"conv weights are e.g. {', '.join(weights[:4])}"
        raise PruneError(f"pruned_params {_describe(pattern)} matches no conv weight of the "
                         f"program{hint}; {detail}")
    return matched


def keep_count(size, ratio, round_to=1):
    """Channels kept when `ratio` of `size` is removed: round(size * ratio) removed, at
    least one kept, then rounded to a multiple of `round_to` (never above `size`)."""
    kept = max(1, size - int(round(size * ratio)))
    if round_to and round_to > 1:
        kept = max(round_to, int(round(kept / round_to)) * round_to)
    return min(kept, size)


def kept_indices(scores, keep):
    """Indices of the `keep` highest scores, ascending (ties: the lower index is removed)."""
    order = np.argsort(np.asarray(scores), kind="stable")
    return sorted(int(i) for i in order[len(order) - keep:])


def _check_ratio(name, value, low_open=False):
    if not isinstance(value, (int, float)) or isinstance(value, bool) or \
            not (0 < value < 1 if low_open else 0 <= value < 1):
        bound = "(0, 1)" if low_open else "[0, 1)"
        raise PruneError(f"{name} must be a number in {bound}, got {value!r}")
    return float(value)


def _ratios_of_groups(selection, graph, ratios):
    """Per-group ratio from a {name or regex: ratio} mapping; one ratio per group."""
    compiled = [(_compile(pattern), _check_ratio(f"ratios[{pattern!r}]", value))
                for pattern, value in ratios.items()]
    result = {}
    for group in selection.groups:
        group_ratios = {}
        for weight in selection.matched:
            if group.id not in {g.id for g in graph.output_groups(weight)}:
                continue
            for regex, value in compiled:
                if regex.fullmatch(weight):
                    group_ratios[weight] = value
                    break
            else:
                raise PruneError(f"ratios: no entry matches the selected conv weight '{weight}'")
        if len(set(group_ratios.values())) > 1:
            raise PruneError(f"ratios: conv weights {sorted(group_ratios)} share channels (one "
                             f"group) but have different ratios {sorted(group_ratios.values())}")
        result[group.id] = next(iter(group_ratios.values()))
    return result


def plan_pruning(program, scope, pruned_params=None, *, ratio=None, ratios=None,
                 target_ratio=None, criterion="l1_norm", round_to=1, on_unknown="error",
                 flops_program=None, graph=None, fixed_vars=(), extra_ops=None,
                 statistics=None):
    """Plan which channels to prune; nothing is changed.

    program: the program to analyse (usually the train program).
    scope: holds the parameters the criterion scores.
    pruned_params: regex / list / 'auto' (see module docstring); may be omitted with `ratios`.
    ratio: fraction of every selected group's channels to remove.
    ratios: {conv weight name or regex: ratio}, per param.
    target_ratio: fraction of FLOPs to remove; the uniform ratio is searched, then single
        groups adjusted (`search_keeps`).
    criterion: 'l1_norm' (default), 'fpgm' or 'bn_scale'.
    round_to: keep channel counts at multiples of this.
    on_unknown: 'error' or 'skip' when a selected conv reaches an op without a rule.
    flops_program: the program whose FLOPs count (default `program`); a program with a
        static image shape, e.g. the eval program.
    graph: a ChannelGraph of `program`, if already built; it must have been built with
        the `fixed_vars` and `extra_ops` given here (a PruneError otherwise).
    fixed_vars: vars whose channel layout must stay (e.g. outputs the caller fetches).
    extra_ops: {op type: OpSpec} added to the op specs (rules, FLOPs counters) for this
        call only (see `slim.prune.op_specs`).
    statistics: per-channel statistics measured on images, for the data-aware criteria
        (`activation`, `taylor`): an object with `scores(kind, group)`, e.g.
        `slim.sourcefree.activation_statistics(...)`.
    """
    given = [name for name, value in (("ratio", ratio), ("ratios", ratios),
                                      ("target_ratio", target_ratio)) if value is not None]
    if len(given) != 1:
        raise PruneError(f"give exactly one of ratio, ratios, target_ratio (got "
                         f"{', '.join(given) or 'none'})")
    if not isinstance(round_to, int) or round_to < 1:
        raise PruneError(f"round_to must be a positive integer, got {round_to!r}")
    get_criterion(criterion)
    if pruned_params is None:
        if ratios is None:
            raise PruneError("pruned_params is required (a regex, a list of names, or 'auto')")
        pruned_params = list(ratios)
    if graph is None:
        graph = analyze_program(program, fixed_vars, extra_ops)
    else:
        check_graph_options(graph, fixed_vars, extra_ops)
    selection = select_params(graph, pruned_params, on_unknown)
    read_param = scope_reader(scope, statistics)
    scores = {group.id: group_importance(criterion, group, read_param)
              for group in selection.groups}
    uniform = None
    if ratios is not None:
        group_ratio = _ratios_of_groups(selection, graph, ratios)
        keeps = [keep_count(g.size, group_ratio[g.id], round_to) for g in selection.groups]
    elif ratio is not None:
        uniform = _check_ratio("ratio", ratio)
        keeps = [keep_count(g.size, uniform, round_to) for g in selection.groups]
    else:
        target = _check_ratio("target_ratio", target_ratio, low_open=True)
        counter = FlopsCounter(flops_program or program, selection.groups, round_to,
                               graph if flops_program is None else None, extra_ops)
        uniform, keeps = search_keeps(counter, target,
                                      [scores[g.id] for g in selection.groups])
    plans = [GroupPlan(group.key, group.params, group.size, kept_indices(scores[group.id], keep))
             for group, keep in zip(selection.groups, keeps)]
    return PrunePlan(plans, criterion, selection.matched, uniform,
                     float(target_ratio) if target_ratio is not None else None,
                     dict(selection.skipped))


class FlopsCounter:
    """FLOPs of a program with given groups pruned to given channel counts.

    Counting rewrites var shapes (and channel-counting attrs) of the program in place
    and restores them: no scope, no clone. The var -> group bookkeeping is done once,
    so a count costs little more than `program_flops` itself.
    """

    def __init__(self, program, groups, round_to=1, graph=None, extra_ops=None):
        self.program = program
        self.extra_ops = extra_ops
        self.graph = graph or analyze_program(program, extra_ops=extra_ops)
        self.sizes = [group.size for group in groups]
        self.round_to = round_to
        self.base = program_flops(program, extra_ops=extra_ops)
        counts = collections.defaultdict(collections.Counter)  # var -> (axis, group) -> n
        for position, group in enumerate(groups):
            probe = GroupPlan(group.key, group.params, group.size, [0])
            here = find_group(probe, self.graph)
            for member in here.members if here is not None else ():
                counts[member.var][(member.axis, position)] += member.block  # elements per channel
        block = program.global_block()
        self._vars = [(block.vars[name], tuple(block.vars[name].desc.shape()),
                       [(axis, position, n) for (axis, position), n in entries.items()])
                      for name, entries in counts.items() if name in block.vars]
        table = self.graph.index.table
        self._fixers = [(op, attr_fixer_of(op.type, table)) for op in block.ops
                        if attr_fixer_of(op.type, table) is not None and any(
                            name in counts for name in op.input_arg_names + op.output_arg_names)]

    def at_ratio(self, ratio):
        """FLOPs after removing `ratio` of every group's channels."""
        return self.at_keep([keep_count(size, ratio, self.round_to) for size in self.sizes])

    def at_keep(self, keeps):
        """FLOPs when group i keeps keeps[i] channels (the program is restored)."""
        removed = [size - keep for size, keep in zip(self.sizes, keeps)]
        undo, changes = PruneUndo(), {}
        try:
            for var, shape, entries in self._vars:
                new_shape = list(shape)
                for axis, position, count in entries:
                    new_shape[axis] -= removed[position] * count
                if new_shape != list(shape):
                    undo.record_shape(var, shape)
                    var.desc.set_shape(new_shape)
                    changes[var.name] = {axis: (shape[axis], new_shape[axis])
                                         for axis, _, _ in entries}
            for op, fixer in self._fixers:
                fixer(op, changes, undo)
            return program_flops(self.program, extra_ops=self.extra_ops)
        finally:
            undo.restore()


def search_keeps(counter, target_ratio, scores, tolerance=FLOPS_TOLERANCE):
    """(uniform ratio, [channels kept per group]) removing `target_ratio` of the FLOPs within
    `tolerance` of the total: the closest uniform ratio, then, when its channel counts step
    past the target (many groups of one size change at once), single groups' counts moved
    one `round_to` step at a time (`adjust_keeps`). A PruneError when neither gets there."""
    base = counter.base
    target = base * (1.0 - target_ratio)
    slack = tolerance * base
    ratio, flops = _closest_uniform_ratio(counter, target_ratio)
    keeps = [keep_count(size, ratio, counter.round_to) for size in counter.sizes]
    if abs(flops - target) > slack:
        keeps, flops = adjust_keeps(counter, keeps, flops, target, slack, scores)
    if abs(flops - target) > slack:
        raise PruneError(
            f"no channel counts remove {100 * target_ratio:.1f}% of the FLOPs within "
            f"{100 * tolerance:.1f}%: the closest removes {100.0 * (1 - flops / base):.2f}% "
            f"(round_to {counter.round_to}: every group moves in steps of {counter.round_to} "
            f"channel{'s' if counter.round_to > 1 else ''}; ask for that cut, a smaller "
            "round_to, or select more convs)")
    return ratio, keeps


def _importance_order(scores):
    """Scores sorted high to low, over their mean: the i-th is the (i+1)-th most important
    channel of its group, comparable across groups of different scales."""
    ordered = np.sort(np.asarray(scores, dtype=np.float64))[::-1]
    mean = float(np.abs(ordered).mean()) if len(ordered) else 0.0
    return ordered / mean if mean > 0 else ordered


def adjust_keeps(counter, keeps, flops, target, slack, scores):
    """Move single groups' kept counts by one `round_to` step until the FLOPs are within
    `slack` of `target`: when too many FLOPs remain, the group whose next channel to go is
    the least important (score over its group's mean) loses a step; when too few, the one
    whose best removed channel is the most important gets a step back; a step that does
    not bring the FLOPs closer is not taken (the next group in that order is tried).
    Returns (keeps, flops) as close as it got."""
    step = counter.round_to
    keeps, orders = list(keeps), [_importance_order(group) for group in scores]
    while abs(flops - target) > slack / 10:  # once within the band, a little closer if it can
        remove = flops > target
        candidates = []
        for position, (keep, size) in enumerate(zip(keeps, counter.sizes)):
            new = keep - step if remove else min(keep + step, size)
            if new < 1 or new == keep:
                continue
            # the channel that goes (remove) or comes back (restore): its importance
            importance = orders[position][keep - 1] if remove else orders[position][keep]
            candidates.append((importance if remove else -importance, position, new))
        best = None
        for _, position, new in sorted(candidates):
            trial = keeps[:position] + [new] + keeps[position + 1:]
            trial_flops = counter.at_keep(trial)
            if abs(trial_flops - target) < abs(flops - target):  # closer, on either side
                best = (trial, trial_flops)
                break
        if best is None:
            break
        keeps, flops = best
    return keeps, flops


def _closest_uniform_ratio(counter, target_ratio, max_steps=40, tolerance=FLOPS_TOLERANCE):
    """(ratio, its FLOPs): the bisected uniform ratio closest to removing `target_ratio`; a
    PruneError when even one channel per group keeps too many FLOPs."""
    base = counter.base
    target = base * (1.0 - target_ratio)
    slack = tolerance * base
    most_removed = counter.at_ratio(1.0)
    if most_removed > target + slack:
        raise PruneError(f"target_ratio {target_ratio} is out of reach: pruning the selected "
                         f"convs to one channel each removes only "
                         f"{100.0 * (1 - most_removed / base):.1f}% of the FLOPs (select more "
                         "convs, e.g. pruned_params auto)")
    low, high = 0.0, 1.0
    best_error, best_ratio, best_flops = abs(base - target), 0.0, base
    for _ in range(max_steps):
        middle = (low + high) / 2.0
        flops = counter.at_ratio(middle)
        error = abs(flops - target)
        if error < best_error:
            best_error, best_ratio, best_flops = error, middle, flops
        if flops > target:
            low = middle
        else:
            high = middle
        if high - low < 1e-5 or error < slack / 20:
            break
    return best_ratio, best_flops


def search_uniform_ratio(counter, target_ratio, tolerance=FLOPS_TOLERANCE, max_steps=40):
    """The uniform ratio whose pruned FLOPs are closest to removing `target_ratio` of the
    FLOPs; a PruneError when no ratio comes within `tolerance` of the total (`search_keeps`
    then also moves single groups)."""
    best_ratio, best_flops = _closest_uniform_ratio(counter, target_ratio, max_steps, tolerance)
    base = counter.base
    if abs(best_flops - base * (1.0 - target_ratio)) > tolerance * base:
        raise PruneError(f"no uniform ratio removes {100 * target_ratio:.1f}% of the FLOPs within "
                         f"{100 * tolerance:.1f}%: the closest, ratio {best_ratio:.4f}, removes "
                         f"{100.0 * (1 - best_flops / base):.2f}% (plan_pruning with target_ratio "
                         "also moves single groups' channel counts)")
    return best_ratio
