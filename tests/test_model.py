"""MobileNetV1-YOLOv3 static programs: names, shapes, training, eval output layout."""
import re

import numpy as np
import paddle
import pytest
from seed_facts import SEED_PARAMS, SEED_REGEX

from slim.errors import ConfigError
from slim.model import (
    MobileNet,
    MultiClassNMS,
    YOLOv3,
    YOLOv3Head,
    build_eval_program,
    build_train_program,
    split_detections,
)

BACKBONE_BLOCKS = ["conv2_1", "conv2_2", "conv3_1", "conv3_2", "conv4_1", "conv4_2", "conv5_1",
                   "conv5_2", "conv5_3", "conv5_4", "conv5_5", "conv5_6", "conv6"]
HEAD_CONVS = [f"yolo_block.{i}.{name}" for i in range(3)
              for name in ("0.0", "0.1", "1.0", "1.1", "2", "tip")] + \
             [f"yolo_transition.{i}" for i in range(2)]


def _voc_model(scale=1.0, num_classes=20):
    return YOLOv3(MobileNet(norm_type="sync_bn", conv_group_scale=scale),
                  YOLOv3Head(num_classes=num_classes))


def _tiny_model():
    return YOLOv3(MobileNet(conv_group_scale=0.25), YOLOv3Head(num_classes=3))


def _conv_weights(program):
    block = program.global_block()
    return {op.input("Filter")[0]: list(block.var(op.input("Filter")[0]).shape)
            for op in block.ops if op.type in ("conv2d", "depthwise_conv2d")}


@pytest.fixture(scope="module")
def voc_programs():
    model = _voc_model()
    return build_train_program(model, image_shape=[3, 608, 608]), \
        build_eval_program(model, image_shape=[3, 608, 608])


def test_parameter_names_are_the_published_ones(voc_programs):
    train, _ = voc_programs
    params = {p.name for p in train.program.global_block().all_parameters()}
    convs = ["conv1"] + [f"{b}_{part}" for b in BACKBONE_BLOCKS for part in ("dw", "sep")]
    expected = set()
    for conv in convs:
        expected |= {conv + "_weights"} | {f"{conv}_bn_{s}" for s in
                                           ("scale", "offset", "mean", "variance")}
    for conv in HEAD_CONVS:
        expected |= {conv + ".conv.weights"} | {f"{conv}.bn.{s}" for s in
                                                ("scale", "offset", "mean", "var")}
    expected |= {f"yolo_output.{i}.conv.{s}" for i in range(3) for s in ("weights", "bias")}
    assert params == expected
    assert len(_conv_weights(train.program)) == 27 + 20 + 3


def test_seed_regex_matches_exactly_its_24_conv_weights(voc_programs):
    train, _ = voc_programs
    names = [p.name for p in train.program.global_block().all_parameters()]
    matched = [name for name in names if re.fullmatch(SEED_REGEX, name)]
    assert sorted(matched) == sorted(SEED_PARAMS)
    assert len(matched) == 24
    assert set(matched) <= set(_conv_weights(train.program))


def test_conv_shapes_at_width_1(voc_programs):
    shapes = _conv_weights(voc_programs[0].program)
    assert shapes["conv1_weights"] == [32, 3, 3, 3]
    assert shapes["conv2_1_dw_weights"] == [32, 1, 3, 3]
    assert shapes["conv2_1_sep_weights"] == [64, 32, 1, 1]
    assert shapes["conv6_sep_weights"] == [1024, 1024, 1, 1]
    assert shapes["yolo_block.0.0.0.conv.weights"] == [512, 1024, 1, 1]
    assert shapes["yolo_block.0.tip.conv.weights"] == [1024, 512, 3, 3]
    # block 1 input: route of transition 0 (256) concatenated with conv4_2 (512)
    assert shapes["yolo_transition.0.conv.weights"] == [256, 512, 1, 1]
    assert shapes["yolo_block.1.0.0.conv.weights"] == [256, 256 + 512, 1, 1]
    assert shapes["yolo_block.2.0.0.conv.weights"] == [128, 128 + 256, 1, 1]
    # 3 anchors x (5 + 20 classes)
    assert shapes["yolo_output.0.conv.weights"] == [75, 1024, 1, 1]
    assert shapes["yolo_output.2.conv.weights"] == [75, 256, 1, 1]


