"""What the demo counts and shows: objects found on drawn images (slim.metrics.matching),
the baseline | pruned picture (slim.io.visualize.side_by_side), and demo samples rendered
one at a time (slim.data.demo.render_sample) equal to the dataset's files."""
import os

import cv2
import numpy as np

from slim.metrics.matching import count_found, found_objects


def test_found_objects_by_hand():
    truths = np.array([[0, 0, 10, 10], [20, 20, 40, 40]])
    classes = np.array([1, 2])
    # right class and place; a wrong class on the second; a low score not counted
    rows = [[1, 0.9, 0, 0, 10, 11], [0, 0.95, 20, 20, 40, 40], [2, 0.2, 20, 20, 40, 40]]
    assert found_objects(rows, truths, classes, threshold=0.3) == [True, False]
    assert found_objects(rows, truths, classes, threshold=0.1) == [True, True]
    # IoU below 0.5: not found; one box finds one object only
    assert found_objects([[1, 0.9, 0, 0, 10, 21]], truths, classes, 0.3) == [False, False]
    twins = np.array([[0, 0, 10, 10], [0, 0, 10, 10]])
    assert found_objects([[1, 0.9, 0, 0, 10, 10]], twins, np.array([1, 1]), 0.3) == [True, False]
    assert found_objects([], truths, classes, 0.3) == [False, False]
    assert count_found([[True, False], [True]]) == (2, 3)


def test_side_by_side_puts_the_drawings_in_columns(tmp_path):
    from slim.io.visualize import side_by_side
    rng = np.random.default_rng(0)
    paths = []
    for index, shape in enumerate([(40, 60), (50, 30)]):
        path = str(tmp_path / f"{index}.png")
        cv2.imwrite(path, rng.integers(0, 255, (*shape, 3), dtype=np.uint8))
        paths.append(path)
    picture = side_by_side([[paths[0], paths[1]], [paths[1], paths[0]]], ["a", "b"], gap=6, scale=2)
    cell_w, cell_h, strip = 120, 100, 28
    assert picture.shape == (strip + 2 * (cell_h + 6), 2 * cell_w + 6, 3)
    first = cv2.resize(cv2.imread(paths[0]), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(picture[strip:strip + 80, :120], first)
    second = cv2.resize(cv2.imread(paths[1]), None, fx=2, fy=2, interpolation=cv2.INTER_NEAREST)
    np.testing.assert_array_equal(picture[strip:strip + 100, 126:186], second)
    assert (picture[:strip] < 128).any()  # the titles are drawn


def test_a_rendered_sample_is_the_datasets_file(tmp_path):
    from slim.data.demo import generate_demo_dataset, render_sample
    out = generate_demo_dataset(str(tmp_path / "d"), num_train=1, num_test=3, seed=2)
    jpeg, width, height, annotations = render_sample(2, "test", 2)
    with open(os.path.join(out, "JPEGImages", "test_00002.jpg"), "rb") as handle:
        assert handle.read() == jpeg
    assert cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (height, width, 3)
    assert 1 <= len(annotations) <= 3
