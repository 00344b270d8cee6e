"""Paddle scopes that are freed when their work is done.

Paddle keeps every scope made by `paddle.static.Scope()` in a global pool until the
scope's `_remove_from_pool()` (2.6 and 3.x): dropping the Python object frees none of
its tensors. A process that makes a scope per piece of work (`slim latency-table`: one
per layer and channel count) grew by each one's weights. `temporary_scope()` frees its
scope on exit; use it only with executors that die with it (an executor caches prepared
programs under the scope's address, and a later scope can get the same address).
"""
import contextlib


@contextlib.contextmanager
def temporary_scope():
    """A new `paddle.static.Scope`, removed from Paddle's pool (its tensors freed) on exit."""
    from paddle.base import core

    # core.Scope is what paddle.static.Scope is; called directly, a wrapper of the latter
    # that frees the scopes it saw (the test suite's conftest) does not free this twice
    scope = core.Scope()
    try:
        yield scope
    finally:
        remove = getattr(scope, "_remove_from_pool", None)  # private: present in 2.6 and 3.x
        if remove is not None:
            remove()
