"""VOC and COCO sources, bad-data handling, feeds as config modules, `-d`, the VOC list script."""
import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

from slim.config import REGISTRY
from slim.data import COCODataSet, VOCDataSet, YoloEvalFeed, YoloTestFeed, YoloTrainFeed, set_dataset_dir
from slim.data import records as records_lib
from slim.data.loader import dataset_size, label_names, load_feed_records, open_dataset
from slim.data.voc import VOC_CLASSES
from slim.data.voc_lists import write_voc_lists
from slim.errors import DataError
from slim.io.output_places import OutputPlaceError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write_jpeg(path, width=64, height=48, value=128):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image = np.full((height, width, 3), value, np.uint8)
    image[5:20, 5:30] = (10, 200, 30)
    assert cv2.imwrite(path, image)


def voc_xml(objects, width=64, height=48):
    parts = [f"<annotation><size><width>{width}</width><height>{height}</height><depth>3</depth></size>"]
    for name, box, difficult in objects:
        parts.append(f"<object><name>{name}</name><difficult>{difficult}</difficult><bndbox>"
                     f"<xmin>{box[0]}</xmin><ymin>{box[1]}</ymin><xmax>{box[2]}</xmax><ymax>{box[3]}</ymax>"
                     f"</bndbox></object>")
    return "".join(parts) + "</annotation>"


