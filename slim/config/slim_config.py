"""The slim (compression) config: pruners, strategies and the compressor (FACTS.md section 3).

    cfg = load_slim_config("configs/yolov3_mobilenet_v1_slim.yaml")
    cfg.compressor.epoch                                  # 271
    strategy = cfg.strategies["uniform_pruning_strategy"]
    strategy.target_ratio, cfg.pruners[strategy.pruner].criterions   # 0.5, {'*': 'l1_norm'}

The file keeps the PaddleSlim 1.x layout so the seed's file loads verbatim:
each pruner and strategy is a mapping with a `class` key; the strategies the
compressor runs are listed by name. This module only validates and returns
the structure; the strategies themselves live with the compressor.
"""
import dataclasses
import typing
from typing import Dict, List, Literal, Optional, Tuple, Union

from slim.config.registry import REQUIRED, ModuleSpec, OptionSpec, docstring_parts
from slim.config.validate import InvalidValue, format_path, unknown_key_message, validate_options
from slim.config.yaml_io import load_yaml_file
from slim.errors import ConfigError, did_you_mean, shorten, shorten_repr

# Importance criteria of the pruning engine (issue 4): l1 norm of the filter (the seed's
# choice), distance to the geometric median (FPGM), and the |scale| of the following BN.
CRITERIA = ("l1_norm", "fpgm", "bn_scale")


@dataclasses.dataclass(frozen=True)
class StructurePruner:
    """Filter pruner: removes output channels of conv weights, ranked by a criterion.

    Args:
        pruning_axis: parameter-name pattern ('*' = all) -> axis to prune; only 0
            (output channels, i.e. filters) is supported.
        criterions: parameter-name pattern ('*' = all) -> importance criterion:
            l1_norm, fpgm or bn_scale.
    """
    pruning_axis: Dict[str, int] = dataclasses.field(default_factory=lambda: {"*": 0})
    criterions: Dict[str, Literal[CRITERIA]] = dataclasses.field(
        default_factory=lambda: {"*": "l1_norm"})

    @classmethod
    def check_config(cls, options):
        for pattern, axis in options["pruning_axis"].items():
            if axis != 0:
                raise InvalidValue(("pruning_axis", pattern),
                                   f"pruning_axis '{shorten(pattern)}': axis {shorten(axis)} is not "
                                   f"supported; "
                                   f"only 0 (filters, the output channels of a conv)")


def _check_ratio(options, key):
    value = options[key]
    if value is None:
        return
    if not (0.0 < value < 1.0):
        raise InvalidValue((key,), f"key '{key}' must be in (0, 1), got {shorten_repr(value)}")


LATENCY_RUNTIMES = ("paddle", "paddle-onednn", "onnxruntime")  # slim.prune.latency.RUNTIMES


def _check_latency(options):
    """target_latency_ratio / target_latency_ms: at most one, with a latency_table."""
    _check_ratio(options, "target_latency_ratio")
    ms = options["target_latency_ms"]
    if ms is not None and not ms > 0:
        raise InvalidValue(("target_latency_ms",), f"key 'target_latency_ms' must be > 0, got "
                                                   f"{shorten_repr(ms)}")
    if options["target_latency_ratio"] is not None and ms is not None:
        raise InvalidValue(("target_latency_ms",), "give one of target_latency_ratio and "
                                                   "target_latency_ms, not both")
    if (options["target_latency_ratio"] is not None or ms is not None) and \
            not options["latency_table"]:
        raise InvalidValue(("latency_table",), "a latency target needs key 'latency_table' (a "
                                               "table written by `python -m slim latency-table`)")
    if options["latency_threads"] < 1:
        raise InvalidValue(("latency_threads",), f"key 'latency_threads' must be >= 1, got "
                                                 f"{shorten_repr(options['latency_threads'])}")


