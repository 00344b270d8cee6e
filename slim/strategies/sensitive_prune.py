"""SensitivePruneStrategy: accepted in slim configs (the keys of PaddleSlim 1.x), refused at run time."""
from slim.errors import ConfigError
from slim.strategies.base import Strategy, register_strategy


@register_strategy
class SensitivePruneStrategy(Strategy):
    """Per-parameter ratios from measured sensitivities: not implemented yet, so building one
    stops the run with a clear message before any training starts."""

    def __init__(self, name, options, slim_config):
        raise ConfigError(
            f"{slim_config.path}: strategy '{name}': SensitivePruneStrategy is not implemented yet "
            "(its keys are accepted, the sensitivity analysis has not landed); use "
            "UniformPruneStrategy with target_ratio instead")
