"""Learning rate and optimizer config modules: LearningRate (+ PiecewiseDecay, LinearWarmup)
and OptimizerBuilder, with the Paddle objects they build.

The schedule follows PaddleDetection 0.1 exactly: the schedules are applied in
list order, each wrapping the previous one; PiecewiseDecay gives base_lr *
gamma^k after the k-th milestone (or explicit `values`), and LinearWarmup
ramps linearly from base_lr * start_factor to base_lr over its first `steps`
iterations, then hands over to the schedule it wraps:

    lr = LearningRate(0.001, [PiecewiseDecay(0.1, [55000, 62000]), LinearWarmup(1000, 0.)])
    lr.lr_at(0), lr.lr_at(500), lr.lr_at(1000), lr.lr_at(55000)   # 0.0, 0.0005, 0.001, 0.0001
    scheduler = lr.scheduler()          # a paddle LRScheduler with the same values
    optimizer = build_optimizer(OptimizerBuilder(), scheduler)
    ...                                 # after each training iteration: scheduler.step()

Iterations count from 0, as Paddle's step counter did.
"""
import bisect
from typing import Any, Dict, List, Optional

import paddle
from paddle.base.data_feeder import convert_dtype
from paddle.nn.clip import ClipGradBase

from slim.config import register
from slim.config.validate import InvalidValue, check_value
from slim.errors import ConfigError, UserError, did_you_mean


class LRSchedule:
    """Base of the schedules in `LearningRate.schedulers` (register a subclass to add one)."""

    def lr_function(self, base_lr, inner):
        """A function iteration -> learning rate.

        `inner` is the function given by the schedules listed before this one
        (the constant base_lr when this is the first); a schedule either wraps it
        (warmup) or replaces it (a decay).
        """
        raise NotImplementedError


@register
class PiecewiseDecay(LRSchedule):
    """Step decay: the learning rate is multiplied by gamma at each milestone.

    Args:
        gamma: factor applied at each milestone (base_lr, base_lr*gamma, base_lr*gamma^2, ...).
        milestones: iterations at which the learning rate drops, increasing.
        values: explicit learning rate of each interval, len(milestones) + 1 of them;
            when set, base_lr and gamma are not used.
    """

    def __init__(self, gamma: float = 0.1, milestones: List[int] = (60000, 80000),
                 values: Optional[List[float]] = None):
        self.gamma = gamma
        self.milestones = list(milestones)
        self.values = None if values is None else list(values)

    @classmethod
    def check_config(cls, options):
        """Milestones non-negative and strictly increasing; one value per interval."""
        milestones = list(options["milestones"])
        if any(m < 0 for m in milestones) or any(b <= a for a, b in zip(milestones, milestones[1:])):
            raise InvalidValue(("milestones",), f"key 'milestones' must be non-negative and strictly "
                                                f"increasing, got {milestones}")
        values = options["values"]
        if values is not None and len(values) != len(milestones) + 1:
            raise InvalidValue(("values",), f"key 'values' needs len(milestones) + 1 = "
                                            f"{len(milestones) + 1} items, got {len(values)}")

    def interval_values(self, base_lr):
        """The learning rate before the first milestone, after the first, ... (PaddleDetection
        multiplies step by step: base_lr, base_lr*gamma, (base_lr*gamma)*gamma, ...)."""
        if self.values is not None:
            return list(self.values)
        values, lr = [base_lr], base_lr
        for _ in self.milestones:
            lr *= self.gamma
            values.append(lr)
        return values

    def lr_function(self, base_lr, inner):
        values, milestones = self.interval_values(base_lr), list(self.milestones)

        def lr_at(iteration):
            # Paddle's piecewise decay: values[k] while milestones[k-1] <= iteration < milestones[k].
            return values[bisect.bisect_right(milestones, iteration)]
        return lr_at


@register
class LinearWarmup(LRSchedule):
    """Linear warmup: over the first `steps` iterations the learning rate rises linearly from
    base_lr * start_factor to base_lr, then the schedules listed before it take over.

    Args:
        steps: number of warmup iterations (0: no warmup).
        start_factor: learning rate at iteration 0, as a fraction of base_lr.
    """

    def __init__(self, steps: int = 500, start_factor: float = 1.0 / 3):
        self.steps = steps
        self.start_factor = start_factor

    @classmethod
    def check_config(cls, options):
        """Non-negative steps and start factor."""
        if options["steps"] < 0:
            raise InvalidValue(("steps",), f"key 'steps' must be >= 0, got {options['steps']}")
        if options["start_factor"] < 0:
            raise InvalidValue(("start_factor",), f"key 'start_factor' must be >= 0, "
                                                  f"got {options['start_factor']}")

    def lr_function(self, base_lr, inner):
        start_lr, steps = base_lr * self.start_factor, self.steps

        def lr_at(iteration):
            if iteration < steps:
                # fluid.layers.linear_lr_warmup with end_lr = base_lr, as PaddleDetection 0.1
                return start_lr + (base_lr - start_lr) * (iteration / float(steps))
            return inner(iteration)
        return lr_at


