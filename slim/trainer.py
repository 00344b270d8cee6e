"""Training pieces of the compress driver: the programs (with pruning plans), the log lines
and optional VisualDL scalars (the loop itself is slim.engine.Runner).

`ProgramSet` owns the train and eval programs of one model. Pruning plans are
applied to both and to the scope; on several cards the train program (whose
fleet all-reduce ops the pruning engine does not analyse) is rebuilt from the
model with every plan applied before its optimizer and collective ops are
added, so the engine only ever sees single-card programs.
"""
import collections
import math

import numpy as np

from slim.errors import UserError

TRAIN_FEEDS = ("image", "gt_box", "gt_label", "gt_score")
LOSS_FETCHES = ("loss", "loss_0", "loss_1", "loss_2")


class TrainingStopped(UserError):
    """Training cannot go on (e.g. the loss is not finite); the last good checkpoint is kept."""


class ProgramSet:
    """Train + eval programs of `model` with the optimizer, the LR scheduler and the pruning
    plans applied so far.

    Args:
        model: a built YOLOv3 (from `slim.config.create`).
        eval_image_shape: [3, H, W] of the eval program's input.
        optimizer_builder: an OptimizerBuilder config module instance.
        scheduler: the paddle LR scheduler every optimizer built here uses (one object,
            so the schedule continues across rebuilds).
        env: the DistributedEnv; with several workers the train program is fleet-wrapped.
        sync_bn: synchronize batch norm across cards (norm_type sync_bn).
        build_hooks: hooks (`slim.engine.HookBase`) whose `build_train_program` is called on
            every build of the train program, before its optimizer is added.
    """

    def __init__(self, model, eval_image_shape, optimizer_builder, scheduler, env, sync_bn=False,
                 build_hooks=()):
        self.model = model
        self.build_hooks = list(build_hooks)
        self.eval_image_shape = list(eval_image_shape)
        self.optimizer_builder = optimizer_builder
        self.scheduler = scheduler
        self.env = env
        self.sync_bn = sync_bn
        self.plans = []
        self.train, self.eval = self._build(distributed=env.is_distributed)
        self.startup = self.train.startup

    def _build(self, distributed):
        """Fresh programs with every plan so far applied, then the optimizer (and, when
        `distributed`, fleet's collective ops) added to the train program."""
        import paddle

        from slim import distributed as distributed_lib
        from slim.model import build_eval_program, build_train_program
        from slim.optimizer import build_optimizer
        from slim.prune import apply_plan
        train = build_train_program(self.model, image_shape=[3, None, None])
        evaluation = build_eval_program(self.model, image_shape=self.eval_image_shape)
        for plan in self.plans:
            apply_plan(plan, [train.program, evaluation.program], scope=None,
                       startup_programs=[train.startup])
        for hook in self.build_hooks:
            hook.build_train_program(train, train.startup)
        env = self.env if distributed else distributed_lib.DistributedEnv()
        # A fresh name guard: accumulator names (conv1_weights_velocity_0, learning_rate_0)
        # are the same in every build, so checkpoints load into rebuilt programs.
        with paddle.static.program_guard(train.program, train.startup), \
                paddle.utils.unique_name.guard():
            optimizer = build_optimizer(self.optimizer_builder, self.scheduler)
            distributed_lib.minimize(optimizer, train.fetches["loss"], train.startup, env,
                                     sync_bn=self.sync_bn)
        return train, evaluation

    def plan(self, pruned_params, target_ratio, criterion, scope):
        """A PrunePlan removing `target_ratio` of the FLOPs of the current model (nothing changes)."""
        from slim.prune import plan_pruning
        analysed = self.train if not self.env.is_distributed else self._build(distributed=False)[0]
        return plan_pruning(analysed.program, scope, pruned_params, target_ratio=target_ratio,
                            criterion=criterion, flops_program=self.eval.program)

    def apply(self, plan, scope):
        """Prune the programs and every tensor of the plan's groups in `scope` (parameters,
        BN statistics, momentum accumulators)."""
        from slim.prune import apply_plan
        if not self.env.is_distributed:
            apply_plan(plan, [self.train.program, self.eval.program], scope,
                       startup_programs=[self.train.startup])
            self.plans.append(plan)
            return
        analysed_train, analysed_eval = self._build(distributed=False)
        apply_plan(plan, [analysed_train.program, analysed_eval.program], scope)
        self.plans.append(plan)
        self.train, self.eval = self._build(distributed=True)

    def flops(self):
        """FLOPs (MACs per image) of the eval program as it is now."""
        from slim.prune.flops import program_flops
        return program_flops(self.eval.program)

    def params(self):
        """Parameter count of the eval program as it is now."""
        from slim.prune.flops import program_params
        return program_params(self.eval.program)


