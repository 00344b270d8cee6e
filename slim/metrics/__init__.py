"""Detection metrics: Pascal VOC mAP (11point / integral) and COCO mAP (pycocotools).

Both metrics accumulate over batches with `update(...)` and return a dict with
at least `mAP` and `per_class_ap` from `accumulate()`; `create_metric` picks
one by the config's `metric` key.
"""
from slim.metrics.coco import (  # noqa: F401
                               COCO_STAT_NAMES,
                               COCOMetric,
                               coco_gt_from_voc,
                               detections_to_coco_json,
                               load_coco_gt,
)
from slim.metrics.factory import METRIC_BUILDERS, create_metric, metric_from_config, resolve_metric_name  # noqa: F401
from slim.metrics.inputs import GroundTruth, as_detection_rows, as_ground_truth  # noqa: F401
from slim.metrics.report import format_metric_report  # noqa: F401
from slim.metrics.voc import VOCMetric, box_iou, precision_recall, voc_ap_11point, voc_ap_integral  # noqa: F401
