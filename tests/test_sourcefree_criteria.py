"""Data-aware criteria and calibration images (slim.sourcefree): on a tiny exported model
with a planted dead channel (large filters, always 0 after relu) and a planted vital one
(smallest filters, large bias its consumer reads), `activation` and `taylor` keep the vital
channel and remove the dead one, where l1_norm does the opposite."""
import os

import numpy as np
import paddle
import pytest
from sourcefree_models import DEAD, VITAL, planted_model, write_images

from slim.io.inference_model import find_model_files, load_inference_model
from slim.prune import PruneError, analyze_program, plan_pruning
from slim.sourcefree import CalibrationSet, Preprocess, activation_statistics
from slim.sourcefree.images import ImagesError, read_infer_cfg

CPU = paddle.CPUPlace()


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("planted")
    info = planted_model(str(root / "model"))
    info["images"] = write_images(str(root / "images"), 12, broken=2)
    return info


def load(model_dir):
    executor, scope = paddle.static.Executor(CPU), paddle.static.Scope()
    model = load_inference_model(find_model_files(model_dir), executor, scope)
    return model, scope, executor


def conv1_plan(model, scope, criterion, statistics=None):
    graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
    plan = plan_pruning(model.program, scope, "conv1_w", ratio=0.5, criterion=criterion,
                        graph=graph, statistics=statistics)
    return plan.groups[0]


def test_data_aware_criteria_rank_planted_channels_right(planted):
    model, scope, executor = load(planted["dir"])
    preprocess = Preprocess.parse(["size=8,8", "mean=0", "std=1"])
    messages = []
    images = CalibrationSet.from_source(planted["images"], preprocess, held_out=2,
                                        log=messages.append)
    assert len(images.skipped) == 2 and len(images.calibration) == 10
    assert messages[-1].startswith("warning: 2 of 14 images skipped")
    graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
    stats = activation_statistics(model, scope, executor, images.calibration, graph)
    l1 = conv1_plan(model, scope, "l1_norm")
    assert DEAD in l1.kept and VITAL not in l1.kept  # the planted trap works
    for criterion in ("activation", "taylor"):
        group = conv1_plan(model, scope, criterion, stats)
        assert VITAL in group.kept and DEAD not in group.kept, (criterion, group.kept)
    group = next(g for g in graph.groups if g.key[0] == "conv1_w")
    activation = stats.scores("activation", group)
    assert activation[DEAD] == 0.0 and activation[VITAL] > 1.0
    taylor = stats.scores("taylor", group)
    assert taylor[DEAD] == 0.0 and taylor[VITAL] == taylor.max()


def test_activation_is_the_mean_absolute_input_of_the_consumer(planted):
    """The statistic equals numpy's mean |x| of conv2's input (relu(conv1)) channel by channel."""
    model, scope, executor = load(planted["dir"])
    images = CalibrationSet.from_source(planted["images"], Preprocess.parse(
        ["size=8,8", "mean=0", "std=1"]), held_out=0, log=lambda m: None)
    graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
    stats = activation_statistics(model, scope, executor, images.calibration, graph,
                                  kinds=("activation",))
    group = next(g for g in graph.groups if g.key[0] == "conv1_w")
    from slim.sourcefree.statistics import consumer_segments
    (segment,) = consumer_segments(graph, group)
    batch = np.stack([s.image for s in images.calibration])
    with paddle.static.scope_guard(scope):
        from slim.sourcefree.programs import forward_clone
        (hidden,) = executor.run(forward_clone(model.program), feed={"image": batch},
                                 fetch_list=[segment.var])
    expected = np.abs(hidden.astype(np.float64)).mean(axis=(0, 2, 3))
    np.testing.assert_allclose(stats.scores("activation", group), expected, rtol=1e-6)


def test_data_aware_criterion_without_statistics_says_how(planted):
    model, scope, _ = load(planted["dir"])
    with pytest.raises(PruneError, match="criterion activation is data-aware.*--images"):
        conv1_plan(model, scope, "activation")


def test_preprocess_options_and_infer_cfg(tmp_path):
    preprocess = Preprocess.parse(["size=48x320", "fit=pad", "mean=0.5", "std=0.5",
                                   "order=bgr", "scale=1/255"])
    image = np.full((20, 40, 3), 255, np.uint8)
    image[:, :, 0] = 0  # blue 0 (BGR)
    chw, original, _ = preprocess.apply(image)
    assert chw.shape == (3, 48, 320) and original == (20, 40)
    assert np.allclose(chw[0, :, :96], -1.0) and np.allclose(chw[1, :, :96], 1.0)
    assert np.allclose(chw[:, :, 96:], 0.0)  # padded right, after normalizing
    (tmp_path / "infer_cfg.yml").write_text(
        "Preprocess:\n- type: Resize\n  target_size: [64, 96]\n  keep_ratio: false\n"
        "- type: NormalizeImage\n  mean: [0.1, 0.2, 0.3]\n  std: [1, 1, 1]\n  is_scale: true\n")
    found = read_infer_cfg(str(tmp_path))
    assert found.size == (64, 96) and found.mean == (0.1, 0.2, 0.3) and found.order == "rgb"
    combined = Preprocess.for_model(str(tmp_path), ["order=bgr"])
    assert combined.size == (64, 96) and combined.order == "bgr"
    for bad, message in (("size=0,3", "positive integers"), ("colour=1", "KEY one of"),
                         ("std=0", "must not be 0"), ("fit=crop", "stretch, pad")):
        with pytest.raises(ImagesError, match=message):
            Preprocess.parse([bad])


def test_images_list_file_and_held_out_split(tmp_path):
    directory = write_images(str(tmp_path / "imgs"), 5)
    listing = tmp_path / "list.txt"
    listing.write_text("# calibration\n" + "\n".join(
        os.path.join("imgs", name) for name in sorted(os.listdir(directory))) + "\nmissing.png\n")
    messages = []
    images = CalibrationSet.from_source(str(listing), Preprocess.parse(["size=8,8"]), held_out=2,
                                        log=messages.append)
    assert len(images.held_out) == 2 and len(images.calibration) == 3
    assert len(images.skipped) == 1 and "missing.png" in images.skipped[0][0]
    held = {s.path for s in images.held_out}
    assert not held & {s.path for s in images.calibration}
    with pytest.raises(ImagesError, match="need more than the 5 held out"):
        CalibrationSet.from_source(directory, Preprocess(size=(8, 8)), held_out=5,
                                   log=lambda m: None)
    with pytest.raises(ImagesError, match="does not exist"):
        CalibrationSet.from_source(str(tmp_path / "nope"), Preprocess(), log=lambda m: None)
