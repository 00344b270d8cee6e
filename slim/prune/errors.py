"""Errors of the pruning engine."""
from slim.errors import UserError


class PruneError(UserError):
    """A pruning request cannot be met (nothing matched, unprunable params, unknown op,
    an unreachable FLOPs target, a plan that does not fit the program)."""