def make_voc(root, samples, label_list=("cat", "dog", "bird"), list_name="train.txt"):
    """samples: list of (stem, xml text or None for no file, image kind: good|missing|garbage|truncated)."""
    lines = []
    for stem, xml_text, image_kind in samples:
        image_path = os.path.join(root, "JPEGImages", stem + ".jpg")
        if image_kind == "good":
            write_jpeg(image_path)
        elif image_kind == "garbage":
            os.makedirs(os.path.dirname(image_path), exist_ok=True)
            with open(image_path, "wb") as f:
                f.write(np.random.default_rng(0).integers(0, 256, 500, dtype=np.uint8).tobytes())
        elif image_kind == "truncated":
            write_jpeg(image_path)
            data = open(image_path, "rb").read()
            with open(image_path, "wb") as f:
                f.write(data[:len(data) // 2])
        if xml_text is not None:
            os.makedirs(os.path.join(root, "Annotations"), exist_ok=True)
            with open(os.path.join(root, "Annotations", stem + ".xml"), "w") as f:
                f.write(xml_text)
        lines.append(f"JPEGImages/{stem}.jpg Annotations/{stem}.xml")
    with open(os.path.join(root, list_name), "w") as f:
        f.write("\n".join(lines) + "\n")
    if label_list is not None:
        with open(os.path.join(root, "label_list.txt"), "w") as f:
            f.write("\n".join(label_list) + "\n")
    return root


def voc_dataset(root, list_name="train.txt"):
    return VOCDataSet(dataset_dir=str(root), annotation=list_name, use_default_label=False)


def test_voc_parsing_keeps_difficult_objects_marked(tmp_path):
    make_voc(tmp_path, [
        ("a", voc_xml([("dog", (5, 6, 30, 20), 0), ("bird", (10, 10, 60, 40), 1)]), "good"),
        ("b", voc_xml([("cat", (1, 2, 3, 4), 0)]), "good"),
    ])
    records = voc_dataset(tmp_path).load_records(for_training=True)
    assert [os.path.basename(r["im_file"]) for r in records] == ["a.jpg", "b.jpg"]
    first = records[0]
    assert first["h"] == 48 and first["w"] == 64 and first["im_id"] == 0 and records[1]["im_id"] == 1
    np.testing.assert_array_equal(first["gt_bbox"], [[5, 6, 30, 20], [10, 10, 60, 40]])
    assert first["gt_bbox"].dtype == np.float32
    np.testing.assert_array_equal(first["gt_class"], [1, 2])
    np.testing.assert_array_equal(first["difficult"], [0, 1])
    np.testing.assert_array_equal(first["is_crowd"], [0, 0])
    assert first["gt_class"].dtype == np.int32 and first["difficult"].dtype == np.int32


def test_voc_default_labels_are_the_20_classes(tmp_path):
    make_voc(tmp_path, [("a", voc_xml([("person", (5, 6, 30, 20), 0), ("tvmonitor", (1, 1, 9, 9), 0)]),
                         "good")], label_list=None)
    dataset = VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt", use_default_label=True)
    assert dataset.label_names() == list(VOC_CLASSES) and len(VOC_CLASSES) == 20
    record = dataset.load_records(for_training=True)[0]
    np.testing.assert_array_equal(record["gt_class"], [VOC_CLASSES.index("person"), 19])


def warning_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


@pytest.mark.parametrize("case, sample, expected", [
    ("garbage image", ("x", voc_xml([("cat", (1, 1, 20, 20), 0)]), "garbage"), "unreadable or corrupt"),
    ("truncated image", ("x", voc_xml([("cat", (1, 1, 20, 20), 0)]), "truncated"), "unreadable or corrupt"),
    ("missing image", ("x", voc_xml([("cat", (1, 1, 20, 20), 0)]), "missing"), "image not found"),
    ("malformed xml", ("x", "<annotation><object><name>cat</name>", "good"), "malformed XML"),
    ("missing xml", ("x", None, "good"), "annotation file not found"),
    ("no objects", ("x", voc_xml([]), "good"), "no objects"),
])
def test_bad_sample_is_skipped_with_one_warning_and_counted(tmp_path, caplog, case, sample, expected):
    good = ("good", voc_xml([("cat", (1, 1, 20, 20), 0)]), "good")
    make_voc(tmp_path, [good, sample])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = voc_dataset(tmp_path).load_records(for_training=True)
    assert [os.path.basename(r["im_file"]) for r in records] == ["good.jpg"], case
    warnings = warning_lines(caplog)
    skip_lines = [w for w in warnings if w.startswith("skipped sample")]
    assert len(skip_lines) == 1 and expected in skip_lines[0] and "x." in skip_lines[0], warnings
    assert "\n" not in skip_lines[0]
    summary = [w for w in warnings if w.startswith("dataset ")]
    assert summary == [f"dataset {tmp_path}/train.txt: 1 usable images of 2; skipped 1 images, "
                       f"dropped 0 objects, clipped 0 boxes"]


@pytest.mark.parametrize("case, objects, expected_boxes, expected_warning", [
    ("unknown class", [("cat", (1, 1, 20, 20), 0), ("kat", (2, 2, 9, 9), 0)], [[1, 1, 20, 20]],
     "unknown class name 'kat' (did you mean 'cat'?)"),
    ("degenerate box", [("cat", (1, 1, 20, 20), 0), ("dog", (30, 10, 20, 40), 0)], [[1, 1, 20, 20]],
     "degenerate box"),
    ("box outside the image", [("cat", (1, 1, 20, 20), 0), ("dog", (70, 50, 90, 60), 0)], [[1, 1, 20, 20]],
     "lies outside the 64x48 image"),
    ("box partly outside", [("cat", (-10, 1, 20, 20), 0), ("dog", (30, 10, 80, 47), 0)],
     [[0, 1, 20, 20], [30, 10, 64, 47]], "clipped to the 64x48 image"),
])
def test_bad_object_is_dropped_or_clipped_with_a_warning(tmp_path, caplog, case, objects, expected_boxes,
                                                         expected_warning):
    make_voc(tmp_path, [("a", voc_xml(objects), "good")])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = voc_dataset(tmp_path).load_records(for_training=True)
    np.testing.assert_array_equal(records[0]["gt_bbox"], np.array(expected_boxes, np.float32), err_msg=case)
    warnings = warning_lines(caplog)
    assert any(expected_warning in w and "a.xml" in w for w in warnings), warnings
    object_warnings = [w for w in warnings if not w.startswith("dataset ")]
    assert len(object_warnings) == (2 if case == "box partly outside" else 1), object_warnings


def test_object_warnings_count_in_summary(tmp_path, caplog):
    make_voc(tmp_path, [("a", voc_xml([("cat", (1, 1, 20, 20), 0), ("kat", (2, 2, 9, 9), 0),
                                       ("dog", (-30, 1, 20, 20), 0)]), "good")])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        voc_dataset(tmp_path).load_records(for_training=True)
    assert warning_lines(caplog)[-1] == (f"dataset {tmp_path}/train.txt: 1 usable images of 1; skipped 0 "
                                         f"images, dropped 1 objects, clipped 1 boxes")


def test_image_without_objects_is_kept_for_evaluation(tmp_path):
    make_voc(tmp_path, [("a", voc_xml([("cat", (1, 1, 20, 20), 0)]), "good"), ("empty", voc_xml([]), "good")])
    records = voc_dataset(tmp_path).load_records(for_training=False)
    assert [len(r["gt_bbox"]) for r in records] == [1, 0]
    assert records[1]["gt_bbox"].shape == (0, 4)


def test_missing_dataset_dir_list_file_or_nothing_usable_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="dataset_dir not found: .*nowhere"):
        VOCDataSet(dataset_dir=str(tmp_path / "nowhere")).load_records(for_training=True)
    (tmp_path / "a_file").write_text("x")  # -d naming a file: said so, not 'not found'
    with pytest.raises(DataError, match="dataset_dir .*a_file is a file, not a directory"):
        VOCDataSet(dataset_dir=str(tmp_path / "a_file")).load_records(for_training=True)
    with pytest.raises(DataError, match="list file not found: .*trainval.txt"):
        VOCDataSet(dataset_dir=str(tmp_path)).load_records(for_training=True)
    make_voc(tmp_path, [("x", voc_xml([("cat", (1, 1, 20, 20), 0)]), "garbage")])
    with pytest.raises(DataError, match=r"no usable images in .*train.txt \(1 listed, 1 skipped"):
        voc_dataset(tmp_path).load_records(for_training=True)
    os.remove(tmp_path / "label_list.txt")
    with pytest.raises(DataError, match="label list not found"):
        voc_dataset(tmp_path).label_names()


def test_malformed_list_line_is_skipped(tmp_path, caplog):
    make_voc(tmp_path, [("a", voc_xml([("cat", (1, 1, 20, 20), 0)]), "good")])
    with open(tmp_path / "train.txt", "a") as f:
        f.write("only_one_column.jpg\n")
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = voc_dataset(tmp_path).load_records(for_training=True)
    assert len(records) == 1
    assert any("train.txt:2" in w and "expected 'image_path xml_path'" in w for w in warning_lines(caplog))


def test_data_error_exits_2_with_one_line_through_the_cli_wrapper(tmp_path):
    script = ("import slim, sys; from slim.errors import exit_on_user_error\n"
              "from slim.data import YoloTrainFeed\nfrom slim.data.loader import dataset_size\n"
              f"exit_on_user_error(lambda: dataset_size(YoloTrainFeed(dataset={{'dataset_dir': "
              f"{str(tmp_path / 'voc')!r}}})))()\n")
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: dataset_dir not found: {tmp_path / 'voc'} "
                                                  f"(set it in the feed's dataset section or with "
                                                  f"-d/--dataset_dir)"]


