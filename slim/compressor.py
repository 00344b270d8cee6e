"""The compress driver: config -> programs -> pruning plans -> fine-tuning -> checkpoints + export.

    python compress.py -s configs/yolov3_mobilenet_v1_slim.yaml \
        -c configs/yolov3_mobilenet_v1_voc.yml -o max_iters=258 YoloTrainFeed.batch_size=64 \
        -d dataset/voc

One epoch is `max_iters` iterations (`max_iters: auto` = one pass over the
training set at the total batch size). Before each epoch every strategy whose
start_epoch has come fires (UniformPruneStrategy prunes), then the epoch
trains; every `eval_epoch` epochs (and after the last) the model is evaluated
and the best metric tracked; after every epoch rank 0 writes
`${checkpoint_path}/${epoch}/` atomically, with `eval_model/__model__`,
`__model__.infer` and `__params__` inside.

Where training starts: the highest complete checkpoint in checkpoint_path
(a restart after a crash), else `compressor.init_model` (a checkpoint dir, or
weights), else the detection config's `weights` (a trained detector), else its
`pretrain_weights` (backbone weights, loaded partially), else random init. A
checkpoint's pruning plans are replayed before its tensors are loaded, and the
LR schedule continues at its iteration. The config itself is never stored, so
edits to it apply on restart.
"""
import dataclasses
import importlib.util
import itertools
import os
import re

from slim.engine.hooks import HookBase
from slim.errors import ConfigError, Interrupted, UserError, shorten, stop_on_sigterm
from slim.output_places import OutputPlaceError, WrittenFiles, check_output_dir

RECIPE_TOTAL_BATCH = 64  # the seed's recipe: 8 cards x 8 images (FACTS.md section 2)
SUMMARY_FILE = "compress_summary.json"  # in --output_eval
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")


def replayable_plans(checkpoint, programs):
    """The PrunePlans of `checkpoint`, proven to replay on `programs` before anything changes:
    each is parsed, then applied in order to clones of the programs, and every group it
    names must be a channel group there with the recorded channel count. CheckpointError
    naming the checkpoint otherwise; `programs` themselves are never touched here, so a
    refused checkpoint leaves nothing half pruned."""
    from slim.checkpoint import CheckpointError
    from slim.prune import PruneError, PrunePlan, analyze_program, apply_plan
    from slim.prune.apply import find_group
    try:
        plans = [PrunePlan.from_dict(record["plan"]) for record in checkpoint.state.pruning_plans]
        clones = [programs.eval.program.clone()]
        if not programs.env.is_distributed:  # fleet's train program is not analysed (ProgramSet.apply)
            clones.insert(0, programs.train.program.clone())
        for plan in plans:
            graphs = [analyze_program(clone) for clone in clones]
            for group_plan in plan.groups:
                if all(find_group(group_plan, graph) is None for graph in graphs):
                    raise PruneError(f"group '{shorten(group_plan.key[0], 80)}' is not in this model")
            apply_plan(plan, clones, graphs=graphs)
    except PruneError as error:
        raise CheckpointError(f"checkpoint '{checkpoint.path}': its pruning plans do not replay "
                              f"on this model ({error})") from None
    return plans


def replay_checkpoint(checkpoint, programs, scope, executor, only_parameters=False, plans=None):
    """Replay a checkpoint's pruning plans on `programs` and `scope` (so shapes match),
    then load its tensors (only the parameters with `only_parameters`). `plans` are the
    checkpoint's `replayable_plans` if the caller has them already."""
    from slim import checkpoint as checkpoint_lib
    for plan in plans if plans is not None else replayable_plans(checkpoint, programs):
        programs.apply(plan, scope)
    checkpoint_lib.load_checkpoint_persistables(checkpoint, programs.train.program, scope,
                                                executor, only_parameters=only_parameters)

# ----------------------------------------------------------------------------- LR scaling

