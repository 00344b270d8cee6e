"""eval.py and infer.py on an exported model that detects (the demo-sized model overfit on 4
demo images, tests/fitted_model.py): the metric from independently parsed ground truth, drawn
images, the detections JSON, flags. Each test first checks that there are real detections
to compare (a model that finds nothing scores 0 everywhere)."""
import json
import os

import numpy as np
import pytest
from fitted_model import (
    CLASSES,
    NUM_IMAGES,
    config_arguments,
    eval_batch,
    fitted_model,
    ground_truth_from_xml,
    predictor_detections,
)

import eval as eval_cli
import infer as infer_cli


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    return fitted_model(tmp_path_factory)


def _predictor_detections(exported):
    """Per-image detections of the eval split through Paddle Inference (not eval.py's
    Executor), and the image files in eval order."""
    with open(os.path.join(exported["data"], "test.txt")) as handle:
        files = [os.path.join(exported["data"], line.split()[0]) for line in handle]
    return predictor_detections(exported["model_dir"], eval_batch(exported)), files


def test_eval_py_matches_the_metric_on_independent_ground_truth(exported, tmp_path, capsys):
    from slim.metrics import VOCMetric
    eval_cli.main(["-m", exported["model_dir"], "--model_name", "__model__", "--params_name",
                   "__params__", *config_arguments(exported), "--output_eval", str(tmp_path)])
    printed = capsys.readouterr().out
    with open(tmp_path / "eval_result.json") as handle:
        result = json.load(handle)
    detections, _ = _predictor_detections(exported)
    assert all(len(d) > 0 for d in detections)
    metric = VOCMetric(len(CLASSES), map_type="11point")
    metric.update(detections, ground_truth_from_xml(exported["data"], "test.txt"))
    expected = metric.accumulate()
    assert expected["mAP"] > 0.5 and result["mAP"] > 0.5  # real detections, then compare
    assert result["metric"] == "VOC" and result["num_images"] == NUM_IMAGES
    assert result["mAP"] == pytest.approx(expected["mAP"], abs=1e-6)
    assert list(result["per_class_ap"]) == CLASSES
    assert list(result["per_class_ap"].values()) == pytest.approx(expected["per_class_ap"], abs=1e-6)
    assert f"mAP: {100 * expected['mAP']:.2f}" in printed
    for name in CLASSES:
        assert any(line.strip().startswith(name) for line in printed.splitlines())


def test_eval_py_coco_metric_on_voc_data(exported, tmp_path):
    eval_cli.main(["-m", exported["model_dir"], "--model_name", "__model__.infer", "--params_name",
                   "__params__", *config_arguments(exported), "metric=COCO",
                   "--output_eval", str(tmp_path)])
    with open(tmp_path / "eval_result.json") as handle:
        result = json.load(handle)
    assert result["metric"] == "COCO"
    assert {"AP", "AP50", "AP75", "ARl"} <= set(result) and result["mAP"] == result["AP"]
    assert 0.5 < result["AP50"] <= 1.0 and 0.0 < result["mAP"] <= result["AP50"]
    with open(tmp_path / "bbox.json") as handle:
        assert len(json.load(handle)) > 0  # COCO-format detections written


def test_infer_py_draws_detections_above_threshold(exported, tmp_path):
    import cv2
    threshold = 0.3
    images = os.path.join(exported["data"], "JPEGImages")
    infer_cli.main(["--model_path", exported["model_dir"], *config_arguments(exported),
                    "--infer_dir", images, "--output_dir", str(tmp_path),
                    "--draw_threshold", str(threshold)])
    with open(tmp_path / "detections.json") as handle:
        written = json.load(handle)
    assert written["draw_threshold"] == threshold
    listed = {os.path.basename(item["image"]): item for item in written["images"]}
    assert len(listed) == NUM_IMAGES + 1  # every image of the dir: 1 train + 4 test
    detections, files = _predictor_detections(exported)
    for rows, image_path in zip(detections, files):
        item = listed[os.path.basename(image_path)]
        rows = rows[rows[:, 1] >= threshold]
        assert len(rows) > 0 and item["detections"], image_path  # something to compare
        rows = rows[np.argsort(-rows[:, 1], kind="stable")]
        assert [d["label"] for d in item["detections"]] == rows[:, 0].astype(int).tolist()
        assert [d["score"] for d in item["detections"]] == pytest.approx(rows[:, 1], abs=1e-4)
        assert [d["name"] for d in item["detections"]] == [CLASSES[int(label)] for label in rows[:, 0]]
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


