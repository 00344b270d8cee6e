"""The training engine: one loop (`Runner`) that calls hooks around epochs and iterations,
and what every loop needs.

    runner       Runner, LoopState
    hooks        HookBase, NanGuard, LRSchedule, TrainLogger
    programs     ProgramSet: train + eval programs with the optimizer and pruning plans
    optimizer    LearningRate, OptimizerBuilder config modules; --scale_lr
    distributed  device choice, fleet collective training, data shards
    evaluation   the eval loop, the config's metric, eval result files
    train_log    log lines (loss, lr, speed, ETA), VisualDL scalars, the NaN stop

Everything that happens besides the training step is a hook (`HookBase`): the
strategies, the NaN guard, LR stepping, logging and VisualDL, evaluation and
checkpoints. compress.py, train.py and `python -m slim pretrain` all train through it.

Imports: model, prune, data, metrics, io, config, errors; never strategies, runs or
commands.
"""
from slim.engine.hooks import HookBase  # noqa: F401
from slim.engine.runner import LoopState, Runner  # noqa: F401