def scale_learning_rate(learning_rate, recipe_total_batch, total_batch):
    """A LearningRate for `total_batch` images per iteration from one tuned for
    `recipe_total_batch`: base_lr (and explicit PiecewiseDecay values) scaled linearly,
    milestones and warmup steps scaled inversely, so the schedule covers the same number
    of images. Returns (new LearningRate, description)."""
    from slim.optimizer import LearningRate, LinearWarmup, PiecewiseDecay
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


# ----------------------------------------------------------------------------- weights

def _local_path(key, path):
    """`path` if it exists locally; a UserError naming `key` for URLs, archives, missing paths."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", str(path)):
        raise UserError(f"{key} '{path}' is a URL and nothing can be downloaded here: download "
                        f"(and extract) it yourself, then pass the local path, e.g. -o {key}=/path/to/dir")
    if not os.path.exists(path):
        raise UserError(f"{key} '{path}' does not exist; expected a directory of per-parameter "
                        "files, a combined params file, an eval_model dir or a checkpoint dir "
                        f"(set -o {key}=PATH, or {key}=null to start without it)")
    if os.path.isfile(path) and str(path).endswith(ARCHIVE_SUFFIXES):
        raise UserError(f"{key} '{path}' is an archive: extract it and pass the directory")
    return path


def load_weights_into(key, path, programs, scope, executor, place, partial, log):
    """Load `path` (see `_local_path`) into `scope` for `programs`; a checkpoint dir also
    replays its pruning plans. Returns the plan records replayed."""
    from slim import checkpoint as checkpoint_lib
    from slim.export import PARAMS_NAME, verify_model_manifest
    from slim.weights import load_weights
    path = _local_path(key, path)
    if os.path.isfile(os.path.join(path, checkpoint_lib.MANIFEST_NAME)):
        try:
            checkpoint = checkpoint_lib.validate_checkpoint(path)
            plans = replayable_plans(checkpoint, programs)
        except checkpoint_lib.CheckpointError as error:
            raise UserError(f"{key}: {error}") from None
        replay_checkpoint(checkpoint, programs, scope, executor, only_parameters=True, plans=plans)
        log(f"loaded {key} from checkpoint '{path}' (epoch {checkpoint.state.epoch}, "
            f"{len(checkpoint.state.pruning_plans)} pruning plan(s) replayed)")
        # Marked so that a resumed run replays them without taking them for its own strategies.
        return [dict(record, source=key) for record in checkpoint.state.pruning_plans]
    if os.path.isdir(path) and os.path.isfile(os.path.join(path, PARAMS_NAME)):
        verify_model_manifest(path, [PARAMS_NAME])  # an exported model's manifest, if it has one
        path = os.path.join(path, PARAMS_NAME)  # an eval_model dir: its combined params
    report = load_weights(scope, programs.eval.program, path, partial=partial, place=place)
    log(f"loaded {key} '{path}': {len(report.loaded)} parameters"
        + (f" ({len(report.missing)} not in the file keep their initial values)"
           if report.missing else ""))
    return []


# ----------------------------------------------------------------------------- the run

def _prune_infer_model_enabled(value):
    """prune_infer_model: true/false, or the seed's [[inputs], [outputs]] naming our feeds."""
    if isinstance(value, bool):
        return value
    inputs, _outputs = value
    if list(inputs) != ["image", "im_size"]:
        raise ConfigError(f"compressor.prune_infer_model: inputs {list(inputs)} are not supported; "
                          "the inference model takes [image, im_size] (or write true)")
    return True