@register
class LearningRate:
    """Learning rate of every training iteration: base_lr shaped by a list of schedules.

    Args:
        base_lr: the learning rate before any decay; scale it with the total batch size.
        schedulers: schedules applied in order, each wrapping the previous ones; PaddleDetection
            lists a decay first, then the warmup: [!PiecewiseDecay {...}, !LinearWarmup {...}].
    """

    def __init__(self, base_lr: float = 0.01,
                 schedulers: List[LRSchedule] = (PiecewiseDecay(), LinearWarmup())):  # noqa: B008
        # (a read-only default the config registry documents; schedules are never mutated)
        self.base_lr = base_lr
        self.schedulers = list(schedulers)

    @classmethod
    def check_config(cls, options):
        """base_lr >= 0; no decay listed after a warmup (it would silently drop the warmup)."""
        if options["base_lr"] < 0:
            raise InvalidValue(("base_lr",), f"key 'base_lr' must be >= 0, got {options['base_lr']}")
        schedulers = list(options["schedulers"])
        for position, schedule in enumerate(schedulers):
            if isinstance(schedule, PiecewiseDecay) and any(
                    isinstance(s, LinearWarmup) for s in schedulers[:position]):
                raise InvalidValue(("schedulers", position),
                                   "key 'schedulers': PiecewiseDecay listed after LinearWarmup would "
                                   "discard the warmup; list the decay first, then the warmup")

    def lr_function(self):
        """The learning rate as a function of the iteration (pure python)."""
        base_lr = float(self.base_lr)

        def constant(iteration):
            return base_lr
        function = constant
        for schedule in self.schedulers:
            function = schedule.lr_function(base_lr, function)
        return function

    def lr_at(self, iteration):
        """The learning rate of training iteration `iteration` (0-based)."""
        return self.lr_function()(iteration)

    def scheduler(self, start_iteration=0):
        """A paddle LRScheduler giving lr_at(i) at iteration i; call .step() once per iteration.

        `start_iteration` resumes the schedule (e.g. epoch * max_iters after a restart).
        """
        return IterationLRScheduler(self, start_iteration)


class IterationLRScheduler(paddle.optimizer.lr.LRScheduler):
    """A Paddle LR scheduler that follows `LearningRate.lr_at` exactly, one step per iteration.

    (paddle.optimizer.lr.LinearWarmup would shift the wrapped PiecewiseDecay by the
    warmup steps; Paddle 1.x, which the recipes were tuned on, did not.)
    """

    def __init__(self, learning_rate, start_iteration=0):
        self._lr_function = learning_rate.lr_function()
        super().__init__(learning_rate=float(learning_rate.base_lr),
                         last_epoch=int(start_iteration) - 1)

    def get_lr(self):
        return self._lr_function(self.last_epoch)

    @property
    def iteration(self):
        """The iteration whose learning rate the scheduler currently gives."""
        return self.last_epoch


# Optimizer types OptimizerBuilder.optimizer may name, with the arguments each accepts.
OPTIMIZER_ARGUMENTS = {
    "Momentum": {"momentum": float, "use_nesterov": bool},
    "SGD": {},
    "Adam": {"beta1": float, "beta2": float, "epsilon": float},
}
REGULARIZERS = {"L2": "L2Decay", "L1": "L1Decay"}


