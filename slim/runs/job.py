"""A run assembled from its configs: device, data loader, programs, scope and the settings of
its epochs (`TrainingJob`), where it is (`RunState`), and the places it writes."""
import dataclasses
import importlib.util
import os

from slim.errors import ConfigError, shorten
from slim.io.output_places import OutputPlaceError, check_output_dir

RECIPE_TOTAL_BATCH = 64  # the seed's recipe: 8 cards x 8 images (FACTS.md section 2)


@dataclasses.dataclass
class TrainingJob:
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
    infer_config: dict = None  # what exported models say about themselves (infer_cfg.yml)
    # Where training starts when there is no checkpoint (after compressor.init_model).
    weights_keys: tuple = ("weights", "pretrain_weights")
    # What compressor.init_model is called in messages, and whether it must be a checkpoint.
    init_model_key: str = "compressor.init_model"
    init_model_must_be_checkpoint: bool = False

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

    from slim.config import create
    from slim.data.loader import build_train_loader, label_names
    from slim.engine import distributed
    from slim.engine.programs import ProgramSet
    from slim.runs.inference import inference_config
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
        log(auto_max_iters_message(train_loader, train_feed.batch_size, env.world_size))
    total_iterations = None
    if epoch_iterations is not None:
        total_iterations, max_iters = max_iters, min(max_iters, epoch_iterations)
    learning_rate = create("LearningRate", cfg)
    if getattr(args, "scale_lr", None):
        from slim.engine.optimizer import scale_learning_rate
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
    infer_config = inference_config(cfg, model, label_names(eval_feed.dataset), eval_feed.image_shape)
    return TrainingJob(args, cfg, compressor, env, log, strategies, with_infer_model, executor, place,
                       scope, programs, scheduler, train_loader, max_iters, total_batch, metric_name,
                       programs.flops(), programs.params(), total_iterations, infer_config)


def auto_max_iters_message(train_loader, batch_size, world_size):
    """The log line saying how `max_iters: auto` was counted (on several cards: the images
    per card, and how many were repeated or left out to give every card as many)."""
    count, iterations = train_loader.num_samples, train_loader.batches_per_epoch
    if world_size == 1:
        return (f"max_iters auto: {count} training images / total batch {batch_size} = "
                f"{iterations} iterations per epoch")
    per_card = train_loader.shard[1] - train_loader.shard[0]
    extra = per_card * world_size - count
    note = (f", {extra} repeated to even the shards" if extra > 0 else
            f", {-extra} left out by drop_last" if extra < 0 else "")
    return (f"max_iters auto: {count} training images on {world_size} cards of batch "
            f"{batch_size} = {iterations} iterations per epoch ({per_card} images per card{note})")


def visualdl_dir(cfg):
    """Where VisualDL scalars go: save_dir/vdl."""
    return os.path.join(cfg.get("save_dir") or "output", "vdl")


def check_run_output_places(cfg, inputs, checkpoint_path, checkpoint_key, output_eval,
                            metric_name, summary_file):
    """The places every training run writes: `checkpoint_path` (if set; named `checkpoint_key`
    in errors), save_dir/vdl when VisualDL is installed, and `output_eval` (if set) with the
    eval result files and `summary_file`; none of them one of `inputs`."""
    from slim.engine.evaluation import check_output_eval, result_file_names
    from slim.io import checkpoint as checkpoint_lib
    if checkpoint_path is not None:  # set (an empty value is refused, not taken for unset)
        check_output_dir(checkpoint_path, checkpoint_key, inputs)
        checkpoint_lib.check_checkpoint_root(checkpoint_path, what=checkpoint_key)
    if importlib.util.find_spec("visualdl") is not None:
        _refuse_inside_checkpoint_epochs(visualdl_dir(cfg), "save_dir", checkpoint_path, checkpoint_key)
        check_output_dir(visualdl_dir(cfg), "save_dir", inputs)
    if output_eval is not None:
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
