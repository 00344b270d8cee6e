"""A model that really detects, end to end: the demo-sized detector overfit on 4 images
(tests/fitted_model.py) reaches VOC mAP 1.0 through the exported `__model__.infer`, NMS and
the project's metric, by Paddle Inference, by the Executor, by eval.py; infer.py draws its
boxes on the objects."""
import json
import os

import numpy as np
import pytest
from fitted_model import (
    CLASSES,
    NUM_IMAGES,
    config_arguments,
    eval_batch,
    executor_outputs,
    fitted_model,
    ground_truth_from_xml,
    predictor_detections,
    voc_map,
)

import eval as eval_cli
import infer as infer_cli


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fitted_model(tmp_path_factory)


@pytest.fixture(scope="module")
def truths(fitted):
    return ground_truth_from_xml(fitted["data"], "test.txt")


def _executor_detections(model_dir, batch):
    """Per-image detections of `batch` by the Executor running the exported `__model__.infer`."""
    from slim.model import split_detections
    (bbox, bbox_num), _ = executor_outputs(model_dir, {"image": batch["image"],
                                                       "im_size": batch["im_size"]})
    return split_detections(bbox, bbox_num)


def test_the_model_fitted_its_batch(fitted, truths):
    assert fitted["mAP"] == 1.0, fitted
    counted = sum(int(np.sum(difficult == 0)) for _, _, difficult in truths)
    assert len(truths) == NUM_IMAGES and counted >= NUM_IMAGES  # objects to find in each image


def test_paddle_inference_reaches_map_1_and_equals_the_executor(fitted, truths):
    batch = eval_batch(fitted)
    predicted = predictor_detections(fitted["model_dir"], batch)
    executed = _executor_detections(fitted["model_dir"], batch)
    assert all(len(rows) > 0 for rows in predicted)
    result = voc_map(predicted, truths)
    assert result["mAP"] == 1.0, result
    assert voc_map(executed, truths)["mAP"] == result["mAP"]
    for actual, wanted in zip(predicted, executed):
        np.testing.assert_array_equal(actual[:, 0], wanted[:, 0])
        np.testing.assert_allclose(actual[:, 1:], wanted[:, 1:], rtol=1e-4, atol=1e-2)
    # Every counted object is found by a box of its class that overlaps it well (in pixels).
    from slim.metrics import box_iou
    for rows, (boxes, classes, difficult) in zip(predicted, truths):
        for box, label in zip(boxes[difficult == 0], classes[difficult == 0]):
            same_class = rows[rows[:, 0] == label]
            assert len(same_class) and box_iou(box, same_class[:, 2:]).max() > 0.5


def test_eval_py_scores_the_exported_model_map_1(fitted, tmp_path, capsys):
    eval_cli.main(["-m", fitted["model_dir"], "--model_name", "__model__.infer", "--params_name",
                   "__params__", *config_arguments(fitted), "--output_eval", str(tmp_path)])
    with open(tmp_path / "eval_result.json") as handle:
        result = json.load(handle)
    assert result["metric"] == "VOC" and result["num_images"] == NUM_IMAGES
    assert result["mAP"] > 0.5
    assert result["mAP"] == 1.0, result
    assert "mAP: 100.00" in capsys.readouterr().out


def test_infer_py_draws_boxes_on_every_fitted_image(fitted, truths, tmp_path):
    from slim.metrics import box_iou
    infer_cli.main(["--model_path", fitted["model_dir"], *config_arguments(fitted),
                    "--infer_dir", fitted["images"], "--output_dir", str(tmp_path),
                    "--draw_threshold", "0.5"])
    with open(tmp_path / "detections.json") as handle:
        listed = {os.path.basename(item["image"]): item for item in json.load(handle)["images"]}
    with open(os.path.join(fitted["data"], "test.txt")) as handle:
        names = [os.path.basename(line.split()[0]) for line in handle]
    assert sorted(listed) == sorted(names)
    for name, (boxes, classes, difficult) in zip(names, truths):
        rows = listed[name]["detections"]
        assert len(rows) > 0, name
        for box, label in zip(boxes[difficult == 0], classes[difficult == 0]):
            drawn = [row["bbox"] for row in rows if row["name"] == CLASSES[label]]
            assert drawn and box_iou(box, np.array(drawn)).max() > 0.5, (name, CLASSES[label])
