"""Detection metrics against hand-computed cases: VOC mAP (11point / integral) and COCO (pycocotools).

Hand values are written as fractions with the derivation next to them.
"""
import json
from fractions import Fraction

import numpy as np
import pytest

from slim.errors import ConfigError, DataError
from slim.metrics import (
    COCO_STAT_NAMES,
    COCOMetric,
    GroundTruth,
    VOCMetric,
    box_iou,
    coco_gt_from_voc,
    create_metric,
    format_metric_report,
    metric_from_config,
    voc_ap_11point,
    voc_ap_integral,
)

EXACT = 1e-12


def detection(label, score, box):
    return [label, score, *box]


def truth(boxes, classes, difficult=None):
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    difficult = np.zeros(len(boxes), bool) if difficult is None else np.asarray(difficult, bool)
    return GroundTruth(boxes, np.asarray(classes, np.int64), difficult)


# ---------------------------------------------------------------- IoU convention

def test_box_iou_counts_both_edge_pixels_for_pixel_boxes():
    # [0,0,9,9] is 10x10 pixels; [5,0,14,9] overlaps it in columns 5..9: 5x10 = 50 of 150.
    assert box_iou([0, 0, 9, 9], [[5, 0, 14, 9]])[0] == pytest.approx(1 / 3, abs=EXACT)
    # Boxes sharing one corner pixel: 1 / (4 + 4 - 1) with the +1, 0 as continuous coordinates.
    assert box_iou([0, 0, 1, 1], [[1, 1, 2, 2]])[0] == pytest.approx(1 / 7, abs=EXACT)
    assert box_iou([0, 0, 1, 1], [[1, 1, 2, 2]], pixel_offset=0.0)[0] == 0.0
    assert box_iou([0, 0, 9, 9], [[20, 20, 29, 29]])[0] == 0.0


# ---------------------------------------------------------------- AP functions

# A crafted PR curve: 4 ground-truth boxes, detections by score TP FP TP FP TP.
#   recall    1/4  1/4  2/4  2/4  3/4
#   precision 1    1/2  2/3  2/4  3/5
CRAFTED_RECALL = [0.25, 0.25, 0.5, 0.5, 0.75]
CRAFTED_PRECISION = [1.0, 0.5, 2 / 3, 0.5, 0.6]
# 11point: t=0,.1,.2 -> 1; t=.3,.4,.5 -> max(2/3, 1/2, 3/5) = 2/3; t=.6,.7 -> 3/5; t=.8,.9,1 -> 0.
CRAFTED_11POINT = (3 * Fraction(1) + 3 * Fraction(2, 3) + 2 * Fraction(3, 5)) / 11  # 31/55
# integral: the envelope is 1 on (0, .25], 2/3 on (.25, .5], 3/5 on (.5, .75], then 0.
CRAFTED_INTEGRAL = Fraction(1, 4) * (1 + Fraction(2, 3) + Fraction(3, 5))  # 17/30


def test_11point_and_integral_differ_on_a_crafted_curve_and_equal_hand_values():
    ap_11 = voc_ap_11point(CRAFTED_RECALL, CRAFTED_PRECISION)
    ap_integral = voc_ap_integral(CRAFTED_RECALL, CRAFTED_PRECISION)
    assert ap_11 == pytest.approx(float(CRAFTED_11POINT), abs=EXACT)
    assert ap_integral == pytest.approx(float(CRAFTED_INTEGRAL), abs=EXACT)
    assert abs(ap_11 - ap_integral) > 1e-3


