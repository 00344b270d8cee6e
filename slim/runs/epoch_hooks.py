"""The hooks a run adds on rank 0: evaluation every `eval_epoch` epochs (tracking the best
metric), the checkpoint of every epoch, and the `evaluate(fraction)` strategies call."""
import itertools
import math
import os

from slim.engine.hooks import HookBase
from slim.runs.restore import HOOK_STATES_KEY


def _evaluate_epoch(job, state, epoch, eval_loader, metric, scalars):
    """Evaluate the eval program now; update best metric and history; write --output_eval."""
    from slim.engine.evaluation import record_detections_json, result_summary, write_result_json
    result = evaluate_programs(job, eval_loader, metric, description=f"eval epoch {epoch}")
    value = float(result["mAP"])
    if state.best_metric is None or value > state.best_metric:
        state.best_metric, state.best_epoch = value, epoch
    state.history.append({"epoch": epoch, "mAP": value})
    scalars.add(f"eval/{job.metric_name}_mAP", value, state.iteration)
    job.log(f"epoch {epoch} eval: {job.metric_name} mAP {100 * value:.2f} "
            f"(best {100 * state.best_metric:.2f} at epoch {state.best_epoch})")
    if job.args.output_eval:
        summary = result_summary(result, eval_loader.label_names, job.metric_name)
        summary["epoch"] = epoch
        record_detections_json(job.args.output_eval, metric)
        write_result_json(job.args.output_eval, summary)


def evaluate_programs(job, eval_loader, metric, description="eval", progress=True):
    """The metric's result dict of the eval program as it is now on `eval_loader`."""
    from slim.engine.evaluation import evaluate
    programs = job.programs
    fetches = [programs.eval.fetches["bbox"], programs.eval.fetches["bbox_num"]]
    return evaluate(job.executor, programs.eval.program, ["image", "im_size"], fetches, job.scope,
                    eval_loader, metric, description=description, progress=progress)


class FirstBatches:
    """The first `count` batches of an eval loader (what `StrategyContext.evaluate` with a
    fraction scores); keeps the loader's label_names."""

    def __init__(self, loader, count):
        self.loader, self.count = loader, count
        self.label_names = getattr(loader, "label_names", None)

    def __iter__(self):
        return itertools.islice(iter(self.loader), self.count)

    def __len__(self):
        return self.count


def strategy_evaluator(job, eval_loader, metric):
    """`evaluate(fraction=1.0)` for StrategyContext: the mAP of the eval program now on the
    first `fraction` of the eval set's batches (at least one)."""

    def evaluate(fraction=1.0):
        if not 0 < fraction <= 1:
            raise ValueError(f"evaluate(fraction={fraction}): the fraction must be in (0, 1]")
        loader = eval_loader if fraction == 1 else FirstBatches(
            eval_loader, max(1, math.ceil(fraction * len(eval_loader))))
        return float(evaluate_programs(job, loader, metric, progress=False)["mAP"])
    return evaluate


def _save_epoch(job, state, epoch, hook_states):
    """Write the checkpoint of `epoch` (with eval_model/ inside) atomically."""
    from slim.io import checkpoint as checkpoint_lib
    from slim.io.export import EVAL_MODEL_DIR, export_model
    checkpoint_state = checkpoint_lib.CheckpointState(
        epoch=epoch, iteration=state.iteration, best_metric=state.best_metric,
        best_epoch=state.best_epoch, pruning_plans=state.plan_records,
        extra={"history": state.history, "flops": job.programs.flops(),
               "flops_unpruned": job.flops_before, HOOK_STATES_KEY: hook_states})

    def write_eval_model(temp_dir):
        export_model(job.programs.eval, job.scope, job.executor,
                     os.path.join(temp_dir, EVAL_MODEL_DIR),
                     with_eval_model=job.compressor.save_eval_model,
                     with_infer_model=job.with_infer_model, infer_config=job.infer_config)
    state.last_checkpoint = checkpoint_lib.save_checkpoint(
        job.compressor.checkpoint_path, checkpoint_state, job.programs.train.program, job.scope,
        job.executor, extra_writer=write_eval_model, last_complete=state.last_checkpoint)
    job.log(f"epoch {epoch}: checkpoint '{state.last_checkpoint}'")


class EpochEvaluation(HookBase):
    """Rank 0: evaluate every `eval_epoch` epochs and after the last; track the best."""

    def __init__(self, job, eval_loader, metric, logger, epochs):
        self.job, self.eval_loader, self.metric = job, eval_loader, metric
        self.logger, self.epochs = logger, epochs

    def after_epoch(self, runner):
        epoch = runner.epoch
        if (epoch + 1) % self.job.compressor.eval_epoch == 0 or epoch == self.epochs - 1:
            _evaluate_epoch(self.job, runner.state, epoch, self.eval_loader, self.metric,
                            self.logger.train_log.scalars)


class EpochCheckpoint(HookBase):
    """Rank 0: write the checkpoint of every epoch, with every named hook's state."""

    def __init__(self, job):
        self.job = job

    def after_epoch(self, runner):
        _save_epoch(self.job, runner.state, runner.epoch, runner.hook_states())
