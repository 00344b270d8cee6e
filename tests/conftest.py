"""Shared test set-up: classic static IR before paddle, static mode, fixed seeds."""
import gc
import os
import sys
import weakref

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

# isort: off
import slim  # noqa: E402,F401  (selects the classic IR before paddle is imported)
import numpy as np  # noqa: E402
import paddle  # noqa: E402
import pytest  # noqa: E402
# isort: on

paddle.enable_static()

# A scope made by paddle.static.Scope() lives in Paddle's global scope pool until
# _remove_from_pool(): dropping the Python object frees nothing (measured: a 100 MB
# parameter stays allocated per scope; the Paddle 3 suite grew past 18 GB). The scopes a
# test module makes (with those of the commands it runs in-process) are freed when it
# ends, after its fixtures: nothing uses them later. (Per test it costs a gc pass each.)
_POOLED_SCOPE = paddle.static.Scope
_MODULE_SCOPES = []


def _tracked_scope():
    scope = _POOLED_SCOPE()
    _MODULE_SCOPES.append(scope)
    return scope


paddle.static.Scope = _tracked_scope
# An executor caches each prepared program under the scope's address: a new scope at a
# freed one's address would run on the freed scope (a segfault, seen), so the caches of
# every live executor are cleared before scopes are freed.
_EXECUTORS = weakref.WeakSet()
_executor_init = paddle.static.Executor.__init__


def _tracked_executor_init(self, *args, **kwargs):
    _executor_init(self, *args, **kwargs)
    _EXECUTORS.add(self)


paddle.static.Executor.__init__ = _tracked_executor_init


def _free(scopes):
    if not scopes:
        return
    gc.collect()  # executors and programs that still point at the scopes go first
    for executor in list(_EXECUTORS):
        cache = executor._executor_cache
        cache.clear()  # the classic programs' cache; Paddle 3 keeps PIR programs apart
        pir_cache = getattr(cache, "_get_cached_program_and_executor_pir_mode", None)
        if pir_cache is not None:
            pir_cache.cache_clear()
    while scopes:
        scopes.pop()._remove_from_pool()


@pytest.fixture(autouse=True, scope="module")
def _scopes_freed_after_each_module():
    yield
    _free(_MODULE_SCOPES)


@pytest.fixture(autouse=True)
def _seeded():
    np.random.seed(0)
    paddle.seed(0)
    yield