def test_integral_uses_the_precision_envelope_not_the_raw_curve():
    # 4 gt boxes, detections by score FP TP TP FP TP:
    #   recall    0  1/4  2/4  2/4  3/4
    #   precision 0  1/2  2/3  1/2  3/5
    recall, precision = [0, 0.25, 0.5, 0.5, 0.75], [0, 0.5, 2 / 3, 0.5, 0.6]
    # envelope 2/3 on (0, .5], 3/5 on (.5, .75]; the raw curve (PaddleDetection's 'integral')
    # would give 1/4 * (1/2 + 2/3 + 3/5) = 53/120 instead.
    expected_integral = Fraction(1, 4) * (2 * Fraction(2, 3) + Fraction(3, 5))  # 29/60
    # 11point: t=0..0.5 -> 2/3 (6x); t=.6,.7 -> 3/5; t=.8,.9,1 -> 0.
    expected_11point = (6 * Fraction(2, 3) + 2 * Fraction(3, 5)) / 11  # 26/55
    assert voc_ap_integral(recall, precision) == pytest.approx(float(expected_integral), abs=EXACT)
    assert voc_ap_11point(recall, precision) == pytest.approx(float(expected_11point), abs=EXACT)


def test_11point_counts_a_recall_that_reaches_a_threshold_exactly():
    # 10 gt boxes, 3 TPs: recall 0.1, 0.2, 0.3 at precision 1 -> t = 0, .1, .2, .3 score 1.
    # (np.arange(0, 1.1, 0.1)[3] is 0.30000000000000004 and would drop t = .3, giving 3/11.)
    assert voc_ap_11point([0.1, 0.2, 3 / 10], [1.0, 1.0, 1.0]) == pytest.approx(4 / 11, abs=EXACT)


def test_ap_of_an_empty_curve_is_zero():
    assert voc_ap_11point([], []) == 0.0
    assert voc_ap_integral([], []) == 0.0


# ---------------------------------------------------------------- VOCMetric

def crafted_images():
    """Two images, one class, 4 gt boxes; detections give the crafted TP FP TP FP TP curve.

    0.9 on g1 (TP), 0.8 on g1 again (duplicate: FP), 0.7 on g3 (TP), 0.6 on nothing (FP),
    0.5 on g2 (TP); g4 is missed.
    """
    image_a = truth([[0, 0, 9, 9], [20, 20, 29, 29]], [0, 0])
    image_b = truth([[0, 0, 9, 9], [40, 40, 49, 49]], [0, 0])
    detections_a = [detection(0, 0.9, [0, 0, 9, 9]), detection(0, 0.8, [1, 0, 9, 9]),
                    detection(0, 0.5, [20, 20, 29, 29])]
    detections_b = [detection(0, 0.7, [0, 0, 9, 9]), detection(0, 0.6, [100, 100, 109, 109])]
    return [detections_a, detections_b], [image_a, image_b]


@pytest.mark.parametrize("map_type, expected", [("11point", CRAFTED_11POINT),
                                                 ("integral", CRAFTED_INTEGRAL)])
def test_duplicate_detections_are_false_positives(map_type, expected):
    metric = VOCMetric(1, map_type=map_type)
    metric.update(*crafted_images())
    result = metric.accumulate()
    assert result["mAP"] == pytest.approx(float(expected), abs=EXACT)
    assert result["per_class_ap"] == [pytest.approx(float(expected), abs=EXACT)]
    recall, precision = metric.precision_recall(0)
    np.testing.assert_allclose(recall, CRAFTED_RECALL, atol=EXACT)
    np.testing.assert_allclose(precision, CRAFTED_PRECISION, atol=EXACT)


def with_difficult_object():
    """The crafted images plus a difficult box in image B that the best detection (0.95) hits."""
    (detections_a, detections_b), (image_a, image_b) = crafted_images()
    image_b = truth(np.vstack([image_b.boxes, [[60, 60, 69, 69]]]), [0, 0, 0], [False, False, True])
    detections_b = detections_b + [detection(0, 0.95, [60, 60, 69, 69])]
    return [detections_a, detections_b], [image_a, image_b]


@pytest.mark.parametrize("map_type, expected", [("11point", CRAFTED_11POINT),
                                                 ("integral", CRAFTED_INTEGRAL)])
