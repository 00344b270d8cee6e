"""The second detector: ResNet34-YOLOv3 of PaddleDetection v0.1.0 (configs/yolov3_r34_voc.yml,
configs/yolov3_r34_demo.yml, slim/model/resnet.py).

- Its parameters carry PaddleDetection's names and shapes (a hand list of a few layers), and
  its backbone has the structure of an independent ResNet34 (`paddle.vision.models.resnet34`:
  the same convs plus PaddleDetection's projection shortcut in res2a, the same parameter
  count plus that conv's).
- `freeze_at` / `freeze_norm` stop the gradients PaddleDetection's options stop.
- Pruned with `auto` to -50% FLOPs (random weights, random batch norm statistics) its outputs
  equal the masked reference within 1e-5 (tests/test_prune_zoo.py's check), with each stage's
  residual-coupled convs (the shortcut and every block's second conv) in one channel group;
  the seed-style regex of configs/yolov3_r34_slim.yaml matches only uncoupled convs.
- compress.py -> eval.py -> infer.py run on it through their real entry points at 64 px,
  from weights overfit on 4 demo images, so that mAP and boxes are real.
"""
import json
import os

import numpy as np
import paddle
import pytest
from fitted_model import (
    CLASSES,
    LEARNING_RATE,
    NUM_IMAGES,
    config_overrides,
    fit_until_map_1,
    ground_truth_from_xml,
)
from session_cache import cached_in_session
from test_prune_zoo import Built, prune_and_compare

import compress as compress_cli
import eval as eval_cli
import infer as infer_cli
from slim.config import create, load_config, load_slim_config
from slim.errors import ConfigError
from slim.model import build_eval_program, build_train_program
from slim.prune import analyze_program, plan_pruning

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_CONFIG = os.path.join(ROOT, "configs", "yolov3_r34_voc.yml")
DEMO_CONFIG = os.path.join(ROOT, "configs", "yolov3_r34_demo.yml")
SEED_STYLE_SLIM = os.path.join(ROOT, "configs", "yolov3_r34_slim.yaml")
DEMO_SLIM = os.path.join(ROOT, "configs", "yolov3_r34_demo_slim.yaml")
SIZE = 64

# PaddleDetection v0.1.0 names and shapes, written out by hand from its resnet.py and
# name_adapter.py for ResNet34 (conv weights [out, in, kh, kw]; batch norm vectors [out]).
PADDLEDETECTION_PARAMS = {
    "conv1_weights": [64, 3, 7, 7],
    "bn_conv1_scale": [64], "bn_conv1_offset": [64], "bn_conv1_mean": [64],
    "bn_conv1_variance": [64],
    "res2a_branch2a_weights": [64, 64, 3, 3],
    "bn2a_branch2a_scale": [64],
    "res2a_branch1_weights": [64, 64, 1, 1],  # is_first: a projection although 64 -> 64
    "bn2a_branch1_variance": [64],
    "res2c_branch2b_weights": [64, 64, 3, 3],
    "res3a_branch2a_weights": [128, 64, 3, 3],
    "res3a_branch1_weights": [128, 64, 1, 1],
    "bn3a_branch1_offset": [128],
    "res3d_branch2b_weights": [128, 128, 3, 3],
    "res4a_branch1_weights": [256, 128, 1, 1],
    "res4f_branch2b_weights": [256, 256, 3, 3],
    "bn4f_branch2b_mean": [256],
    "res5a_branch2a_weights": [512, 256, 3, 3],
    "res5a_branch1_weights": [512, 256, 1, 1],
    "res5c_branch2b_weights": [512, 512, 3, 3],
    "bn5c_branch2b_scale": [512],
    "yolo_block.0.0.0.conv.weights": [512, 512, 1, 1],  # the head reads res5c's 512 channels
    "yolo_block.1.0.0.conv.weights": [256, 512, 1, 1],  # 256 of the transition + 256 of res4f
    "yolo_block.2.0.0.conv.weights": [128, 256, 1, 1],  # 128 of the transition + 128 of res3d
}
# Names PaddleDetection's ResNet34 does not have: no projection in identity blocks, 3/4/6/3
# blocks per stage, no "b1"-style names (only in a stage 4 of more than 10 blocks).
NOT_PADDLEDETECTION_PARAMS = ("res2b_branch1_weights", "res3b_branch1_weights", "res2d_branch2a_weights",
                              "res3e_branch2a_weights", "res4g_branch2a_weights", "res5d_branch2a_weights",
                              "res4b1_branch2a_weights", "bn1_scale")