def _usable_checkpoint(checkpoint_root, programs, log):
    """(the highest complete checkpoint in `checkpoint_root` whose pruning plans replay on
    `programs`, its plans), or (None, []). Every checkpoint passed over is a warning naming
    it, and so is falling back below the highest epoch."""
    from slim import checkpoint as checkpoint_lib
    if not checkpoint_root:
        return None, []
    for checkpoint in checkpoint_lib.complete_checkpoints(checkpoint_root, log=log):
        try:
            plans = replayable_plans(checkpoint, programs)
        except checkpoint_lib.CheckpointError as error:
            log(f"warning: skipping {error}")
            continue
        if checkpoint.state.epoch < checkpoint_lib.checkpoint_epochs(checkpoint_root)[0]:
            log(f"warning: resuming from the previous complete checkpoint '{checkpoint.path}' "
                "(the newer ones above were skipped)")
        return checkpoint, plans
    if checkpoint_lib.checkpoint_epochs(checkpoint_root):
        log(f"warning: no usable checkpoint in '{checkpoint_root}' (see above): training starts "
            "from the beginning and replaces them epoch by epoch")
    return None, []


def _starting_checkpoint(checkpoint_root, init_model, programs, log):
    """(the checkpoint to resume from (see the module docstring) or None, its replayable
    plans, whether init_model names weights rather than a checkpoint)."""
    from slim import checkpoint as checkpoint_lib
    latest, latest_plans = _usable_checkpoint(checkpoint_root, programs, log)
    if not init_model:
        return latest, latest_plans, False
    path = _local_path("compressor.init_model", init_model)
    if not os.path.isfile(os.path.join(path, checkpoint_lib.MANIFEST_NAME)):
        epochs = checkpoint_lib.checkpoint_epochs(path)
        if epochs:  # a checkpoint_path, not one checkpoint: its parameter files are not there
            raise UserError(f"compressor.init_model '{shorten(init_model)}' holds checkpoints "
                            f"(epochs {', '.join(map(str, sorted(epochs)[:8]))}), not one: name one "
                            f"of them, e.g. {shorten(os.path.join(init_model, str(max(epochs))))}")
        if latest is not None:
            log(f"resuming from '{latest.path}' in checkpoint_path; init_model '{init_model}' "
                "is not used")
            return latest, latest_plans, False
        return None, [], True
    try:
        chosen = checkpoint_lib.validate_checkpoint(path)
        if latest is not None and latest.state.epoch > chosen.state.epoch:
            log(f"resuming from '{latest.path}' (epoch {latest.state.epoch}), newer than "
                f"init_model '{init_model}' (epoch {chosen.state.epoch})")
            return latest, latest_plans, False
        return chosen, replayable_plans(chosen, programs), False
    except checkpoint_lib.CheckpointError as error:
        raise UserError(f"compressor.init_model: {error}") from None


@dataclasses.dataclass
class CompressJob:
    """Everything set up before the first epoch (see `prepare_job`). `compressor` holds the
    run's settings (epoch, eval_epoch, checkpoint_path, init_model, save_eval_model): the
    slim config's compressor section, or what train.py makes of its flags."""
    args: object
    cfg: object
    compressor: object
    env: object
    log: object
    strategies: list
    with_infer_model: bool
    executor: object
    place: object
    scope: object
    programs: object
    scheduler: object
    train_loader: object
    max_iters: int
    total_batch: int
    metric_name: str
    flops_before: float
    params_before: float
    total_iterations: int = None  # of the whole run; default compressor.epoch x max_iters
    # Where training starts when there is no checkpoint (after compressor.init_model).
    weights_keys: tuple = ("weights", "pretrain_weights")

    def __post_init__(self):
        if self.total_iterations is None:
            self.total_iterations = self.compressor.epoch * self.max_iters

    def epoch_length(self, epoch):
        """Iterations of `epoch`: max_iters, the last epoch what is left of total_iterations."""
        return min(self.max_iters, self.total_iterations - epoch * self.max_iters)


@dataclasses.dataclass
class RunState:
    """Where the run is: what a checkpoint stores besides tensors."""
    plan_records: list = dataclasses.field(default_factory=list)
    next_epoch: int = 0
    iteration: int = 0
    best_metric: object = None
    best_epoch: object = None
    history: list = dataclasses.field(default_factory=list)
    last_checkpoint: object = None
    hook_states: dict = dataclasses.field(default_factory=dict)