def test_difficult_objects_are_ignored(map_type, expected):
    # The difficult box is not counted and the detection on it is neither TP nor FP:
    # the result is exactly the crafted one.
    metric = VOCMetric(1, map_type=map_type)
    metric.update(*with_difficult_object())
    assert metric.accumulate()["mAP"] == pytest.approx(float(expected), abs=EXACT)


# evaluate_difficult: 5 gt boxes, by score TP(0.95) TP FP TP FP TP.
#   recall    .2  .4  .4   .6   .6   .8
#   precision 1   1   2/3  3/4  3/5  2/3
# 11point: t=0..0.4 -> 1 (5x); t=.5,.6 -> 3/4; t=.7,.8 -> 2/3; t=.9,1 -> 0.
# integral: envelope 1 on (0,.4], 3/4 on (.4,.6], 2/3 on (.6,.8].
@pytest.mark.parametrize("map_type, expected", [
    ("11point", (5 + 2 * Fraction(3, 4) + 2 * Fraction(2, 3)) / 11),          # 47/66
    ("integral", Fraction(1, 5) * (1 + 1 + Fraction(3, 4) + Fraction(2, 3))),  # 41/60
])
def test_evaluate_difficult_scores_difficult_objects_as_ordinary(map_type, expected):
    metric = VOCMetric(1, map_type=map_type, evaluate_difficult=True)
    metric.update(*with_difficult_object())
    assert metric.accumulate()["mAP"] == pytest.approx(float(expected), abs=EXACT)


def test_a_detection_whose_best_match_is_difficult_is_ignored_even_if_it_overlaps_another_box():
    # gt: ordinary [0,0,9,9] and difficult [0,0,9,11]; the detection [0,0,9,11] overlaps the
    # ordinary box by 100/120 > .5 but the difficult one best (IoU 1): VOC ignores it, so the
    # only counted box stays unmatched -> AP 0, not 1.
    metric = VOCMetric(1)
    metric.update([[detection(0, 0.9, [0, 0, 9, 11])]],
                  [truth([[0, 0, 9, 9], [0, 0, 9, 11]], [0, 0], [False, True])])
    assert metric.accumulate()["mAP"] == 0.0


def test_a_duplicate_is_a_false_positive_even_if_it_also_overlaps_an_unmatched_box():
    # g1 [0,0,9,9] and g2 [0,0,9,13] overlap (IoU 100/140). Both detections sit on g1 (IoU 1 with
    # g1, 100/140 > .5 with g2): the VOC rule matches each to its best box, g1, so the second is a
    # duplicate FP and g2 stays missed. recall 1/2, 1/2; precision 1, 1/2.
    # 11point: t = 0 .. 0.5 -> 1 (6x), then 0 -> 6/11.
    metric = VOCMetric(1)
    metric.update([[detection(0, 0.9, [0, 0, 9, 9]), detection(0, 0.8, [0, 0, 9, 9])]],
                  [truth([[0, 0, 9, 9], [0, 0, 9, 13]], [0, 0])])
    assert metric.accumulate()["mAP"] == pytest.approx(6 / 11, abs=EXACT)


def test_class_without_ground_truth_is_left_out_and_class_without_detections_scores_zero():
    # class 0: perfect; class 1: no gt at all (its false detection must not matter);
    # class 2: one gt, never detected -> AP 0. mAP = (1 + 0) / 2.
    metric = VOCMetric(3)
    metric.update([[detection(0, 0.9, [0, 0, 9, 9]), detection(1, 0.99, [50, 50, 59, 59])]],
                  [truth([[0, 0, 9, 9], [30, 30, 39, 39]], [0, 2])])
    result = metric.accumulate()
    assert result["per_class_ap"] == [1.0, None, 0.0]
    assert result["mAP"] == 0.5


