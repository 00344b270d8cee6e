"""`python -m slim prune`: one-shot pruning of an exported inference model of any architecture.

A small `paddle.vision` MobileNetV2 (width 0.25, 32 px, 10 classes, random weights and
batch norm statistics with positive variances) is saved with
`paddle.static.save_inference_model` and pruned by the command, run in-process through
`python -m slim`'s main. The pruned model, loaded in Paddle Inference, must give what the
unpruned program gives with the plan's removed channels zeroed
(`slim.prune.masking.zero_removed_channels`), within 1e-5 relative; its FLOPs must meet
the target; report.json must agree with the files written. Bad input is one `error:` line
and exit code 2, with nothing written.
"""
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import paddle
import paddle.vision.models as zoo
import pytest
from test_prune_zoo import randomize

from slim.__main__ import main as slim_main
from slim.commands.prune import PLAN_NAME, REPORT_NAME
from slim.io.inference_model import find_model_files, load_inference_model
from slim.io.output_places import OWNER_MARKER
from slim.prune import PrunePlan, analyze_program
from slim.prune.flops import program_flops, program_params
from slim.prune.masking import zero_removed_channels
from slim.prune.pir import pir_supported

CPU = paddle.CPUPlace()
SIZE = 32
RELATIVE = 1e-5
TARGET = 0.5


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """{'dir', 'input'}: MobileNetV2 x0.25 saved as inference.pdmodel + inference.pdiparams."""
    root = tmp_path_factory.mktemp("prune_command")
    main, startup = paddle.static.Program(), paddle.static.Program()
    with warnings.catch_warnings(), paddle.static.program_guard(main, startup), \
            paddle.utils.unique_name.guard():
        warnings.simplefilter("ignore")
        image = paddle.static.data("image", [None, 3, SIZE, SIZE], "float32")
        net = zoo.mobilenet_v2(scale=0.25, num_classes=10)
        net.eval()
        logits = net(image)
    scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
    model_dir = str(root / "model")
    with paddle.static.scope_guard(scope):
        executor.run(startup)
        randomize(main, scope)
        paddle.static.save_inference_model(os.path.join(model_dir, "inference"), [image], [logits],
                                           executor, program=main)
    return {"root": str(root), "dir": model_dir}


def prune(argv):
    """Run `python -m slim prune ARGV` in-process; its exit code (0 on success)."""
    try:
        return slim_main(["prune", *argv])
    except SystemExit as stop:
        return stop.code


def error_line(capsys, argv):
    """(exit code, the one `error:` line) of a failing run; no traceback."""
    code = prune(argv)
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr[-2000:]
    return code, errors[0]


def predict(model_dir, feeds):
    """Outputs of the model in `model_dir` run by Paddle Inference (CPU)."""
    import paddle.inference

    from slim.io.export import run_predictor
    from slim.io.inference_model import inference_config
    predictor = paddle.inference.create_predictor(inference_config(find_model_files(model_dir)))
    return run_predictor(predictor, feeds)


def masked_reference(model_dir, plan, feeds):
    """(unpruned output, output with the plan's removed channels zeroed) of the original
    program run by the Executor."""
    scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
    model = load_inference_model(find_model_files(model_dir), executor, scope)
    graph = analyze_program(model.program, fixed_vars=[var.name for var in model.fetch_vars])
    with paddle.static.scope_guard(scope):
        (unpruned,) = executor.run(model.program, feed=feeds, fetch_list=model.fetch_vars)
        zero_removed_channels(plan, graph, scope)
        (masked,) = executor.run(model.program, feed=feeds, fetch_list=model.fetch_vars)
    return unpruned, masked


def loaded_counts(model_dir):
    """(FLOPs, params, bytes on disk of the model's files) of the model in `model_dir`."""
    files = find_model_files(model_dir)
    model = load_inference_model(files, paddle.static.Executor(CPU), paddle.static.Scope())
    return (program_flops(model.program), program_params(model.program),
            files.size_bytes(model.program))


