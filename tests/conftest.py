"""Shared test set-up: classic static IR before paddle, static mode, fixed seeds."""
import os
import sys

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


@pytest.fixture(autouse=True)
def _seeded():
    np.random.seed(0)
    paddle.seed(0)
    yield
