"""DistillationStrategy: the pruned student learns from a frozen teacher, the model as it was
before pruning, inside the same train program and scope.

At the first build of the train program (unpruned: plans are replayed and applied
after it) the strategy keeps a test-mode copy of the model's forward pass; on
every build it adds that copy as the teacher (`slim.model.teacher`: vars named
`teacher_<name>`, never trained, never pruned, since `ProgramSet.plan` analyses
the model without what build hooks add) and adds `distillation_loss_weight` x
the YOLOv3 distillation loss (`slim.model.distill_loss`) to the detection loss,
fetched as `loss_distill` for the log. The term is multiplied by the persistable
switch `teacher_distillation_on`, 0 until the teacher holds its weights.

When: the teacher gets the student's weights as epoch `start_epoch` begins, i.e.
at the end of epoch start_epoch - 1 (in `after_epoch`, before that epoch's
checkpoint is written), or before training for start_epoch 0 or a run that starts
later. Both come before every `before_epoch` of start_epoch, so a pruning
strategy of the same epoch prunes after the copy whichever order the slim config
lists them in. With `teacher_weights` the teacher loads that weights path
instead, at the same moment. The state (`teacher_from`) is stored in every
checkpoint, and the checkpoint holds the teacher's tensors (persistables of the
train program): a resumed run keeps its teacher and never copies a pruned student.
"""
import os

from slim.errors import ConfigError, shorten
from slim.io.weights import WeightsError, load_weights
from slim.model.distill_loss import yolov3_distill_loss
from slim.model.teacher import add_frozen_copy, assign_tensor, forward_source
from slim.strategies.base import Strategy, register_strategy

TEACHER_PREFIX = "teacher_"
SWITCH_NAME = "teacher_distillation_on"  # 1.0 once the teacher holds its weights
LOSS_FETCH = "loss_distill"  # weight x switch x distillation loss, as added to "loss"
IMAGE_FEED = "image"


@register_strategy
class DistillationStrategy(Strategy):
    """Distill the unpruned model into the pruned one while fine-tuning, from `start_epoch`."""

    def __init__(self, name, options, slim_config):
        super().__init__(name, options, slim_config)
        self.weight = float(options.distillation_loss_weight)
        self.teacher_weights = options.teacher_weights
        self.source = slim_config.path
        self.teacher_source = None  # ForwardSource: the model as first built (unpruned)
        self.teacher = None  # FrozenCopy in the current train program
        self.teacher_from = None  # where the teacher's weights came from, once it has them

    def build_train_program(self, train, startup):
        """Add the teacher and the weighted distillation loss to `train` (before the optimizer)."""
        import paddle
        student_outputs = _head_outputs(train)
        if self.teacher_source is None:
            self.teacher_source = forward_source(train.program, [IMAGE_FEED],
                                                 [var.name for var in student_outputs])
        with paddle.static.program_guard(train.program, startup), \
                paddle.utils.unique_name.guard("distill_"):
            self.teacher = add_frozen_copy(self.teacher_source, train.program, startup,
                                           TEACHER_PREFIX)
            switch = paddle.static.create_global_var([1], 0.0, "float32", persistable=True,
                                                     name=SWITCH_NAME)
            switch.stop_gradient = True
            teacher_outputs = [self.teacher.outputs[name] for name in self.teacher_source.outputs]
            distill = yolov3_distill_loss(student_outputs, teacher_outputs,
                                          _anchors_per_output(train.program, student_outputs))
            weighted = distill * self.weight * switch
            train.fetches["loss"] = train.fetches["loss"] + weighted
            train.fetches[LOSS_FETCH] = weighted

    def validate(self, context):
        """teacher_weights (if set) must load into the unpruned model: a dry load."""
        if self.teacher_weights is not None and self.teacher_from is None:
            self._load_teacher_weights()

    def before_train(self, runner):
        super().before_train(runner)
        if self.teacher_from is None and runner.state.next_epoch >= self.start_epoch:
            self._initialise_teacher(runner.context, runner.state.next_epoch)

    def after_epoch(self, runner):
        if self.teacher_from is None and runner.epoch + 1 == self.start_epoch:
            self._initialise_teacher(runner.context, self.start_epoch)

    def state_dict(self):
        """Where the teacher's weights came from (None: it has none yet); its tensors are in
        the checkpoint's persistables."""
        return {"teacher_from": self.teacher_from}

    def load_state_dict(self, state):
        self.teacher_from = state.get("teacher_from")

    def _initialise_teacher(self, context, epoch):
        """Give the teacher its weights (teacher_weights, or the student's now) and switch the
        distillation loss on."""
        if self.teacher_weights is not None:
            tensors, origin = self._load_teacher_weights(), f"teacher_weights '{self.teacher_weights}'"
        else:
            tensors, origin = self._student_tensors(context.scope, epoch), f"the student at epoch {epoch}"
        for name, teacher_name in self.teacher.persistables.items():
            assign_tensor(context.scope, teacher_name, tensors[name])
        assign_tensor(context.scope, SWITCH_NAME, [1.0])
        self.teacher_from = origin
        context.log(f"strategy '{self.name}' at epoch {epoch}: the teacher holds the weights of "
                    f"{origin}; distillation loss weight {self.weight:g}")

    def _student_tensors(self, scope, epoch):
        """{name: array} of the student's tensors the teacher copies; a one-line ConfigError
        when the student is already pruned (the teacher is the unpruned model)."""
        import numpy as np
        block = self.teacher_source.program.global_block()
        tensors = {}
        for name in self.teacher.persistables:
            value = np.array(scope.find_var(name).get_tensor())
            expected = tuple(block.var(name).shape)
            if value.shape != expected:
                raise ConfigError(
                    f"{self.source}: strategy '{self.name}': the teacher copies the student at "
                    f"epoch {epoch}, but '{name}' is pruned there ({list(value.shape)}, the model "
                    f"has {list(expected)}); set start_epoch to the epoch of the pruning or "
                    "earlier, or set teacher_weights to the unpruned model's weights")
            tensors[name] = value
        return tensors

    def _load_teacher_weights(self):
        """{name: array} of teacher_weights, checked to fit the unpruned model (WeightsError,
        one line, otherwise); nothing in the run's scope changes."""
        import numpy as np
        import paddle
        if not os.path.exists(self.teacher_weights):
            raise ConfigError(f"{self.source}: strategy '{self.name}': teacher_weights "
                              f"'{shorten(self.teacher_weights)}' does not exist; expected a "
                              "directory of per-parameter files or a combined params file of the "
                              "unpruned model")
        scope = paddle.static.Scope()
        try:
            load_weights(scope, self.teacher_source.program, self.teacher_weights)
        except WeightsError as error:
            raise ConfigError(f"{self.source}: strategy '{self.name}': teacher_weights: {error}") from None
        return {name: np.array(scope.find_var(name).get_tensor()) for name in self.teacher.persistables}


def _head_outputs(train):
    """The raw head outputs output_0, output_1, ... of a train program's fetches."""
    count = sum(1 for name in train.fetches if name.startswith("output_"))
    return [train.fetches[f"output_{i}"] for i in range(count)]


def _anchors_per_output(program, outputs):
    """Anchors each output predicts: the length of the anchor_mask of the yolo loss reading it."""
    masks = {op.input("X")[0]: op.attr("anchor_mask") for op in program.global_block().ops
             if op.type in ("yolo_loss", "yolov3_loss")}
    return [len(masks[output.name]) for output in outputs]