def test_a_target_between_uniform_steps_moves_single_groups_and_says_so(exported, capsys):
    """At -30% no uniform ratio is close enough: the search moves 2 of the 24 groups one
    channel step (measured on this model; at -50% a uniform ratio meets it and none moves)."""
    out = os.path.join(exported["root"], "between_steps")
    assert prune(["--model_dir", exported["dir"], "--target_ratio", "0.3", "--out", out,
                  "--latency_runs", "0"]) == 0
    first_line = capsys.readouterr().out.splitlines()[0]
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    assert report["groups"] == 24 and report["groups_moved"] == 2
    assert "(2 groups moved by single steps)" in first_line
    assert abs(report["flops_removed"] - 0.3) <= 0.005


def test_pruned_model_equals_masked_reference(exported, capsys):
    out = os.path.join(exported["root"], "pruned")
    assert prune(["--model_dir", exported["dir"], "--target_ratio", str(TARGET), "--out", out,
                  "--latency_runs", "3"]) == 0
    printed = capsys.readouterr().out
    assert "FLOPs" in printed and "latency ms" in printed
    assert re.search(r"latency ms .* (\d+\.\d\dx (faster|slower)|no significant change "
                     r"\(median \d+\.\d\dx\))\n", printed)
    assert sorted(os.listdir(out)) == sorted([OWNER_MARKER, "inference.pdmodel",
                                              "inference.pdiparams", "plan.json", "report.json"])
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    plan = PrunePlan.load(os.path.join(out, "plan.json"))
    assert plan.groups and plan.target_ratio == TARGET and plan.criterion == "l1_norm"

    feeds = {"image": np.random.RandomState(3).rand(2, 3, SIZE, SIZE).astype("float32")}
    (pruned,) = predict(out, feeds)
    unpruned, masked = masked_reference(exported["dir"], plan, feeds)
    assert pruned.shape == unpruned.shape == (2, 10)
    assert np.abs(unpruned - masked).max() > 1e-3 * np.abs(unpruned).max()  # masking matters
    assert np.abs(pruned - masked).max() <= RELATIVE * np.abs(masked).max()

    flops_before, params_before, size_before = loaded_counts(exported["dir"])
    flops_after, params_after, size_after = loaded_counts(out)
    assert abs((1 - flops_after / flops_before) - TARGET) <= 0.01
    assert report["before"] == {"flops": flops_before, "params": params_before,
                                "size_bytes": size_before}
    assert report["after"] == {"flops": flops_after, "params": params_after,
                               "size_bytes": size_after}
    assert report["flops_ratio"] == pytest.approx(flops_after / flops_before)
    assert report["flops_removed"] == pytest.approx(1 - flops_after / flops_before)
    assert report["params_ratio"] == pytest.approx(params_after / params_before)
    assert params_after < 0.75 * params_before
    assert report["size_ratio"] == pytest.approx(size_after / size_before)
    assert report["groups"] == len(plan.groups) and report["ratio"] == plan.ratio
    assert report["groups_moved"] == 0 and "moved" not in printed.splitlines()[0]  # see below
    assert report["pruned_params"] == "auto" and report["target_ratio"] == TARGET
    assert report["feeds"] == {"image": [1, 3, SIZE, SIZE]}
    assert report["files"] == ["inference.pdmodel", "inference.pdiparams"]
    latency = report["latency"]
    assert latency["pairs"] == 3 and len(latency["before_ms"]) == len(latency["after_ms"]) == 3
    assert latency["before_median_ms"] == pytest.approx(np.median(latency["before_ms"]), abs=1e-3)
    ratios = np.array(latency["before_ms"]) / np.array(latency["after_ms"])
    assert latency["speedup"] == pytest.approx(np.median(ratios), rel=1e-3)
    noise = np.percentile(ratios, 10) <= 1 <= np.percentile(ratios, 90)
    assert latency["verdict"] == ("no significant change" if noise else
                                  "faster" if latency["speedup"] > 1 else "slower")
    assert latency["threads"] == 1

    # a second run replaces the command's own OUT
    assert prune(["--model_dir", exported["dir"], "--target_ratio", "0.4", "--out", out,
                  "--latency_runs", "0"]) == 0
    with open(os.path.join(out, "report.json")) as handle:
        assert json.load(handle)["latency"] is None


