"""Scoring detections: the eval loop shared by training, strategies and eval.py, the metric
of a config, and the eval result files (`--output_eval`).

The metric comes from the detection config's `metric` key: VOC mAP (`map_type`
11point or integral, difficult objects ignored) or COCO mAP (pycocotools; a
COCO dataset's own annotation JSON, or for VOC-format data a ground truth built
from the eval records). `--output_eval DIR` gets `DIR/eval_result.json` (and
`DIR/bbox.json`, the COCO detections, for COCO); it is checked before work
(writable, not an input, and no file of those names there that the tool did
not write: a user's file is never replaced).
"""
import os
import sys

import numpy as np

from slim.errors import DataError, UserError, shorten
from slim.io.output_places import WrittenFiles, check_output_dir

RESULT_FILE = "eval_result.json"
COCO_DETECTIONS_FILE = "bbox.json"


def _ground_truths(batch):
    """VOC-style ground truth of each image of an eval batch (padding rows dropped)."""
    truths = []
    for boxes, classes, difficult in zip(batch["gt_bbox"], batch["gt_class"], batch["difficult"]):
        keep = classes >= 0
        truths.append((boxes[keep], classes[keep], difficult[keep]))
    return truths


def check_class_count(num_classes, class_names, feed_name):
    """DataError when the config's `num_classes` (the model's outputs) differs from the number
    of classes of the feed's dataset (its label list or categories): objects of the classes
    past the model's would be dropped, and outputs past the list's would have no name."""
    names = list(class_names or ())
    if num_classes is None or not names or len(names) == int(num_classes):
        return
    raise DataError(f"num_classes is {num_classes} but the dataset of {feed_name} has {len(names)} "
                    f"classes ({shorten(', '.join(map(str, names)), 120)}); set -o "
                    f"num_classes={len(names)} or name the label list the model was trained with")


def make_metric(cfg, eval_loader, json_path=None):
    """The metric of `cfg` (`metric`, `num_classes`, `map_type`) ready to score `eval_loader`,
    whose dataset must have `num_classes` classes (`check_class_count`)."""
    from slim.data.coco import COCODataSet
    from slim.data.loader import open_dataset
    from slim.metrics import coco_gt_from_voc, create_metric, resolve_metric_name
    name = resolve_metric_name(cfg.get("metric", "VOC"))
    num_classes = cfg.get("num_classes")
    check_class_count(num_classes, eval_loader.label_names, cfg.get("eval_feed") or "eval_feed")
    if name == "VOC":
        return create_metric(name, num_classes=num_classes,
                             map_type=cfg.get("map_type") or "11point")
    source = open_dataset(eval_loader.feed.dataset)
    if isinstance(source, COCODataSet):
        coco_gt, category_ids = source.annotation_path(), source.category_ids()
    else:
        records = eval_loader.records
        coco_gt = coco_gt_from_voc(
            [(r["gt_bbox"], r["gt_class"], r["difficult"]) for r in records],
            image_ids=[int(r["im_id"]) for r in records],
            class_names=list(eval_loader.label_names),
            image_sizes=[(r["h"], r["w"]) for r in records])
        category_ids = [label + 1 for label in range(len(eval_loader.label_names))]
    return create_metric(name, num_classes=num_classes, coco_gt=coco_gt,
                         label_to_category_id=category_ids, json_path=json_path)


def detections_of_run(results, split):
    """Per-image detection arrays from the fetched results of one batch.

    `results` is [bbox, bbox_num, ...] (our programs), or [bbox] alone as a LoDTensor
    (models whose only output is the NMS result): its LoD gives the per-image split.
    """
    from slim.model import split_detections
    if len(results) >= 2 and np.asarray(results[1]).ndim == 1:
        return split_detections(np.asarray(results[0]), np.asarray(results[1]))
    tensor = results[0]
    lod = tensor.lod() if hasattr(tensor, "lod") else []
    bbox = np.array(tensor)
    if not lod:
        return [bbox] if split == 1 else None
    offsets = lod[0]
    return [bbox[offsets[i]:offsets[i + 1]] for i in range(len(offsets) - 1)]


