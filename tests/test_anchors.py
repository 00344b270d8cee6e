"""Anchors fitted to a dataset (`python -m slim anchors`, slim.data.anchors) and a detection
config started from a dataset dir (`python -m slim.config generate --dataset_dir`)."""
import os
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import yaml

from slim.config import load_config
from slim.data import anchors as anchors_lib

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_iou_of_centred_boxes_by_hand():
    iou = anchors_lib.iou_wh([[10, 10], [20, 10]], [[10, 10], [10, 20], [5, 5]])
    np.testing.assert_allclose(iou, [[1.0, 0.5, 0.25], [0.5, 100 / 300, 25 / 200]])


def test_box_sizes_are_at_the_train_size():
    records = [{"w": 200, "h": 100, "gt_bbox": np.array([[0, 0, 50, 50], [10, 10, 10, 30]])}]
    # a 200 x 100 image stretched to 100 x 100: widths halve; the empty box is left out
    np.testing.assert_allclose(anchors_lib.box_sizes(records, 100), [[25, 50]])


def test_k_means_finds_the_clusters_of_the_boxes():
    rng = np.random.default_rng(0)
    centres = np.array([[12, 30], [40, 40], [90, 60]])
    boxes = np.concatenate([centre * rng.uniform(0.95, 1.05, (200, 2)) for centre in centres])
    anchors, mean_iou = anchors_lib.fit_anchors(boxes, k=3, restarts=5)
    np.testing.assert_allclose(anchors, centres, rtol=0.06)  # sorted by area, as centres are
    assert mean_iou > 0.9
    assert mean_iou == pytest.approx(anchors_lib.mean_best_iou(boxes, anchors))
    # more anchors fit at least as well; the published VOC anchors fit these boxes worse
    assert anchors_lib.fit_anchors(boxes, k=9, restarts=5)[1] >= mean_iou
    published = [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119], [116, 90],
                 [156, 198], [373, 326]]
    assert anchors_lib.mean_best_iou(boxes, published) < mean_iou


def test_anchor_masks():
    assert anchors_lib.anchor_masks(9) == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert anchors_lib.anchor_masks(6) == [[4, 5], [2, 3], [0, 1]]
    with pytest.raises(Exception, match="multiple of 3"):
        anchors_lib.anchor_masks(8)


def _one_class_dataset(root, train=24, test=6):
    """A tiny 1-class VOC dataset (the demo generator's scenes, every object one class): the
    shape of the issue's aerial dataset."""
    from slim.data.demo import main as make_demo
    out = os.path.join(root, "tiles")
    make_demo(["--out", out, "--train", str(train), "--test", str(test), "--seed", "4"])
    for name in os.listdir(os.path.join(out, "Annotations")):
        path = os.path.join(out, "Annotations", name)
        tree = ElementTree.parse(path)
        for element in tree.iter("name"):
            element.text = "object"
        tree.write(path)
    with open(os.path.join(out, "label_list.txt"), "w") as handle:
        handle.write("object\n")
    return out


def _slim(*args, cwd):
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300, env=dict(os.environ, PYTHONPATH=ROOT))


@pytest.fixture(scope="module")
def tiles(tmp_path_factory):
    return _one_class_dataset(str(tmp_path_factory.mktemp("tiles")))


