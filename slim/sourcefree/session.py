"""One source-free prune's data side: images, the frozen unpruned teacher, and what is
measured and fitted on them (what `python -m slim prune --images` uses).

    session = SourceFreeSession(files, model, executor, SourceFreeOptions(images="imgs/"))
    stats = session.statistics(graph)                  # for criterion activation / taylor
    ... plan and apply ...
    report = session.fidelity(model, scope)            # on the held-out images
    session.reconstruct(plan, graph, model, scope)     # --reconstruct
    session.recover(model, scope, identity=plan_json)  # --recover_iters N
"""
import dataclasses
import sys

from slim.errors import UserError
from slim.sourcefree.fidelity import TASKS, fidelity_report
from slim.sourcefree.images import CalibrationSet, Preprocess
from slim.sourcefree.programs import ProgramRunner
from slim.sourcefree.reconstruct import reconstruct
from slim.sourcefree.recover import DEFAULT_BATCH, DEFAULT_LR, recover
from slim.sourcefree.statistics import activation_statistics

DEFAULT_NUM_IMAGES = 200
DEFAULT_HELD_OUT = 0.2   # of the readable images, at least 1
MAX_SEARCH_IMAGES = 64   # calibration images the accuracy-bounded search measures on
MAX_STATISTICS_IMAGES = 200  # calibration images the channel statistics are measured on
MAX_RECONSTRUCT_IMAGES = 64  # calibration images each refitted layer's rows come from
SEARCH_STEPS = 7
SEARCH_HIGH = 0.95


@dataclasses.dataclass
class SourceFreeOptions:
    """What the data side of a prune does (each field is the `prune` option of its name)."""
    images: str
    num_images: int = DEFAULT_NUM_IMAGES
    held_out: object = None           # a count; None: DEFAULT_HELD_OUT of num_images
    preprocess: tuple = ()
    task: str = "auto"
    threshold: object = None
    batch_size: int = DEFAULT_BATCH
    recover_iters: int = 0
    recover_lr: float = DEFAULT_LR
    checkpoint_dir: object = None
    checkpoint_every: int = 50
    seed: int = 0

    def check(self):
        """One-line UserErrors for values out of range."""
        if self.num_images < 2:
            raise UserError(f"--num_images must be >= 2, got {self.num_images}")
        if self.held_out is not None and not 1 <= self.held_out < self.num_images:
            raise UserError(f"--held_out must be in [1, --num_images), got {self.held_out}")
        if self.task not in TASKS:
            raise UserError(f"--task '{self.task}' is not one of {', '.join(TASKS)}")
        if self.batch_size < 1:
            raise UserError(f"--batch_size must be >= 1, got {self.batch_size}")
        if self.recover_iters < 0:
            raise UserError(f"--recover_iters must be >= 0, got {self.recover_iters}")
        if not self.recover_lr > 0:
            raise UserError(f"--recover_lr must be > 0, got {self.recover_lr}")
        if self.checkpoint_every < 1:
            raise UserError(f"--checkpoint_every must be >= 1, got {self.checkpoint_every}")
        return self


