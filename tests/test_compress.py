"""compress.py end to end on a tiny config: a checkpoint per epoch with the pruned shapes and
the eval/inference models, the LR schedule and log lines, then eval.py and infer.py on the
exported model, and Paddle Inference boxes equal to the Executor's.

The workspace (tiny demo dataset + configs) and one uninterrupted compress run are shared
with test_resume.py through `reference_run` (cached in the session's temp dir). eval.py,
infer.py and Paddle Inference are checked on `fitted_compress_run`, compress.py started from
a model that detects (tests/fitted_model.py), so that scores and boxes are not 0 == 0.
"""
import json
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest
from fitted_model import CLASSES, config_arguments, eval_batch, executor_outputs, fitted_model
from seed_facts import SEED_REGEX
from session_cache import cached_in_session

from slim.io import checkpoint as ck
from slim.io import export

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# MobileNetV1 at width 0.125 + the YOLOv3 head, 64 px inputs, 2 iterations of 2 images per
# epoch. (After 6 iterations the batch norm statistics are far from the activations, so the
# eval-mode model detects little; test_eval_infer.py checks drawing and scoring on a model
# that does detect.)
DETECTION_CONFIG = """
architecture: YOLOv3
train_feed: YoloTrainFeed
eval_feed: YoloEvalFeed
test_feed: YoloTestFeed
use_gpu: false
max_iters: 2
log_iter: 1
log_smooth_window: 1
metric: VOC
map_type: 11point
num_classes: 5
random_seed: 1
save_dir: output
YOLOv3:
  backbone: MobileNet
  yolo_head: YOLOv3Head
MobileNet:
  norm_type: sync_bn
  conv_group_scale: 0.125
YOLOv3Head:
  anchors: [[3, 4], [5, 9], [10, 7], [9, 18], [18, 13], [17, 35], [34, 26], [46, 58], [90, 80]]
  nms: {keep_top_k: 20, nms_top_k: 100}
LearningRate:
  base_lr: 0.001
  schedulers:
  - !PiecewiseDecay {gamma: 0.1, milestones: [4]}
  - !LinearWarmup {start_factor: 0., steps: 2}
OptimizerBuilder:
  optimizer: {type: Momentum, momentum: 0.9}
  regularizer: {type: L2, factor: 0.0005}
YoloTrainFeed:
  batch_size: 2
  image_shape: [3, 64, 64]
  multi_scale_sizes: [64]
  num_workers: 0
  mixup_epoch: 1
  dataset: {dataset_dir: data, annotation: train.txt, use_default_label: false}
YoloEvalFeed:
  batch_size: 2
  image_shape: [3, 64, 64]
  num_workers: 0
  dataset: {dataset_dir: data, annotation: test.txt, use_default_label: false}
YoloTestFeed:
  batch_size: 2
  image_shape: [3, 64, 64]
  dataset: {dataset_dir: data, use_default_label: false}
"""


# The seed's slim config with 3 epochs, pruning at epoch 1 (so epoch 0 is unpruned).
SLIM_CONFIG = """
version: 1.0
pruners:
  pruner_1: {class: StructurePruner, pruning_axis: {'*': 0}, criterions: {'*': l1_norm}}
strategies:
  uniform_pruning_strategy:
    class: UniformPruneStrategy
    pruner: pruner_1
    start_epoch: 1
    target_ratio: 0.5
    pruned_params: 'SEED_REGEX'
    metric_name: acc_top1
compressor:
  epoch: EPOCHS
  eval_epoch: 1
  checkpoint_path: CHECKPOINT_PATH
  strategies: [uniform_pruning_strategy]
"""

EPOCHS = 3
ITERATIONS_PER_EPOCH = 2
PRUNED_PARAM = "conv2_1_sep_weights"  # 8 filters at width 0.125, 5 after the -50% FLOPs plan


