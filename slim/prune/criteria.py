"""Channel importance criteria, registered by name: l1_norm, fpgm, bn_scale, and the
data-aware activation and taylor.

A criterion scores every channel of a group from the parameters in the scope;
the lowest-scored channels are pruned. Scores are summed over the group's
members of the kind the criterion reads: the conv filters that produce the
channels (l1_norm, fpgm; two summed convs add up), or the batch norm scales
(bn_scale). With one producing conv, l1_norm is exactly the seed's (and
PaddleSlim's) L1 norm of each filter.
"""
import numpy as np

from slim.prune.errors import PruneError
from slim.prune.graph import BN_SCALE
from slim.registry import Registry

# name -> criterion(group, read_param) -> scores [group.size]; filled at import
CRITERIA = Registry("pruning criterion", error=PruneError)


def register_criterion(name):
    """Decorator: `criterion(group, read_param)` -> importance per channel (higher = keep)."""
    return CRITERIA.register(name)


def get_criterion(name):
    """The criterion called `name`; a PruneError naming the known ones otherwise."""
    return CRITERIA.get(name)


class ScopeReader:
    """read_param(name) -> numpy array of the tensor `name` in `scope`; `statistics`
    (None, or an object with `scores(kind, group)`) for the data-aware criteria."""

    def __init__(self, scope, statistics=None):
        self.scope = scope
        self.statistics = statistics

    def __call__(self, name):
        var = self.scope.find_var(name)
        if var is None or not var.get_tensor()._is_initialized():
            raise PruneError(f"parameter '{name}' is not initialized in the scope: run the "
                             "startup program or load weights before planning")
        return np.array(var.get_tensor())


def scope_reader(scope, statistics=None):
    """A ScopeReader of `scope` (and of `statistics`, for the data-aware criteria)."""
    return ScopeReader(scope, statistics)


def _statistic_scores(kind, group, read_param):
    statistics = getattr(read_param, "statistics", None)
    if statistics is None:
        raise PruneError(f"criterion {kind} is data-aware: it needs calibration images "
                         "(python -m slim prune --images DIR; in Python, plan_pruning(..., "
                         "statistics=slim.sourcefree.activation_statistics(...)))")
    return statistics.scores(kind, group)


def _channel_rows(value, axis):
    """`value` as [channels of `axis`, everything else] (a view when axis is 0)."""
    return np.moveaxis(value, axis, 0).reshape(value.shape[axis], -1)


def _per_filter_scores(group, read_param, score_rows):
    """Sum over the group's producing conv filters of score_rows(rows of one conv)."""
    filters = group.filters
    if not filters:
        raise PruneError(f"group of {group.key[0]} has no conv filters to score")
    total = np.zeros(group.size)
    scored = {}
    for segment in filters:
        if (segment.var, segment.axis) not in scored:
            rows = _channel_rows(read_param(segment.var), segment.axis)
            scored[(segment.var, segment.axis)] = score_rows(rows)
        total += scored[(segment.var, segment.axis)][segment.start: segment.start + segment.length]
    return total


def _l1_rows(rows):
    return np.abs(rows).sum(axis=1, dtype=np.float64)


def _geometric_median_rows(rows):
    rows = rows.astype(np.float64)
    squared = (rows ** 2).sum(axis=1)
    distances = squared[:, None] + squared[None, :] - 2.0 * rows @ rows.T
    return np.sqrt(np.maximum(distances, 0.0)).sum(axis=1)


@register_criterion("l1_norm")
def l1_norm(group, read_param):
    """Sum of |w| of each channel's filters (summed over the producing convs)."""
    return _per_filter_scores(group, read_param, _l1_rows)


@register_criterion("fpgm")
def fpgm(group, read_param):
    """Filter pruning via geometric median: the summed distance of a filter to the
    other filters of its conv; filters near the median (small sum) are redundant."""
    return _per_filter_scores(group, read_param, _geometric_median_rows)


@register_criterion("bn_scale")
def bn_scale(group, read_param):
    """|gamma| of the batch norms on the channels (network slimming)."""
    scales = group.members_with_role(BN_SCALE)
    if not scales:
        raise PruneError(f"criterion bn_scale needs a batch norm on the channels, and those of "
                         f"'{group.key[0]}' have none (a batch norm folded into its conv at export, "
                         "or a squeeze-excite conv): use criterion l1_norm or fpgm, or "
                         "activation with calibration images")
    return sum(np.abs(read_param(s.var)[s.start: s.start + s.length]).astype(np.float64)
               for s in scales)


@register_criterion("activation")
def activation(group, read_param):
    """Mean |activation| of each channel over the calibration images, as the convs / fcs
    that read the channels see it (after every bias, learned affine and activation on the
    way), summed over those readers."""
    return _statistic_scores("activation", group, read_param)


@register_criterion("taylor")
def taylor(group, read_param):
    """First-order Taylor importance: the mean over images of (sum of a * dL/da over the
    channel's positions)^2, with L a random projection of the model's outputs, so the score
    estimates the squared change of the outputs when the channel is removed."""
    return _statistic_scores("taylor", group, read_param)


def group_importance(criterion, group, read_param):
    """Scores [group.size] of `group` under the criterion named `criterion`."""
    scores = np.asarray(get_criterion(criterion)(group, read_param), dtype=np.float64)
    if scores.shape != (group.size,):
        raise AssertionError(f"criterion {criterion} returned shape {scores.shape} for a group "
                             f"of {group.size}")
    return scores
