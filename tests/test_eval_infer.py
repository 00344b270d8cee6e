"""eval.py and infer.py on an exported model that detects (random weights, many boxes): the
metric from independently parsed ground truth, drawn images, the detections JSON, flags."""
import json
import os
import xml.etree.ElementTree as ElementTree

import numpy as np
import paddle
import pytest

import eval as eval_cli
import infer as infer_cli
from slim import export
from test_compress import make_workspace

CLASSES = ["circle", "square", "triangle", "star", "cross"]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    from slim.config import create, load_config
    from slim.model import build_eval_program
    root = str(tmp_path_factory.mktemp("eval_infer"))
    paths = make_workspace(root)
    cfg = load_config(paths["config"])
    evaluation = build_eval_program(create("YOLOv3", cfg), image_shape=[3, 64, 64])
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(evaluation.startup, scope=scope)
    _raise_scores(scope, num_classes=len(CLASSES))
    model_dir = os.path.join(root, "eval_model")
    export.export_model(evaluation, scope, executor, model_dir)
    cwd = os.getcwd()
    os.chdir(root)  # the config's dataset_dir is relative to the workspace
    yield dict(paths, model_dir=model_dir)
    os.chdir(cwd)


def _raise_scores(scope, num_classes, logit=2.0):
    """Objectness and class biases of every yolo_output set to `logit`, so that the random
    model's scores sit around sigmoid(2)^2 = 0.78 whatever the random init (which depends on
    the tests run before) and the images: many boxes clear the draw threshold."""
    for i in range(3):
        tensor = scope.find_var(f"yolo_output.{i}.conv.bias").get_tensor()
        bias = np.array(tensor).reshape(3, 5 + num_classes)
        bias[:, 4:] = logit
        tensor.set(bias.reshape(-1), paddle.CPUPlace())


def _ground_truth_from_xml(root, list_file):
    """(boxes, classes, difficult) per image of a VOC list file, parsed here with ElementTree."""
    truths = []
    with open(os.path.join(root, "data", list_file)) as handle:
        for line in handle:
            xml_path = os.path.join(root, "data", line.split()[1])
            boxes, classes, difficult = [], [], []
            for obj in ElementTree.parse(xml_path).findall("object"):
                box = obj.find("bndbox")
                boxes.append([float(box.find(k).text) for k in ("xmin", "ymin", "xmax", "ymax")])
                classes.append(CLASSES.index(obj.find("name").text))
                difficult.append(int(obj.findtext("difficult", "0")))
            truths.append((np.array(boxes).reshape(-1, 4), np.array(classes), np.array(difficult)))
    return truths


def _predictor_detections(exported, map_type="11point"):
    """Per-image detections of the test split through Paddle Inference (not eval.py's Executor)."""
    from slim.config import create, load_config
    from slim.data.loader import build_eval_loader
    from slim.model import split_detections
    loader = build_eval_loader(create("YoloEvalFeed", load_config(exported["config"])))
    predictor = export.inference_predictor(exported["model_dir"])
    detections, files = [], []
    for batch in loader:
        bbox, bbox_num = export.run_predictor(predictor, {"image": batch["image"],
                                                          "im_size": batch["im_size"]})
        detections.extend(split_detections(bbox, bbox_num))
    files = [record["im_file"] for record in loader.records]
    return detections, files


def test_eval_py_matches_the_metric_on_independent_ground_truth(exported, tmp_path, capsys):
    from slim.metrics import VOCMetric
    eval_cli.main(["-m", exported["model_dir"], "--model_name", "__model__", "--params_name",
                   "__params__", "-c", exported["config"], "--output_eval", str(tmp_path)])
    printed = capsys.readouterr().out
    with open(tmp_path / "eval_result.json") as handle:
        result = json.load(handle)
    detections, _ = _predictor_detections(exported)
    assert sum(len(d) for d in detections) > 0
    metric = VOCMetric(len(CLASSES), map_type="11point")
    metric.update(detections, _ground_truth_from_xml(exported["root"], "test.txt"))
    expected = metric.accumulate()
    assert result["metric"] == "VOC" and result["num_images"] == 4
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert list(result["per_class_ap"]) == CLASSES
    assert list(result["per_class_ap"].values()) == pytest.approx(expected["per_class_ap"], abs=1e-6)
    assert f"mAP: {100 * expected['mAP']:.2f}" in printed
    for name in CLASSES:
        assert any(line.strip().startswith(name) for line in printed.splitlines())