def make_workspace(root):
    """Write the tiny demo dataset and the configs under `root`; return their paths."""
    from slim.data.demo import main as make_demo_dataset
    os.makedirs(root, exist_ok=True)
    if not os.path.isdir(os.path.join(root, "data")):
        make_demo_dataset(["--out", os.path.join(root, "data"), "--train", "8", "--test", "4"])
    paths = {"root": root, "config": os.path.join(root, "tiny.yml")}
    with open(paths["config"], "w") as handle:
        handle.write(DETECTION_CONFIG)
    return paths


def write_slim_config(root, name, epochs=EPOCHS, checkpoint_path="ckpt"):
    path = os.path.join(root, name)
    with open(path, "w") as handle:
        handle.write(SLIM_CONFIG.replace("SEED_REGEX", SEED_REGEX).replace("EPOCHS", str(epochs))
                     .replace("CHECKPOINT_PATH", checkpoint_path))
    return path


def compress_command(slim_file, config, *extra):
    return [sys.executable, "-u", os.path.join(ROOT, "compress.py"), "-s", slim_file, "-c", config,
            *extra]


def child_env(**extra):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""),
               GLOG_minloglevel="2")
    env.update(extra)
    return env


def reference_run(tmp_path_factory):
    """One uninterrupted compress run (cached for the session): {paths, stdout, ckpt dir}."""
    return cached_in_session(tmp_path_factory, "compress_reference", _reference_run)


