"""The strategy interface, the registry of strategy classes, and building them from a slim config."""
import dataclasses

from slim.engine.hooks import HookBase
from slim.errors import ConfigError, did_you_mean
from slim.registry import Registry

# class name in the slim config -> Strategy subclass; filled at import time
STRATEGY_CLASSES = Registry("strategy class", error=ConfigError)

# Names that mean "the detection metric" in a detection run. The seed's slim config says
# acc_top1 (a classification metric PaddleSlim 1.x defaulted to); it maps here with a warning.
DETECTION_METRIC_ALIASES = ("mAP", "map", "box_ap", "bbox_map", "VOC", "COCO")
CLASSIFICATION_METRICS = ("acc_top1", "acc_top5", "top1", "top5", "accuracy")


def register_strategy(cls):
    """Class decorator: make `cls` the implementation of slim-config class `cls.__name__`."""
    STRATEGY_CLASSES.add(cls.__name__, cls)
    return cls


@dataclasses.dataclass
class StrategyContext:
    """What a strategy may look at and change when it fires.

    Attributes:
        epoch: the epoch about to start.
        programs: the driver's ProgramSet (train / eval programs, rebuilt after pruning).
        scope: the scope holding every parameter and optimizer accumulator.
        log: print-like function for one-line messages (rank 0 only).
        executor: the executor that runs the programs.
        evaluate: `evaluate(fraction=1.0)` runs the eval program on the eval set (its first
            `fraction` of batches) and returns the metric (mAP, 0..1); None where the run
            has no eval set (ranks other than 0).
        world_size: ranks of the run; on several, a strategy must not do on one rank
            what the others would wait for (e.g. measure sensitivities on rank 0).
    """
    epoch: int
    programs: object
    scope: object
    log: object = print
    executor: object = None
    evaluate: object = None
    world_size: int = 1


class Strategy(HookBase):
    """Base class: `name` (its key in the slim config), `start_epoch`, and the hooks.

    A strategy is a hook of the training loop (`slim.engine.HookBase`: it may override
    any hook point, e.g. `build_train_program` to add to the train program before the
    optimizer is built). By default:
    `validate(context)` is called once before the first iteration, on every rank (a dry
    run that changes nothing), so a config the strategy cannot meet fails before any
    training: every precondition (files complete and readable, an eval set where one is
    needed) is checked there, the same way on every rank.
    `on_epoch_begin(context)` returns a JSON-able record when it changed the model
    (e.g. a pruning plan), which the driver stores in the next checkpoint so a
    resumed run replays it; None otherwise. What the strategy has done so far goes
    in `state_dict()` (stored in every checkpoint under its name) and comes back
    through `load_state_dict` on resume.
    """

    def __init__(self, name, options, slim_config):
        self.name = name
        self.start_epoch = int(getattr(options, "start_epoch", 0))

    def validate(self, context):
        """Called once before training starts: check, by a dry run on the model as it is
        (nothing may change), that this strategy can do what its config asks; raise a
        one-line UserError naming the option otherwise. Default: nothing to check."""
        return None

    def on_epoch_begin(self, context):
        """Called before every epoch; return a record when the model changed."""
        return None

    def before_train(self, runner):
        self.validate(runner.context)

    def before_epoch(self, runner):
        record = self.on_epoch_begin(runner.context)
        if record is not None:
            runner.state.plan_records.append(record)

    def legacy_state(self, record):
        """The state_dict of a strategy that wrote `record` into a checkpoint made before
        strategies had states (only UniformPruneStrategy recorded anything then); None
        when this strategy cannot take such a checkpoint over."""
        return None


def resolve_metric_name(strategy_name, metric_name, detection_metric, log=print):
    """The metric a strategy reports: the detection metric of the config. A classification
    name such as the seed's acc_top1 maps to it with a one-line warning."""
    if metric_name is None or metric_name in DETECTION_METRIC_ALIASES:
        return detection_metric
    if metric_name in CLASSIFICATION_METRICS:
        log(f"warning: strategy '{strategy_name}': metric_name '{metric_name}' is a classification "
            f"metric; using the detection metric of the config ({detection_metric} mAP)")
        return detection_metric
    raise ConfigError(f"strategy '{strategy_name}': unknown metric_name '{metric_name}'"
                      f"{did_you_mean(metric_name, DETECTION_METRIC_ALIASES)}; valid: "
                      f"{', '.join(DETECTION_METRIC_ALIASES)} (or acc_top1, which maps to the "
                      "detection metric)")


def build_strategies(slim_config, detection_metric, log=print):
    """The strategies `slim_config.compressor.strategies` lists, built in that order.

    An unknown class exits 2 naming the known ones (the slim config loader already
    checks class names against its schema; this checks that each has an implementation).
    """
    strategies = []
    for name, options in slim_config.active_strategies():
        class_name = type(options).__name__
        try:
            cls = STRATEGY_CLASSES.get(class_name)
        except ConfigError as error:
            raise ConfigError(f"{slim_config.path}: strategy '{name}': {error}") from None
        resolve_metric_name(name, getattr(options, "metric_name", None), detection_metric, log)
        strategies.append(cls(name, options, slim_config))
    return strategies