def test_eval_py_coco_metric_on_voc_data(exported, tmp_path):
    eval_cli.main(["-m", exported["model_dir"], "--model_name", "__model__.infer", "--params_name",
                   "__params__", "-c", exported["config"], "-o", "metric=COCO",
                   "--output_eval", str(tmp_path)])
    with open(tmp_path / "eval_result.json") as handle:
        result = json.load(handle)
    assert result["metric"] == "COCO"
    assert {"AP", "AP50", "AP75", "ARl"} <= set(result) and result["mAP"] == result["AP"]
    assert 0.0 <= result["mAP"] <= 1.0
    with open(tmp_path / "bbox.json") as handle:
        assert len(json.load(handle)) > 0  # COCO-format detections written


def test_infer_py_draws_detections_above_threshold(exported, tmp_path):
    import cv2
    threshold = 0.3
    images = os.path.join(exported["root"], "data", "JPEGImages")
    infer_cli.main(["--model_path", exported["model_dir"], "-c", exported["config"],
                    "--infer_dir", images, "--output_dir", str(tmp_path),
                    "--draw_threshold", str(threshold)])
    with open(tmp_path / "detections.json") as handle:
        written = json.load(handle)
    assert written["draw_threshold"] == threshold
    listed = {os.path.basename(item["image"]): item for item in written["images"]}
    assert len(listed) == 12  # every image of the dir: 8 train + 4 test
    detections, files = _predictor_detections(exported)
    drawn_total = 0
    for rows, image_path in zip(detections, files):
        item = listed[os.path.basename(image_path)]
        rows = rows[rows[:, 1] >= threshold]
        rows = rows[np.argsort(-rows[:, 1], kind="stable")]
        assert [d["label"] for d in item["detections"]] == rows[:, 0].astype(int).tolist()
        assert [d["score"] for d in item["detections"]] == pytest.approx(rows[:, 1], abs=1e-4)
        assert [d["name"] for d in item["detections"]] == [CLASSES[int(l)] for l in rows[:, 0]]
        for listed_detection, row in zip(item["detections"], rows):
            assert listed_detection["bbox"] == pytest.approx(row[2:], abs=0.02)
        drawn = cv2.imread(item["output"])
        original = cv2.imread(image_path)
        assert drawn.shape == original.shape
        changed = np.any(drawn != original, axis=2)
        for detection in item["detections"]:  # each box's outline is on the picture
            x1, y1, x2, y2 = (int(round(v)) for v in detection["bbox"])
            x1, y1 = max(0, x1), max(0, y1)
            x2, y2 = min(drawn.shape[1] - 1, x2), min(drawn.shape[0] - 1, y2)
            assert changed[y1:y2 + 1, x1].any() or changed[y1:y2 + 1, x2].any()
        drawn_total += len(rows)
    assert drawn_total > 0


def test_infer_img_wins_over_infer_dir(exported, tmp_path):
    image = os.path.join(exported["root"], "data", "JPEGImages", "test_00001.jpg")
    infer_cli.main(["--model_path", exported["model_dir"], "-c", exported["config"],
                    "--infer_dir", os.path.join(exported["root"], "data", "JPEGImages"),
                    "--infer_img", image, "--output_dir", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == ["detections.json", "test_00001.jpg"]


def test_bad_draw_threshold_is_a_user_error(exported, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        infer_cli.main(["--model_path", exported["model_dir"], "-c", exported["config"],
                        "--infer_dir", str(tmp_path), "--draw_threshold", "1.5"])
    assert exit_info.value.code == 2
    assert "error: --draw_threshold 1.5 must be in [0, 1]" in capsys.readouterr().err