def test_width_scale_rounds_channels_like_paddledetection():
    model = YOLOv3(MobileNet(conv_group_scale=0.3), YOLOv3Head(num_classes=3))
    shapes = _conv_weights(build_eval_program(model, image_shape=[3, 64, 64]).program)
    assert shapes["conv1_weights"] == [int(32 * 0.3), 3, 3, 3] == [9, 3, 3, 3]
    assert shapes["conv2_1_dw_weights"] == [9, 1, 3, 3]
    assert shapes["conv2_1_sep_weights"] == [int(64 * 0.3), 9, 1, 1] == [19, 9, 1, 1]
    assert shapes["conv6_sep_weights"] == [307, 307, 1, 1]
    # the head is not scaled; its inputs follow the backbone
    assert shapes["yolo_block.0.0.0.conv.weights"] == [512, 307, 1, 1]
    assert shapes["yolo_block.1.0.0.conv.weights"] == [256, 256 + int(512 * 0.3), 1, 1]


def test_head_width_scale_scales_block_and_transition_channels_keeping_names():
    model = YOLOv3(MobileNet(conv_group_scale=0.25), YOLOv3Head(num_classes=3, width_scale=0.25))
    shapes = _conv_weights(build_eval_program(model, image_shape=[3, 64, 64]).program)
    backbone_out = int(1024 * 0.25)
    assert shapes["yolo_block.0.0.0.conv.weights"] == [128, backbone_out, 1, 1]
    assert shapes["yolo_block.0.0.1.conv.weights"] == [256, 128, 3, 3]
    assert shapes["yolo_block.0.tip.conv.weights"] == [256, 128, 3, 3]
    assert shapes["yolo_transition.0.conv.weights"] == [64, 128, 1, 1]
    assert shapes["yolo_block.1.0.0.conv.weights"] == [64, 64 + int(512 * 0.25), 1, 1]
    assert shapes["yolo_transition.1.conv.weights"] == [32, 64, 1, 1]
    assert shapes["yolo_block.2.2.conv.weights"] == [32, 64, 1, 1]
    assert shapes["yolo_output.2.conv.weights"] == [3 * (5 + 3), 64, 1, 1]
    with pytest.raises(ConfigError, match="width_scale"):
        YOLOv3Head(width_scale=0)


def test_objectness_prior_sets_the_initial_objectness_of_every_prediction():
    head = YOLOv3Head(num_classes=3, width_scale=0.25, objectness_prior=0.01)
    evaluation = build_eval_program(YOLOv3(MobileNet(conv_group_scale=0.25), head),
                                    image_shape=[3, 64, 64])
    scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    executor.run(evaluation.startup, scope=scope)
    image = np.random.default_rng(0).normal(size=(2, 3, 64, 64)).astype("float32")
    outputs = executor.run(evaluation.program, scope=scope,
                           feed={"image": image, "im_size": np.full((2, 2), 64, "int32")},
                           fetch_list=[evaluation.fetches[f"output_{i}"] for i in range(3)])
    for i, output in enumerate(outputs):
        bias = np.array(scope.find_var(f"yolo_output.{i}.conv.bias").get_tensor())
        per_anchor = bias.reshape(3, 5 + 3)
        np.testing.assert_allclose(per_anchor[:, 4], np.log(0.01 / 0.99), rtol=1e-6)
        assert not per_anchor[:, :4].any() and not per_anchor[:, 5:].any()
        # the bias dominates the initial logits: objectness starts near the prior
        objectness = 1 / (1 + np.exp(-output.reshape(2, 3, 5 + 3, *output.shape[2:])[:, :, 4]))
        assert 0.001 < np.median(objectness) < 0.05
    assert YOLOv3Head().output_initial_bias(0) is None
    for bad in (0, 1, 1.5):
        with pytest.raises(ConfigError, match="objectness_prior"):
            YOLOv3Head(objectness_prior=bad)


def test_train_and_eval_programs_share_parameters(voc_programs):
    train, evaluation = voc_programs
    train_params = {p.name: list(p.shape) for p in train.program.global_block().all_parameters()}
    eval_params = {p.name: list(p.shape) for p in evaluation.program.global_block().all_parameters()}
    assert train_params == eval_params
    train_bn = [op.attr("is_test") for op in train.program.global_block().ops
                if op.type == "batch_norm"]
    eval_bn = [op.attr("is_test") for op in evaluation.program.global_block().ops
               if op.type == "batch_norm"]
    assert len(train_bn) == len(eval_bn) == 27 + 20 and not any(train_bn) and all(eval_bn)