BACKBONE_CONVS = 1 + 2 * (3 + 4 + 6 + 3) + 4  # stem, two per basic block, four projections


def _voc_model(overrides=()):
    return create("YOLOv3", load_config(VOC_CONFIG, list(overrides)))


def _params(program):
    return {p.name: list(p.shape) for p in program.global_block().all_parameters()}


def _persistable_shapes(program):
    return {v.name: list(v.shape) for v in program.list_vars() if v.persistable}


def test_voc_config_is_paddledetections_r34_and_its_names_match():
    cfg = load_config(VOC_CONFIG)
    assert cfg["YOLOv3"]["backbone"] == "ResNet"
    assert {k: cfg["ResNet"][k] for k in ("norm_type", "freeze_at", "freeze_norm", "norm_decay",
                                          "depth", "feature_maps", "variant")} == \
        {"norm_type": "sync_bn", "freeze_at": 0, "freeze_norm": False, "norm_decay": 0.0,
         "depth": 34, "feature_maps": [3, 4, 5], "variant": "b"}
    assert cfg["ResNet"]["width_scale"] == 1.0  # ours; 1.0 is the published net
    program = build_eval_program(create("YOLOv3", cfg), image_shape=[3, SIZE, SIZE]).program
    shapes = _persistable_shapes(program)
    for name, shape in PADDLEDETECTION_PARAMS.items():
        assert shapes.get(name) == shape, name
    for name in NOT_PADDLEDETECTION_PARAMS:
        assert name not in shapes
    backbone = [name for name in _params(program) if not name.startswith("yolo_")]
    convs = [name for name in backbone if name.endswith("_weights")]
    assert len(convs) == BACKBONE_CONVS == 37
    assert len(backbone) == 5 * BACKBONE_CONVS  # each conv + its batch norm's 4 vectors
    # the ops of PaddleDetection's basic blocks: relu after the stem, after each block's first
    # conv and after each residual add (the head uses leaky relu and adds only its 3 biases);
    # one 3x3 max pooling with stride 2 after the stem
    ops = program.global_block().ops
    counts = {kind: sum(op.type == kind for op in ops) for kind in ("relu", "elementwise_add", "pool2d")}
    assert counts == {"relu": 1 + 16 + 16, "elementwise_add": 16 + 3, "pool2d": 1}
    (pool,) = [op for op in ops if op.type == "pool2d"]
    assert (pool.attr("pooling_type"), pool.attr("ksize"), pool.attr("strides"),
            pool.attr("paddings")) == ("max", [3, 3], [2, 2], [1, 1])
    for conv in convs:  # every conv's batch norm: "res" -> "bn", conv1 -> bn_conv1
        bn = "bn_conv1" if conv == "conv1_weights" else "bn" + conv[len("res"):-len("_weights")]
        assert {bn + s for s in ("_scale", "_offset", "_mean", "_variance")} <= set(backbone), conv