class SourceFreeSession:
    """Calibration / held-out images and the unpruned model as a frozen teacher (loaded
    again from `files` into a scope of its own), for one prune of `model`."""

    def __init__(self, files, model, executor, options, log=None):
        import paddle

        from slim.io.inference_model import load_inference_model
        self.options = options.check()
        self.log = log or (lambda message: print(message, file=sys.stderr))
        self.executor = executor
        feed_shape = list(model.feed_vars[0].shape) if model.feed_vars else None
        preprocess = Preprocess.for_model(files.directory, options.preprocess, feed_shape)
        held_out = options.held_out if options.held_out is not None else DEFAULT_HELD_OUT
        self.images = CalibrationSet.from_source(options.images, preprocess,
                                                 options.num_images, held_out,
                                                 seed=options.seed, log=self.log)
        self.teacher_scope = paddle.static.Scope()
        self.teacher = load_inference_model(files, executor, self.teacher_scope)
        self.fetch_names = [var.name for var in self.teacher.fetch_vars]
        self.teacher_runner = ProgramRunner(self.teacher.program, self.teacher_scope, executor,
                                            self.teacher.feed_names)
        self._batch = 1 if options.task == "detect" else options.batch_size
        try:
            self.reference = self.teacher_runner.outputs(self.images.held_out, self.fetch_names,
                                                         self._batch)
        except Exception as error:  # noqa: BLE001 - Paddle raises many types
            raise UserError(f"the model cannot run on the calibration images (preprocessing "
                            f"{preprocess.describe()}): {str(error).strip().splitlines()[-1]}; "
                            "fix --preprocess") from None
        self._search_reference = None

    def statistics(self, graph, kinds=("activation", "taylor")):
        """Channel statistics of the unpruned model on the calibration images."""
        return activation_statistics(self.teacher, self.teacher_scope, self.executor,
                                     self.images.calibration[:MAX_STATISTICS_IMAGES], graph,
                                     kinds=kinds,
                                     batch_size=min(self.options.batch_size, 4),
                                     seed=self.options.seed)

    def fidelity(self, model, scope, samples=None):
        """The fidelity report of `model` (params in `scope`) against the unpruned model on
        `samples` (default: the held-out images)."""
        if samples is None:
            samples, reference = self.images.held_out, self.reference
        else:
            if self._search_reference is None or self._search_reference[0] is not samples:
                self._search_reference = (samples, self.teacher_runner.outputs(
                    samples, self.fetch_names, self._batch))
            reference = self._search_reference[1]
        runner = ProgramRunner(model.program, scope, self.executor, model.feed_names)
        candidate = runner.outputs(samples, self.fetch_names, self._batch)
        report = fidelity_report(reference, candidate, self.options.task, self.options.threshold)
        report["held_out"] = samples is self.images.held_out
        return report

    def search_samples(self):
        """The calibration images the accuracy-bounded search measures on."""
        return self.images.calibration[:MAX_SEARCH_IMAGES]

    def reconstruct(self, plan, graph, model, scope):
        """Least-squares refit of the pruned channels' readers (see slim.sourcefree.reconstruct)."""
        student = ProgramRunner(model.program, scope, self.executor, model.feed_names)
        return reconstruct(plan, graph, model, scope, student, self.teacher_runner,
                           self.images.calibration[:MAX_RECONSTRUCT_IMAGES],
                           batch_size=self.options.batch_size,
                           seed=self.options.seed)

    def recover(self, model, scope, identity=None):
        """Distillation from the unpruned model (see slim.sourcefree.recover)."""
        options = self.options
        return recover(model, scope, self.executor, self.teacher_runner, self.images.calibration,
                       options.recover_iters, options.recover_lr, options.batch_size,
                       options.checkpoint_dir, options.checkpoint_every, options.seed,
                       identity, self.log)


def search_largest_cut(evaluate, high=SEARCH_HIGH, steps=SEARCH_STEPS, log=None):
    """The largest pruning ratio t in (0, high] for which evaluate(t) -> (ok, detail) is ok,
    by bisection (assuming a larger cut is never better); (t or None, [steps tried])."""
    low, best, tried = 0.0, None, []
    ok, detail = evaluate(high)
    tried.append({"ratio": high, "ok": ok, **detail})
    if ok:
        return high, tried
    for _ in range(steps):
        middle = round((low + high) / 2.0, 4)
        ok, detail = evaluate(middle)
        tried.append({"ratio": middle, "ok": ok, **detail})
        if log:
            log(f"search: ratio {middle:.4f} {'within' if ok else 'beyond'} the bound "
                f"({', '.join(f'{k} {v:.4f}' for k, v in detail.items() if isinstance(v, float))})")
        if ok:
            low, best = middle, middle
        else:
            high = middle
    return best, tried
