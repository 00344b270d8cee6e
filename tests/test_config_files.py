"""The shipped configs (FACTS.md sections 2-3) with the real model, data and optimizer modules,
and the seed's command lines."""
import os
import re
import subprocess
import sys

import pytest
from seed_facts import SEED_PARAMS as SEED_PRUNED_PARAMS

import slim.data  # noqa: F401  (registers the feeds and datasets)
import slim.model  # noqa: F401  (registers YOLOv3, MobileNet, YOLOv3Head)
from slim.config import create, load_config, load_slim_config
from slim.data.demo import CLASSES as DEMO_CLASSES
from slim.engine.optimizer import LinearWarmup, PiecewiseDecay

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_CONFIG = os.path.join("configs", "yolov3_mobilenet_v1_voc.yml")
DEMO_CONFIG = os.path.join("configs", "yolov3_mobilenet_v1_demo.yml")
SEED_SCHEDULERS = ("LearningRate.schedulers=[!PiecewiseDecay {gamma: 0.1, milestones: [110000, "
                   "124000]}, !LinearWarmup {start_factor: 0., steps: 2000}]")


def run(*args):
    """Run a command from the repository root; (exit code, stdout, stderr)."""
    process = subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True,
                             timeout=300)
    return process.returncode, process.stdout, process.stderr


def assert_one_line_error(stderr):
    """A user error: exactly one `error:` line, the last one, and no traceback (Paddle may print
    its own import warnings before it)."""
    lines = stderr.splitlines()
    assert "Traceback" not in stderr
    assert [line for line in lines if line.startswith("error:")] == lines[-1:]


def test_voc_config_has_the_seed_recipe():
    cfg = load_config(os.path.join(ROOT, VOC_CONFIG))
    assert {key: cfg[key] for key in (
        "architecture", "train_feed", "eval_feed", "test_feed", "use_gpu", "max_iters",
        "log_smooth_window", "save_dir", "snapshot_iter", "metric", "map_type", "weights",
        "num_classes")} == {
        "architecture": "YOLOv3", "train_feed": "YoloTrainFeed", "eval_feed": "YoloEvalFeed",
        "test_feed": "YoloTestFeed", "use_gpu": True, "max_iters": 70000, "log_smooth_window": 20,
        "save_dir": "output", "snapshot_iter": 2000, "metric": "VOC", "map_type": "11point",
        "weights": "output/yolov3_mobilenet_v1_voc/model_final", "num_classes": 20}
    assert cfg.pretrain_weights.endswith("MobileNetV1_pretrained.tar")
    assert cfg["YOLOv3"] == {"backbone": "MobileNet", "yolo_head": "YOLOv3Head"}
    mobilenet = cfg["MobileNet"]
    assert (mobilenet["norm_type"], mobilenet["norm_decay"], mobilenet["conv_group_scale"],
            mobilenet["with_extra_blocks"]) == ("sync_bn", 0.0, 1.0, False)
    head = cfg["YOLOv3Head"]
    assert head["anchor_masks"] == [[6, 7, 8], [3, 4, 5], [0, 1, 2]]
    assert head["anchors"] == [[10, 13], [16, 30], [33, 23], [30, 61], [62, 45], [59, 119],
                               [116, 90], [156, 198], [373, 326]]
    assert (head["norm_decay"], head["ignore_thresh"], head["label_smooth"]) == (0.0, 0.7, False)
    assert dict(head["nms"]) == {"background_label": -1, "keep_top_k": 100, "nms_threshold": 0.45,
                                 "nms_top_k": 1000, "normalized": False, "score_threshold": 0.01}
    assert cfg["LearningRate"]["base_lr"] == 0.001
    decay, warmup = cfg["LearningRate"]["schedulers"]
    assert isinstance(decay, PiecewiseDecay) and (decay.gamma, decay.milestones) == (0.1, [55000, 62000])
    assert isinstance(warmup, LinearWarmup) and (warmup.start_factor, warmup.steps) == (0.0, 1000)
    assert cfg["OptimizerBuilder"]["optimizer"] == {"momentum": 0.9, "type": "Momentum"}
    assert cfg["OptimizerBuilder"]["regularizer"] == {"factor": 0.0005, "type": "L2"}
    train = cfg["YoloTrainFeed"]
    assert (train["batch_size"], train["num_workers"], train["bufsize"], train["use_process"],
            train["mixup_epoch"]) == (8, 8, 128, True, 250)
    assert {k: train["dataset"][k] for k in ("dataset_dir", "annotation", "use_default_label")} == {
        "dataset_dir": "dataset/voc", "annotation": "trainval.txt", "use_default_label": True}
    evaluation = cfg["YoloEvalFeed"]
    assert (evaluation["batch_size"], list(evaluation["image_shape"])) == (8, [3, 608, 608])
    assert {k: evaluation["dataset"][k] for k in ("dataset_dir", "annotation", "use_default_label")} \
        == {"dataset_dir": "dataset/voc", "annotation": "test.txt", "use_default_label": True}
    test = cfg["YoloTestFeed"]
    assert (test["batch_size"], list(test["image_shape"])) == (1, [3, 608, 608])
    assert test["dataset"]["use_default_label"] is True