def test_backbone_has_the_structure_and_size_of_an_independent_resnet34():
    """paddle.vision's ResNet34 (torchvision's layout) has the same convs except
    PaddleDetection's extra 1x1 projection in res2a; so the trainable backbone parameters
    (conv weights, batch norm scale and offset) are its count minus its fc plus that conv."""
    program = build_eval_program(_voc_model(), image_shape=[3, SIZE, SIZE]).program
    ours = {name: shape for name, shape in _params(program).items() if not name.startswith("yolo_")}
    ours_trainable = sum(int(np.prod(shape)) for name, shape in ours.items()
                         if not name.endswith(("_mean", "_variance")))
    ours_all = sum(int(np.prod(shape)) for shape in ours.values())
    paddle.disable_static()
    try:
        reference = [(list(p.shape), p.trainable) for name, p in
                     paddle.vision.models.resnet34(num_classes=1000).named_parameters()
                     if not name.startswith("fc.")]  # batch norm statistics included, untrainable
    finally:
        paddle.enable_static()
    projection = 64 * 64  # res2a_branch1, and bn2a_branch1's four vectors of 64
    assert ours_trainable == sum(int(np.prod(s)) for s, trainable in reference if trainable) + \
        projection + 2 * 64
    assert ours_all == sum(int(np.prod(s)) for s, _ in reference) + projection + 4 * 64
    # torchvision's published ResNet34 count, 21,797,672, less its fc (512 x 1000 + 1000)
    assert ours_trainable == 21_797_672 - 513_000 + projection + 2 * 64
    reference_shapes = [shape for shape, _ in reference]
    conv_shapes = sorted(shape for name, shape in ours.items() if name.endswith("_weights"))
    reference_convs = sorted(shape for shape in reference_shapes if len(shape) == 4)
    assert conv_shapes == sorted(reference_convs + [[64, 64, 1, 1]])


def _with_gradients(model):
    """The train program of `model` with its backward ops; (program, names with a gradient)."""
    built = build_train_program(model, image_shape=[3, SIZE, SIZE])
    with paddle.static.program_guard(built.program, built.startup):
        paddle.static.append_backward(built.fetches["loss"])
    block = built.program.global_block()
    names = {name[:-len("@GRAD")] for op in block.ops for name in op.output_arg_names
             if name.endswith("@GRAD")}
    return built.program, names


def test_freeze_at_and_freeze_norm_stop_the_gradients_paddledetection_stops():
    frozen, frozen_gradients = _with_gradients(
        _voc_model(["ResNet.freeze_at=2", "ResNet.freeze_norm=true"]))
    trained, trained_gradients = _with_gradients(_voc_model())  # the VOC config: 0, false
    params = set(_params(trained))
    assert params == set(_params(frozen))
    statistics = {p for p in params if p.endswith(("_mean", "_variance", ".mean", ".var"))}
    assert params & trained_gradients == params - statistics
    backbone_convs = {p for p in params if p.endswith("_weights")}
    # stages 1-2 (conv1, res2*) get no gradient; res3* onwards do
    for name in backbone_convs:
        assert (name in frozen_gradients) == (not name.startswith(("conv1", "res2"))), name
    # freeze_norm: no backbone batch norm scale or offset gets a gradient, and they normalize
    # with the moving statistics in training
    assert not {p for p in frozen_gradients if p.startswith("bn") and p.endswith(("_scale", "_offset"))}
    backbone_norms = [op for op in frozen.global_block().ops if op.type == "batch_norm"
                      and op.input("Scale")[0].startswith("bn")]
    assert len(backbone_norms) == BACKBONE_CONVS
    assert all(op.attr("use_global_stats") for op in backbone_norms)


@pytest.mark.parametrize("override, message", [
    ("ResNet.depth=50", "ResNet.depth: 50 is not built here; valid: 18, 34"),
    ("ResNet.norm_type=affine_channel", "ResNet.norm_type"),
    ("ResNet.variant=d", "ResNet.variant: 'd' is not supported; valid: a, b"),
    ("ResNet.feature_maps=[5,3]", "ResNet.feature_maps: must be increasing"),
])
def test_options_resnet_does_not_build_are_one_config_error(override, message):
    with pytest.raises(ConfigError) as error:
        _voc_model([override])
    assert message in str(error.value)