SLIM_CONFIG = """\
version: 1.0
pruners:
    pruner_1:
        class: 'StructurePruner'
        pruning_axis: {'*': 0}
        criterions: {'*': 'fpgm'}
strategies:
    uniform:
        class: 'UniformPruneStrategy'
        pruner: 'pruner_1'
        start_epoch: 0
        target_ratio: 0.4
        pruned_params: 'conv2d_.*\\.w_0'
compressor:
    epoch: 1
    checkpoint_path: './checkpoints/'
    strategies: [uniform]
"""


def test_options_from_slim_config(exported, tmp_path, capsys):
    slim_file = tmp_path / "slim.yaml"
    slim_file.write_text(SLIM_CONFIG)
    out = str(tmp_path / "out")
    assert prune(["--model_dir", exported["dir"], "-s", str(slim_file), "--out", out,
                  "--latency_runs", "0"]) == 0
    assert "not measured" in capsys.readouterr().out
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    assert report["criterion"] == "fpgm" and report["target_ratio"] == 0.4
    assert report["pruned_params"] == "conv2d_.*\\.w_0"
    assert report["options_from"] == str(slim_file)
    assert abs(report["flops_removed"] - 0.4) <= 0.01
    assert report["latency"] is None
    assert PrunePlan.load(os.path.join(out, "plan.json")).criterion == "fpgm"


def test_missing_model_dir(tmp_path, capsys):
    code, error = error_line(capsys, ["--model_dir", str(tmp_path / "nothing"), "--target_ratio",
                                      "0.5", "--out", str(tmp_path / "out")])
    assert code == 2 and "nothing' does not exist" in error
    assert not os.path.exists(tmp_path / "out")


def test_missing_params_file(exported, tmp_path, capsys):
    code, error = error_line(capsys, ["--model_dir", exported["dir"], "--params_filename",
                                      "model.pdiparams", "--target_ratio", "0.5",
                                      "--out", str(tmp_path / "out")])
    assert code == 2 and "model.pdiparams' does not exist" in error
    assert "did you mean 'inference.pdiparams'" in error


@pytest.mark.parametrize("option, value, expected", [
    ("--target_ratio", "1.5", "--target_ratio must be in (0, 1)"),
    ("--target_ratio", "0", "--target_ratio must be in (0, 1)"),
    ("--criterion", "l2_norm", "--criterion 'l2_norm' is not a pruning criterion; known: "
                               "activation, bn_scale, fpgm, l1_norm, taylor"),
    ("--pruned_params", "conv9_.*", "pruned_params 'conv9_.*' matches no conv weight"),
    ("--round_to", "0", "--round_to must be a positive integer, got 0"),
    ("--ratio", "0.3", "--ratio sets the channels removed directly: give it without "
                       "--target_ratio"),
])
def test_bad_option(exported, tmp_path, capsys, option, value, expected):
    argv = ["--model_dir", exported["dir"], "--target_ratio", "0.5", "--out",
            str(tmp_path / "out"), option, value]
    code, error = error_line(capsys, argv)
    assert code == 2 and expected in error
    assert not os.path.exists(tmp_path / "out")


def test_ratio_and_round_to(exported, tmp_path, capsys):
    """--ratio removes that fraction of every group's channels (no FLOPs target), --round_to
    keeps the counts at multiples of N; both in report.json."""
    from slim.prune.pruner import keep_count
    out = str(tmp_path / "out")
    assert prune(["--model_dir", exported["dir"], "--ratio", "0.3", "--round_to", "4",
                  "--out", out, "--latency_runs", "0"]) == 0
    assert "target" not in capsys.readouterr().out.splitlines()[0]
    plan = PrunePlan.load(os.path.join(out, "plan.json"))
    assert plan.groups and plan.target_ratio is None and plan.ratio == pytest.approx(0.3)
    for group in plan.groups:
        assert group.channels_after == keep_count(group.channels_before, 0.3, 4)
        assert group.channels_after % 4 == 0 or group.channels_after == group.channels_before
    assert any(keep_count(group.channels_before, 0.3, 4) != keep_count(group.channels_before, 0.3)
               for group in plan.groups)  # rounding mattered somewhere
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    assert report["round_to"] == 4 and report["target_ratio"] is None
    assert report["groups_moved"] == 0  # one ratio: nothing moved
    code, error = error_line(capsys, ["--model_dir", exported["dir"], "--ratio", "1", "--out",
                                      str(tmp_path / "bad")])
    assert code == 2 and "--ratio must be in (0, 1)" in error