def _reference_run(root):
    paths = make_workspace(root)
    slim_file = write_slim_config(root, "slim.yaml")
    result = subprocess.run(compress_command(slim_file, paths["config"], "--output_eval", "out"),
                            cwd=root, env=child_env(), capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return dict(paths, stdout=result.stdout, stderr=result.stderr,
                checkpoints=os.path.join(root, "ckpt"), output_eval=os.path.join(root, "out"))


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return reference_run(tmp_path_factory)


# The fitted model holds only on its un-augmented images, and training batches are augmented,
# so the run does not learn (base_lr 0; batch norm statistics still move), and the seed's
# params are pruned lightly (5% of the FLOPs) at epoch 1: a 50% prune without fine-tuning
# leaves the overfit model few boxes. Epoch 0 is unpruned, epoch 1 pruned; both detect.
FITTED_RUN_TARGET_RATIO = 0.05
FITTED_RUN_OPTIONS = ["max_iters=1", "LearningRate.base_lr=0", "LearningRate.schedulers=[]",
                      "YoloTrainFeed.batch_size=4", "YoloTrainFeed.num_workers=0",
                      "YoloTrainFeed.multi_scale_sizes=[128]",
                      "YoloTrainFeed.dataset.annotation=test.txt"]


def fitted_compress_run(tmp_path_factory):
    """compress.py (in-process) from the fitted model's weights, 2 epochs (cached for the
    session): {fitted (the fitted_model dict), checkpoints, output_eval}."""
    fitted = fitted_model(tmp_path_factory)
    return cached_in_session(tmp_path_factory, "compress_fitted",
                             lambda root: _fitted_compress_run(root, fitted))


def _fitted_compress_run(root, fitted):
    import compress as compress_cli
    run = {"fitted": fitted, "checkpoints": os.path.join(root, "ckpt"),
           "output_eval": os.path.join(root, "out")}
    slim_file = write_slim_config(root, "slim.yaml", epochs=2, checkpoint_path=run["checkpoints"])
    with open(slim_file) as handle:
        text = handle.read()
    assert "target_ratio: 0.5\n" in text
    with open(slim_file, "w") as handle:
        handle.write(text.replace("target_ratio: 0.5\n",
                                  f"target_ratio: {FITTED_RUN_TARGET_RATIO}\n"))
    compress_cli.main(["-s", slim_file, *config_arguments(fitted), *FITTED_RUN_OPTIONS,
                       f"weights={fitted['weights']}", f"save_dir={os.path.join(root, 'output')}",
                       "--output_eval", run["output_eval"]])
    return run


@pytest.fixture(scope="module")
def fitted_run(tmp_path_factory):
    return fitted_compress_run(tmp_path_factory)


def _checkpoint(run, epoch):
    return ck.validate_checkpoint(os.path.join(run["checkpoints"], str(epoch)))


def test_a_complete_checkpoint_per_epoch_with_eval_and_infer_models(run):
    assert sorted(os.listdir(run["checkpoints"])) == [str(e) for e in range(EPOCHS)]
    for epoch in range(EPOCHS):
        checkpoint = _checkpoint(run, epoch)
        assert checkpoint.state.epoch == epoch
        assert checkpoint.state.iteration == (epoch + 1) * ITERATIONS_PER_EPOCH
        model_dir = os.path.join(checkpoint.path, "eval_model")
        assert sorted(os.listdir(model_dir)) == \
            ["__model__", "__model__.infer", "__params__", "infer_cfg.yml", "model_manifest.json"]
        infer_config = export.read_infer_config(model_dir)  # verified against the model files
        assert infer_config["num_classes"] == len(infer_config["label_list"]) > 0
        assert "conv1_weights_velocity_0" in checkpoint.manifest["variables"]  # optimizer state


def test_pruning_fires_at_start_epoch_and_removes_half_the_flops(run):
    shapes = [_checkpoint(run, epoch).manifest["variables"][PRUNED_PARAM]["shape"]
              for epoch in range(EPOCHS)]
    assert [shape[0] for shape in shapes] == [8, 5, 5]
    velocity = _checkpoint(run, 2).manifest["variables"][PRUNED_PARAM + "_velocity_0"]["shape"]
    assert velocity == shapes[2]
    plans = _checkpoint(run, 2).state.pruning_plans
    assert [(p["strategy"], p["epoch"]) for p in plans] == [("uniform_pruning_strategy", 1)]
    assert len(plans[0]["plan"]["matched"]) == 24
    with open(os.path.join(run["output_eval"], "compress_summary.json")) as handle:
        summary = json.load(handle)
    assert abs(1 - summary["flops_after"] / summary["flops_before"] - 0.5) <= 0.005
    assert summary["params_after"] < summary["params_before"]


def test_log_lines_and_lr_schedule(run):
    from slim.engine.optimizer import LearningRate, LinearWarmup, PiecewiseDecay
    lines = re.findall(r"^epoch (\d+)/2 iter (\d)/2 \(total (\d+)\) loss (\S+) loss_0 (\S+) "
                       r"loss_1 (\S+) loss_2 (\S+) lr (\S+) (\S+) img/s eta \d+:\d\d$",
                       run["stdout"], flags=re.MULTILINE)
    assert [int(line[2]) for line in lines] == list(range(1, EPOCHS * ITERATIONS_PER_EPOCH + 1))
    schedule = LearningRate(0.001, [PiecewiseDecay(0.1, [4]), LinearWarmup(2, 0.0)])
    assert [float(line[7]) for line in lines] == pytest.approx(
        [schedule.lr_at(i) for i in range(EPOCHS * ITERATIONS_PER_EPOCH)], rel=1e-5)
    for line in lines:  # with log_smooth_window 1 the total is the sum of the parts
        assert float(line[3]) == pytest.approx(sum(float(v) for v in line[4:7]), rel=1e-3)
    assert "metric_name 'acc_top1' is a classification metric; using the detection metric" \
        in run["stdout"]
    assert len(re.findall(r"^epoch \d eval: VOC mAP \d+\.\d\d \(best", run["stdout"],
                          flags=re.MULTILINE)) == EPOCHS


def test_paddle_inference_equals_executor_on_the_pruned_model(fitted_run):
    """Both exported programs of the pruned fitted model through Paddle Inference vs the
    Executor on its eval batch: `__model__` (boxes + the raw head outputs) and
    `__model__.infer` (boxes), with boxes on every image to compare."""
    from slim.model import split_detections
    model_dir = os.path.join(fitted_run["checkpoints"], "1", "eval_model")
    batch = eval_batch(fitted_run["fitted"])
    feeds = {"image": batch["image"], "im_size": batch["im_size"]}
    expected, scope = executor_outputs(model_dir, feeds, "__model__")
    _, unpruned_scope = executor_outputs(
        os.path.join(fitted_run["checkpoints"], "0", "eval_model"), feeds, "__model__")
    filters = [np.array(s.find_var(PRUNED_PARAM).get_tensor()).shape[0]
               for s in (unpruned_scope, scope)]
    assert filters[1] < filters[0]  # a pruned model
    assert [out.shape[1:] for out in expected[2:]] == [(30, 4, 4), (30, 8, 8), (30, 16, 16)]
    assert np.all(expected[1] > 0)  # boxes on every image
    full = export.run_predictor(export.inference_predictor(model_dir, model_name="__model__"), feeds)
    for actual, wanted in zip(full[2:], expected[2:]):  # raw outputs: the whole pruned network
        assert np.all(np.isfinite(wanted)) and np.abs(wanted).max() > 0
        np.testing.assert_allclose(actual, wanted, rtol=1e-3, atol=1e-3 * np.abs(wanted).max())
    for outputs in (full[:2], export.run_predictor(export.inference_predictor(model_dir), feeds)):
        bbox, bbox_num = outputs
        np.testing.assert_array_equal(bbox_num, expected[1])
        for actual, wanted in zip(split_detections(bbox, bbox_num),
                                  split_detections(expected[0], expected[1])):
            np.testing.assert_array_equal(actual[:, 0], wanted[:, 0])
            np.testing.assert_allclose(actual[:, 1:], wanted[:, 1:], rtol=1e-4, atol=1e-3)


def test_eval_py_scores_the_exported_model_as_training_did(fitted_run, tmp_path):
    """eval.py on each epoch's exported eval model (0 unpruned, 1 pruned) reports the mAP
    compress.py's evaluation found for it, and it is a real score (> 0.5)."""
    import eval as eval_cli
    with open(os.path.join(fitted_run["output_eval"], "compress_summary.json")) as handle:
        history = json.load(handle)["history"]
    with open(os.path.join(fitted_run["output_eval"], "eval_result.json")) as handle:
        during_training = json.load(handle)  # written by compress.py after the last epoch
    assert [item["epoch"] for item in history] == [0, 1] and during_training["epoch"] == 1
    model_dirs = [os.path.join(fitted_run["checkpoints"], str(epoch), "eval_model")
                  for epoch in (0, 1)]
    assert os.path.getsize(os.path.join(model_dirs[1], "__params__")) < \
        os.path.getsize(os.path.join(model_dirs[0], "__params__"))  # epoch 1 is pruned
    for epoch, model_dir in enumerate(model_dirs):
        out = tmp_path / str(epoch)
        eval_cli.main(["-m", model_dir, "--model_name", "__model__", "--params_name",
                       "__params__", *config_arguments(fitted_run["fitted"]),
                       "--output_eval", str(out)])
        with open(out / "eval_result.json") as handle:
            standalone = json.load(handle)
        assert history[epoch]["mAP"] > 0.5 and standalone["mAP"] > 0.5, (epoch, history)
        assert standalone["mAP"] == pytest.approx(history[epoch]["mAP"], abs=1e-9)
    assert standalone["mAP"] == pytest.approx(during_training["mAP"], abs=1e-9)
    assert standalone["per_class_ap"] == pytest.approx(during_training["per_class_ap"], abs=1e-9)
    assert list(standalone["per_class_ap"]) == CLASSES


def test_infer_py_draws_and_lists_detections(fitted_run, tmp_path):
    """infer.py on the pruned fitted model (epoch 1): per image, the listed and drawn
    detections are the predictor's rows >= threshold, and there are such rows."""
    import cv2

    import infer as infer_cli
    from slim.model import split_detections
    fitted = fitted_run["fitted"]
    model_dir = os.path.join(fitted_run["checkpoints"], "1", "eval_model")
    threshold = 0.1  # the demo's draw threshold: the lightly pruned model's scores are lower
    infer_cli.main(["--model_path", model_dir, *config_arguments(fitted),
                    "--infer_dir", fitted["images"], "--output_dir", str(tmp_path),
                    "--draw_threshold", str(threshold)])
    with open(tmp_path / "detections.json") as handle:
        listed = json.load(handle)["images"]
    with open(os.path.join(fitted["data"], "test.txt")) as handle:
        names = [os.path.basename(line.split()[0]) for line in handle]
    assert [os.path.basename(item["image"]) for item in listed] == names  # sorted = eval order
    # The same images through the predictor: the listed detections are their rows >= threshold.
    batch = eval_batch(fitted)
    bbox, bbox_num = export.run_predictor(export.inference_predictor(model_dir),
                                          {"image": batch["image"], "im_size": batch["im_size"]})
    compared = 0
    for item, rows in zip(listed, split_detections(bbox, bbox_num)):
        rows = rows[rows[:, 1] >= threshold]
        rows = rows[np.argsort(-rows[:, 1], kind="stable")]
        detections = item["detections"]
        assert [d["label"] for d in detections] == rows[:, 0].astype(int).tolist()
        assert [d["score"] for d in detections] == pytest.approx(rows[:, 1], abs=1e-4)
        assert [d["name"] for d in detections] == [CLASSES[int(label)] for label in rows[:, 0]]
        for detection, row in zip(detections, rows):
            assert detection["bbox"] == pytest.approx(row[2:], abs=0.02)
        assert cv2.imread(item["output"]).shape == cv2.imread(item["image"]).shape
        compared += len(rows)
    assert compared >= len(listed)  # real detections were compared, not 0 with 0


def _tiny_programs(run):
    from slim.config import create, load_config
    from slim.engine.distributed import DistributedEnv
    from slim.engine.programs import ProgramSet
    cfg = load_config(run["config"])
    programs = ProgramSet(create("YOLOv3", cfg), [3, 64, 64], create("OptimizerBuilder", cfg),
                          create("LearningRate", cfg).scheduler(), DistributedEnv())
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(programs.startup, scope=scope)
    return programs, scope, executor


def test_weights_from_a_checkpoint_replay_its_plan_and_an_eval_model_must_fit(run, tmp_path):
    from slim.io.weights import WeightsError, save_weights
    from slim.runs.restore import load_weights_into
    pruned = _checkpoint(run, 2)
    tensors = ck.read_checkpoint_tensors(pruned)
    programs, scope, executor = _tiny_programs(run)
    messages = []
    records = load_weights_into("weights", pruned.path, programs, scope, executor,
                                paddle.CPUPlace(), False, messages.append)
    assert [(r["strategy"], r["source"]) for r in records] == [("uniform_pruning_strategy", "weights")]
    for param in programs.eval.program.global_block().all_parameters():
        np.testing.assert_array_equal(np.array(scope.find_var(param.name).get_tensor()),
                                      tensors[param.name], err_msg=param.name)
    assert np.array(scope.find_var(PRUNED_PARAM + "_velocity_0").get_tensor()).shape[0] == 5
    assert messages == [f"loaded weights from checkpoint '{pruned.path}' (epoch 2, 1 pruning "
                        "plan(s) replayed)"]
    # The same parameters as a weights dir load into the pruned programs ...
    save_weights(scope, programs.eval.program, str(tmp_path / "model_final"))
    load_weights_into("weights", str(tmp_path / "model_final"), programs, scope, executor,
                      paddle.CPUPlace(), False, messages.append)
    assert messages[-1].startswith(f"loaded weights '{tmp_path / 'model_final'}': ")
    # ... but a pruned eval_model does not fit an unpruned model: named, nothing loaded.
    unpruned, unpruned_scope, executor = _tiny_programs(run)
    with pytest.raises(WeightsError, match=PRUNED_PARAM.replace(".", r"\.") + r": file \[5, "):
        load_weights_into("weights", os.path.join(pruned.path, "eval_model"), unpruned,
                          unpruned_scope, executor, paddle.CPUPlace(), False, messages.append)


def _slim_config_with_init_model(tmp_path, init_model):
    """A slim config of the reference run's kind into tmp_path/ckpt, starting from `init_model`."""
    slim_file = write_slim_config(str(tmp_path), "init.yaml", checkpoint_path=str(tmp_path / "ckpt"))
    with open(slim_file) as handle:
        text = handle.read()
    with open(slim_file, "w") as handle:
        handle.write(text.replace("  eval_epoch: 1\n", f"  eval_epoch: 1\n  init_model: {init_model}\n"))
    return slim_file


def test_init_model_starts_from_the_chosen_checkpoint(run, tmp_path, capsys):
    import compress as compress_cli
    chosen = os.path.join(run["checkpoints"], "0")
    slim_file = _slim_config_with_init_model(tmp_path, chosen)
    cwd = os.getcwd()
    os.chdir(run["root"])
    try:
        compress_cli.main(["-s", slim_file, "-c", run["config"]])
    finally:
        os.chdir(cwd)
    assert f"resumed from checkpoint '{chosen}': epoch 0 done, iteration 2" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["1", "2"]
    resumed = ck.read_checkpoint_tensors(ck.validate_checkpoint(str(tmp_path / "ckpt" / "2")))
    expected = ck.read_checkpoint_tensors(_checkpoint(run, 2))
    assert resumed.keys() == expected.keys()
    for name, value in expected.items():
        np.testing.assert_array_equal(resumed[name], value, err_msg=name)


def test_init_model_naming_a_checkpoint_path_asks_for_one_epoch(run, tmp_path, capsys, monkeypatch):
    """init_model pointing at a whole checkpoint_path (not one epoch dir) used to load as weights
    and report every parameter missing; it is one line naming the epochs to choose from."""
    from test_cli_errors import _exit_code_and_error

    import compress as compress_cli
    slim_file = _slim_config_with_init_model(tmp_path, run["checkpoints"])
    monkeypatch.chdir(run["root"])  # the run's config names its dataset relative to it
    code, error = _exit_code_and_error(capsys, compress_cli.main, ["-s", slim_file, "-c", run["config"]])
    newest = max(int(name) for name in os.listdir(run["checkpoints"]) if name.isdigit())
    assert code == 2 and f"compressor.init_model '{run['checkpoints']}' holds checkpoints" in error
    assert error.endswith(f"e.g. {os.path.join(run['checkpoints'], str(newest))}")
    assert os.listdir(tmp_path / "ckpt") == []


def test_resuming_with_another_max_iters_is_one_line_naming_the_one_it_was_made_with(
        run, tmp_path, capsys, monkeypatch):
    """A checkpoint made with max_iters 2 cannot be continued by epochs of 3 iterations (the
    run stopped later with 'the training data gave 0 batches'): one line before training."""
    from test_cli_errors import _exit_code_and_error

    import compress as compress_cli
    chosen = os.path.join(run["checkpoints"], "0")
    slim_file = _slim_config_with_init_model(tmp_path, chosen)
    monkeypatch.chdir(run["root"])
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", run["config"], "-o", "max_iters=3"])
    assert code == 2 and error == (
        f"error: checkpoint '{chosen}' ends epoch 0 at iteration 2 (max_iters 2), but this run's "
        "epochs of max_iters 3 end it at iteration 3: resume with the max_iters it was made with, "
        "or start a new checkpoint_path")
    assert os.listdir(tmp_path / "ckpt") == []