def test_image_size_reads_jpeg_and_png_headers(tmp_path):
    write_jpeg(str(tmp_path / "a.jpg"), width=37, height=23)
    assert records_lib.image_size(str(tmp_path / "a.jpg")) == (23, 37)
    cv2.imwrite(str(tmp_path / "b.png"), np.zeros((11, 13, 3), np.uint8))
    assert records_lib.image_size(str(tmp_path / "b.png")) == (11, 13)
    cv2.imwrite(str(tmp_path / "c.bmp"), np.zeros((5, 7, 3), np.uint8))
    assert records_lib.image_size(str(tmp_path / "c.bmp")) == (5, 7)
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert records_lib.image_size(str(tmp_path / "empty.jpg")) is None
    assert records_lib.image_size(str(tmp_path / "missing.jpg")) is None


# ---------------------------------------------------------------- COCO

def make_coco(root, annotations_extra=(), images_extra=(),
              categories=((1, "person"), (3, "car"), (7, "dog"))):
    for name in ("1.jpg", "2.jpg", "3.jpg"):
        write_jpeg(os.path.join(root, "images", name))
    content = {
        "images": [{"id": 10, "file_name": "1.jpg", "width": 64, "height": 48},
                   {"id": 20, "file_name": "2.jpg", "width": 64, "height": 48},
                   {"id": 30, "file_name": "3.jpg", "width": 64, "height": 48}] + list(images_extra),
        "categories": [{"id": cid, "name": name} for cid, name in categories],
        "annotations": [
            {"id": 1, "image_id": 10, "category_id": 3, "bbox": [2, 3, 10, 20], "iscrowd": 0, "area": 200},
            {"id": 2, "image_id": 10, "category_id": 7, "bbox": [20, 5, 30, 30], "iscrowd": 1, "area": 900},
            {"id": 3, "image_id": 20, "category_id": 1, "bbox": [0, 0, 64, 48], "iscrowd": 0, "area": 3072},
            {"id": 4, "image_id": 30, "category_id": 7, "bbox": [1, 1, 5, 5], "iscrowd": 1, "area": 25},
        ] + list(annotations_extra),
    }
    os.makedirs(os.path.join(root, "annotations"), exist_ok=True)
    with open(os.path.join(root, "annotations", "instances.json"), "w") as f:
        json.dump(content, f)
    return COCODataSet(dataset_dir=str(root), annotation="annotations/instances.json", image_dir="images")


