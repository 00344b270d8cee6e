"""The run of compress.py and train.py: restore, then the Runner with the strategies, the NaN
guard, LR stepping, the log, evaluation and checkpoints as hooks, under a lock on
checkpoint_path, with SIGTERM and Ctrl-C ending in one line naming the last checkpoint."""
import itertools
import os

from slim.errors import Interrupted, shorten, stop_on_sigterm
from slim.io.output_places import WrittenFiles
from slim.runs.epoch_hooks import EpochCheckpoint, EpochEvaluation, strategy_evaluator
from slim.runs.job import visualdl_dir
from slim.runs.restore import restore_state


def train_step(job):
    """`step(batch) -> {loss name: float}`: one iteration of the train program."""
    import numpy as np

    from slim.engine.programs import TRAIN_FEEDS, loss_fetches

    def step(batch):
        names = loss_fetches(job.programs.train)
        values = job.executor.run(job.programs.train.program,
                                  feed={name: batch[name] for name in TRAIN_FEEDS},
                                  fetch_list=[job.programs.train.fetches[name] for name in names],
                                  scope=job.scope)
        return {name: float(np.asarray(value).reshape(-1)[0]) for name, value in zip(names, values)}
    return step


def make_train_log(job, epochs, rank_sum=None):
    """A TrainLog (with VisualDL scalars on rank 0, under save_dir/vdl) for the run; its
    losses are the means over ranks (`rank_sum`, one all-reduce per log line)."""
    from slim.engine.train_log import ScalarWriter, TrainLog
    vdl_dir = visualdl_dir(job.cfg)
    scalars = ScalarWriter(vdl_dir, enabled=job.env.is_main)
    if scalars.active:
        job.log(f"VisualDL scalars -> {vdl_dir}")
    return TrainLog(job.cfg.get("log_iter", 20), job.cfg.get("log_smooth_window", 20),
                    job.total_iterations, job.total_batch, log=job.log, scalars=scalars,
                    reduce_mean=rank_sum.mean if rank_sum is not None else None)


def run_hooks(job, epochs, rank_sum=None):
    """The hooks of a run, in the order they are called: the strategies (validated before
    the first iteration, fired before their epoch), the NaN guard, LR stepping, the log and
    VisualDL (losses averaged over ranks by `rank_sum`), then on rank 0 evaluation and the
    checkpoint of every epoch."""
    from slim.config import create
    from slim.data.loader import build_eval_loader
    from slim.engine.evaluation import make_metric
    from slim.engine.hooks import LRSchedule, NanGuard, TrainLogger
    logger = TrainLogger(lambda: make_train_log(job, epochs, rank_sum), epochs)
    hooks = [*job.strategies, NanGuard(), LRSchedule(job.scheduler), logger]
    evaluate = None
    if job.env.is_main:  # rank 0 alone evaluates and writes files
        eval_loader = build_eval_loader(create(job.cfg["eval_feed"], job.cfg))
        json_path = os.path.join(job.args.output_eval, "bbox.json") if job.args.output_eval else None
        metric = make_metric(job.cfg, eval_loader, json_path=json_path)
        hooks.append(EpochEvaluation(job, eval_loader, metric, logger, epochs))
        if job.compressor.checkpoint_path:
            hooks.append(EpochCheckpoint(job))
        evaluate = strategy_evaluator(job, eval_loader, metric)
    return hooks, evaluate