def test_anchors_command_prints_the_fit_and_the_o_line(tiles, tmp_path):
    result = _slim("slim", "anchors", "--dataset_dir", tiles, "--size", "160", "--yaml",
                   str(tmp_path / "anchors.yml"), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    summary, option = result.stdout.splitlines()[:2]
    assert "boxes of 24 images" in summary and "at 160 px" in summary
    mean_iou = float(summary.split("mean best IoU ")[1].split()[0])
    assert 0.5 < mean_iou <= 1.0
    assert option.startswith("-o YOLOv3Head.anchors=")
    # the printed -o items set the anchors of a config, and they are what --yaml wrote
    cfg = load_config(os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo.yml"),
                      option[3:].split(" YOLOv3Head.anchor_masks=", 1)[0:1]
                      + ["YOLOv3Head.anchor_masks=" + option.split("anchor_masks=")[1]])
    with open(tmp_path / "anchors.yml") as handle:
        written = yaml.safe_load(handle)["YOLOv3Head"]
    assert cfg["YOLOv3Head"]["anchors"] == written["anchors"] and len(written["anchors"]) == 9
    areas = [w * h for w, h in written["anchors"]]
    assert areas == sorted(areas)
    # the mean best IoU printed is that of the anchors over the boxes at 160 px
    from slim.data.dataset_config import dataset_source
    records = dataset_source(tiles).load_records(for_training=True)
    boxes = anchors_lib.box_sizes(records, 160)
    assert anchors_lib.mean_best_iou(boxes, written["anchors"]) == pytest.approx(mean_iou, abs=1e-3)


@pytest.mark.parametrize("args, message", [
    ([], "--dataset_dir DIR or -c CONFIG"),
    (["--dataset_dir", "DATA", "--size", "100"], "multiple of 32"),
    (["--dataset_dir", "DATA", "-n", "8"], "multiple of 3"),
    (["--dataset_dir", "nowhere"], "not a directory"),
])
def test_anchors_errors_are_one_line(tiles, tmp_path, args, message):
    args = [tiles if arg == "DATA" else arg for arg in args]
    result = _slim("slim", "anchors", *args, cwd=str(tmp_path))
    assert result.returncode == 2 and message in result.stderr, result.stderr
    assert "Traceback" not in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_anchors_yaml_never_replaces_a_user_file(tiles, tmp_path):
    mine = tmp_path / "notes.yml"
    mine.write_text("mine")
    result = _slim("slim", "anchors", "--dataset_dir", tiles, "--yaml", str(mine), cwd=str(tmp_path))
    assert result.returncode == 2 and "not written by this tool" in result.stderr
    assert mine.read_text() == "mine"


def test_config_generate_starts_a_config_from_a_one_class_dataset(tiles, tmp_path):
    out = tmp_path / "tiles.yml"
    result = _slim("slim.config", "generate", "--dataset_dir", tiles, "--size", "160", "--out",
                   str(out), cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr
    assert "mean best IoU" in result.stderr
    cfg = load_config(str(out))
    assert cfg["num_classes"] == 1
    anchors = _slim("slim", "anchors", "--dataset_dir", tiles, "--size", "160", cwd=str(tmp_path))
    assert f"YOLOv3Head.anchors={cfg['YOLOv3Head']['anchors']}".replace(" ", "") in \
        anchors.stdout.replace(" ", "")
    for feed, annotation in (("YoloTrainFeed", "train.txt"), ("YoloEvalFeed", "test.txt")):
        dataset = cfg[feed]["dataset"]
        assert (dataset["dataset_dir"], dataset["annotation"], dataset["use_default_label"]) == (
            tiles, annotation, False)
        assert cfg[feed]["image_shape"] == [3, 160, 160]
    assert cfg["YoloTrainFeed"]["multi_scale_sizes"] == [128, 160, 192]
    assert cfg["weights"] is None and cfg["max_iters"] == "auto"
    from slim.config import create
    from slim.data.loader import load_feed_records
    records = load_feed_records(create(cfg["train_feed"], cfg), for_training=True)
    assert len(records) == 24 and all((record["gt_class"] == 0).all() for record in records)


def test_config_generate_errors(tiles, tmp_path):
    result = _slim("slim.config", "generate", cwd=str(tmp_path))
    assert result.returncode == 2 and "--dataset_dir" in result.stderr
    result = _slim("slim.config", "generate", "--dataset_dir", tiles, "--test_list", "val.txt",
                   cwd=str(tmp_path))
    assert result.returncode == 2 and "val.txt" in result.stderr and "Traceback" not in result.stderr