def prepare_job(args):
    """Validate both configs, choose the device, build loader, programs and scope."""
    import paddle

    from slim import distributed
    from slim.config import load_config, load_slim_config
    from slim.data import set_dataset_dir
    from slim.metrics import resolve_metric_name
    from slim.strategies import build_strategies
    from slim.trainer import log_to_stdout
    paddle.enable_static()

    cfg = load_config(args.config, args.opt)
    set_dataset_dir(cfg, args.dataset_dir)
    slim_cfg = load_slim_config(args.slim_file)
    env = distributed.read_distributed_env()
    log = log_to_stdout if env.is_main else (lambda message: None)
    metric_name = resolve_metric_name(cfg.get("metric", "VOC"))
    strategies = build_strategies(slim_cfg, metric_name, log=log)
    compressor = slim_cfg.compressor
    with_infer_model = _prune_infer_model_enabled(compressor.prune_infer_model)
    check_feeds(args.config, cfg)
    if env.is_main:  # rank 0 alone writes
        check_output_places(args, cfg, compressor, metric_name)
    if not compressor.checkpoint_path:
        log("warning: compressor.checkpoint_path is null: no checkpoint or model will be saved")
    return build_job(args, cfg, compressor, strategies, env, log, metric_name, with_infer_model)


def check_feeds(config_path, cfg):
    """ConfigError when the detection config names no train or eval feed."""
    for key, example in (("train_feed", "YoloTrainFeed"), ("eval_feed", "YoloEvalFeed")):
        if not cfg.get(key):
            raise ConfigError(f"{config_path}: {key} is not set (e.g. {key}: {example})")


def build_job(args, cfg, compressor, strategies, env, log, metric_name, with_infer_model,
              epoch_iterations=None):
    """The device, loader, programs (with the strategies' build hooks) and scope of a run
    whose configs and output places are checked. `epoch_iterations` (train.py's
    snapshot_iter) makes max_iters the run's total and epochs that long."""
    import numpy as np
    import paddle

    from slim import distributed
    from slim.config import create
    from slim.data.loader import build_train_loader
    from slim.trainer import ProgramSet
    place = distributed.select_place(cfg.get("use_gpu", False), env, log=log)
    distributed.init_collective(env)
    seed = cfg.get("random_seed")
    if seed is not None:
        paddle.seed(int(seed))
        np.random.seed(int(seed))

    model = create(cfg["architecture"], cfg)
    train_feed = create(cfg["train_feed"], cfg)
    eval_feed = create(cfg["eval_feed"], cfg)
    train_loader = build_train_loader(train_feed, rank=env.rank, world_size=env.world_size,
                                      seed=int(seed or 0))
    total_batch = train_feed.batch_size * env.world_size
    max_iters = cfg.get("max_iters", "auto")
    if max_iters == "auto":
        max_iters = train_loader.batches_per_epoch
        log(f"max_iters auto: {train_loader.num_samples} training images / total batch "
            f"{total_batch} = {max_iters} iterations per epoch")
    total_iterations = None
    if epoch_iterations is not None:
        total_iterations, max_iters = max_iters, min(max_iters, epoch_iterations)
    learning_rate = create("LearningRate", cfg)
    if getattr(args, "scale_lr", None):
        learning_rate, description = scale_learning_rate(learning_rate, args.scale_lr, total_batch)
        log(description)
    scheduler = learning_rate.scheduler(0)
    sync_bn = getattr(getattr(model, "backbone", None), "norm_type", "bn") == "sync_bn"
    programs = ProgramSet(model, eval_feed.image_shape, create("OptimizerBuilder", cfg), scheduler,
                          env, sync_bn, build_hooks=strategies)
    if seed is not None:
        programs.startup.random_seed = int(seed)
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(place)
    executor.run(programs.startup, scope=scope)
    return CompressJob(args, cfg, compressor, env, log, strategies, with_infer_model, executor, place,
                       scope, programs, scheduler, train_loader, max_iters, total_batch, metric_name,
                       programs.flops(), programs.params(), total_iterations)