def run_epochs(job, state):
    """Strategies, training, evaluation and checkpoints of every remaining epoch."""
    from slim.engine import Runner
    from slim.engine.distributed import RankSum
    from slim.engine.hooks import StartTogether
    from slim.strategies import StrategyContext
    epochs = job.compressor.epoch
    if state.next_epoch >= epochs:
        job.log(f"all {epochs} epochs are done (checkpoint '{state.last_checkpoint}'); "
                "nothing to train")
        return
    rank_sum = RankSum(job.env, job.executor)
    gate = StartTogether(rank_sum)
    try:
        hooks, evaluate = run_hooks(job, epochs, rank_sum)
        context = StrategyContext(state.next_epoch, job.programs, job.scope, job.log, job.executor,
                                  evaluate, world_size=job.env.world_size)
        runner = Runner(train_step(job), [*hooks, gate], state, context)
        runner.load_hook_states(state.hook_states)
        # One batch stream for the whole run: worker processes start once, and the stream
        # ends exactly after the last epoch, which shuts them down (an abandoned paddle
        # DataLoader leaves its workers running).
        stream = job.train_loader.batches(start_iteration=state.iteration,
                                          num_iterations=job.total_iterations - state.iteration)
        try:
            runner.train(epochs, lambda epoch: itertools.islice(stream, job.epoch_length(epoch)),
                         job.epoch_length)
            for _ in stream:  # reach the end of the stream so the loader stops its workers
                raise RuntimeError("the training data stream yielded more batches than the epochs "
                                   "use")
        finally:
            stream.close()
    except Exception:
        gate.give_up()  # stopped before the first iteration: the other ranks must not train
        raise


def summarize(job, state, summary_file):
    """Log the outcome; write `summary_file` (compress_summary.json) with --output_eval;
    return the summary."""
    flops_after, params_after = job.programs.flops(), job.programs.params()
    summary = {"flops_before": job.flops_before, "flops_after": flops_after,
               "params_before": job.params_before, "params_after": params_after,
               "best_metric": state.best_metric, "best_epoch": state.best_epoch,
               "metric": job.metric_name, "history": state.history,
               "last_checkpoint": state.last_checkpoint, "max_iters": job.max_iters}
    change = 100 * (flops_after - job.flops_before) / max(1, job.flops_before)
    job.log(f"done: FLOPs {job.flops_before / 1e6:.1f}M -> {flops_after / 1e6:.1f}M "
            f"({change:+.1f}%), params {job.params_before / 1e6:.2f}M -> {params_after / 1e6:.2f}M"
            + (f", best {job.metric_name} mAP {100 * state.best_metric:.2f} at epoch "
               f"{state.best_epoch}" if state.best_metric is not None else "")
            + (f", last checkpoint '{state.last_checkpoint}'" if state.last_checkpoint else ""))
    if job.env.is_main and job.args.output_eval:
        WrittenFiles(job.args.output_eval).write_json(summary_file, summary)
    return summary


def run_guarded(prepare, after_training=None):
    """The run of compress.py and train.py: `prepare()` the job, then, holding its
    checkpoint_path, restore and train it and call `after_training(job)`. SIGTERM and Ctrl-C
    end in `Interrupted` naming the last complete checkpoint. Returns (job, state, what
    after_training returned)."""
    import paddle  # noqa: F401  (its import installs a C++ SIGTERM handler; ours goes back on)
    stop_on_sigterm()
    job = state = None
    try:
        job = prepare()
        with hold_run_checkpoints(job):
            state = restore_state(job)
            run_epochs(job, state)
            finished = after_training(job) if after_training is not None else None
    except KeyboardInterrupt:
        raise Interrupted(interruption_message(job, state)) from None
    return job, state, finished


def hold_run_checkpoints(job):
    """The exclusive lock on the run's checkpoint_path, held by rank 0 while the run restores
    and trains (a second run into it is a one-line error); nothing to hold otherwise."""
    from slim.io import checkpoint as checkpoint_lib
    root = job.compressor.checkpoint_path if job.env.is_main else None
    return checkpoint_lib.hold_checkpoint_root(root)


def interruption_message(job, state):
    """What a Ctrl-C leaves behind, for the one line compress.py ends with: the last
    complete checkpoint (a restart with the same command resumes after it), or that
    there is none."""
    root = job.compressor.checkpoint_path if job is not None else None
    if state is None:
        return ("stopped before training started; no checkpoint was written"
                + (f" (a restart resumes from the highest complete checkpoint in '{shorten(root)}', "
                   "if there is one)" if root else ""))
    if state.last_checkpoint:
        return (f"the last complete checkpoint is '{shorten(state.last_checkpoint)}'; the same "
                "command resumes after it")
    if not root:
        return "no checkpoint was written (compressor.checkpoint_path is null)"
    return (f"there is no complete checkpoint in '{shorten(root)}' yet; the same command starts "
            "from the beginning")