def test_feeds_and_fetches(voc_programs):
    train, evaluation = voc_programs
    assert train.feed_names == ["image", "gt_box", "gt_label", "gt_score"]
    assert list(train.feeds["image"].shape) == [-1, 3, 608, 608]
    assert list(train.feeds["gt_box"].shape) == [-1, 50, 4]
    assert list(train.feeds["gt_label"].shape) == [-1, 50]
    assert train.feeds["gt_label"].dtype == paddle.int32
    assert set(train.fetches) == {"loss", "loss_0", "loss_1", "loss_2",
                                  "output_0", "output_1", "output_2"}
    assert evaluation.feed_names == ["image", "im_size"]
    assert evaluation.feeds["im_size"].dtype == paddle.int32
    assert [list(evaluation.fetches[f"output_{i}"].shape) for i in range(3)] == [
        [-1, 75, 19, 19], [-1, 75, 38, 38], [-1, 75, 76, 76]]
    assert sum(op.type == "multiclass_nms3" for op in evaluation.program.global_block().ops) == 1
    assert sum(op.type == "yolov3_loss" for op in train.program.global_block().ops) == 3


def _train_batch(batch=2, size=64):
    rng = np.random.RandomState(1)
    gt_box = np.zeros((batch, 50, 4), "float32")
    gt_label = np.zeros((batch, 50), "int32")
    gt_score = np.zeros((batch, 50), "float32")
    gt_box[:, :2] = [[0.5, 0.5, 0.4, 0.3], [0.3, 0.6, 0.2, 0.5]]
    gt_label[:, :2] = [0, 2]
    gt_score[:, :2] = 1.0
    return {"image": rng.rand(batch, 3, size, size).astype("float32"),
            "gt_box": gt_box, "gt_label": gt_label, "gt_score": gt_score}


def test_a_few_training_steps_lower_the_loss():
    train = build_train_program(_tiny_model(), image_shape=[3, None, None])
    with paddle.static.program_guard(train.program, train.startup):
        paddle.optimizer.Momentum(0.001, 0.9).minimize(train.fetches["loss"])
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    batch = _train_batch()
    fetch = [train.fetches[name] for name in ("loss", "loss_0", "loss_1", "loss_2")]
    losses = []
    with paddle.static.scope_guard(scope):
        exe.run(train.startup)
        for _ in range(5):
            total, *parts = exe.run(train.program, feed=batch, fetch_list=fetch)
            assert total.item() == pytest.approx(sum(part.item() for part in parts), rel=1e-5)
            losses.append(total.item())
        # multi-scale: the same program takes another input size
        bigger = _train_batch(size=96)
        output_0, = exe.run(train.program.clone(for_test=True), feed=bigger,
                            fetch_list=[train.fetches["output_0"]])
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.5 * losses[0], losses
    assert output_0.shape == (2, 3 * (5 + 3), 3, 3)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _decode_best(outputs, head, im_size, input_size):
    """Independent numpy decode of yolo_box: the best (score, label, box) of one image."""
    best = (-1.0, None, None)
    img_h, img_w = im_size
    for i, output in enumerate(outputs):
        anchors = np.array(head.mask_anchors(i), "float64").reshape(-1, 2)
        grid_h, grid_w = output.shape[-2:]
        pred = output.astype("float64").reshape(len(anchors), 5 + head.num_classes, grid_h, grid_w)
        for a, (anchor_w, anchor_h) in enumerate(anchors):
            objectness = _sigmoid(pred[a, 4])
            scores = objectness[None] * _sigmoid(pred[a, 5:])
            scores[:, objectness < head.nms.score_threshold] = 0
            label, gy, gx = np.unravel_index(np.argmax(scores), scores.shape)
            score = scores[label, gy, gx]
            if score > best[0]:
                cx = (gx + _sigmoid(pred[a, 0, gy, gx])) / grid_w * img_w
                cy = (gy + _sigmoid(pred[a, 1, gy, gx])) / grid_h * img_h
                w = np.exp(pred[a, 2, gy, gx]) * anchor_w / input_size * img_w
                h = np.exp(pred[a, 3, gy, gx]) * anchor_h / input_size * img_h
                box = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0,
                              [img_w - 1, img_h - 1, img_w - 1, img_h - 1])
                best = (score, label, box)
    return best


