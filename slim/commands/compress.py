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

Where training starts: see `slim.runs.restore`.
"""
from slim.errors import ConfigError
from slim.runs.job import build_job, check_feeds, check_run_output_places
from slim.runs.loop import run_guarded, summarize

SUMMARY_FILE = "compress_summary.json"  # in --output_eval


def _prune_infer_model_enabled(value):
    """prune_infer_model: true/false, or the seed's [[inputs], [outputs]] naming our feeds."""
    if isinstance(value, bool):
        return value
    inputs, _outputs = value
    if list(inputs) != ["image", "im_size"]:
        raise ConfigError(f"compressor.prune_infer_model: inputs {list(inputs)} are not supported; "
                          "the inference model takes [image, im_size] (or write true)")
    return True


def prepare_job(args):
    """Validate both configs, choose the device, build loader, programs and scope."""
    import paddle

    from slim.config import load_config, load_slim_config
    from slim.data import set_dataset_dir
    from slim.engine import distributed
    from slim.engine.train_log import log_to_stdout
    from slim.metrics import resolve_metric_name
    from slim.strategies import build_strategies
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


def check_output_places(args, cfg, compressor, metric_name):
    """Every place compress.py writes, checked before any work: checkpoint_path, save_dir/vdl
    (when VisualDL is installed: nothing goes there otherwise), --output_eval and the files
    it gets. Each must be writable and none of the run's inputs (dataset dirs, configs,
    init_model, weights); a one-line OutputPlaceError otherwise."""
    from slim.io.run_inputs import config_inputs
    inputs = config_inputs(cfg, ("train_feed", "eval_feed"), args.config, args.slim_file,
                           compressor.init_model)
    check_run_output_places(cfg, inputs, compressor.checkpoint_path, "compressor.checkpoint_path",
                            args.output_eval, metric_name, SUMMARY_FILE)


def run_compress(args):
    """Entry of compress.py: validate both configs, then prune and fine-tune as they say.
    Returns a summary dict (FLOPs, params, best metric, last checkpoint). Ctrl-C ends in
    `Interrupted` naming the last complete checkpoint, where the same command resumes."""
    job, state, _ = run_guarded(lambda: prepare_job(args))
    return summarize(job, state, SUMMARY_FILE)