def test_coco_contiguous_labels_and_crowd_boxes(tmp_path):
    dataset = make_coco(tmp_path)
    assert dataset.label_names() == ["person", "car", "dog"]
    assert dataset.category_ids() == [1, 3, 7]
    train = dataset.load_records(for_training=True)
    # Image 30 has only a crowd box: nothing to learn from, left out of training.
    assert [int(r["im_id"]) for r in train] == [10, 20]
    np.testing.assert_array_equal(train[0]["gt_bbox"], [[2, 3, 12, 23]])
    np.testing.assert_array_equal(train[0]["gt_class"], [1])
    np.testing.assert_array_equal(train[1]["gt_class"], [0])
    evaluation = dataset.load_records(for_training=False)
    assert [int(r["im_id"]) for r in evaluation] == [10, 20, 30]
    np.testing.assert_array_equal(evaluation[0]["gt_bbox"], [[2, 3, 12, 23], [20, 5, 50, 35]])
    np.testing.assert_array_equal(evaluation[0]["gt_class"], [1, 2])
    np.testing.assert_array_equal(evaluation[0]["is_crowd"], [0, 1])
    np.testing.assert_array_equal(evaluation[2]["is_crowd"], [1])


def test_coco_bad_annotations_and_images_are_skipped(tmp_path, caplog):
    dataset = make_coco(tmp_path, annotations_extra=[
        {"id": 5, "image_id": 20, "category_id": 99, "bbox": [1, 1, 5, 5], "iscrowd": 0},
        {"id": 6, "image_id": 20, "category_id": 1, "bbox": [1, 1], "iscrowd": 0},
        {"id": 7, "image_id": 20, "category_id": 1, "bbox": [5, 5, 0, 10], "iscrowd": 0},
    ], images_extra=[{"id": 40, "file_name": "missing.jpg", "width": 64, "height": 48}])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = dataset.load_records(for_training=True)
    assert [int(r["im_id"]) for r in records] == [10, 20]
    np.testing.assert_array_equal(records[1]["gt_bbox"], [[0, 0, 64, 48]])
    warnings = warning_lines(caplog)
    assert any("unknown category_id 99" in w for w in warnings)
    assert any("bbox [1, 1] is not [x, y, w, h]" in w for w in warnings)
    assert any("degenerate box" in w for w in warnings)
    assert any("missing.jpg" in w and "image not found" in w for w in warnings)
    assert warnings[-1].startswith(f"dataset {tmp_path}/annotations/instances.json: 2 usable images of 4; "
                                   f"skipped 2 images, dropped 3 objects")


def test_coco_malformed_json_is_a_data_error(tmp_path):
    os.makedirs(tmp_path / "annotations")
    (tmp_path / "annotations" / "bad.json").write_text('{"images": [')
    dataset = COCODataSet(dataset_dir=str(tmp_path), annotation="annotations/bad.json", image_dir="")
    with pytest.raises(DataError, match="malformed JSON in .*bad.json"):
        dataset.load_records(for_training=True)
    (tmp_path / "annotations" / "list.json").write_text("[1, 2]")
    with pytest.raises(DataError, match="not a COCO instances file"):
        COCODataSet(dataset_dir=str(tmp_path), annotation="annotations/list.json").load_records(True)
    with pytest.raises(DataError, match="annotation file not found"):
        COCODataSet(dataset_dir=str(tmp_path), annotation="annotations/none.json").load_records(True)


def test_json_annotation_in_a_plain_dataset_mapping_reads_coco(tmp_path):
    make_coco(tmp_path)
    feed = YoloTrainFeed(dataset={"dataset_dir": str(tmp_path), "annotation": "annotations/instances.json",
                                  "image_dir": "images"})
    assert isinstance(open_dataset(feed.dataset), COCODataSet)
    assert label_names(feed.dataset) == ["person", "car", "dog"]
    assert dataset_size(feed) == 2
    assert len(load_feed_records(YoloTrainFeed(dataset=feed.dataset, samples=1), for_training=True)) == 1