def test_foreign_out_dir_left_alone(exported, tmp_path, capsys):
    """An OUT holding a user's file is refused before any work: even before the model is
    loaded (its params here are damaged, which loading would report)."""
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    with open(os.path.join(exported["dir"], "inference.pdmodel"), "rb") as handle:
        (damaged / "inference.pdmodel").write_bytes(handle.read())
    (damaged / "inference.pdiparams").write_bytes(b"\0" * 64)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    code, error = error_line(capsys, ["--model_dir", str(damaged), "--target_ratio", "0.5",
                                      "--out", str(out)])
    assert code == 2 and "notes.txt" not in error and "did not write" in error
    assert os.listdir(out) == ["notes.txt"]
    (out / "notes.txt").unlink()
    code, error = error_line(capsys, ["--model_dir", str(damaged), "--target_ratio", "0.5",
                                      "--out", str(out)])
    assert code == 2 and "damaged" in error and "not Paddle's tensor format" in error


def test_handmade_pir_model(tmp_path, capsys):
    model_dir = tmp_path / "pir"
    model_dir.mkdir()
    (model_dir / "inference.json").write_text('{"base_code": {"magic": "pir"}}')
    (model_dir / "inference.pdiparams").write_bytes(b"\0" * 8)
    for named in ([], ["--model_filename", "inference.json"]):
        code, error = error_line(capsys, ["--model_dir", str(model_dir), "--target_ratio", "0.5",
                                          "--out", str(tmp_path / "out"), *named])
        if pir_supported():  # Paddle 3 reads it as PIR, and says the file is broken
            assert code == 2 and "Paddle cannot load the inference model" in error
        else:
            assert code == 2 and "new-IR (PIR) program" in error and \
                "FLAGS_enable_pir_api=0" in error and "paddlepaddle>=3" in error


PIR_SAVE = """
import sys, paddle
net = paddle.nn.Sequential(paddle.nn.Conv2D(3, 8, 3), paddle.nn.ReLU(), paddle.nn.Conv2D(8, 4, 3))
net.eval()
paddle.jit.save(net, sys.argv[1], input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32")])
"""


@pytest.mark.skipif(int(paddle.__version__.split(".")[0]) < 3, reason="PIR is Paddle 3's")
def test_pir_model_saved_by_paddle(tmp_path, capsys):
    """A model `paddle.jit.save` wrote in Paddle 3's default new IR is pruned into `.json` +
    `.pdiparams`; the same script with FLAGS_enable_pir_api=0 saves a classic one (the advice
    the message gives on Paddle 2.6) that the command finds too."""
    env = {key: value for key, value in os.environ.items() if key != "FLAGS_enable_pir_api"}
    for name, flag in (("pir", None), ("classic", "0")):
        run_env = dict(env, **({"FLAGS_enable_pir_api": flag} if flag else {}))
        subprocess.run([sys.executable, "-c", PIR_SAVE, str(tmp_path / name / "inference")],
                       check=True, env=run_env, capture_output=True)
    assert sorted(os.listdir(tmp_path / "pir")) == ["inference.json", "inference.pdiparams"]
    assert prune(["--model_dir", str(tmp_path / "pir"), "--target_ratio", "0.25",
                  "--input_shape", "3,8,8", "--out", str(tmp_path / "out"),
                  "--latency_runs", "0"]) == 0
    assert sorted(os.listdir(tmp_path / "out")) == sorted([
        OWNER_MARKER, "inference.json", "inference.pdiparams", PLAN_NAME, REPORT_NAME])
    files = find_model_files(str(tmp_path / "classic"))
    assert (files.model_filename, files.params_filename) == ("inference.pdmodel",
                                                             "inference.pdiparams")


