"""The masking reference: zero the removed channels instead of removing them.

Zeroing a removed channel's producing filters, its depthwise filters, batch
norm scale and offset, and biases makes that channel exactly 0 everywhere
(batch norm then outputs 0 * x_hat + 0; relu, leaky_relu, swish, hard_swish,
upsampling, pooling and sums keep 0), so every consumer reads zeros where the
pruned program has no channel at all. The unpruned program with masked
weights therefore computes what the pruned program computes, for models
whose activations map 0 to 0 (not sigmoid or hard_sigmoid). The exactness
tests rest on this.
"""
import numpy as np

from slim.prune.errors import PruneError
from slim.prune.graph import BN_OFFSET, BN_SCALE, DEPTHWISE_FILTER, FILTER, PARAM

MASKED_ROLES = (FILTER, DEPTHWISE_FILTER, BN_SCALE, BN_OFFSET, PARAM)


def zero_removed_channels(plan, graph, scope, place=None):
    """Set to zero, in `scope`, every removed channel of `plan` in the parameters that
    produce it (roles in MASKED_ROLES); shapes are unchanged. Returns the masked names."""
    import paddle
    masked = []
    for group_plan in plan.groups:
        group = graph.group_at(*group_plan.key)
        if group is None:
            raise PruneError(f"plan group '{group_plan.key[0]}' is not in this program")
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
