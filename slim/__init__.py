"""slim: filter pruning for PaddlePaddle static-graph object detectors.

Importing this package selects Paddle's classic static IR (ProgramDesc) on
every Paddle line before paddle itself is imported; see `slim.paddle_env`.
"""
from slim import paddle_env as _paddle_env

_paddle_env.select_classic_ir()

__version__ = "0.1.0"