def visualdl_dir(cfg):
    """Where VisualDL scalars go: save_dir/vdl."""
    return os.path.join(cfg.get("save_dir") or "output", "vdl")


def check_output_places(args, cfg, compressor, metric_name):
    """Every place compress.py writes, checked before any work: checkpoint_path, save_dir/vdl
    (when VisualDL is installed: nothing goes there otherwise), --output_eval and the files
    it gets. Each must be writable and none of the run's inputs (dataset dirs, configs,
    init_model, weights); a one-line OutputPlaceError otherwise."""
    from slim.run_inputs import config_inputs
    inputs = config_inputs(cfg, ("train_feed", "eval_feed"), args.config, args.slim_file,
                           compressor.init_model)
    check_run_output_places(cfg, inputs, compressor.checkpoint_path, "compressor.checkpoint_path",
                            args.output_eval, metric_name, SUMMARY_FILE)


def check_run_output_places(cfg, inputs, checkpoint_path, checkpoint_key, output_eval,
                            metric_name, summary_file):
    """The places every training run writes: `checkpoint_path` (if set; named `checkpoint_key`
    in errors), save_dir/vdl when VisualDL is installed, and `output_eval` (if set) with the
    eval result files and `summary_file`; none of them one of `inputs`."""
    from slim import checkpoint as checkpoint_lib
    from slim.evaluate import check_output_eval, result_file_names
    if checkpoint_path:
        check_output_dir(checkpoint_path, checkpoint_key, inputs)
        checkpoint_lib.check_checkpoint_root(checkpoint_path, what=checkpoint_key)
    if importlib.util.find_spec("visualdl") is not None:
        _refuse_inside_checkpoint_epochs(visualdl_dir(cfg), "save_dir", checkpoint_path, checkpoint_key)
        check_output_dir(visualdl_dir(cfg), "save_dir", inputs)
    if output_eval:
        _refuse_inside_checkpoint_epochs(output_eval, "--output_eval", checkpoint_path, checkpoint_key)
        check_output_eval(output_eval, result_file_names(metric_name) + [summary_file], inputs)


def _refuse_inside_checkpoint_epochs(path, what, checkpoint_path, checkpoint_key):
    """OutputPlaceError when `path` is or lies in an epoch dir of `checkpoint_path`: the run
    writes its checkpoints there, and an epoch dir holding something else is not replaced."""
    if not checkpoint_path:
        return
    relative = os.path.relpath(os.path.abspath(path), os.path.abspath(checkpoint_path))
    first = relative.split(os.sep)[0]
    if first.isdigit():
        raise OutputPlaceError(f"{what} '{shorten(path)}' lies in the checkpoint directory "
                               f"'{shorten(os.path.join(checkpoint_path, first))}' that this run "
                               f"writes ({checkpoint_key}); choose a place outside its epoch dirs")


def _check_schedule_fits(job, checkpoint):
    """UserError when the checkpoint's iteration is not where this run's epochs put the end
    of its epoch (max_iters changed since it was written): the run could not continue it."""
    epoch, iteration = int(checkpoint.state.epoch), int(checkpoint.state.iteration)
    expected = min((epoch + 1) * job.max_iters, job.total_iterations)
    if iteration == expected:
        return
    made_with = f" (max_iters {iteration // (epoch + 1)})" if iteration % (epoch + 1) == 0 else ""
    raise UserError(f"checkpoint '{shorten(checkpoint.path)}' ends epoch {epoch} at iteration "
                    f"{iteration}{made_with}, but this run's epochs of max_iters {job.max_iters} "
                    f"end it at iteration {expected}: resume with the max_iters it was made with, "
                    "or start a new checkpoint_path")