def test_seed_overrides_apply_to_the_voc_config():
    cfg = load_config(os.path.join(ROOT, VOC_CONFIG),
                      ["max_iters=516", "LearningRate.base_lr=0.005", "YoloTrainFeed.batch_size=32",
                       SEED_SCHEDULERS])
    assert cfg.max_iters == 516 and cfg["YoloTrainFeed"]["batch_size"] == 32
    learning_rate = create("LearningRate", cfg)
    assert learning_rate.base_lr == 0.005
    decay, warmup = learning_rate.schedulers
    assert (decay.gamma, decay.milestones) == (0.1, [110000, 124000])
    assert (warmup.start_factor, warmup.steps) == (0.0, 2000)
    assert learning_rate.lr_at(2000) == 0.005 and learning_rate.lr_at(110000) == 0.005 * 0.1


def test_models_and_feeds_are_created_from_the_shipped_configs():
    voc = load_config(os.path.join(ROOT, VOC_CONFIG), ["YoloTrainFeed.batch_size=64"])
    model = create(voc.architecture, voc)
    assert model.backbone.conv_group_scale == 1.0 and model.yolo_head.num_classes == 20
    assert model.yolo_head.nms.keep_top_k == 100
    assert create(voc.train_feed, voc).batch_size == 64
    assert create(voc.eval_feed, voc).dataset.annotation == "test.txt"
    demo = load_config(os.path.join(ROOT, DEMO_CONFIG))
    model = create(demo.architecture, demo)
    assert model.backbone.conv_group_scale == 0.25
    assert model.yolo_head.num_classes == len(DEMO_CLASSES) == demo.num_classes