def test_infer_img_wins_over_infer_dir(exported, tmp_path):
    image = os.path.join(exported["data"], "JPEGImages", "test_00001.jpg")
    infer_cli.main(["--model_path", exported["model_dir"], *config_arguments(exported),
                    "--infer_dir", os.path.join(exported["data"], "JPEGImages"),
                    "--infer_img", image, "--output_dir", str(tmp_path)])
    assert sorted(os.listdir(tmp_path)) == [".slim-written.json", "detections.json", "test_00001.jpg"]


def test_bad_draw_threshold_is_a_user_error(exported, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        infer_cli.main(["--model_path", exported["model_dir"], *config_arguments(exported),
                        "--infer_dir", str(tmp_path), "--draw_threshold", "1.5"])
    assert exit_info.value.code == 2
    assert "error: --draw_threshold 1.5 must be in [0, 1]" in capsys.readouterr().err


@pytest.mark.parametrize("cli", ["eval", "infer"])
def test_num_classes_other_than_the_label_lists_is_one_error_before_scoring(exported, tmp_path, capsys,
                                                                           cli):
    """The demo label list has 5 classes: num_classes 7 would score/draw 2 nameless classes
    (and 3 would drop objects): one line naming both counts, nothing written."""
    from slim.engine.evaluation import check_class_count
    from slim.errors import DataError
    if cli == "eval":
        main, arguments = eval_cli.main, ["-m", exported["model_dir"], "--model_name", "__model__",
                                          "--params_name", "__params__", "--output_eval", str(tmp_path)]
    else:
        main, arguments = infer_cli.main, ["--model_path", exported["model_dir"], "--output_dir",
                                           str(tmp_path), "--infer_dir",
                                           os.path.join(exported["data"], "JPEGImages")]
    with pytest.raises(SystemExit) as exit_info:
        main([*arguments, *config_arguments(exported), "num_classes=7"])
    error = capsys.readouterr().err
    assert exit_info.value.code == 2 and "Traceback" not in error
    assert "error: num_classes is 7 but the dataset of Yolo" in error and "has 5 classes (circle, " in error
    assert os.listdir(tmp_path) == []
    check_class_count(5, CLASSES, "YoloEvalFeed")
    with pytest.raises(DataError, match="num_classes is 3 but the dataset of YoloEvalFeed has 5"):
        check_class_count(3, CLASSES, "YoloEvalFeed")


def test_an_image_without_an_image_extension_is_drawn_as_jpg(exported, tmp_path):
    """A PNG named photo.txt or '.slim-written.json' was decoded, then its drawing could not
    be encoded (an OpenCV traceback after inference) or would have been named like the tool's
    own list: its drawing is NAME.jpg."""
    from slim.commands.infer import DETECTIONS_FILE, output_names
    source = os.path.join(exported["data"], "JPEGImages", "test_00001.jpg")
    images = tmp_path / "images"
    images.mkdir()
    with open(source, "rb") as handle:
        data = handle.read()
    for name in ("photo.txt", ".slim-written.json", "noext"):
        (images / name).write_bytes(data)
    out = tmp_path / "out"
    for name in ("photo.txt", ".slim-written.json", "noext"):
        infer_cli.main(["--model_path", exported["model_dir"], *config_arguments(exported),
                        "--infer_img", str(images / name), "--output_dir", str(out)])
    assert sorted(os.listdir(out)) == sorted([".slim-written.json", ".slim-written.json.jpg", DETECTIONS_FILE,
                                              "noext.jpg", "photo.txt.jpg"])
    assert output_names(["a/x.PNG", "b/x.png", "c/detections.json"]) == {
        "a/x.PNG": "x.PNG", "b/x.png": "x.png", "c/detections.json": "detections.json.jpg"}
