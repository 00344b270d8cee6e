"""The embedded demo dataset: deterministic, VOC-format, varied, parseable without warnings."""
import logging
import os
import subprocess
import sys

import numpy as np
import pytest

from slim.data import VOCDataSet
from slim.data.demo import (
    CLASS_HUE_SPREAD,
    CLASSES,
    MIN_OBJECT_SIDE,
    OBJECTS_PER_SCENE,
    class_hue,
    generate_demo_dataset,
    make_scene,
)
from slim.errors import DataError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tree_bytes(root):
    """{relative path: bytes} of every file under root."""
    files = {}
    for directory, _, names in os.walk(root):
        for name in names:
            path = os.path.join(directory, name)
            with open(path, "rb") as f:
                files[os.path.relpath(path, root)] = f.read()
    return files


def test_generator_is_deterministic_and_test_split_independent_of_train_size(tmp_path):
    first = generate_demo_dataset(str(tmp_path / "a"), num_train=6, num_test=3, seed=4)
    second = generate_demo_dataset(str(tmp_path / "b"), num_train=6, num_test=3, seed=4)
    assert tree_bytes(first) == tree_bytes(second)
    bigger = tree_bytes(generate_demo_dataset(str(tmp_path / "c"), num_train=8, num_test=3, seed=4))
    a = tree_bytes(first)
    for name in a:
        if name.startswith(("JPEGImages/test_", "Annotations/test_",
                            "JPEGImages/train_", "Annotations/train_")):
            assert bigger[name] == a[name], name
    other_seed = tree_bytes(generate_demo_dataset(str(tmp_path / "d"), num_train=6, num_test=3, seed=5))
    assert other_seed["JPEGImages/train_00000.jpg"] != a["JPEGImages/train_00000.jpg"]


def test_layout_and_parsing_without_warnings(tmp_path, caplog):
    out = generate_demo_dataset(str(tmp_path / "demo"), num_train=10, num_test=4, seed=0)
    assert (tmp_path / "demo" / "label_list.txt").read_text().split() == list(CLASSES) and len(CLASSES) == 5
    for split, count in (("train", 10), ("test", 4)):
        lines = (tmp_path / "demo" / f"{split}.txt").read_text().splitlines()
        assert len(lines) == count
        assert lines[0] == f"JPEGImages/{split}_00000.jpg Annotations/{split}_00000.xml"
        with caplog.at_level(logging.INFO, logger="slim.data"):
            records = VOCDataSet(dataset_dir=out, annotation=f"{split}.txt",
                                 use_default_label=False).load_records(for_training=True)
        assert len(records) == count
        for record in records:
            assert 192 <= record["h"] <= 256 and 192 <= record["w"] <= 256
            assert 1 <= len(record["gt_bbox"]) <= max(OBJECTS_PER_SCENE) == 3
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_scenes_are_varied_and_objects_large_enough():
    class_counts = np.zeros(len(CLASSES), int)
    difficult = objects = 0
    sides = []
    for index in range(60):
        image, annotations = make_scene(np.random.default_rng([0, 9, index]))
        assert image.dtype == np.uint8 and image.ndim == 3
        for annotation in annotations:
            x1, y1, x2, y2 = annotation["box"]
            assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0]
            class_counts[CLASSES.index(annotation["name"])] += 1
            difficult += annotation["difficult"]
            objects += 1
            sides.append(max(x2 - x1, y2 - y1))
            if not annotation["difficult"]:
                assert max(x2 - x1, y2 - y1) >= MIN_OBJECT_SIDE
    assert (class_counts >= 15).all(), class_counts
    assert 0.02 < difficult / objects < 0.4, (difficult, objects)
    assert min(sides) < 40 and max(sides) > 100
    assert objects / 60 > 1.8


def test_class_hues_are_banded_but_not_decisive():
    """Most objects take their class's hue band; one in five any hue, so colour alone
    cannot name the class."""
    rng = np.random.default_rng(3)
    for class_index in range(len(CLASSES)):
        hues = np.array([class_hue(class_index, rng) for _ in range(2000)])
        distance = np.abs((hues - class_index * 36 + 90) % 180 - 90)
        in_band = distance <= CLASS_HUE_SPREAD
        assert 0.75 < in_band.mean() < 0.9
        # the random fifth covers the whole hue circle, other classes' bands included
        assert len(np.unique(hues[~in_band] // 36)) == len(CLASSES)


def test_existing_demo_is_reused_and_foreign_directory_refused(tmp_path):
    out = generate_demo_dataset(str(tmp_path / "demo"), num_train=2, num_test=1)
    stamp = os.path.getmtime(os.path.join(out, "train.txt"))
    assert generate_demo_dataset(out, num_train=2, num_test=1) == out
    assert os.path.getmtime(os.path.join(out, "train.txt")) == stamp
    generate_demo_dataset(out, num_train=3, num_test=1)
    assert len(open(os.path.join(out, "train.txt")).read().splitlines()) == 3
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(DataError, match="not a demo dataset"):
        generate_demo_dataset(str(foreign), num_train=2, num_test=1)
    assert (foreign / "notes.txt").read_text() == "keep me"


def test_command_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "slim.data.demo", "--out", str(tmp_path / "demo"),
                             "--train", "3", "--test", "2", "--seed", "1"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    assert "3 train, 2 test images" in result.stdout
    assert len((tmp_path / "demo" / "train.txt").read_text().splitlines()) == 3
    bad = subprocess.run([sys.executable, "-m", "slim.data.demo", "--out", str(tmp_path / "demo"),
                          "--train", "0"], capture_output=True, text=True, cwd=ROOT)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --train and --test must be at least 1")