@register
class OptimizerBuilder:
    """The optimizer: its type and arguments, weight decay, and optional gradient clipping.

    Args:
        optimizer: {type: Momentum | SGD | Adam, ...its arguments}; Momentum takes momentum
            (default 0.9) and use_nesterov, Adam takes beta1, beta2, epsilon.
        regularizer: weight decay {type: L2 | L1, factor: F} for parameters without their own
            regularizer (BN parameters set theirs); null for none.
        clip_grad_by_norm: clip the gradients to this global L2 norm; null for no clipping.
    """

    def __init__(self, optimizer: Dict[str, Any] = {"type": "Momentum", "momentum": 0.9},  # noqa: B006
                 regularizer: Optional[Dict[str, Any]] = {"type": "L2", "factor": 0.0001},  # noqa: B006
                 clip_grad_by_norm: Optional[float] = None):
        # copies: the defaults above are shared between calls and must never be mutated
        self.optimizer = dict(optimizer)
        self.regularizer = None if regularizer is None else dict(regularizer)
        self.clip_grad_by_norm = clip_grad_by_norm

    @classmethod
    def check_config(cls, options):
        """Known optimizer and regularizer types, their arguments typed, positive clip norm."""
        optimizer = dict(options["optimizer"])
        kind = optimizer.pop("type", None)
        if kind not in OPTIMIZER_ARGUMENTS:
            raise InvalidValue(("optimizer", "type"), _unknown_choice(
                "optimizer.type", kind, OPTIMIZER_ARGUMENTS))
        allowed = OPTIMIZER_ARGUMENTS[kind]
        for key, value in optimizer.items():
            if key not in allowed:
                raise InvalidValue(("optimizer", key), _unknown_choice(
                    f"argument of {kind}", key, allowed, what="key"))
            options["optimizer"][key] = check_value(value, allowed[key], ("optimizer", key))
        regularizer = options["regularizer"]
        if regularizer is not None:
            unknown = set(regularizer) - {"type", "factor"}
            if unknown:
                raise InvalidValue(("regularizer",), f"key 'regularizer' takes type and factor, "
                                                     f"not {', '.join(sorted(map(str, unknown)))}")
            if regularizer.get("type") not in REGULARIZERS:
                raise InvalidValue(("regularizer", "type"), _unknown_choice(
                    "regularizer.type", regularizer.get("type"), REGULARIZERS))
            factor = check_value(regularizer.get("factor", 0.0), float, ("regularizer", "factor"))
            if factor < 0:
                raise InvalidValue(("regularizer", "factor"), f"key 'regularizer.factor' must be "
                                                              f">= 0, got {factor}")
            regularizer["factor"] = factor
        clip = options["clip_grad_by_norm"]
        if clip is not None and clip <= 0:
            raise InvalidValue(("clip_grad_by_norm",), f"key 'clip_grad_by_norm' must be > 0, "
                                                       f"got {clip}")


def _unknown_choice(key, value, choices, what="value"):
    hint = did_you_mean(value, choices) if isinstance(value, str) else ""
    return f"unknown {what} {value!r} for {key}{hint}; valid: {', '.join(choices)}"


def build_optimizer(optimizer_builder, learning_rate):
    """The paddle optimizer (e.g. paddle.optimizer.Momentum with L2Decay) described by
    `optimizer_builder`, at `learning_rate`: a float or a paddle LRScheduler (pass
    `LearningRate.scheduler()` and step it every iteration). Use in static mode:
    `build_optimizer(...).minimize(loss)` inside the train program's guard.
    """
    if not isinstance(learning_rate, (float, int, paddle.optimizer.lr.LRScheduler)):
        raise TypeError(f"learning_rate must be a float or a paddle LRScheduler, "
                        f"got {type(learning_rate).__name__}")
    arguments = dict(optimizer_builder.optimizer)
    kind = arguments.pop("type", None)
    if kind not in OPTIMIZER_ARGUMENTS:
        raise ConfigError(_unknown_choice("OptimizerBuilder.optimizer.type", kind, OPTIMIZER_ARGUMENTS))
    if kind == "Momentum":
        arguments.setdefault("momentum", 0.9)
    weight_decay = None
    if optimizer_builder.regularizer is not None:
        regularizer = optimizer_builder.regularizer
        decay_class = getattr(paddle.regularizer, REGULARIZERS[regularizer["type"]])
        weight_decay = decay_class(float(regularizer["factor"]))
    grad_clip = None
    if optimizer_builder.clip_grad_by_norm is not None:
        grad_clip = GlobalNormClip(optimizer_builder.clip_grad_by_norm)
    optimizer_class = getattr(paddle.optimizer, kind)
    return optimizer_class(learning_rate=learning_rate, weight_decay=weight_decay,
                           grad_clip=grad_clip, **arguments)