def export_fully_convolutional(model_dir):
    """A net whose fetch target is a conv's output (6 channels, like a detector head), saved
    with unknown height and width ([-1, 3, -1, -1])."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [None, 3, None, None], "float32")
        hidden = image
        for channels in (16, 32):
            hidden = paddle.static.nn.conv2d(hidden, channels, 3, padding=1, act="relu")
        head = paddle.static.nn.conv2d(hidden, 6, 1)
    scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
    with paddle.static.scope_guard(scope):
        executor.run(startup)
        randomize(main, scope)
        paddle.static.save_inference_model(os.path.join(model_dir, "inference"), [image], [head],
                                           executor, program=main)


def test_fetch_target_keeps_shape_and_input_shape(tmp_path, capsys):
    """The conv whose output is fetched keeps its 6 channels; a feed of unknown size needs
    --input_shape, which sets the size FLOPs are counted at while the pruned model keeps
    taking any size."""
    model_dir, out = str(tmp_path / "fcn"), str(tmp_path / "out")
    export_fully_convolutional(model_dir)
    code, error = error_line(capsys, ["--model_dir", model_dir, "--target_ratio", "0.5",
                                      "--out", out])
    assert code == 2 and "--input_shape image=3,N,N" in error and not os.path.exists(out)
    assert prune(["--model_dir", model_dir, "--target_ratio", "0.5", "--out", out,
                  "--input_shape", "image=3,20,20", "--latency_runs", "1"]) == 0
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    assert report["feeds"] == {"image": [1, 3, 20, 20]}
    macs_per_pixel = 16 * 3 * 9 + 32 * 16 * 9 + 6 * 32 + 16 + 32 + 6  # convs, bias adds
    assert report["before"]["flops"] == 20 * 20 * macs_per_pixel
    assert abs(report["flops_removed"] - 0.5) <= 0.01
    for size in (12, 24):  # still any size
        feeds = {"image": np.random.RandomState(size).rand(1, 3, size, size).astype("float32")}
        (pruned,) = predict(out, feeds)
        assert pruned.shape == (1, 6, size, size)


def test_reshape_sized_at_run_time_counts_at_the_input_shape(tmp_path, capsys):
    """A model whose reshape takes its shape from `shape` + `slice` ops (the PP-OCRv4
    recognizer's attention: 'matmul_v2 ... has unknown dims [-1, 8, -1, 15]' before) is
    counted at --input_shape by one run, and prunes."""
    from test_prune_shapes import run_time_reshape
    program, scope, out_var = run_time_reshape()
    model_dir, out = str(tmp_path / "attention"), str(tmp_path / "out")
    with paddle.static.scope_guard(scope):
        randomize(program, scope)
        paddle.static.save_inference_model(
            os.path.join(model_dir, "inference"), [program.global_block().var("image")],
            [out_var], paddle.static.Executor(CPU), program=program)
    assert prune(["--model_dir", model_dir, "--pruned_params", "a_weights", "--target_ratio",
                  "0.34", "--out", out, "--input_shape", "3,12,10", "--latency_runs", "0"]) == 0
    with open(os.path.join(out, "report.json")) as handle:
        report = json.load(handle)
    assert report["before"]["flops"] == 8 * 27 * 120 + 6 * 8 * 120 + 120 * 4 * 6 + 1
    assert report["after"]["flops"] == 5 * 27 * 120 + 6 * 5 * 120 + 120 * 4 * 6 + 1
    feeds = {"image": np.random.RandomState(4).rand(2, 3, 8, 6).astype("float32")}  # any size
    (pruned,) = predict(out, feeds)
    _, masked = masked_reference(model_dir, PrunePlan.load(os.path.join(out, "plan.json")), feeds)
    assert pruned.shape == masked.shape == (2, 48, 4)
    assert np.abs(pruned - masked).max() <= RELATIVE * np.abs(masked).max()


def test_bn_scale_without_batch_norm_names_the_fix(tmp_path, capsys):
    """An exported model without batch norm (folded into the convs, as PaddleOCR's are):
    --criterion bn_scale is one line naming the criteria that work, nothing written."""
    model_dir, out = str(tmp_path / "fcn"), str(tmp_path / "out")
    export_fully_convolutional(model_dir)
    code, error = error_line(capsys, ["--model_dir", model_dir, "--target_ratio", "0.3",
                                      "--criterion", "bn_scale", "--input_shape", "3,16,16",
                                      "--out", out])
    assert code == 2 and not os.path.exists(out)
    assert "criterion bn_scale needs a batch norm on the channels" in error
    assert "use criterion l1_norm or fpgm, or activation with calibration images" in error


def tree_digest(root, skip=None):
    """{relative path: sha256 or link target} of every entry under `root` (symlinks not
    followed), leaving out `skip` and what is under it: what a run must not change."""
    import hashlib
    digest = {}
    for directory, dirs, files in os.walk(root):
        for name in sorted(dirs + files):
            path = os.path.join(directory, name)
            if skip and (path == skip or path.startswith(skip + os.sep)):
                continue
            key = os.path.relpath(path, root)
            if os.path.islink(path):
                digest[key] = "-> " + os.readlink(path)
            elif os.path.isfile(path):
                with open(path, "rb") as handle:
                    digest[key] = hashlib.sha256(handle.read()).hexdigest()
            else:
                digest[key] = "dir"
    return digest


HOSTILE_RUNS = {
    # (extra argv with {model} / {root} placeholders, --out relative to root, error expected)
    "absolute model name": (["--model_filename", "{model}/inference.pdmodel"], "out", True),
    "absolute params name": (["--params_filename", "{model}/inference.pdiparams"], "out", True),
    "../ model name": (["--model_filename", "../model/inference.pdmodel"], "out", True),
    "../ params name": (["--params_filename", "../model/inference.pdiparams"], "out", True),
    "params name '..'": (["--params_filename", ".."], "out", True),
    "out is the model dir": ([], "model", True),
    "out inside the model dir": ([], "model/pruned", False),
    "out is the parent of the model dir": ([], ".", True),
    "out is a symlink to the model dir": ([], "link_to_model", True),
    "out a symlink to an empty dir": ([], "link_to_fresh", True),
    "model dir of symlinked files": (["--model_dir", "{root}/linked"], "out", False),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_RUNS))
def test_prune_never_changes_a_byte_outside_out(exported, tmp_path, capsys, case):
    """Hostile file names, symlinks and --out placements: the whole input tree (the model,
    the dirs around it, the symlinks) has the same bytes after the run, refused or not."""
    import shutil
    argv_extra, out_name, refused = HOSTILE_RUNS[case]
    model = tmp_path / "model"
    shutil.copytree(exported["dir"], model)
    linked = tmp_path / "linked"
    linked.mkdir()
    for name in os.listdir(model):
        os.symlink(model / name, linked / name)
    (tmp_path / "fresh").mkdir()
    os.symlink(model, tmp_path / "link_to_model")
    os.symlink(tmp_path / "fresh", tmp_path / "link_to_fresh")
    fill = {"model": str(model), "root": str(tmp_path)}
    argv_extra = [part.format(**fill) for part in argv_extra]
    out = os.path.normpath(os.path.join(tmp_path, out_name))
    argv = ["--model_dir", str(model), "--target_ratio", "0.5", "--latency_runs", "0",
            "--out", out, *argv_extra]
    skip = None if refused else os.path.realpath(out)
    before = tree_digest(str(tmp_path), skip=skip)
    if refused:
        code, error = error_line(capsys, argv)
        assert code == 2, error
    else:
        assert prune(argv) == 0
        capsys.readouterr()
        assert sorted(os.listdir(os.path.realpath(out))) == [
            ".slim-owned", "inference.pdiparams", "inference.pdmodel", PLAN_NAME, REPORT_NAME]
    assert tree_digest(str(tmp_path), skip=skip) == before


def test_a_saved_file_name_with_a_directory_part_is_refused(exported, tmp_path):
    """The saver's own guard: a program whose parameter names lead out of the output dir
    (saved one file per parameter) writes nothing outside it."""
    from slim.errors import UserError
    from slim.io.inference_model import save_inference_model
    executor, scope = paddle.static.Executor(CPU), paddle.static.Scope()
    model = load_inference_model(find_model_files(exported["dir"]), executor, scope)
    target = tmp_path / "target"
    target.mkdir()
    for bad in ("../outside.pdmodel", str(tmp_path / "outside.pdmodel")):
        with pytest.raises(UserError, match="must be a plain file name"):
            save_inference_model(model, executor, scope, str(target), bad, "inference.pdiparams")
    assert os.listdir(target) == [] and not os.path.exists(tmp_path / "outside.pdmodel")


def per_parameter_copy(exported, target):
    """The exported model saved again as `__model__` + one file per parameter in `target`;
    the names of the parameter files."""
    from slim.io.inference_model import save_inference_model
    executor, scope = paddle.static.Executor(CPU), paddle.static.Scope()
    model = load_inference_model(find_model_files(exported["dir"]), executor, scope)
    os.makedirs(target)
    return save_inference_model(model, executor, scope, str(target), "__model__", None)[1:]


def damage(path, how):
    data = path.read_bytes()
    path.write_bytes({"4 bytes short": data[:-4], "1 byte extra": data + b"\0",
                      "empty": b""}[how])


HOSTILE_PARAMS = {
    # case: (layout, what is done to it, words the one error line must hold)
    "combined 4 bytes short": ("combined", "4 bytes short", "is truncated"),
    "combined 1 byte extra": ("combined", "1 byte extra", "not Paddle's tensor format"),
    "combined empty": ("combined", "empty", "holds 0 tensors"),
    "combined of another model": ("combined", "another model", "holds"),
    "per-file 4 bytes short": ("per-file", "4 bytes short", "is truncated (4 bytes short)"),
    "per-file 1 byte extra": ("per-file", "1 byte extra", "has 1 bytes after its tensor"),
    "per-file missing": ("per-file", "missing", "is missing"),
    "per-file of another shape": ("per-file", "another shape", "does not fit"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE_PARAMS))
def test_prune_refuses_params_that_do_not_fit(exported, tmp_path, capsys, case):
    """Rule (b): the params of the model to prune are checked structurally before Paddle
    loads them, in both layouts (Paddle's loader fills a short file's last weights with
    zeros and prunes those, exit 0). One error line naming the file, nothing written."""
    import shutil
    layout, how, expected = HOSTILE_PARAMS[case]
    model = tmp_path / "model"
    if layout == "combined":
        shutil.copytree(exported["dir"], model)
        params = model / "inference.pdiparams"
        if how == "another model":  # the params of a pruned copy: fewer channels
            assert prune(["--model_dir", exported["dir"], "--target_ratio", "0.5",
                          "--latency_runs", "0", "--out", str(tmp_path / "pruned")]) == 0
            capsys.readouterr()
            shutil.copy(tmp_path / "pruned" / "inference.pdiparams", params)
            expected = "does not fit"
        else:
            damage(params, how)
    else:
        names = per_parameter_copy(exported, model)
        victim = model / sorted(names)[-1]  # the last one, whose loss Paddle fills with zeros
        if how == "missing":
            victim.unlink()
        elif how == "another shape":
            shutil.copy(model / sorted(names)[0], victim)
        else:
            damage(victim, how)
    code, error = error_line(capsys, ["--model_dir", str(model), "--target_ratio", "0.5",
                                      "--latency_runs", "0", "--out", str(tmp_path / "out")])
    assert code == 2 and expected in error, error
    assert str(model) in error
    assert not os.path.exists(tmp_path / "out")


def test_prune_of_a_per_parameter_model(exported, tmp_path, capsys):
    """The per-parameter layout passes the structural check when whole (the check is not
    simply refusing it) and is pruned into the same layout."""
    names = per_parameter_copy(exported, tmp_path / "model")
    assert prune(["--model_dir", str(tmp_path / "model"), "--target_ratio", "0.5",
                  "--latency_runs", "0", "--out", str(tmp_path / "out")]) == 0
    capsys.readouterr()
    assert set(names) <= set(os.listdir(tmp_path / "out"))


@pytest.mark.parametrize("onednn", [True, False, None])
def test_inference_config_sets_onednn_as_asked(exported, onednn):
    """latency-table's paddle-onednn / paddle runtimes and the default, through one function."""
    from slim.io.inference_model import inference_config
    config = inference_config(find_model_files(exported["dir"]), threads=2, onednn=onednn)
    assert config.cpu_math_library_num_threads() == 2
    if onednn is not None:
        assert config.mkldnn_enabled() is onednn