class ScalarWriter:
    """VisualDL scalars under `logdir` when visualdl is importable; does nothing otherwise."""

    def __init__(self, logdir, enabled=True):
        self._writer = None
        if not enabled:
            return
        try:
            from visualdl import LogWriter
        except ImportError:
            return
        self._writer = LogWriter(logdir=logdir)

    @property
    def active(self):
        return self._writer is not None

    def add(self, tag, value, step):
        if self._writer is not None:
            self._writer.add_scalar(tag=tag, value=float(value), step=int(step))

    def close(self):
        if self._writer is not None:
            self._writer.close()


def format_duration(seconds):
    """'1:02:03' / '4:05' style durations for ETAs."""
    seconds = int(max(0, round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{seconds:02d}" if hours else f"{minutes}:{seconds:02d}"


class TrainLog:
    """Smoothed losses, speed and ETA; one log line every `log_iter` iterations.

    Args:
        log_iter: iterations between log lines.
        smooth_window: iterations the logged losses and speed are averaged over.
        total_iterations: iterations of the whole run (for the ETA).
        images_per_iteration: images of one iteration over all cards.
        log: print-like function (rank 0 prints; others pass a no-op).
        scalars: a ScalarWriter.
    """

    def __init__(self, log_iter, smooth_window, total_iterations, images_per_iteration,
                 log=print, scalars=None):
        self.log_iter = max(1, int(log_iter))
        self.total_iterations = total_iterations
        self.images_per_iteration = images_per_iteration
        self.losses = collections.defaultdict(lambda: collections.deque(maxlen=smooth_window))
        self.step_times = collections.deque(maxlen=smooth_window)
        self.log = log
        self.scalars = scalars or ScalarWriter(None, enabled=False)

    def record(self, epoch, epochs, iteration_in_epoch, iterations_per_epoch, global_iteration,
               losses, lr, seconds):
        """Add one iteration; print a line when due. `global_iteration` counts from 1."""
        for name, value in losses.items():
            self.losses[name].append(value)
            self.scalars.add(f"train/{name}", value, global_iteration)
        self.scalars.add("train/lr", lr, global_iteration)
        self.step_times.append(seconds)
        if iteration_in_epoch % self.log_iter and iteration_in_epoch != iterations_per_epoch:
            return None
        step_time = float(np.mean(self.step_times))
        speed = self.images_per_iteration / step_time if step_time > 0 else float("inf")
        eta = step_time * max(0, self.total_iterations - global_iteration)
        # medians over the window, as PaddleDetection logged them: one outlier does not hide the trend
        parts = " ".join(f"{name} {np.median(values):.4f}" for name, values in self.losses.items())
        line = (f"epoch {epoch}/{epochs - 1} iter {iteration_in_epoch}/{iterations_per_epoch} "
                f"(total {global_iteration}) {parts} lr {lr:.6g} {speed:.1f} img/s "
                f"eta {format_duration(eta)}")
        self.log(line)
        return line


def check_finite(losses, epoch, iteration, last_checkpoint):
    """TrainingStopped naming the loss, the iteration and the checkpoint kept, if any loss
    is NaN or infinite."""
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if not bad:
        return
    kept = (f"the last good checkpoint '{last_checkpoint}' is kept" if last_checkpoint
            else "no checkpoint was written yet")
    values = ", ".join(f"{name}={value}" for name, value in bad.items())
    raise TrainingStopped(f"training stopped: the loss is not finite ({values}) at epoch {epoch} "
                          f"iteration {iteration}; nothing of this epoch was saved and {kept}; "
                          "lower LearningRate.base_lr or check the data")


def log_to_stdout(message):
    """Print a log line and flush (logs are read live, e.g. by tests and tail -f)."""
    print(message, flush=True)