class GlobalNormClip(ClipGradBase):
    """Scale all gradients by clip_norm / max(clip_norm, global L2 norm of the gradients).

    Same maths as paddle.nn.ClipGradByGlobalNorm, written with classic ops because
    Paddle 3.x's version calls paddle.sqrt, which fails in classic static mode
    ("argument must be Value, but got Variable"). float32 gradients only.
    """

    def __init__(self, clip_norm):
        super().__init__()
        self.clip_norm = float(clip_norm)

    def __str__(self):
        return f"Gradient clip by global norm, clip_norm={self.clip_norm:f}"

    def _dygraph_clip(self, params_grads):
        return paddle.nn.ClipGradByGlobalNorm(self.clip_norm)._dygraph_clip(params_grads)

    def _static_clip(self, params_grads):
        clipped = [(p, g) for p, g in params_grads
                   if g is not None and getattr(p, "need_clip", True) is not False]
        if not clipped:
            return params_grads
        for p, g in clipped:
            if convert_dtype(g.dtype) != "float32":
                raise NotImplementedError(f"GlobalNormClip supports float32 gradients only; "
                                          f"'{p.name}' has {g.dtype}")
        program = clipped[0][0].block.program
        block = program.global_block()

        def new_var(prefix):
            return block.create_var(name=paddle.utils.unique_name.generate(prefix),
                                    dtype="float32", shape=[1], persistable=False)
        with paddle.static.name_scope("gradient_clip"):
            squares = []
            for p, g in clipped:
                with program._optimized_guard([p, g]):
                    square = new_var("global_norm_clip_square")
                    block.append_op(type="squared_l2_norm", inputs={"X": [g]},
                                    outputs={"Out": [square]})
                    squares.append(square)
            p, g = clipped[-1]
            with program._optimized_guard([p, g]):
                total = new_var("global_norm_clip_sum")
                block.append_op(type="sum", inputs={"X": squares}, outputs={"Out": [total]})
                norm = new_var("global_norm_clip_norm")
                block.append_op(type="sqrt", inputs={"X": [total]}, outputs={"Out": [norm]})
                clip_norm = new_var("global_norm_clip_max")
                block.append_op(type="fill_constant", outputs={"Out": [clip_norm]},
                                attrs={"shape": [1], "dtype": clip_norm.dtype,
                                       "value": self.clip_norm})
                larger = new_var("global_norm_clip_larger")
                block.append_op(type="elementwise_max", inputs={"X": [clip_norm], "Y": [norm]},
                                outputs={"Out": [larger]})
                scale = new_var("global_norm_clip_scale")
                block.append_op(type="elementwise_div", inputs={"X": [clip_norm], "Y": [larger]},
                                outputs={"Out": [scale]})
            for p, g in clipped:
                with program._optimized_guard([p, g]):
                    block.append_op(type="elementwise_mul", inputs={"X": [g], "Y": [scale]},
                                    outputs={"Out": [g]})
        return params_grads


def scale_learning_rate(learning_rate, recipe_total_batch, total_batch):
    """A LearningRate for `total_batch` images per iteration from one tuned for
    `recipe_total_batch`: base_lr (and explicit PiecewiseDecay values) scaled linearly,
    milestones and warmup steps scaled inversely, so the schedule covers the same number
    of images. Returns (new LearningRate, description)."""
    if recipe_total_batch < 1:
        raise UserError(f"--scale_lr {recipe_total_batch}: the recipe's total batch must be >= 1")
    factor = total_batch / float(recipe_total_batch)
    schedulers, changes = [], [f"base_lr {learning_rate.base_lr:g} -> "
                               f"{learning_rate.base_lr * factor:g}"]
    for schedule in learning_rate.schedulers:
        if isinstance(schedule, PiecewiseDecay):
            milestones = [max(1, int(round(m / factor))) for m in schedule.milestones]
            values = None if schedule.values is None else [v * factor for v in schedule.values]
            schedulers.append(PiecewiseDecay(schedule.gamma, milestones, values))
            changes.append(f"milestones {list(schedule.milestones)} -> {milestones}")
        elif isinstance(schedule, LinearWarmup):
            steps = int(round(schedule.steps / factor))
            schedulers.append(LinearWarmup(steps, schedule.start_factor))
            changes.append(f"warmup steps {schedule.steps} -> {steps}")
        else:
            raise UserError(f"--scale_lr cannot rescale a {type(schedule).__name__} schedule; "
                            "set its values by hand")
    description = (f"--scale_lr: total batch {total_batch} vs the recipe's {recipe_total_batch}: "
                   + ", ".join(changes))
    return LearningRate(learning_rate.base_lr * factor, schedulers), description