@pytest.mark.parametrize("map_type", ["11point", "integral"])
def test_perfect_detections_score_one(map_type):
    metric = VOCMetric(2, map_type=map_type)
    ground_truths = [truth([[0, 0, 9, 9], [20, 5, 39, 44]], [0, 1]),
                     truth([[3, 3, 30, 30]], [1])]
    detections = [[detection(int(c), 0.5 + 0.1 * i, b) for i, (b, c) in enumerate(zip(g.boxes, g.classes))]
                  for g in ground_truths]
    metric.update(detections, ground_truths)
    assert metric.accumulate() == {"mAP": 1.0, "per_class_ap": [1.0, 1.0]}


def test_detections_of_an_image_are_matched_in_score_order_not_row_order():
    # Two detections of one gt box, the lower score first in the array: the 0.9 one is the TP
    # (AP 1); matching in row order would make the 0.9 one the duplicate (AP 1/2).
    metric = VOCMetric(1)
    metric.update([[detection(0, 0.3, [0, 0, 9, 9]), detection(0, 0.9, [0, 0, 9, 9])]],
                  [truth([[0, 0, 9, 9]], [0])])
    assert metric.accumulate()["mAP"] == 1.0


def test_iou_of_exactly_the_threshold_is_not_a_match():
    # [0,0,19,9] vs [0,0,9,9]: 100 / 200 = 0.5, not > 0.5 -> FP; raising the box to 0.5 + ...
    metric = VOCMetric(1)
    metric.update([[detection(0, 0.9, [0, 0, 19, 9])]], [truth([[0, 0, 9, 9]], [0])])
    assert metric.accumulate()["mAP"] == 0.0
    loose = VOCMetric(1, overlap_thresh=0.49)
    loose.update([[detection(0, 0.9, [0, 0, 19, 9])]], [truth([[0, 0, 9, 9]], [0])])
    assert loose.accumulate()["mAP"] == 1.0


def test_batches_accumulate_like_one_update_and_reset_forgets():
    detections, ground_truths = with_difficult_object()
    whole = VOCMetric(1)
    whole.update(detections, ground_truths)
    split = VOCMetric(1)
    split.update(detections[:1], ground_truths[:1])
    split.update(detections[1:], ground_truths[1:])
    assert split.accumulate() == whole.accumulate()
    assert split.num_images == 2
    split.reset()
    split.update([[detection(0, 0.9, [0, 0, 9, 9])]], [truth([[0, 0, 9, 9]], [0])])
    assert split.accumulate()["mAP"] == 1.0


def test_ground_truth_accepts_loader_layouts_and_nms_empty_marker():
    # (N, 1) class / difficult columns as loaders keep them, a PaddleDetection-style sample dict,
    # and the [[-1]] "nothing detected" output of multiclass NMS.
    metric = VOCMetric(2)
    metric.update([np.array([detection(1, 0.8, [0, 0, 9, 9])], np.float32), np.array([[-1.0]])],
                  [(np.array([[0, 0, 9, 9]]), np.array([[1]]), np.array([[0]])),
                   {"gt_bbox": np.array([[5, 5, 20, 20]]), "gt_class": np.array([[0]]),
                    "is_difficult": np.array([[0]])}])
    assert metric.accumulate() == {"mAP": 0.5, "per_class_ap": [0.0, 1.0]}


def test_bad_metric_options_are_config_errors():
    with pytest.raises(ConfigError, match=r"map_type: unknown 'intergral' \(did you mean 'integral'\?\)"):
        VOCMetric(20, map_type="intergral")
    with pytest.raises(ConfigError, match="num_classes"):
        VOCMetric(0)
    metric = VOCMetric(2)
    with pytest.raises(ConfigError, match="detection label 5 is outside 0..1"):
        metric.update([[detection(5, 0.9, [0, 0, 9, 9])]], [truth([[0, 0, 9, 9]], [0])])
    with pytest.raises(ConfigError, match="ground-truth class 2 is outside 0..1"):
        metric.update([[]], [truth([[0, 0, 9, 9]], [2])])


# ---------------------------------------------------------------- factory