@dataclasses.dataclass(frozen=True)
class UniformPruneStrategy:
    """Prune every matched parameter by one ratio, found so that `target_ratio` of the
    FLOPs is removed, at `start_epoch`; then fine-tune.

    Args:
        pruner: name of a pruner in `pruners`.
        start_epoch: epoch at whose start the pruning happens.
        target_ratio: fraction of the model's FLOPs to remove, in (0, 1).
        pruned_params: regex (full match over parameter names) or list of names of the conv
            weights to prune; 'auto' selects every prunable conv.
        metric_name: metric reported for the strategy (acc_top1 in the seed means the
            detection metric of the config).
        target_latency_ratio: instead of target_ratio: prune to this fraction of the model's
            predicted latency on `runtime` (per-group channel counts from `latency_table`,
            least importance lost; docs/deploy.md), in (0, 1).
        target_latency_ms: instead of target_ratio: prune to this predicted latency (ms).
        runtime: what the latency is for: paddle, paddle-onednn or onnxruntime.
        latency_table: the table `python -m slim latency-table` measured for this model,
            runtime and input size.
        latency_threads: CPU threads the latency is for.
    """
    pruner: str = REQUIRED
    start_epoch: int = 0
    target_ratio: float = 0.5
    pruned_params: Union[str, List[str]] = "conv.*_weights"
    metric_name: Optional[str] = None
    target_latency_ratio: Optional[float] = None
    target_latency_ms: Optional[float] = None
    runtime: Literal[LATENCY_RUNTIMES] = "paddle-onednn"
    latency_table: Optional[str] = None
    latency_threads: int = 1

    @classmethod
    def check_config(cls, options):
        _check_ratio(options, "target_ratio")
        _check_latency(options)
        if options["start_epoch"] < 0:
            raise InvalidValue(("start_epoch",), f"key 'start_epoch' must be >= 0, "
                                                 f"got {shorten(options['start_epoch'])}")


@dataclasses.dataclass(frozen=True)
class SensitivePruneStrategy:
    """Prune by sensitivities: measure how the metric drops as each channel group is pruned
    alone, then choose per-group ratios that remove `target_ratio` of the FLOPs with the
    least predicted loss (`python -m slim sensitivity` measures them ahead).

    Args:
        pruner: name of a pruner in `pruners` (its criterion chooses the channels).
        start_epoch: epoch at whose start the first pruning step happens.
        end_epoch: last epoch of the strategy (kept from PaddleSlim 1.x; not used).
        target_ratio: fraction of the model's FLOPs to remove, in (0, 1).
        delta_rate: step of pruning ratios when measuring sensitivities, in (0, 1): 0.1
            measures 0.1, 0.2, ... 0.9.
        num_steps: pruning steps to reach target_ratio; step k fires at start_epoch + k and
            leaves (k + 1) / num_steps of target_ratio removed.
        eval_rate: fraction of the eval set (its first batches) used to measure
            sensitivities (none = all).
        pruned_params: regex (full match) or list of names of the conv weights to prune;
            'auto' selects every prunable conv.
        sensitivities_file: JSON file where measured sensitivities are saved and reused.
        metric_name: metric reported for the strategy (acc_top1 in the seed means the
            detection metric of the config).
        target_latency_ratio: instead of target_ratio: prune to this fraction of the model's
            predicted latency on `runtime` (per-group channel counts from `latency_table`,
            least metric lost by the sensitivities; docs/deploy.md), in (0, 1); step k
            reaches 1 - (1 - ratio) * (k + 1) / num_steps.
        target_latency_ms: instead of target_ratio: prune to this predicted latency (ms).
        runtime: what the latency is for: paddle, paddle-onednn or onnxruntime.
        latency_table: the table `python -m slim latency-table` measured for this model,
            runtime and input size.
        latency_threads: CPU threads the latency is for.
    """
    pruner: str = REQUIRED
    start_epoch: int = 0
    end_epoch: int = 10
    target_ratio: float = 0.5
    delta_rate: float = 0.1
    num_steps: int = 1
    eval_rate: Optional[float] = None
    pruned_params: Union[str, List[str]] = "conv.*_weights"
    sensitivities_file: str = "./sensitivities.data"
    metric_name: Optional[str] = None
    target_latency_ratio: Optional[float] = None
    target_latency_ms: Optional[float] = None
    runtime: Literal[LATENCY_RUNTIMES] = "paddle-onednn"
    latency_table: Optional[str] = None
    latency_threads: int = 1

    @classmethod
    def check_config(cls, options):
        _check_ratio(options, "target_ratio")
        _check_latency(options)
        _check_ratio(options, "delta_rate")
        if options["eval_rate"] is not None and not 0.0 < options["eval_rate"] <= 1.0:
            raise InvalidValue(("eval_rate",), f"key 'eval_rate' must be in (0, 1], "
                                               f"got {shorten_repr(options['eval_rate'])}")
        if options["num_steps"] < 1:
            raise InvalidValue(("num_steps",), f"key 'num_steps' must be >= 1, "
                                               f"got {shorten(options['num_steps'])}")
        if not 0 <= options["start_epoch"] <= options["end_epoch"]:
            raise InvalidValue(("end_epoch",), f"keys 'start_epoch' ({shorten(options['start_epoch'])}) "
                                               f"and 'end_epoch' ({shorten(options['end_epoch'])}) "
                                               f"must satisfy "
                                               f"0 <= start_epoch <= end_epoch")