def restore_state(job):
    """Resume from a checkpoint (plans replayed, tensors, LR schedule and hook states
    restored) or load the starting weights; return the RunState to continue from."""
    state = RunState()
    start, plans, init_is_weights = _starting_checkpoint(
        job.compressor.checkpoint_path, job.compressor.init_model, job.programs, job.log)
    if start is not None:
        _check_schedule_fits(job, start)
        hook_states = checkpoint_hook_states(start, job.strategies)
        replay_checkpoint(start, job.programs, job.scope, job.executor, plans=plans)
        state = RunState(list(start.state.pruning_plans), start.state.epoch + 1,
                         int(start.state.iteration), start.state.best_metric,
                         start.state.best_epoch, list(start.state.extra.get("history", [])),
                         start.path, hook_states)
        job.log(f"resumed from checkpoint '{start.path}': epoch {start.state.epoch} done, "
                f"iteration {state.iteration}, {len(state.plan_records)} pruning plan(s) replayed")
    else:
        sources = [("compressor.init_model", job.compressor.init_model if init_is_weights else None,
                    False)] + [(key, job.cfg.get(key), key == "pretrain_weights")
                               for key in job.weights_keys]
        for key, path, partial in sources:
            if path:
                state.plan_records = load_weights_into(key, path, job.programs, job.scope,
                                                       job.executor, job.place, partial, job.log)
                break
    job.scheduler.last_epoch = state.iteration  # continue the schedule where it left off
    job.scheduler.last_lr = job.scheduler.get_lr()
    return state


HOOK_STATES_KEY = "hooks"  # in CheckpointState.extra: {hook name: state_dict()}


def checkpoint_hook_states(checkpoint, strategies):
    """The hook states `checkpoint` stores. A checkpoint written before hooks had states
    holds only pruning plans: each strategy whose plan it holds gets its `legacy_state`
    (UniformPruneStrategy: fired); a strategy that cannot take such a checkpoint over
    refuses it with a one-line CheckpointError."""
    from slim.checkpoint import CheckpointError
    extra = checkpoint.state.extra
    if HOOK_STATES_KEY in extra:
        states = extra[HOOK_STATES_KEY]
        if not isinstance(states, dict) or not all(isinstance(v, dict) for v in states.values()):
            raise CheckpointError(f"checkpoint '{checkpoint.path}': its hook states are not a "
                                  "mapping of hook names to mappings")
        return states
    states = {}
    by_name = {strategy.name: strategy for strategy in strategies}
    # Plans that came with `weights` ("source") belong to the starting model, not to a strategy.
    for record in checkpoint.state.pruning_plans:
        strategy = by_name.get(record.get("strategy"))
        if strategy is None or "source" in record:
            continue
        legacy = strategy.legacy_state(record)
        if legacy is None:
            raise CheckpointError(
                f"checkpoint '{checkpoint.path}' was written before strategies stored their "
                f"state and strategy '{strategy.name}' ({type(strategy).__name__}) cannot take "
                "it over; remove it (or start with another checkpoint_path)")
        states[strategy.name] = legacy
    return states


def _evaluate_epoch(job, state, epoch, eval_loader, metric, scalars):
    """Evaluate the eval program now; update best metric and history; write --output_eval."""
    from slim.evaluate import record_detections_json, result_summary, write_result_json
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
    from slim.evaluate import evaluate
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
    import math

    def evaluate(fraction=1.0):
        if not 0 < fraction <= 1:
            raise ValueError(f"evaluate(fraction={fraction}): the fraction must be in (0, 1]")
        loader = eval_loader if fraction == 1 else FirstBatches(
            eval_loader, max(1, math.ceil(fraction * len(eval_loader))))
        return float(evaluate_programs(job, loader, metric, progress=False)["mAP"])
    return evaluate


