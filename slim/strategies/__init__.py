"""Compression strategies: what happens to the model at which epoch.

A strategy is built from its slim-config entry (`slim.config.slim_config`) by
the class named in its `class` key, looked up in `STRATEGY_CLASSES`, and is
called by the driver at the start of every epoch. Adding one is one file plus
one `register_strategy` line.

    UniformPruneStrategy     prune every matched conv by one ratio that removes
                             target_ratio of the FLOPs, at start_epoch
    DistillationStrategy     the pruned model learns from a frozen copy of the model as
                             it was at start_epoch (or teacher_weights) while fine-tuning
    SensitivePruneStrategy   per-group ratios from measured sensitivities (the least
                             predicted metric loss) removing target_ratio of the FLOPs
"""
from slim.strategies.base import (  # noqa: F401
                                  STRATEGY_CLASSES,
                                  Strategy,
                                  StrategyContext,
                                  build_strategies,
                                  register_strategy,
                                  resolve_metric_name,
)
from slim.strategies.distillation import DistillationStrategy  # noqa: F401
from slim.strategies.sensitive_prune import SensitivePruneStrategy  # noqa: F401
from slim.strategies.uniform_prune import UniformPruneStrategy  # noqa: F401