def test_factory_builds_by_the_config_metric_key():
    metric = metric_from_config({"metric": "VOC", "num_classes": 20, "map_type": "integral"})
    assert isinstance(metric, VOCMetric) and metric.map_type == "integral" and metric.num_classes == 20
    assert isinstance(create_metric("voc", num_classes=3), VOCMetric)
    coco_gt = coco_gt_from_voc([truth([[0, 0, 9, 9]], [0])])
    assert isinstance(create_metric("COCO", num_classes=1, coco_gt=coco_gt), COCOMetric)


def test_factory_rejects_unknown_or_incomplete_metric_settings():
    with pytest.raises(ConfigError,
                       match=r"metric: unknown 'VCO' \(did you mean 'VOC'\?\); valid: COCO, VOC"):
        create_metric("VCO", num_classes=20)
    with pytest.raises(ConfigError, match="metric is not set"):
        metric_from_config({"num_classes": 20})
    with pytest.raises(ConfigError, match="COCO needs the eval dataset's COCO annotation"):
        create_metric("COCO", num_classes=20)
    coco_gt = coco_gt_from_voc([truth([[0, 0, 9, 9]], [0])])
    with pytest.raises(ConfigError, match="num_classes is 20 but the COCO annotation maps 1 labels"):
        create_metric("COCO", num_classes=20, coco_gt=coco_gt)


# ---------------------------------------------------------------- COCO

def coco_case():
    """One image, two classes mapped to COCO categories 3 and 7.

    label 0: gt [0,0,50,50] detected exactly; label 1: gt [100,100,200,200] (100x100) detected
    shifted right by 20: IoU = 80*100 / (120*100) = 2/3, a match at IoU .50 .55 .60 .65 only.
    """
    ground_truths = [truth([[0, 0, 50, 50], [100, 100, 200, 200]], [0, 1])]
    detections = [[detection(0, 0.9, [0, 0, 50, 50]), detection(1, 0.8, [120, 100, 220, 200])]]
    return detections, ground_truths


def test_coco_perfect_detections_give_ap_one():
    detections, ground_truths = coco_case()
    truth = ground_truths[0]
    detections = [[detection(int(c), 0.9, b) for b, c in zip(truth.boxes, truth.classes)]]
    metric = COCOMetric(coco_gt_from_voc(ground_truths, image_ids=[42], label_to_category_id=[3, 7]))
    metric.update(detections, [42])
    result = metric.accumulate()
    for name in ("mAP", "AP", "AP50", "AP75", "APm", "APl", "AR100", "ARm", "ARl"):
        assert result[name] == pytest.approx(1.0, abs=EXACT), name
    assert result["APs"] == -1.0  # no small (< 32^2) ground truth: pycocotools reports -1
    assert result["per_class_ap"] == [pytest.approx(1.0, abs=EXACT)] * 2


@pytest.mark.parametrize("category_ids", [[3, 7], [7, 3]])
def test_coco_shifted_box_passes_ap50_fails_ap75(category_ids):
    detections, ground_truths = coco_case()
    metric = COCOMetric(coco_gt_from_voc(ground_truths, image_ids=[42], label_to_category_id=category_ids),
                        label_to_category_id=category_ids)
    metric.update(detections, [42])
    result = metric.accumulate()
    assert list(result)[1:13] == list(COCO_STAT_NAMES)
    # label 0 scores 1 at every IoU threshold; label 1 at 4 of the 10 thresholds .50:.05:.95.
    assert result["per_class_ap"] == [pytest.approx(1.0, abs=EXACT), pytest.approx(0.4, abs=EXACT)]
    assert result["AP"] == pytest.approx((1.0 + 0.4) / 2, abs=EXACT)
    assert result["AP50"] == pytest.approx(1.0, abs=EXACT)
    assert result["AP75"] == pytest.approx(0.5, abs=EXACT)
    assert result["AR100"] == pytest.approx((1.0 + 0.4) / 2, abs=EXACT)
    assert "Average Precision" in metric.summary