def _save_epoch(job, state, epoch, hook_states):
    """Write the checkpoint of `epoch` (with eval_model/ inside) atomically."""
    from slim import checkpoint as checkpoint_lib
    from slim.export import EVAL_MODEL_DIR, export_model
    checkpoint_state = checkpoint_lib.CheckpointState(
        epoch=epoch, iteration=state.iteration, best_metric=state.best_metric,
        best_epoch=state.best_epoch, pruning_plans=state.plan_records,
        extra={"history": state.history, "flops": job.programs.flops(),
               "flops_unpruned": job.flops_before, HOOK_STATES_KEY: hook_states})

    def write_eval_model(temp_dir):
        export_model(job.programs.eval, job.scope, job.executor,
                     os.path.join(temp_dir, EVAL_MODEL_DIR),
                     with_eval_model=job.compressor.save_eval_model,
                     with_infer_model=job.with_infer_model)
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


def train_step(job):
    """`step(batch) -> {loss name: float}`: one iteration of the train program."""
    import numpy as np

    from slim.trainer import LOSS_FETCHES, TRAIN_FEEDS

    def step(batch):
        fetches = [job.programs.train.fetches[name] for name in LOSS_FETCHES]
        values = job.executor.run(job.programs.train.program,
                                  feed={name: batch[name] for name in TRAIN_FEEDS},
                                  fetch_list=fetches, scope=job.scope)
        return {name: float(np.asarray(value).reshape(-1)[0])
                for name, value in zip(LOSS_FETCHES, values)}
    return step


def make_train_log(job, epochs):
    """A TrainLog (with VisualDL scalars on rank 0, under save_dir/vdl) for the run."""
    from slim.trainer import ScalarWriter, TrainLog
    vdl_dir = visualdl_dir(job.cfg)
    scalars = ScalarWriter(vdl_dir, enabled=job.env.is_main)
    if scalars.active:
        job.log(f"VisualDL scalars -> {vdl_dir}")
    return TrainLog(job.cfg.get("log_iter", 20), job.cfg.get("log_smooth_window", 20),
                    job.total_iterations, job.total_batch, log=job.log, scalars=scalars)


def run_hooks(job, epochs):
    """The hooks of a run, in the order they are called: the strategies (validated before
    the first iteration, fired before their epoch), the NaN guard, LR stepping, the log and
    VisualDL, then on rank 0 evaluation and the checkpoint of every epoch."""
    from slim.config import create
    from slim.data.loader import build_eval_loader
    from slim.engine.hooks import LRSchedule, NanGuard, TrainLogger
    from slim.evaluate import make_metric
    logger = TrainLogger(lambda: make_train_log(job, epochs), epochs)
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
    from slim.strategies import StrategyContext
    epochs = job.compressor.epoch
    if state.next_epoch >= epochs:
        job.log(f"all {epochs} epochs are done (checkpoint '{state.last_checkpoint}'); "
                "nothing to train")
        return
    hooks, evaluate = run_hooks(job, epochs)
    context = StrategyContext(state.next_epoch, job.programs, job.scope, job.log, job.executor,
                              evaluate)
    runner = Runner(train_step(job), hooks, state, context)
    runner.load_hook_states(state.hook_states)
    # One batch stream for the whole run: worker processes start once, and the stream ends
    # exactly after the last epoch, which shuts them down (an abandoned paddle DataLoader
    # leaves its workers running).
    stream = job.train_loader.batches(start_iteration=state.iteration,
                                      num_iterations=job.total_iterations - state.iteration)
    try:
        runner.train(epochs, lambda epoch: itertools.islice(stream, job.epoch_length(epoch)),
                     job.epoch_length)
        for _ in stream:  # reach the end of the stream so the loader stops its workers
            raise RuntimeError("the training data stream yielded more batches than the epochs use")
    finally:
        stream.close()


def summarize(job, state, summary_file=SUMMARY_FILE):
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


def run_compress(args):
    """Entry of compress.py: validate both configs, then prune and fine-tune as they say.
    Returns a summary dict (FLOPs, params, best metric, last checkpoint). Ctrl-C ends in
    `Interrupted` naming the last complete checkpoint, where the same command resumes."""
    job, state, _ = run_guarded(lambda: prepare_job(args))
    return summarize(job, state)


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
    from slim import checkpoint as checkpoint_lib
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