@dataclasses.dataclass(frozen=True)
class DistillationStrategy:
    """Distillation while fine-tuning: from `start_epoch` the model learns from a frozen,
    never pruned teacher through a YOLOv3 distillation loss (objectness, box and class
    terms weighted by the teacher's objectness) added to the detection loss.

    Args:
        start_epoch: epoch from whose start the distillation loss counts; the teacher is the
            model as this epoch begins, before any pruning at this epoch.
        distillation_loss_weight: factor of the distillation loss in the loss, > 0 (1: the
            detection loss's scale; both are per-image sums averaged over the batch).
        teacher_weights: weights of the unpruned model (a directory of per-parameter files or
            a combined params file) to use as the teacher instead (null: the model at
            start_epoch).
    """
    start_epoch: int = 0
    distillation_loss_weight: float = 1.0
    teacher_weights: Optional[str] = None

    @classmethod
    def check_config(cls, options):
        if options["start_epoch"] < 0:
            raise InvalidValue(("start_epoch",), f"key 'start_epoch' must be >= 0, "
                                                 f"got {shorten(options['start_epoch'])}")
        if not options["distillation_loss_weight"] > 0:
            raise InvalidValue(("distillation_loss_weight",),
                               f"key 'distillation_loss_weight' must be > 0, "
                               f"got {shorten_repr(options['distillation_loss_weight'])}")


@dataclasses.dataclass(frozen=True)
class CompressorConfig:
    """The compression run: epochs, evaluation, checkpoints and exports.

    Args:
        epoch: number of epochs (each `max_iters` iterations of the detection config).
        eval_epoch: evaluate every this many epochs.
        checkpoint_path: directory of per-epoch checkpoints; a restart resumes from the
            highest complete one. null disables checkpoints.
        init_model: a checkpoint directory to start from instead of the latest one.
        strategies: names of the strategies to run, from `strategies`.
        save_eval_model: write eval_model/__model__ + __params__ every epoch.
        prune_infer_model: also write eval_model/__model__.infer (true: inputs image and
            im_size, output the NMS boxes; or [[input names], [output names]]).
    """
    epoch: int = REQUIRED
    eval_epoch: int = 1
    checkpoint_path: Optional[str] = "./checkpoints/"
    init_model: Optional[str] = None
    strategies: List[str] = dataclasses.field(default_factory=list)
    save_eval_model: bool = True
    prune_infer_model: Union[bool, Tuple[List[str], List[str]]] = True

    @classmethod
    def check_config(cls, options):
        for key in ("epoch", "eval_epoch"):
            if options[key] < 1:
                raise InvalidValue((key,), f"key '{key}' must be >= 1, got {shorten(options[key])}")
        seen = set()
        for i, name in enumerate(options["strategies"]):
            if name in seen:
                raise InvalidValue(("strategies", i), f"strategy '{shorten(name)}' is listed twice")
            seen.add(name)


@dataclasses.dataclass(frozen=True)
class SlimConfig:
    """A validated slim config file."""
    path: str
    version: float
    pruners: Dict[str, StructurePruner]
    strategies: Dict[str, Union[UniformPruneStrategy, SensitivePruneStrategy,
                                DistillationStrategy]]
    compressor: CompressorConfig

    def active_strategies(self):
        """[(name, strategy)] in the order `compressor.strategies` lists them."""
        return [(name, self.strategies[name]) for name in self.compressor.strategies]


PRUNER_CLASSES = {cls.__name__: cls for cls in (StructurePruner,)}
STRATEGY_CLASSES = {cls.__name__: cls for cls in (UniformPruneStrategy, SensitivePruneStrategy,
                                                 DistillationStrategy)}
TOP_LEVEL_KEYS = ("version", "pruners", "strategies", "compressor")
SUPPORTED_VERSIONS = (1.0,)


def dataclass_spec(cls):
    """A ModuleSpec of a dataclass (fields as options, default factories evaluated)."""
    summary, arg_docs = docstring_parts(cls)
    hints = typing.get_type_hints(cls)
    options = {}
    for field in dataclasses.fields(cls):
        if field.default is not dataclasses.MISSING:
            default = field.default
        elif field.default_factory is not dataclasses.MISSING:
            default = field.default_factory()
        else:
            default = REQUIRED
        options[field.name] = OptionSpec(field.name, default, hints[field.name],
                                         arg_docs.get(field.name, ""))
    return ModuleSpec(cls.__name__, cls, summary, options, yaml_tag=False)


def config_class_specs():
    """{name: (section, ModuleSpec)} of every part of a slim config, as the validator checks it:
    the pruner and strategy classes (entries of `pruners` / `strategies`, chosen by their `class`
    key) and the `compressor` block (named by its key)."""
    specs = {name: ("pruners", dataclass_spec(cls)) for name, cls in PRUNER_CLASSES.items()}
    specs.update({name: ("strategies", dataclass_spec(cls)) for name, cls in STRATEGY_CLASSES.items()})
    specs["compressor"] = ("compressor", dataclass_spec(CompressorConfig))
    return specs


