"""The masking reference: zero the removed channels where they are read, instead of
removing them.

A removed channel is zeroed in the weights that READ it: the input-channel slice of
every conv filter that consumes it (axis 1; a transposed conv's axis 0) and the rows of
every fully connected weight that contracts it. What happens to the channel on its way
there (batch norm, a learned per-tensor bias as PP-LCNetV3 adds after each conv,
sigmoid, hard_sigmoid, a squeeze-excite product, upsampling, pooling, concat) then does
not matter: no consumer sees it, so the unpruned program with masked weights computes
what the pruned program computes, whatever the activations do with zero. (Zeroing at
the producers, the filters that make the channel, is valid only when every op on the
way maps 0 to 0; a `[1]` bias or a sigmoid does not.) The exactness tests rest on this.

Zeroed readers cover every consumer that mixes channels with a weight. A consumer that
mixes them without one (a reduction over the channel axis) would still see the
channel: `masking_blockers` names such ops, and `zero_removed_channels` refuses them
unless asked not to (the sensitivity analysis, which only estimates, tolerates it).
"""
import numpy as np

from slim.prune.errors import PruneError
from slim.prune.flops import is_forward_role
from slim.prune.graph import ACTIVATION, INPUT_FILTER, INPUT_WEIGHT

MASKED_ROLES = (INPUT_FILTER, INPUT_WEIGHT)
# Ops that read only a tensor's shape, never its values.
SHAPE_READERS = ("shape", "shape64", "size")


def _groups_of(plan, graph):
    for group_plan in plan.groups:
        group = graph.group_at(*group_plan.key)
        if group is None:
            raise PruneError(f"plan group '{group_plan.key[0]}' is not in this program")
        yield group_plan, group


def masking_blockers(plan, graph):
    """Reasons the masking reference cannot stand in for pruning `plan`: forward ops that
    read a pruned group's activations and neither carry the channels on (an output in the
    group) nor read them through a weight of the group, nor only read shapes. Empty when
    the reference is exact."""
    index = graph.index
    reasons = []
    for _, group in _groups_of(plan, graph):
        in_group = {member.var for member in group.members}
        for member in group.members:
            if group.roles[member] != ACTIVATION:
                continue
            for op_index in index.readers.get(member.var, ()):
                op = index.ops[op_index]
                if not is_forward_role(op.attr("op_role")) or op.type in SHAPE_READERS:
                    continue
                names = [name for names in op.slots.values() for name in names]
                if any(name != member.var and name in in_group for name in names):
                    continue  # the channels go on in the group, or a zeroed weight reads them
                reason = (f"{op.describe()} reads the channels of group '{group.key[0]}' "
                          f"('{member.var}') without a weight that could mask them")
                if reason not in reasons:
                    reasons.append(reason)
    return reasons


def zero_removed_channels(plan, graph, scope, place=None, strict=True):
    """Set to zero, in `scope`, every removed channel of `plan` in the weights that read it
    (roles in MASKED_ROLES); shapes are unchanged. Returns the masked names. With `strict`,
    a PruneError when an op reads the channels without a weight (`masking_blockers`)."""
    import paddle
    if strict:
        blockers = masking_blockers(plan, graph)
        if blockers:
            raise PruneError(f"the masking reference is not exact for this plan: {blockers[0]}")
    masked = []
    for group_plan, group in _groups_of(plan, graph):
        removed = np.asarray(group_plan.removed, dtype=np.int64)
        for member in group.members_with_role(*MASKED_ROLES):
            tensor = scope.find_var(member.var).get_tensor()
            value = np.array(tensor)
            index = [slice(None)] * value.ndim
            index[member.axis] = member.element_indices(removed)
            value[tuple(index)] = 0
            tensor.set(value, place or paddle.CPUPlace())
            masked.append(member.var)
    return sorted(set(masked))
