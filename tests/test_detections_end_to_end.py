"""A model that really detects, end to end: the demo-sized detector overfit on 4 images
(tests/fitted_model.py) reaches VOC mAP 1.0 through the exported `__model__.infer`, NMS and
the project's metric, by Paddle Inference, by the Executor, by eval.py; infer.py draws its
boxes on the objects."""
import json
import logging
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


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_infer_py_needs_only_the_model_dir(fitted, truths, tmp_path):
    """infer.py --model_path DIR --infer_img X with nothing else: class names, input size and
    preprocessing come from the model's infer_cfg.yml; the boxes are labelled and on their
    objects; Paddle's "old way to load" notice (its logger: paddle.static.io) does not
    reach the user."""
    from slim.metrics import box_iou
    with open(os.path.join(fitted["data"], "test.txt")) as handle:
        first = os.path.join(fitted["data"], handle.readline().split()[0])
    records = _Records()
    paddle_logger = logging.getLogger("paddle.static.io")
    paddle_logger.addHandler(records)
    try:
        infer_cli.main(["--model_path", fitted["model_dir"], "--infer_img", first,
                        "--output_dir", str(tmp_path)])
    finally:
        paddle_logger.removeHandler(records)
    assert not [message for message in records.messages if "old way" in message]
    with open(tmp_path / "detections.json") as handle:
        (item,) = json.load(handle)["images"]
    boxes, classes, difficult = truths[0]
    assert item["detections"], "no detection at --draw_threshold 0.5"
    for box, label in zip(boxes[difficult == 0], classes[difficult == 0]):
        drawn = [row["bbox"] for row in item["detections"] if row["name"] == CLASSES[label]]
        assert drawn and box_iou(box, np.array(drawn)).max() > 0.5, CLASSES[label]
    assert os.path.isfile(item["output"])


def test_exported_infer_config_describes_the_model(fitted):
    from slim.data.transforms import eval_preprocessing
    from slim.io import export
    from slim.io.file_manifest import file_sha256
    config = export.read_infer_config(fitted["model_dir"])
    assert config["label_list"] == CLASSES and config["num_classes"] == len(CLASSES)
    size = config["preprocess"]["resize"]["height"]
    assert config["preprocess"] == eval_preprocessing(size, size)
    assert config["nms"]["nms_threshold"] == 0.45 and config["nms"]["keep_top_k"] == 100
    for name in (export.MODEL_NAME, export.INFER_MODEL_NAME, export.PARAMS_NAME):
        path = os.path.join(fitted["model_dir"], name)
        assert config["files"][name] == {"size": os.path.getsize(path), "sha256": file_sha256(path)}


def _copy_of_model(fitted, tmp_path, without=()):
    import shutil
    target = tmp_path / "model"
    shutil.copytree(fitted["model_dir"], target)
    for name in without:
        os.remove(target / name)
    return target


def test_infer_without_config_refuses_a_model_without_infer_cfg(fitted, tmp_path, capsys):
    from test_cli_errors import _exit_code_and_error
    model = _copy_of_model(fitted, tmp_path, without=["infer_cfg.yml", "model_manifest.json"])
    code, line = _exit_code_and_error(capsys, infer_cli.main, [
        "--model_path", str(model), "--infer_dir", fitted["images"],
        "--output_dir", str(tmp_path / "out")])
    assert code == 2 and "has no infer_cfg.yml" in line and "-c" in line
    assert not os.path.exists(tmp_path / "out" / "detections.json")


def test_infer_without_config_refuses_an_edited_infer_cfg(fitted, tmp_path, capsys):
    from test_cli_errors import _exit_code_and_error
    model = _copy_of_model(fitted, tmp_path)
    text = (model / "infer_cfg.yml").read_text()
    assert "circle" in text
    (model / "infer_cfg.yml").write_text(text.replace("circle", "ball", 1))
    code, line = _exit_code_and_error(capsys, infer_cli.main, [
        "--model_path", str(model), "--infer_dir", fitted["images"],
        "--output_dir", str(tmp_path / "out")])
    assert code == 2 and "infer_cfg.yml" in line and "damaged" in line