def test_yolov3_needs_three_feature_maps_at_strides_8_16_32():
    """Like PaddleDetection's head, YOLOv3 reads the deepest three maps: the default
    [2, 3, 4, 5] builds; [2, 3, 4] (strides 4, 8, 16) and [4, 5] are errors."""
    program = build_eval_program(_voc_model(["ResNet.feature_maps=[2,3,4,5]"]),
                                 image_shape=[3, SIZE, SIZE]).program
    assert "res2c_branch2b_weights" in _params(program)
    for maps, message in (("[2,3,4]", "the head needs strides [8, 16, 32]"),
                          ("[4,5]", "gives 2 feature maps; the head needs 3")):
        with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
            build_eval_program(_voc_model([f"ResNet.feature_maps={maps}"]),
                               image_shape=[3, SIZE, SIZE])


def _demo_model():
    return create("YOLOv3", load_config(DEMO_CONFIG, ["use_gpu=false"]))


def _detector_built():
    built = build_eval_program(_demo_model(), image_shape=[3, SIZE, SIZE])
    images = np.random.RandomState(1).rand(2, 3, SIZE, SIZE).astype("float32")
    feed = {"image": images, "im_size": np.array([[SIZE, SIZE]] * 2, dtype="int32")}
    return Built(built.program, built.startup, feed,
                 [built.fetches[f"output_{i}"] for i in range(3)])


def test_auto_pruned_r34_yolov3_equals_the_masked_reference():
    built = _detector_built()
    plan = prune_and_compare(built)
    assert len(plan.groups) == 41
    # one group per stage: its shortcut conv and every block's second conv produce it (their
    # outputs are added), pruned as one channel set
    graph = analyze_program(built.program, fixed_vars=[out.name for out in built.outputs])
    planned = {group.key[0] for group in plan.groups}
    for stage, blocks in zip((2, 3, 4, 5), ("abc", "abcd", "abcdef", "abc")):
        coupled = {f"res{stage}a_branch1_weights"} | {f"res{stage}{b}_branch2b_weights" for b in blocks}
        (group,) = graph.output_groups(f"res{stage}a_branch1_weights")
        assert set(group.filter_params) == coupled
        assert group.key[0] in planned


def test_seed_style_regex_matches_only_uncoupled_convs():
    """configs/yolov3_r34_slim.yaml's regex: 35 convs, each one group of its own, none of
    them a shortcut or a block's second conv; it still reaches -50% FLOPs."""
    pattern = load_slim_config(SEED_STYLE_SLIM).strategies["uniform_pruning_strategy"].pruned_params
    built = build_eval_program(_demo_model(), image_shape=[3, SIZE, SIZE])
    scope = paddle.static.Scope()
    with paddle.static.scope_guard(scope):
        paddle.static.Executor(paddle.CPUPlace()).run(built.startup)
        plan = plan_pruning(built.program, scope, pattern, target_ratio=0.5)
    assert len(plan.matched) == len(plan.groups) == 35
    assert not [p for p in plan.matched if p.endswith(("_branch1_weights", "_branch2b_weights"))]
    graph = analyze_program(built.program)
    for name in plan.matched:
        assert [group.filter_params for group in graph.output_groups(name)] == [[name]]


# The end-to-end run: the shipped demo config at 64 px (anchors scaled from its 192 px ones),
# first overfit on the 4 test images of a tiny demo dataset until it scores VOC mAP 1.0 on
# them (as tests/fitted_model.py does for MobileNet; 60 iterations here), so that scores and
# boxes are real. Then compress.py from those weights: `auto` pruning at epoch 0 of one
# epoch of one iteration at learning rate 0 (batch norm statistics still move), to a light
# FLOPs target, since without fine-tuning a 50% cut leaves an overfit model few boxes (the
# 50% cut itself is checked above, exactly).
E2E_TARGET_RATIO = 0.05
DEMO_ANCHORS = [[39, 31], [34, 39], [49, 36], [40, 48], [58, 49], [48, 62], [62, 75], [77, 63], [86, 88]]
E2E_COMPRESS_OPTIONS = ["max_iters=1", "LearningRate.base_lr=0", "LearningRate.schedulers=[]",
                        "YoloTrainFeed.batch_size=4", "YoloTrainFeed.num_workers=0",
                        f"YoloTrainFeed.multi_scale_sizes=[{SIZE}]",
                        "YoloTrainFeed.dataset.annotation=test.txt"]