def test_eval_program_returns_nms_boxes_in_the_documented_layout():
    model = _tiny_model()
    train = build_train_program(model, image_shape=[3, 64, 64])
    evaluation = build_eval_program(model, image_shape=[3, 64, 64])
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    images = np.random.RandomState(2).rand(2, 3, 64, 64).astype("float32")
    im_size = np.array([[480, 640], [300, 200]], "int32")
    names = ["bbox", "bbox_num", "output_0", "output_1", "output_2"]
    with paddle.static.scope_guard(scope):
        exe.run(train.startup)  # the train startup initializes the eval program's params
        bbox, bbox_num, *outputs = exe.run(
            evaluation.program, feed={"image": images, "im_size": im_size},
            fetch_list=[evaluation.fetches[name] for name in names])
    assert bbox.ndim == 2 and bbox.shape[1] == 6 and bbox.dtype == np.float32
    assert bbox_num.shape == (2,) and bbox_num.sum() == len(bbox)
    assert (bbox_num > 0).all() and (bbox_num <= model.yolo_head.nms.keep_top_k).all()
    per_image = split_detections(bbox, bbox_num)
    for n, detections in enumerate(per_image):
        height, width = im_size[n]
        labels, scores, boxes = detections[:, 0], detections[:, 1], detections[:, 2:]
        assert set(np.unique(labels)) <= {0.0, 1.0, 2.0}
        assert ((scores >= 0.01) & (scores <= 1)).all()
        assert (np.diff(labels) >= 0).all(), "detections are grouped by class, in class order"
        for label in np.unique(labels):
            assert (np.diff(scores[labels == label]) <= 0).all(), "by score within a class"
        assert (boxes[:, 0] <= boxes[:, 2]).all() and (boxes[:, 1] <= boxes[:, 3]).all()
        assert (boxes >= 0).all()
        assert (boxes[:, [0, 2]] <= width - 1).all() and (boxes[:, [1, 3]] <= height - 1).all()
        # the top detection is the best decoded box (NMS always keeps it), in pixels of
        # this image's original size
        score, label, box = _decode_best([o[n] for o in outputs], model.yolo_head,
                                         (height, width), 64)
        top = detections[np.argmax(scores)]
        assert top[0] == label
        assert top[1] == pytest.approx(score, rel=1e-4)
        np.testing.assert_allclose(top[2:], box, rtol=1e-4, atol=1e-3)


def test_split_detections():
    rows = np.arange(18, dtype="float32").reshape(3, 6)
    parts = split_detections(rows, np.array([2, 0, 1], "int32"))
    assert [len(part) for part in parts] == [2, 0, 1]
    np.testing.assert_array_equal(parts[2], rows[2:])
    assert [len(part) for part in split_detections(np.zeros((0, 6)), [0, 0])] == [0, 0]
    with pytest.raises(ValueError, match="bbox_num sums to 2"):
        split_detections(rows, [1, 1])


def test_sync_bn_builds_the_same_program_as_bn():
    def op_types(norm_type):
        model = YOLOv3(MobileNet(norm_type=norm_type, conv_group_scale=0.25),
                       YOLOv3Head(num_classes=3))
        return [op.type for op in build_eval_program(model, [3, 64, 64]).program.global_block().ops]
    assert op_types("sync_bn") == op_types("bn")


def test_config_errors():
    with pytest.raises(ConfigError, match=r"MobileNet.norm_type: unsupported value 'gn'.*"
                                          r"valid: bn, sync_bn"):
        MobileNet(norm_type="gn")
    with pytest.raises(ConfigError, match=r"did you mean 'sync_bn'"):
        MobileNet(norm_type="sync-bn")
    with pytest.raises(ConfigError, match="with_extra_blocks"):
        MobileNet(with_extra_blocks=True)
    with pytest.raises(ConfigError, match="conv_group_scale"):
        MobileNet(conv_group_scale=0.01)
    with pytest.raises(ConfigError, match=r"anchor_masks: need 3 masks"):
        YOLOv3Head(anchor_masks=[[0, 1, 2]])
    with pytest.raises(ConfigError, match=r"anchor_masks: \[7, 9\]"):
        YOLOv3Head(anchor_masks=[[6, 7, 8], [3, 4, 5], [7, 9]])
    with pytest.raises(ConfigError, match=r"nms: unknown key 'nms_treshold' \(did you mean "
                                          r"'nms_threshold'\?\)"):
        YOLOv3Head(nms={"nms_treshold": 0.5})
    with pytest.raises(TypeError, match="build the model with slim.config.create"):
        build_eval_program(YOLOv3())


