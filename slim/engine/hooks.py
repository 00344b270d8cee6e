"""Hooks of the training loop (`slim.engine.runner.Runner`) and the ones every run uses.

A hook overrides any of the points it needs; each gets the runner:

    build_train_program(train, startup)  while the train program is built, before the
                                         optimizer is added (may add ops and losses)
    before_train / after_train           once (after_train also after an error)
    before_epoch / after_epoch           around every epoch
    before_iter / after_iter             around every training step

A hook with a `name` has a state: `state_dict()` returns it as JSON-able data,
which every checkpoint stores, and `load_state_dict(state)` gives it back on
resume (a strategy records there what it has done, so it does not do it again).
"""
import math
import time


class HookBase:
    """Does nothing at every point; subclasses override what they need."""

    name = None  # set to store the hook's state_dict() in checkpoints

    def build_train_program(self, train, startup):
        """Called while the train program is built, before its optimizer is added: may add
        to `train` (a TrainProgram: .program, .fetches) and `startup`."""
        return None

    def before_train(self, runner):
        return None

    def before_epoch(self, runner):
        return None

    def before_iter(self, runner):
        return None

    def after_iter(self, runner):
        return None

    def after_epoch(self, runner):
        return None

    def after_train(self, runner):
        return None

    def state_dict(self):
        """What a checkpoint stores of this hook (JSON-able)."""
        return {}

    def load_state_dict(self, state):
        """Restore what `state_dict` returned (on resume)."""
        return None


class NanGuard(HookBase):
    """Stop training (TrainingStopped, exit 2) when a loss is NaN or infinite, naming the
    last good checkpoint, which is kept: nothing of the epoch is saved."""

    def after_iter(self, runner):
        from slim.engine.train_log import check_finite
        check_finite(runner.outputs, runner.epoch, runner.iteration_in_epoch,
                     runner.state.last_checkpoint)


class StartTogether(HookBase):
    """The last hook of a run: when every other hook's `before_train` checks passed on this
    rank, the ranks agree to start (`distributed.start_together`, one all-reduce on several
    cards, nothing on one), so a rank never trains alone, waiting on one that has stopped.
    The run calls `give_up()` when this rank stopped before training."""

    def __init__(self, rank_sum):
        self.rank_sum = rank_sum
        self.agreed = False

    def before_train(self, runner):
        from slim.engine.distributed import start_together
        self.agreed = True
        start_together(self.rank_sum, failed=False)

    def give_up(self):
        """This rank stopped before training: tell the others (once; nothing after the start)."""
        from slim.engine.distributed import start_together
        if not self.agreed:
            self.agreed = True
            start_together(self.rank_sum, failed=True)


class LRSchedule(HookBase):
    """Read the learning rate of each iteration (runner.lr) and step the schedule after it."""

    def __init__(self, scheduler):
        self.scheduler = scheduler

    def before_iter(self, runner):
        runner.lr = float(self.scheduler())

    def after_iter(self, runner):
        self.scheduler.step()


class TrainLogger(HookBase):
    """One log line every `log_iter` iterations (and VisualDL scalars), via the
    `slim.trainer.TrainLog` that `make_train_log()` returns before training (so nothing is
    written before the strategies are validated); closes its scalar writer after training."""

    def __init__(self, make_train_log, epochs):
        self.make_train_log = make_train_log
        self.epochs = epochs
        self.train_log = None
        self.started = None

    def before_train(self, runner):
        self.train_log = self.make_train_log()

    def before_epoch(self, runner):
        self.started = time.perf_counter()

    def after_iter(self, runner):
        now = time.perf_counter()
        self.train_log.record(runner.epoch, self.epochs, runner.iteration_in_epoch,
                              runner.epoch_length, runner.state.iteration, runner.outputs,
                              runner.lr if runner.lr is not None else math.nan, now - self.started)
        self.started = now

    def after_train(self, runner):
        if self.train_log is not None:
            self.train_log.scalars.close()