# ---------------------------------------------------------------- feeds as config modules, -d

def test_feeds_are_registered_with_the_seed_option_names():
    train = REGISTRY.get("YoloTrainFeed").options
    for name, default in (("batch_size", 8), ("num_workers", 8), ("bufsize", 128), ("use_process", True),
                          ("mixup_epoch", 250), ("image_shape", [3, 608, 608]), ("num_max_boxes", 50),
                          ("shuffle", True), ("drop_last", True),
                          ("multi_scale_sizes", list(range(320, 609, 32)))):
        assert train[name].default == default, name
        assert train[name].doc, name
    assert train["dataset"].type is VOCDataSet
    assert REGISTRY.get("YoloEvalFeed").options["batch_size"].default == 8
    assert REGISTRY.get("YoloTestFeed").options["batch_size"].default == 1
    voc = REGISTRY.get("VOCDataSet").options
    assert {name: voc[name].default for name in voc} == {
        "dataset_dir": "dataset/voc", "annotation": "trainval.txt", "image_dir": "",
        "use_default_label": True, "label_list": "label_list.txt"}
    assert set(REGISTRY.get("COCODataSet").options) == {"dataset_dir", "annotation", "image_dir"}


def test_feed_takes_the_seed_dataset_mapping():
    feed = YoloTrainFeed(dataset={"dataset_dir": "dataset/voc", "annotation": "trainval.txt",
                                  "use_default_label": True}, batch_size=8)
    assert feed.dataset == VOCDataSet(dataset_dir="dataset/voc", annotation="trainval.txt")
    # A mapping without annotation gets the feed's own list (eval reads test.txt).
    assert YoloEvalFeed(dataset={"dataset_dir": "d"}).dataset.annotation == "test.txt"
    assert YoloTestFeed(dataset={"use_default_label": True}).dataset.use_default_label is True


@pytest.mark.parametrize("options, message", [
    ({"image_shape": [3, 600, 608]}, "multiples of 32"),
    ({"image_shape": [608, 608]}, r"\[3, H, W\]"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"multi_scale_sizes": [320, 330]}, "330 is not a positive multiple of 32"),
    ({"dataset": {"dataset_dri": "x"}}, "unknown dataset option 'dataset_dri'"),
    ({"expand_max_ratio": 0.5}, r"expand_max_ratio must be a number in \[1, 16\]"),
    ({"multi_scale_sizes": ["abc"]}, "multi_scale_sizes: abc is not a positive multiple of 32"),
    ({"multi_scale_sizes": [float("inf")]}, "multi_scale_sizes: inf is not a positive multiple of 32"),
    ({"multi_scale_sizes": 5}, "multi_scale_sizes must be a list of sizes, got 5"),
    ({"image_shape": [3, "x", 32]},
     r"image_shape must be \[3, H, W\] with positive integers H, W, got \[3, 'x', 32\]"),
    ({"batch_size": "x" * 5000}, r"batch_size must be an integer >= 1, got x{200}\.\.\. \("),
])
def test_feed_rejects_bad_values_with_a_config_error(options, message):
    from slim.errors import ConfigError
    with pytest.raises(ConfigError, match=message):
        YoloTrainFeed(**options)


def test_set_dataset_dir_replaces_every_feed_dataset_dir_without_touching_defaults():
    default_before = REGISTRY.get("YoloTrainFeed").options["dataset"].default.options()
    config = {
        "architecture": "YOLOv3",
        "YoloTrainFeed": {"batch_size": 8,
                          "dataset": {"dataset_dir": "dataset/voc", "annotation": "trainval.txt"}},
        "YoloEvalFeed": {"dataset": VOCDataSet(annotation="test.txt")},
        "YoloTestFeed": {"dataset": REGISTRY.get("YoloTestFeed").options["dataset"].default},
        "MobileNet": {"conv_group_scale": 1},
    }
    changed = set_dataset_dir(config, "/data/voc")
    assert sorted(changed) == ["YoloEvalFeed", "YoloTestFeed", "YoloTrainFeed"]
    assert config["YoloTrainFeed"]["dataset"] == {"dataset_dir": "/data/voc", "annotation": "trainval.txt"}
    assert config["YoloEvalFeed"]["dataset"].dataset_dir == "/data/voc"
    assert config["YoloEvalFeed"]["dataset"].annotation == "test.txt"
    assert config["YoloTestFeed"]["dataset"].dataset_dir == "/data/voc"
    assert REGISTRY.get("YoloTrainFeed").options["dataset"].default.options() == default_before
    assert REGISTRY.get("YoloTestFeed").options["dataset"].default.dataset_dir == "dataset/voc"
    feed = YoloEvalFeed()
    set_dataset_dir({"YoloEvalFeed": feed}, "/elsewhere")
    assert feed.dataset.dataset_dir == "/elsewhere" and YoloEvalFeed().dataset.dataset_dir == "dataset/voc"
    assert set_dataset_dir(config, None) == []