def test_nms_accepts_a_plain_mapping():
    head = YOLOv3Head(num_classes=20, nms={"keep_top_k": 10, "score_threshold": 0.05})
    assert head.nms == MultiClassNMS(keep_top_k=10, score_threshold=0.05)
    assert head.nms.nms_threshold == 0.45 and head.nms.background_label == -1
    evaluation = build_eval_program(YOLOv3(MobileNet(conv_group_scale=0.25), head), [3, 64, 64])
    nms_op = [op for op in evaluation.program.global_block().ops if op.type == "multiclass_nms3"][0]
    assert nms_op.attr("keep_top_k") == 10
    assert nms_op.attr("score_threshold") == pytest.approx(0.05)
    assert nms_op.attr("nms_threshold") == pytest.approx(0.45)
    assert nms_op.attr("normalized") is False


LEARNING_RATE = 1e-3  # the tiny model's first gradients are up to ~1e4


def _one_momentum_step(conv_decay, global_decay, initial=None):
    """{param: (initial value, value after one Momentum step)} of a tiny model whose backbone
    has `conv_decay`, trained with the optimizer's global L2 factor `global_decay`, starting
    from `initial` ({param: value}; default: the startup program's)."""
    model = YOLOv3(MobileNet(conv_group_scale=0.25, conv_decay=conv_decay),
                   YOLOv3Head(num_classes=3))
    train = build_train_program(model, image_shape=[3, 64, 64])
    with paddle.static.program_guard(train.program, train.startup):
        paddle.optimizer.Momentum(LEARNING_RATE, 0.9, weight_decay=paddle.regularizer.L2Decay(global_decay)) \
            .minimize(train.fetches["loss"])
    exe, scope = paddle.static.Executor(paddle.CPUPlace()), paddle.static.Scope()
    names = [p.name for p in train.program.global_block().all_parameters()]
    with paddle.static.scope_guard(scope):
        exe.run(train.startup)
        for name, value in (initial or {}).items():
            scope.find_var(name).get_tensor().set(value, paddle.CPUPlace())
        before = {name: np.array(scope.find_var(name).get_tensor()) for name in names}
        exe.run(train.program, feed=_train_batch(size=64), fetch_list=[train.fetches["loss"]])
        after = {name: np.array(scope.find_var(name).get_tensor()) for name in names}
    return {name: (before[name], after[name]) for name in names}


def test_conv_decay_sets_the_l2_of_the_backbone_conv_weights_only():
    backbone = ["conv1_weights"] + [f"{b}_{part}_weights" for b in BACKBONE_BLOCKS
                                    for part in ("dw", "sep")]
    global_decay = 10.0  # large, so that its term stands far above float32 rounding of the step
    no_l2 = _one_momentum_step(conv_decay=None, global_decay=0.0)
    initial = {name: before for name, (before, _) in no_l2.items()}
    today = _one_momentum_step(conv_decay=None, global_decay=global_decay, initial=initial)
    zero = _one_momentum_step(conv_decay=0.0, global_decay=global_decay, initial=initial)
    assert len(backbone) == 27
    for name in backbone:
        initial = no_l2[name][0]
        np.testing.assert_array_equal(today[name][0], initial)
        np.testing.assert_array_equal(zero[name][0], initial)
        # conv_decay 0: the backbone conv weights move as without any L2
        np.testing.assert_allclose(zero[name][1], no_l2[name][1], rtol=0, atol=1e-7)
        # null: the global L2 applies (first Momentum step: w - lr * (grad + decay * w))
        np.testing.assert_allclose(today[name][1] - no_l2[name][1],
                                   -LEARNING_RATE * global_decay * initial, rtol=1e-3, atol=1e-5)
    head_weight = "yolo_block.0.0.0.conv.weights"
    np.testing.assert_allclose(zero[head_weight][1], today[head_weight][1], rtol=0, atol=1e-7)
    assert not np.allclose(zero[head_weight][1], no_l2[head_weight][1], rtol=0, atol=1e-7)


def test_conv_decay_must_be_null_or_a_non_negative_number():
    assert MobileNet().conv_decay is None
    assert MobileNet(conv_decay=0).conv_decay == 0.0
    for bad in (-1e-4, float("nan"), float("inf")):
        with pytest.raises(ConfigError, match=r"MobileNet.conv_decay: must be null or a number >= 0"):
            MobileNet(conv_decay=bad)


def test_conv_decay_is_documented_in_config_help():
    from slim.config.cli import help_module
    text = help_module("MobileNet")
    row = next(line for line in text.splitlines() if line.strip().startswith("conv_decay"))
    assert "null" in row and "L2" in row, row
    assert "conv_decay: null" in text  # the configuration template's default
