"""eval.py's job: score a saved eval model on the eval feed's dataset.

    python eval.py -m checkpoints/9/eval_model/ --model_name __model__ --params_name __params__ \
        -c configs/yolov3_mobilenet_v1_voc.yml -d dataset/voc [--output_eval out/]

It prints mAP and per-class AP (the metric of the config's `metric` key, see
`slim.engine.evaluation`); with `--output_eval DIR` it writes
`DIR/eval_result.json` (and `DIR/bbox.json` for COCO), checked before the model
is loaded.
"""
import os
import sys

from slim.engine.evaluation import (
    COCO_DETECTIONS_FILE,
    check_image_shape,
    check_output_eval,
    evaluate,
    make_metric,
    record_detections_json,
    result_file_names,
    result_summary,
    write_result_json,
)
from slim.errors import UserError, stop_on_sigterm


def run_eval(args):
    """Entry of eval.py: score a saved model on the eval feed's dataset (a `.json` model:
    loaded and run in Paddle 3's new IR)."""
    from slim.io.export import is_pir_program_file
    from slim.prune.pir import ir_guard
    with ir_guard(is_pir_program_file(os.path.join(args.model_path, args.model_name))):
        return _run_eval(args)


def _run_eval(args):
    import paddle

    from slim.config import create, load_config
    from slim.data import set_dataset_dir
    from slim.data.loader import build_eval_loader
    from slim.engine import distributed
    from slim.io import export
    from slim.metrics import format_metric_report, resolve_metric_name
    paddle.enable_static()
    stop_on_sigterm()  # again: paddle's import installed its own handler
    cfg = load_config(args.config, args.opt)
    set_dataset_dir(cfg, args.dataset_dir)
    if not cfg.get("eval_feed"):
        raise UserError(f"{args.config}: eval_feed is not set; name the eval data feed "
                        "(e.g. eval_feed: YoloEvalFeed)")
    metric_name = resolve_metric_name(cfg.get("metric", "VOC"))
    if args.output_eval:
        from slim.io.run_inputs import config_inputs
        check_output_eval(args.output_eval, result_file_names(metric_name),
                          config_inputs(cfg, ("eval_feed",), args.config, args.model_path))
    env = distributed.DistributedEnv()
    place = distributed.select_place(cfg.get("use_gpu", False), env, log=_stderr)
    executor = paddle.static.Executor(place)
    scope = paddle.static.Scope()
    program, feed_names, fetch_vars = export.load_exported_program(
        args.model_path, executor, scope, args.model_name, args.params_name)
    feed = create(cfg["eval_feed"], cfg)
    check_image_shape(program, "image", feed.image_shape, cfg["eval_feed"])
    loader = build_eval_loader(feed)
    json_path = (os.path.join(args.output_eval, COCO_DETECTIONS_FILE)
                 if args.output_eval else None)
    metric = make_metric(cfg, loader, json_path=json_path)
    result = evaluate(executor, program, feed_names, fetch_vars, scope, loader, metric)
    print(f"{metric_name} evaluation of {args.model_path} on {len(loader.records)} images")
    print(format_metric_report(result, loader.label_names))
    if args.output_eval:
        summary = result_summary(result, loader.label_names, metric_name)
        summary.update(model_path=args.model_path, num_images=len(loader.records))
        record_detections_json(args.output_eval, metric)
        print(f"wrote {write_result_json(args.output_eval, summary)}")
    return result


def _stderr(message):
    print(message, file=sys.stderr)