def load_slim_config(path):
    """Load and validate a slim config file -> SlimConfig.

    Raises ConfigError (one line, naming the file and key) for a missing file, an
    unknown key or class, a strategy naming an unknown pruner, a compressor
    strategy that is not defined, or a value out of range (e.g. target_ratio
    outside (0, 1)).
    """
    path = str(path)
    raw = load_yaml_file(path)
    try:
        return _validate_slim_config(raw, path)
    except InvalidValue as error:
        raise ConfigError(f"{shorten(path)}: {error.message}") from None


def _validate_slim_config(raw, path):
    if not isinstance(raw, dict):
        raise InvalidValue((), f"a slim config must be a YAML mapping with keys "
                               f"{', '.join(TOP_LEVEL_KEYS)}, got {type(raw).__name__}")
    for key in raw:
        if key not in TOP_LEVEL_KEYS:
            raise InvalidValue((key,), unknown_key_message(key, TOP_LEVEL_KEYS, None))
    version = raw.get("version", 1.0)
    if isinstance(version, str):
        try:
            version = float(version)
        except ValueError:
            pass
    if version not in SUPPORTED_VERSIONS or isinstance(version, bool):
        raise InvalidValue(("version",), f"key 'version': {shorten_repr(version)} is not supported; "
                                         f"use {SUPPORTED_VERSIONS[0]}")
    pruners = _validate_named_objects(raw.get("pruners"), "pruners", PRUNER_CLASSES)
    strategies = _validate_named_objects(raw.get("strategies"), "strategies", STRATEGY_CLASSES)
    for name, strategy in strategies.items():
        if hasattr(strategy, "pruner") and strategy.pruner not in pruners:  # (distillation has none)
            raise InvalidValue(("strategies", name, "pruner"),
                               f"strategy '{shorten(name)}' names pruner '{shorten(strategy.pruner)}', "
                               f"which is not defined{did_you_mean(strategy.pruner, pruners)}; "
                               f"pruners: {_names(pruners)}")
    if "compressor" not in raw:
        raise InvalidValue(("compressor",), "missing required key 'compressor'")
    compressor_options = validate_options(dataclass_spec(CompressorConfig), raw["compressor"],
                                          ("compressor",))
    compressor = CompressorConfig(**compressor_options)
    for i, name in enumerate(compressor.strategies):
        if name not in strategies:
            raise InvalidValue(("compressor", "strategies", i),
                               f"compressor.strategies names '{shorten(name)}', which is not "
                               f"defined{did_you_mean(name, strategies)}; strategies: "
                               f"{_names(strategies)}")
        if strategies[name].start_epoch >= compressor.epoch:
            raise InvalidValue(("strategies", name, "start_epoch"),
                               f"strategy '{shorten(name)}' starts at epoch "
                               f"{shorten(strategies[name].start_epoch)}, but compressor.epoch is "
                               f"{shorten(compressor.epoch)}: it would never run")
    return SlimConfig(path=path, version=float(version), pruners=pruners, strategies=strategies,
                      compressor=compressor)


def _names(names):
    """'a, b, c' of user-chosen names (pruners, strategies), cut for a message."""
    return shorten(", ".join(str(name) for name in names)) or "(none)"


def _validate_named_objects(section, section_name, classes):
    """{name: {class: X, ...options}} -> {name: X(...)} with each mapping validated."""
    if section is None:
        return {}
    if not isinstance(section, dict):
        raise InvalidValue((section_name,), f"key '{section_name}' must be a mapping of "
                                            f"name -> {{class: ..., ...}}, got {shorten_repr(section)}")
    built = {}
    for name, options in section.items():
        path = (section_name, name)
        if not isinstance(options, dict):
            raise InvalidValue(path, f"'{format_path(path)}' must be a mapping with a 'class' key, "
                                     f"got {shorten_repr(options)}")
        options = dict(options)
        class_name = options.pop("class", None)
        if class_name is None:
            raise InvalidValue(path + ("class",), f"'{format_path(path)}' has no 'class' key; "
                                                  f"known classes: {', '.join(classes)}")
        if class_name not in classes:
            raise InvalidValue(path + ("class",),
                               f"'{format_path(path)}': unknown class '{shorten(class_name)}'"
                               f"{did_you_mean(class_name, classes)}; known classes: "
                               f"{', '.join(classes)}")
        cls = classes[class_name]
        built[name] = cls(**validate_options(dataclass_spec(cls), options, path))
    return built
