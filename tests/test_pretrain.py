"""Backbone pretraining on object crops: crop windows, the classifier program, weights the
detector loads."""
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from test_compress import ROOT, make_workspace

from slim.data import crops
from slim.data.transforms import IMAGENET_MEAN, IMAGENET_STD
from slim.model.classifier import build_classifier_program
from slim.runs.pretrain import pretrain_backbone


def _to_rgb(chw):
    return (chw.transpose(1, 2, 0) * IMAGENET_STD + IMAGENET_MEAN) * 255


def test_object_crop_holds_the_object_centred_with_a_margin():
    image = np.zeros((100, 120, 3), np.uint8)
    image[30:60, 50:80] = (255, 0, 0)  # a 30 px red square, box [50, 30, 80, 60]
    rng = np.random.default_rng(0)
    for _ in range(20):
        window = crops.object_crop_window([50, 30, 80, 60], rng)
        assert 30 * 1.05 <= window[2] <= 30 * 1.4
        crop = _to_rgb(crops.crop_square(image, window, 64, flip=False))
        red = (crop[..., 0] > 128) & (crop[..., 1] < 128)
        # the object fills 1/1.4 .. 1/1.05 of the crop's side and covers its centre
        side = red.any(axis=0).sum()
        assert 64 / 1.4 - 2 <= side <= 64 / 1.05 + 2
        assert red[28:36, 28:36].all()


def test_background_windows_overlap_no_object_much():
    rng = np.random.default_rng(1)
    boxes = np.array([[10, 10, 60, 70], [100, 40, 180, 120]], np.float64)
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    found = 0
    for _ in range(200):
        window = crops.background_crop_window(200, 160, boxes, rng)
        if window is None:
            continue
        found += 1
        x, y, side = window
        patch = [x - side / 2, y - side / 2, x + side / 2, y + side / 2]
        overlap_x = np.clip(np.minimum(patch[2], boxes[:, 2]) - np.maximum(patch[0], boxes[:, 0]), 0, None)
        overlap_y = np.clip(np.minimum(patch[3], boxes[:, 3]) - np.maximum(patch[1], boxes[:, 1]), 0, None)
        overlap = overlap_x * overlap_y
        assert (overlap / areas <= crops.BACKGROUND_OVERLAP).all()
        assert (overlap / side ** 2 <= crops.BACKGROUND_OVERLAP).all()
    assert found > 100
    # an object covering the whole image leaves no background
    assert crops.background_crop_window(200, 160, [[0, 0, 200, 160]], rng) is None


def test_classifier_program_has_the_detector_backbone_parameters():
    from slim.model import MobileNet, YOLOv3, YOLOv3Head, build_train_program
    backbone = MobileNet(conv_group_scale=0.25)
    train, test, _, _, _ = build_classifier_program(backbone, 64, 6)
    classifier = {p.name: list(p.shape) for p in train.global_block().all_parameters()}
    detector = {p.name: list(p.shape) for p in build_train_program(
        YOLOv3(backbone, YOLOv3Head(num_classes=5))).program.global_block().all_parameters()}
    backbone_params = {name: shape for name, shape in classifier.items()
                       if not name.startswith("pretrain_fc")}
    assert len(backbone_params) == 27 * 5  # conv weights + bn scale, offset, mean, variance
    assert all(detector[name] == shape for name, shape in backbone_params.items())
    assert classifier["pretrain_fc_weights"] == [256, 6]
    assert all(op.attr("is_test") for op in test.global_block().ops if op.type == "batch_norm")


def test_pretrained_backbone_loads_into_the_detector(tmp_path, monkeypatch):
    from slim.config import create, load_config
    from slim.io.weights import load_weights, read_weights
    from slim.model import build_train_program
    paths = make_workspace(str(tmp_path))
    monkeypatch.chdir(paths["root"])  # the config's dataset_dir is relative to the workspace
    paddle.enable_static()
    cfg = load_config(paths["config"])
    lines = []
    accuracies = pretrain_backbone(cfg, str(tmp_path / "backbone"), epochs=2,
                                            size=32, batch_size=8, log=lines.append)
    assert len(accuracies) == 2 and all(0 <= a <= 1 for a in accuracies)
    assert lines[0].startswith("pretrain epoch 0/1:") and "test crop accuracy" in lines[0]
    train = build_train_program(create("YOLOv3", cfg))
    scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    executor.run(train.startup, scope=scope)
    report = load_weights(scope, train.program, str(tmp_path / "backbone"), partial=True)
    backbone = sorted(p.name for p in train.program.global_block().all_parameters()
                      if p.name.startswith("conv"))
    assert set(backbone) <= set(report.loaded) and not report.unexpected
    assert any(name.endswith("_bn_mean") for name in report.loaded)  # statistics travel too
    assert not any(name.startswith("yolo") for name in report.loaded)
    saved = read_weights(str(tmp_path / "backbone"), ["conv1_weights"])["conv1_weights"]
    np.testing.assert_array_equal(np.array(scope.find_var("conv1_weights").get_tensor()), saved)


@pytest.mark.parametrize("option, value, message", [
    ("--size", "50", "error: --epochs must be >= 1"),
    ("--lr", "nan", "error: --lr nan must be a finite number > 0"),
    ("--lr", "-0.1", "error: --lr -0.1 must be a finite number > 0")])
def test_command_line_rejects_bad_values(tmp_path, option, value, message):
    result = subprocess.run([sys.executable, "-m", "slim", "pretrain", "-c",
                             os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml"),
                             "--out", str(tmp_path / "x"), option, value],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith(message)
    assert "Traceback" not in result.stderr and not os.path.exists(tmp_path / "x")