# ---------------------------------------------------------------- VOC list script

def test_voc_list_script_writes_paddledetection_lists(tmp_path):
    for year, sets in (("VOC2007", {"trainval": ["000005", "000007"], "test": ["000001"]}),
                       ("VOC2012", {"trainval": ["2008_000002"]})):
        main_dir = tmp_path / "VOCdevkit" / year / "ImageSets" / "Main"
        main_dir.mkdir(parents=True)
        for name, ids in sets.items():
            (main_dir / f"{name}.txt").write_text("\n".join(ids) + "\n")
    counts = write_voc_lists(str(tmp_path))
    assert counts == {"trainval.txt": 3, "test.txt": 1, "label_list.txt": 20}
    assert (tmp_path / "trainval.txt").read_text().splitlines() == [
        "VOCdevkit/VOC2007/JPEGImages/000005.jpg VOCdevkit/VOC2007/Annotations/000005.xml",
        "VOCdevkit/VOC2007/JPEGImages/000007.jpg VOCdevkit/VOC2007/Annotations/000007.xml",
        "VOCdevkit/VOC2012/JPEGImages/2008_000002.jpg VOCdevkit/VOC2012/Annotations/2008_000002.xml"]
    assert (tmp_path / "test.txt").read_text().splitlines() == [
        "VOCdevkit/VOC2007/JPEGImages/000001.jpg VOCdevkit/VOC2007/Annotations/000001.xml"]
    assert (tmp_path / "label_list.txt").read_text().split() == list(VOC_CLASSES)
    result = subprocess.run([sys.executable, os.path.join(ROOT, "dataset", "voc", "create_list.py"),
                             "--dataset_dir", str(tmp_path / "novoc")], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.startswith("error: ")
    assert "VOCdevkit not found" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("users_file", ["trainval.txt", "test.txt", "label_list.txt"])
def test_voc_list_script_never_replaces_a_users_list(tmp_path, users_file):
    """Its own lists are rewritten on a second run; a user's file of a list's name stops the
    run before anything is written, and stays as it was."""
    main_dir = tmp_path / "VOCdevkit" / "VOC2007" / "ImageSets" / "Main"
    main_dir.mkdir(parents=True)
    (main_dir / "trainval.txt").write_text("000005\n")
    (main_dir / "test.txt").write_text("000001\n")
    assert write_voc_lists(str(tmp_path)) == write_voc_lists(str(tmp_path))  # ours: replaced
    (tmp_path / users_file).write_text("the user's own list\n")
    (main_dir / "trainval.txt").write_text("000006\n")
    with pytest.raises(OutputPlaceError, match=f"'{tmp_path / users_file}' exists and was not written"):
        write_voc_lists(str(tmp_path))
    assert (tmp_path / users_file).read_text() == "the user's own list\n"
    if users_file != "trainval.txt":
        assert "000005" in (tmp_path / "trainval.txt").read_text()  # nothing written at all
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]


def test_coco_json_is_parsed_once_per_dataset_object(tmp_path, monkeypatch):
    make_coco(tmp_path)
    feed = YoloEvalFeed(dataset={"dataset_dir": str(tmp_path), "annotation": "annotations/instances.json",
                                 "image_dir": "images"})
    parses = []
    real_parse = COCODataSet._parse
    monkeypatch.setattr(COCODataSet, "_parse",
                        lambda self, path: parses.append(path) or real_parse(self, path))
    open_dataset(feed.dataset).label_names()
    load_feed_records(feed, for_training=False)
    assert open_dataset(feed.dataset).category_ids() == [1, 3, 7]
    assert len(parses) == 1
