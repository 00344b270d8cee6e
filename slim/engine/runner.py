"""The training loop, in the spirit of detectron2's TrainerBase: epochs of iterations, with
every hook called at each point of the loop, in the order the hooks were given."""
import dataclasses

from slim.engine.train_log import TrainingStopped

HOOK_POINTS = ("before_train", "before_epoch", "before_iter", "after_iter", "after_epoch",
               "after_train")


@dataclasses.dataclass
class LoopState:
    """The least state a Runner needs: the first epoch not finished, global iterations done
    (compress.py's RunState adds what its checkpoints store)."""
    next_epoch: int = 0
    iteration: int = 0


class Runner:
    """Train epoch by epoch with `step(batch) -> {name: float}` and `hooks`.

    Attributes the hooks read (and may change):
        state: the run's state; the runner advances `state.iteration` (global iterations
            done) and `state.next_epoch` (the first epoch not finished).
        context: what hooks may use of the model (a StrategyContext: programs, scope,
            executor, log, evaluate()); its `epoch` is kept current.
        epoch: the epoch being trained.
        epoch_length: its number of iterations.
        iteration_in_epoch: iterations done in this epoch (1 in the first after_iter).
        batch, outputs: the current batch and what `step` returned for it.
        lr: the learning rate of the current iteration, if an LR hook sets it.
    """

    def __init__(self, step, hooks, state, context=None):
        self.step = step
        self.hooks = list(hooks)
        self.state = state
        self.context = context
        self.epoch = self.epoch_length = self.batch = self.lr = None
        self.iteration_in_epoch = 0
        self.outputs = {}

    def call(self, point):
        """Call hook method `point` (one of HOOK_POINTS) of every hook, in order."""
        for hook in self.hooks:
            getattr(hook, point)(self)

    def train(self, epochs, epoch_batches, epoch_length):
        """Train epochs state.next_epoch .. epochs - 1; epoch e takes the batches of
        `epoch_batches(e)`, which must be exactly `epoch_length(e)` of them (None: any
        number; the batches are read after `before_epoch`, which may make them).
        `after_train` is called also when training stops with an error (hooks release
        what they hold there)."""
        try:
            self.call("before_train")
            for epoch in range(self.state.next_epoch, epochs):
                self._train_epoch(epoch, epoch_batches(epoch), epoch_length(epoch))
        finally:
            self.call("after_train")

    def _train_epoch(self, epoch, batches, length):
        self.epoch, self.epoch_length, self.iteration_in_epoch = epoch, length, 0
        if self.context is not None:
            self.context.epoch = epoch
        self.call("before_epoch")
        for batch in batches:
            self.batch = batch
            self.call("before_iter")
            self.outputs = self.step(batch)
            self.iteration_in_epoch += 1
            self.state.iteration += 1
            self.call("after_iter")
        if length is not None and self.iteration_in_epoch != length:
            raise TrainingStopped(f"the training data gave {self.iteration_in_epoch} batches for "
                                  f"the {length} iterations of epoch {epoch}")
        self.state.next_epoch = epoch + 1
        self.call("after_epoch")

    def hook_states(self):
        """{hook name: its state_dict()} of every named hook: what a checkpoint stores."""
        return {hook.name: hook.state_dict() for hook in self.hooks if hook.name}

    def load_hook_states(self, states):
        """Give every named hook its state from `states` (what `hook_states` returned)."""
        for hook in self.hooks:
            if hook.name and hook.name in states:
                hook.load_state_dict(states[hook.name])