def _fit_demo_model(cfg, batch, truths):
    """The demo model of `cfg` trained with Adam on `batch` until its eval program scores
    mAP 1.0; (eval program, scope, iterations, mAP)."""
    paddle.seed(0)
    model = create("YOLOv3", cfg)
    train = build_train_program(model, image_shape=[3, SIZE, SIZE])
    with paddle.static.program_guard(train.program, train.startup), paddle.utils.unique_name.guard():
        paddle.optimizer.Adam(LEARNING_RATE).minimize(train.fetches["loss"])
    evaluation = build_eval_program(model, image_shape=[3, SIZE, SIZE])
    scope, executor = paddle.static.Scope(), paddle.static.Executor(paddle.CPUPlace())
    train.startup.random_seed = 0
    executor.run(train.startup, scope=scope)
    iterations, score = fit_until_map_1(train, evaluation, scope, executor, batch, truths)
    return evaluation, scope, iterations, score


def _e2e_run(root):
    from slim.data.demo import main as make_demo_dataset
    from slim.data.loader import build_eval_loader
    from slim.io.weights import save_weights
    data = os.path.join(root, "data")
    make_demo_dataset(["--out", data, "--train", "1", "--test", str(NUM_IMAGES)])
    anchors = [[max(1, round(v * SIZE / 192)) for v in anchor] for anchor in DEMO_ANCHORS]
    overrides = config_overrides(data, SIZE) + [f"YOLOv3Head.anchors={anchors}".replace(" ", "")]
    cfg = load_config(DEMO_CONFIG, overrides)
    (batch,) = list(build_eval_loader(create("YoloEvalFeed", cfg)))
    truths = ground_truth_from_xml(data, "test.txt")
    evaluation, scope, iterations, score = _fit_demo_model(cfg, batch, truths)
    weights = os.path.join(root, "weights")
    save_weights(scope, evaluation.program, weights)
    with open(DEMO_SLIM) as handle:
        text = handle.read()
    for old, new in (("    epoch: 6\n", "    epoch: 1\n"), ("    eval_epoch: 2\n", "    eval_epoch: 1\n"),
                     ("target_ratio: 0.5\n", f"target_ratio: {E2E_TARGET_RATIO}\n"),
                     ("'./output/demo_r34_checkpoints/'", repr(os.path.join(root, "ckpt")))):
        assert old in text
        text = text.replace(old, new)
    slim_file = os.path.join(root, "slim.yaml")
    with open(slim_file, "w") as handle:
        handle.write(text)
    compress_cli.main(["-s", slim_file, "-c", DEMO_CONFIG, "-o", *overrides, *E2E_COMPRESS_OPTIONS,
                       f"weights={weights}", f"save_dir={os.path.join(root, 'output')}",
                       "--output_eval", os.path.join(root, "out")])
    return {"data": data, "overrides": overrides, "checkpoints": os.path.join(root, "ckpt"),
            "output_eval": os.path.join(root, "out"), "iterations": iterations, "mAP": score}


@pytest.fixture(scope="module")
def e2e(tmp_path_factory):
    return cached_in_session(tmp_path_factory, "r34_compress", _e2e_run)


def test_the_r34_demo_model_fitted_its_images(e2e):
    assert e2e["mAP"] == 1.0 and e2e["iterations"] <= 400, e2e