def test_demo_config_fits_the_demo_dataset_and_a_cpu():
    cfg = load_config(os.path.join(ROOT, DEMO_CONFIG))
    train, evaluation, test = cfg["YoloTrainFeed"], cfg["YoloEvalFeed"], cfg["YoloTestFeed"]
    for feed, annotation in ((train, "train.txt"), (evaluation, "test.txt")):
        dataset = feed["dataset"]
        assert (dataset["dataset_dir"], dataset["annotation"]) == ("dataset/demo", annotation)
        assert (dataset["use_default_label"], dataset["label_list"]) == (False, "label_list.txt")
    assert test["dataset"]["dataset_dir"] == "dataset/demo"
    assert not test["dataset"]["use_default_label"]
    assert cfg["MobileNet"]["conv_group_scale"] == 0.25 and cfg["YOLOv3Head"]["width_scale"] == 0.25
    assert all(160 <= size <= 224 for size in train["multi_scale_sizes"])
    assert list(evaluation["image_shape"]) == [3, 192, 192]
    assert (train["batch_size"], train["num_workers"]) == (8, 2)
    assert 0.002 <= cfg["LearningRate"]["base_lr"] <= 0.005
    warmup = cfg["LearningRate"]["schedulers"][-1]
    assert isinstance(warmup, LinearWarmup) and warmup.steps == 50
    assert cfg.max_iters == 50
    # training from scratch: Adam, an objectness prior, no mixup, no random expand (docs/demo.md)
    assert cfg["OptimizerBuilder"]["optimizer"]["type"] == "Adam"
    assert cfg["YOLOv3Head"]["objectness_prior"] == 0.01
    assert (train["mixup_epoch"], train["expand_max_ratio"]) == (0, 1.0)
    # the config's schedule is the pruned run's: its decays fall inside the slim config's epochs
    demo_slim = load_slim_config(os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo_slim.yaml"))
    decay = cfg["LearningRate"]["schedulers"][0]
    assert max(decay.milestones) < demo_slim.compressor.epoch * cfg.max_iters


def test_demo_baseline_gets_its_own_schedule():
    from slim.commands.demo import baseline_schedule
    cfg = load_config(os.path.join(ROOT, DEMO_CONFIG))
    override = baseline_schedule(cfg, 16)
    baseline = load_config(os.path.join(ROOT, DEMO_CONFIG), [override])
    decay, warmup = baseline["LearningRate"]["schedulers"]
    assert decay.milestones == [640, 744] and decay.gamma == 0.1
    assert isinstance(warmup, LinearWarmup) and warmup.steps == 50
    assert baseline["LearningRate"]["base_lr"] == cfg["LearningRate"]["base_lr"]


@pytest.mark.parametrize("name", ["yolov3_mobilenet_v1_slim.yaml",
                                  "yolov3_mobilenet_v1_demo_slim.yaml"])
def test_slim_configs_carry_the_seed_regex_verbatim(name):
    cfg = load_slim_config(os.path.join(ROOT, "configs", name))
    strategy = cfg.strategies["uniform_pruning_strategy"]
    assert strategy.pruned_params == "|".join(f"({param})" for param in SEED_PRUNED_PARAMS)
    assert len(SEED_PRUNED_PARAMS) == 24
    matched = [p for p in SEED_PRUNED_PARAMS if re.fullmatch(strategy.pruned_params, p)]
    assert matched == SEED_PRUNED_PARAMS
    assert not re.fullmatch(strategy.pruned_params, "conv6_sep_weights")
    assert not re.fullmatch(strategy.pruned_params, "yolo_block.0.2.conv.weights")


def test_slim_config_values():
    seed = load_slim_config(os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_slim.yaml"))
    assert (seed.compressor.epoch, seed.compressor.eval_epoch) == (271, 10)
    assert seed.compressor.checkpoint_path == "./checkpoints/"
    assert seed.strategies["uniform_pruning_strategy"].metric_name == "acc_top1"
    demo = load_slim_config(os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_demo_slim.yaml"))
    assert demo.compressor.checkpoint_path == "./output/demo_checkpoints/"
    assert 1 <= demo.compressor.epoch <= 10


def test_seed_two_card_command_line_exits_2_and_suggests_learning_rate():
    # the seed's 2-card example, verbatim but for the paths (it misspells LeaningRate)
    code, out, err = run(
        "compress.py", "-s", "configs/yolov3_mobilenet_v1_slim.yaml", "-c", VOC_CONFIG,
        "-o", "max_iters=516", "LeaningRate.base_lr=0.005", "YoloTrainFeed.batch_size=32",
        SEED_SCHEDULERS, "-d", "dataset/voc")
    assert code == 2, err
    assert_one_line_error(err)
    assert err.splitlines()[-1].startswith(
        "error: -o LeaningRate.base_lr=0.005: unknown key 'LeaningRate' (did you mean "
        "'LearningRate'?); valid top-level keys: architecture, ")


def test_configure_helper_on_the_voc_config():
    code, out, err = run("-m", "slim.config", "analyze", VOC_CONFIG, "-o", "max_iters=258",
                         "YoloTrainFeed.batch_size=64")
    assert code == 0, err
    lines = out.splitlines()
    assert "max_iters: 258  # default: auto" in lines
    assert "  batch_size: 64  # default: 8" in lines
    assert "  norm_type: sync_bn  # default: bn" in lines
    code, out, err = run("-m", "slim.config", "analyze", VOC_CONFIG, "-o", "LeaningRate.base_lr=0.005")
    assert code == 2 and out == ""
    assert_one_line_error(err)
    assert err.splitlines()[-1].startswith(
        "error: -o LeaningRate.base_lr=0.005: unknown key 'LeaningRate' (did you mean 'LearningRate'?)")


def test_help_override_lines_of_every_module_parse_back_to_its_defaults():
    import shlex

    from slim.config import REGISTRY, apply_override
    from slim.config.cli import help_module
    from slim.config.validate import options_of, validate_options

    def comparable(value):  # an instance of a registered class equals a mapping of its options
        if REGISTRY.spec_of_instance(value) is not None:
            return comparable(options_of(value))
        if isinstance(value, dict):
            return {k: comparable(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [comparable(v) for v in value]
        return value
    for name in REGISTRY.names():
        spec = REGISTRY.get(name)
        tree = {}
        for line in help_module(name).split("COMMAND LINE OPTIONS\n")[1].splitlines():
            flag, item = shlex.split(line)
            apply_override(tree, item)
        parsed = validate_options(spec, tree.get(name, {}), (name,))
        defaults = validate_options(spec, {}, (name,))
        assert comparable(parsed) == comparable(defaults), name
