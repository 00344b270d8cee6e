"""The metric named by a detection config's `metric` key ('VOC' | 'COCO')."""
from slim.errors import ConfigError, did_you_mean, shorten
from slim.metrics.coco import COCOMetric
from slim.metrics.voc import VOCMetric
from slim.registry import Registry


def _build_voc(num_classes, map_type, evaluate_difficult, coco_gt, label_to_category_id, json_path):
    return VOCMetric(num_classes, map_type=map_type, evaluate_difficult=evaluate_difficult)


def _build_coco(num_classes, map_type, evaluate_difficult, coco_gt, label_to_category_id, json_path):
    if coco_gt is None:
        raise ConfigError("metric: COCO needs the eval dataset's COCO annotation JSON (coco_gt)")
    metric = COCOMetric(coco_gt, label_to_category_id=label_to_category_id, json_path=json_path)
    if num_classes is not None and len(metric.label_to_category_id) != num_classes:
        raise ConfigError(f"num_classes is {num_classes} but the COCO annotation maps "
                          f"{len(metric.label_to_category_id)} labels to categories")
    return metric


# name -> builder(num_classes, map_type, evaluate_difficult, coco_gt, label_to_category_id, json_path)
METRIC_BUILDERS = Registry("metric", error=ConfigError)
METRIC_BUILDERS.add("VOC", _build_voc)
METRIC_BUILDERS.add("COCO", _build_coco)


def resolve_metric_name(name):
    """The registered spelling of metric `name` (case-insensitive); ConfigError if unknown."""
    known = METRIC_BUILDERS.names()
    by_lower = {spelling.lower(): spelling for spelling in known}
    resolved = by_lower.get(str(name).lower()) if name is not None else None
    if resolved is None:
        hint = did_you_mean(str(name).upper(), known)
        raise ConfigError(f"metric: unknown '{shorten(name)}'{hint}; valid: {', '.join(known)}")
    return resolved


def create_metric(name, num_classes=None, map_type="11point", evaluate_difficult=False,
                  coco_gt=None, label_to_category_id=None, json_path=None):
    """Build the metric called `name` ('VOC' or 'COCO').

    Args:
        name: the config's `metric` value.
        num_classes: number of classes (required by VOC; checked against the COCO categories).
        map_type: VOC AP flavour, '11point' or 'integral'.
        evaluate_difficult: VOC only: score difficult boxes instead of ignoring them.
        coco_gt: COCO only: a pycocotools COCO or an instances JSON path.
        label_to_category_id: COCO only: label -> category id (default: sorted category ids).
        json_path: COCO only: where to write the detection results JSON.
    """
    builder = METRIC_BUILDERS.get(resolve_metric_name(name))
    return builder(num_classes, map_type, evaluate_difficult, coco_gt, label_to_category_id, json_path)


def metric_from_config(cfg, coco_gt=None, json_path=None):
    """The metric of a detection config: its `metric`, `num_classes` and `map_type` keys."""
    if cfg.get("metric") is None:
        raise ConfigError(f"metric is not set; valid: {', '.join(METRIC_BUILDERS.names())}")
    return create_metric(cfg["metric"], num_classes=cfg.get("num_classes"),
                         map_type=cfg.get("map_type", "11point") or "11point",
                         coco_gt=coco_gt, json_path=json_path)