def test_compress_prunes_the_r34_demo_model_and_exports_it(e2e):
    from slim.io import checkpoint as ck
    from slim.io import export
    assert sorted(os.listdir(e2e["checkpoints"])) == ["0"]
    checkpoint = ck.validate_checkpoint(os.path.join(e2e["checkpoints"], "0"))
    variables = checkpoint.manifest["variables"]
    # width 0.25: stage 3 has 32 channels; its residual-coupled convs keep one channel set
    (record,) = checkpoint.state.pruning_plans
    coupled = {"res3a_branch1_weights"} | {f"res3{b}_branch2b_weights" for b in "abcd"}
    (group,) = [g for g in record["plan"]["groups"] if coupled <= set(g["params"])]
    assert group["channels_before"] == 32 and 0 < len(group["kept"]) < 32
    for name in coupled:
        assert variables[name]["shape"][0] == len(group["kept"]), name
    assert variables["res3b_branch2a_weights"]["shape"][1] == len(group["kept"])  # input follows
    with open(os.path.join(e2e["output_eval"], "compress_summary.json")) as handle:
        summary = json.load(handle)
    assert abs(1 - summary["flops_after"] / summary["flops_before"] - E2E_TARGET_RATIO) <= 0.01
    model_dir = os.path.join(checkpoint.path, "eval_model")
    assert {"__model__", "__model__.infer", "__params__", "infer_cfg.yml",
            "model_manifest.json"} <= set(os.listdir(model_dir))
    assert export.read_infer_config(model_dir)["label_list"] == CLASSES


def test_eval_py_scores_the_pruned_r34_model_as_compress_did(e2e, tmp_path):
    model_dir = os.path.join(e2e["checkpoints"], "0", "eval_model")
    eval_cli.main(["-m", model_dir, "--model_name", "__model__", "--params_name", "__params__",
                   "-c", DEMO_CONFIG, "-o", *e2e["overrides"], "--output_eval", str(tmp_path)])
    with open(tmp_path / "eval_result.json") as handle:
        standalone = json.load(handle)
    with open(os.path.join(e2e["output_eval"], "eval_result.json")) as handle:
        during_training = json.load(handle)
    assert standalone["metric"] == "VOC" and standalone["num_images"] == NUM_IMAGES
    assert list(standalone["per_class_ap"]) == CLASSES
    assert standalone["mAP"] > 0.5 and during_training["mAP"] > 0.5, (standalone, during_training)
    assert standalone["mAP"] == pytest.approx(during_training["mAP"], abs=1e-9)
    assert standalone["per_class_ap"] == pytest.approx(during_training["per_class_ap"], abs=1e-9)


def test_infer_py_draws_the_pruned_r34_models_boxes_on_the_objects(e2e, tmp_path):
    """infer.py on the 4 images: an output image per input, of its size, and boxes of the
    right class on objects (IoU > 0.5) for more than half of the objects."""
    import cv2

    from slim.metrics import box_iou
    model_dir = os.path.join(e2e["checkpoints"], "0", "eval_model")
    with open(os.path.join(e2e["data"], "test.txt")) as handle:
        images = [os.path.join(e2e["data"], line.split()[0]) for line in handle]
    images_dir = tmp_path / "images"
    images_dir.mkdir()
    for image in images:
        os.symlink(image, images_dir / os.path.basename(image))
    infer_cli.main(["--model_path", model_dir, "--infer_dir", str(images_dir),
                    "--output_dir", str(tmp_path / "out"), "--draw_threshold", "0.1"])
    with open(tmp_path / "out" / "detections.json") as handle:
        listed = {os.path.basename(item["image"]): item for item in json.load(handle)["images"]}
    assert sorted(listed) == sorted(os.path.basename(image) for image in images)
    found = objects = 0
    for image, (boxes, classes, difficult) in zip(images, ground_truth_from_xml(e2e["data"], "test.txt")):
        item = listed[os.path.basename(image)]
        assert os.path.isfile(item["output"]) and item["output"].startswith(str(tmp_path / "out"))
        assert cv2.imread(item["output"]).shape == cv2.imread(image).shape
        for box, label in zip(boxes[difficult == 0], classes[difficult == 0]):
            drawn = [d["bbox"] for d in item["detections"] if d["name"] == CLASSES[label]]
            found += bool(drawn) and box_iou(box, np.array(drawn)).max() > 0.5
            objects += 1
    assert objects >= NUM_IMAGES and found > objects / 2, (found, objects)
