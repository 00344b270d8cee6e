"""train.py: plain training of a detector from a detection config (no strategy), through the
same engine, checkpoints and resume as compress.py, ending in `model_final`.

    python train.py -c configs/yolov3_mobilenet_v1_demo.yml [-o KEY=VALUE ...] [--eval]
        [--output_eval DIR] [-d DATASET_DIR] [--checkpoint_path DIR] [-r CHECKPOINT]
        [--scale_lr [RECIPE_TOTAL_BATCH]]

`max_iters` is the number of iterations of the whole run (`auto`: one pass over
the training set), as in PaddleDetection's train.py; a checkpoint
(`<checkpoint_path>/<n>/`, what compress.py writes) is written every
`snapshot_iter` iterations and after the last, and the model is evaluated after
the last iteration (with --eval also at every checkpoint). checkpoint_path
defaults to `save_dir/<config name>/`, as PaddleDetection's; a restart of the
same command resumes from its highest complete checkpoint; `-r CHECKPOINT` resumes
from a given one (PaddleDetection's --resume_checkpoint), unless checkpoint_path
holds a newer one. `--scale_lr` rescales the LR schedule as compress.py's does. Training starts from
`pretrain_weights` (or random initialisation); `weights` is what the trained
model is for: `<checkpoint_path>/model_final`, a weights directory that
`-o weights=...` of compress.py, eval and infer configs load.
"""
import dataclasses
import math
import os

from slim.runs.job import build_job, check_feeds, check_run_output_places
from slim.runs.loop import run_guarded, summarize

MODEL_FINAL = "model_final"
SUMMARY_FILE = "train_summary.json"  # in --output_eval


@dataclasses.dataclass
class TrainSettings:
    """What compress.py's slim config `compressor` section says, for a plain training run."""
    checkpoint_path: str
    eval_epoch: int = 1
    epoch: int = None  # set once max_iters (maybe auto) is known
    init_model: object = None
    save_eval_model: bool = True
    prune_infer_model: bool = True


def default_checkpoint_path(cfg, config_path):
    """save_dir/<config file name without extension>/, as PaddleDetection's train.py."""
    name = os.path.splitext(os.path.basename(str(config_path)))[0]
    return os.path.join(str(cfg.get("save_dir") or "output"), name)


def check_train_output_places(args, cfg, checkpoint_path, metric_name):
    """Every place train.py writes, before any work: checkpoint_path (its epoch entries the
    tool's own), model_final in it (absent, empty or the tool's), save_dir/vdl when VisualDL
    is installed, and --output_eval with its files; none of them one of the run's inputs."""
    from slim.io.run_inputs import config_inputs
    from slim.io.weights import check_weights_target
    inputs = config_inputs(cfg, ("train_feed", "eval_feed"), args.config,
                           getattr(args, "resume_checkpoint", None))
    check_run_output_places(cfg, inputs, checkpoint_path, "--checkpoint_path", args.output_eval,
                            metric_name, SUMMARY_FILE)
    check_weights_target(os.path.join(checkpoint_path, MODEL_FINAL), what="model_final",
                         inputs=inputs)


def prepare_training(args):
    """Load and check the config and every output place, then build the run (a
    slim.runs.job.TrainingJob without strategies whose epochs are snapshot_iter iterations long)."""
    import paddle

    from slim.config import load_config
    from slim.data import set_dataset_dir
    from slim.engine import distributed
    from slim.engine.train_log import log_to_stdout
    from slim.metrics import resolve_metric_name
    paddle.enable_static()
    cfg = load_config(args.config, args.opt)
    set_dataset_dir(cfg, args.dataset_dir)
    check_feeds(args.config, cfg)
    snapshot = cfg.get("snapshot_iter")  # the config schema holds it to a positive integer
    env = distributed.read_distributed_env()
    log = log_to_stdout if env.is_main else (lambda message: None)
    metric_name = resolve_metric_name(cfg.get("metric", "VOC"))
    checkpoint_path = (args.checkpoint_path if args.checkpoint_path is not None  # "" is refused
                       else default_checkpoint_path(cfg, args.config))
    if env.is_main:
        check_train_output_places(args, cfg, checkpoint_path, metric_name)
    settings = TrainSettings(checkpoint_path, init_model=getattr(args, "resume_checkpoint", None))
    job = build_job(args, cfg, settings, [], env, log, metric_name, with_infer_model=True,
                    epoch_iterations=snapshot or math.inf)
    settings.epoch = math.ceil(job.total_iterations / job.max_iters)
    settings.eval_epoch = 1 if args.eval else settings.epoch
    job.weights_keys = ("pretrain_weights",)
    job.init_model_key, job.init_model_must_be_checkpoint = "--resume_checkpoint", True
    log(f"training {job.total_iterations} iterations: {settings.epoch} checkpoint(s) of up to "
        f"{job.max_iters} iterations in '{checkpoint_path}'")
    return job


def write_model_final(job):
    """The trained parameters as `<checkpoint_path>/model_final` (rank 0); its path."""
    from slim.io.weights import save_weights
    target = os.path.join(job.compressor.checkpoint_path, MODEL_FINAL)
    if job.env.is_main:
        save_weights(job.scope, job.programs.eval.program, target, what="model_final")
        job.log(f"model_final -> {target} (load it with -o weights={target})")
    return target


def run_train(args):
    """Entry of train.py: train, evaluate, checkpoint, write model_final. Returns a summary
    dict (compress.py's, plus model_final). Ctrl-C ends in `Interrupted` naming the last
    complete checkpoint, where the same command resumes."""
    job, state, model_final = run_guarded(lambda: prepare_training(args), write_model_final)
    return dict(summarize(job, state, summary_file=SUMMARY_FILE), model_final=model_final)

