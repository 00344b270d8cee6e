"""The training engine: one loop (`Runner`) that calls hooks around epochs and iterations.

Everything that happens besides the training step is a hook (`HookBase`): the
strategies, the NaN guard, LR stepping, logging and VisualDL, evaluation and
checkpoints. compress.py, train.py and slim.pretrain all train through it.
"""
from slim.engine.hooks import HookBase  # noqa: F401
from slim.engine.runner import LoopState, Runner  # noqa: F401