def test_coco_from_an_instances_json_writes_xywh_detection_json(tmp_path):
    detections, ground_truths = coco_case()
    coco_gt = coco_gt_from_voc(ground_truths, image_ids=[42], label_to_category_id=[3, 7],
                               class_names=["cat", "dog"], image_sizes=[(240, 320)])
    annotation_path = tmp_path / "instances_val.json"
    annotation_path.write_text(json.dumps(coco_gt.dataset))
    results_path = tmp_path / "out" / "bbox.json"
    metric = COCOMetric(str(annotation_path), json_path=str(results_path))
    metric.update(detections, np.array([[42]]))
    assert metric.accumulate()["AP"] == pytest.approx(0.7, abs=EXACT)
    written = json.loads(results_path.read_text())
    assert written == [{"image_id": 42, "category_id": 3, "bbox": [0.0, 0.0, 50.0, 50.0], "score": 0.9},
                       {"image_id": 42, "category_id": 7, "bbox": [120.0, 100.0, 100.0, 100.0],
                        "score": 0.8}]


def test_coco_scores_only_the_images_it_was_given():
    # Two gt images; only the first is evaluated (perfectly): AP 1, not a recall-halved AP.
    ground_truths = [truth([[0, 0, 50, 50]], [0]), truth([[10, 10, 60, 60]], [0])]
    metric = COCOMetric(coco_gt_from_voc(ground_truths))
    metric.update([[detection(0, 0.9, [0, 0, 50, 50])]], [1])
    assert metric.accumulate()["AP"] == pytest.approx(1.0, abs=EXACT)


def test_coco_difficult_boxes_become_ignore_regions():
    # Two difficult boxes: one hit by the best detection (0.95), one missed. As ignore regions
    # neither counts: AP 1. (As ordinary boxes the missed one halves recall; dropped, the 0.95
    # detection would be a FP: AP 0.5.)
    ground_truths = [truth([[0, 0, 50, 50], [100, 100, 150, 150], [200, 0, 260, 60]], [0, 0, 0],
                           [False, True, True])]
    metric = COCOMetric(coco_gt_from_voc(ground_truths))
    metric.update([[detection(0, 0.9, [0, 0, 50, 50]), detection(0, 0.95, [100, 100, 150, 150])]], [1])
    assert metric.accumulate()["AP"] == pytest.approx(1.0, abs=EXACT)


def test_coco_without_detections_reports_zero():
    metric = COCOMetric(coco_gt_from_voc([truth([[0, 0, 50, 50]], [0])]))
    metric.update([np.array([[-1.0]])], [1])
    result = metric.accumulate()
    assert [result[name] for name in COCO_STAT_NAMES] == [0.0] * 12
    assert result["per_class_ap"] == [0.0]


def test_coco_bad_inputs(tmp_path):
    with pytest.raises(DataError, match="COCO annotation file '.*missing.json' does not exist"):
        COCOMetric(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(DataError, match="is not a valid instances JSON"):
        COCOMetric(str(broken))
    coco_gt = coco_gt_from_voc([truth([[0, 0, 50, 50]], [0])])
    with pytest.raises(ConfigError, match=r"category ids \[9\]"):
        COCOMetric(coco_gt, label_to_category_id=[9])
    metric = COCOMetric(coco_gt)
    with pytest.raises(DataError, match="image id 5 is not in the COCO annotation"):
        metric.update([[]], [5])
    with pytest.raises(ConfigError, match="detection label 3 has no COCO category"):
        metric.update([[detection(3, 0.9, [0, 0, 50, 50])]], [1])


# ---------------------------------------------------------------- report

def test_report_lists_map_and_per_class_ap():
    text = format_metric_report({"mAP": 0.5, "per_class_ap": [1.0, None, 0.0]},
                                class_names=["aeroplane", "bicycle", "bird"])
    assert text.splitlines() == ["mAP: 50.00", "per-class AP:", "  aeroplane  100.00",
                                 "  bicycle    -", "  bird       0.00"]