def evaluate(executor, program, feed_names, fetch_vars, scope, eval_loader, metric,
             progress=True, description="eval"):
    """Run `program` over every batch of `eval_loader`, feed the detections to `metric`,
    return metric.accumulate() (a dict with at least mAP and per_class_ap)."""
    from tqdm import tqdm

    from slim.metrics import VOCMetric
    metric.reset()
    lod_only = len(fetch_vars) == 1
    for batch in tqdm(eval_loader, total=len(eval_loader), desc=description, unit="batch",
                      disable=not progress, file=sys.stderr, leave=False):
        feed = {name: batch[name] for name in feed_names}
        results = executor.run(program, feed=feed, fetch_list=list(fetch_vars), scope=scope,
                               return_numpy=not lod_only)
        detections = detections_of_run(results, len(batch["im_id"]))
        if detections is None:
            raise UserError("the model's only output has no LoD, so its detections cannot be "
                            "split per image; evaluate with -o YoloEvalFeed.batch_size=1")
        if isinstance(metric, VOCMetric):
            metric.update(detections, _ground_truths(batch))
        else:
            metric.update(detections, batch["im_id"])
    return metric.accumulate()


def check_image_shape(program, feed_name, image_shape, source, fix=None):
    """UserError when `program` declares a fixed input size other than the feed's image_shape
    (`source`: the feed's name in the config). The message ends in `fix`, or by default in
    the -o override that makes them agree, written as one shell word (rule (f))."""
    block = program.global_block()
    if not hasattr(block, "vars"):  # a PIR program (a .json model): its view has them
        from slim.prune.pir import PirProgramView
        block = PirProgramView(program).global_block()
    var = block.vars.get(feed_name)
    if var is None:
        return
    declared = [int(d) for d in var.shape[1:]]
    wanted = [int(d) for d in image_shape]
    if any(d > 0 and d != w for d, w in zip(declared, wanted)):
        fix = fix or f"add -o {source}.image_shape=[{','.join(map(str, declared))}]"
        raise UserError(f"the model takes images of {declared}, but {source}.image_shape is "
                        f"{wanted}; {fix}")


def result_summary(result, class_names, metric_name):
    """A JSON-able summary: metric, mAP, COCO stats if any, per-class AP by class name."""
    per_class = result.get("per_class_ap") or []
    names = list(class_names) if class_names is not None else []
    summary = {"metric": metric_name, "mAP": result["mAP"],
               "per_class_ap": {str(names[i]) if i < len(names) else str(i): ap
                                for i, ap in enumerate(per_class)}}
    for key, value in result.items():
        if key not in ("mAP", "per_class_ap"):
            summary[key] = value
    return summary


def result_file_names(metric_name):
    """The files an evaluation writes into --output_eval for the metric `metric_name`."""
    return [RESULT_FILE] + ([COCO_DETECTIONS_FILE] if metric_name == "COCO" else [])


def check_output_eval(output_eval, names, inputs=()):
    """Before any work: --output_eval can be written, is none of `inputs`, and none of the
    files `names` is in the way there unless the tool wrote it (a user's file of that name
    is never replaced). A one-line OutputPlaceError otherwise."""
    check_output_dir(output_eval, "--output_eval", inputs)
    WrittenFiles(output_eval).check(names, "--output_eval", inputs)


def write_result_json(out_dir, summary):
    """Write `summary` to out_dir/eval_result.json atomically (recorded as the tool's, so a
    later run may replace it, and refused if a file of that name is not); return the path."""
    return WrittenFiles(out_dir).write_json(RESULT_FILE, summary)


def record_detections_json(out_dir, metric):
    """Record the COCO detections file that `metric` wrote into `out_dir` as the tool's
    (checked free by `check_output_eval` before the run)."""
    json_path = getattr(metric, "json_path", None)
    if json_path and os.path.isfile(json_path):
        WrittenFiles(out_dir).record(os.path.basename(json_path))
