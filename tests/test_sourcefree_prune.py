"""`python -m slim prune --images`: fidelity report, reconstruction, recovery by distillation
(with a kill -9 and resume), on the tiny planted model of sourcefree_models.py; and the
fidelity measures on hand-made outputs."""
import json
import os
import subprocess
import sys

import numpy as np
import paddle
import pytest
from sourcefree_models import planted_model, write_images

from slim.__main__ import main as slim_main
from slim.io.inference_model import find_model_files, load_inference_model
from slim.prune import analyze_program, apply_plan, plan_pruning
from slim.sourcefree.fidelity import agreement, compare_outputs, ctc_decode, poor_fidelity_warning
from slim.sourcefree.recover import KILL_ENV
from slim.sourcefree.session import SourceFreeOptions, SourceFreeSession

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPU = paddle.CPUPlace()
PREPROCESS = ["--preprocess", "size=8,8", "mean=0", "std=1"]


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("sourcefree_prune")
    info = planted_model(str(root / "model"))
    info["images"] = write_images(str(root / "images"), 48)
    info["root"] = str(root)
    return info


def prune_args(planted, out, *extra):
    return ["prune", "--model_dir", planted["dir"], "--pruned_params", "conv1_w",
            "--target_ratio", "0.245", "--images", planted["images"], "--held_out", "16",
            *PREPROCESS, "--out", out, "--latency_runs", "0", *extra]


def test_every_prune_prints_its_fidelity_and_warns_when_poor(planted, capsys, tmp_path):
    out = str(tmp_path / "l1")
    # dense at 0.2: the planted map's mask agrees on 1 image in 3 after l1 (0.33 measured)
    assert slim_main(prune_args(planted, out, "--criterion", "l1_norm", "--task", "dense",
                                "--threshold", "0.2")) == 0
    captured = capsys.readouterr()
    assert "fidelity (one-shot) on 16 held-out images" in captured.out
    with open(os.path.join(out, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    fidelity = report["fidelity"]["one_shot"]
    (record,) = fidelity["outputs"].values()
    assert record["task"] == "dense" and record["images"] == 16
    assert report["images"]["held_out"] == 16 and report["images"]["calibration"] == 32
    assert record["relative_l2_median"] > 0.05  # l1 removed the vital channel
    warnings = [line for line in captured.err.splitlines() if "agrees with the unpruned" in line
                or "outputs differ" in line]
    assert fidelity["agreement"] < 0.5 and len(warnings) == 1, (fidelity, captured.err)
    out = str(tmp_path / "act")
    assert slim_main(prune_args(planted, out, "--criterion", "activation")) == 0
    captured = capsys.readouterr()
    with open(os.path.join(out, "report.json"), encoding="utf-8") as handle:
        good = json.load(handle)["fidelity"]["one_shot"]
    assert good["relative_l2"] < 1e-6 and good["agreement"] == 1.0  # the dead channel went
    assert "warning" not in captured.err.replace("warning: skipping", "")


def _loaded_session(planted):
    """(executor, scope, model, SourceFreeSession, graph) of the planted model, unpruned."""
    executor, scope = paddle.static.Executor(CPU), paddle.static.Scope()
    files = find_model_files(planted["dir"])
    model = load_inference_model(files, executor, scope)
    session = SourceFreeSession(files, model, executor, SourceFreeOptions(
        images=planted["images"], held_out=8, preprocess=("size=8,8", "mean=0", "std=1")),
        log=lambda message: None)
    graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
    return executor, scope, model, session, graph


def test_reconstruction_lowers_the_known_layers_output_error(planted):
    """l1 removes conv1's vital channel; refitting conv2 (its reader) by least squares brings
    conv2's output back towards the unpruned model's."""
    executor, scope, model, session, graph = _loaded_session(planted)
    plan = plan_pruning(model.program, scope, "conv1_w", ratio=0.5, graph=graph)
    apply_plan(plan, [model.program], scope, graphs=[graph])
    ops = model.program.global_block().ops
    conv2 = next(op.output("Output")[0] for op in ops
                 if op.type == "conv2d" and op.input("Filter")[0] == "conv2_w")
    # the layer's output: conv2 and its bias (the refit moves an intercept into the bias)
    conv2_out = next(op.output("Out")[0] for op in ops
                     if op.type == "elementwise_add" and op.input("X") == [conv2])

    def conv2_error():
        from slim.sourcefree.programs import ProgramRunner
        student = ProgramRunner(model.program, scope, executor, model.feed_names)
        pruned = student.outputs(session.images.held_out, [conv2_out])[conv2_out]
        unpruned = session.teacher_runner.outputs(session.images.held_out, [conv2_out])[conv2_out]
        return np.linalg.norm(np.stack(pruned) - np.stack(unpruned)) / np.linalg.norm(
            np.stack(unpruned))
    before, fidelity_before = conv2_error(), session.fidelity(model, scope)["relative_l2"]
    results = session.reconstruct(plan, graph, model, scope)
    after, fidelity_after = conv2_error(), session.fidelity(model, scope)["relative_l2"]
    assert [r["weight"] for r in results] == ["conv2_w"]
    assert results[0]["error_after"] < results[0]["error_before"]
    assert before > 0.2 and after < 0.5 * before, (before, after)  # on held-out images too
    assert fidelity_after < fidelity_before


def test_reconstruction_refits_a_fully_connected_reader(planted):
    """Channels of conv2 removed: the fc reading them (through the mean) is refitted too."""
    executor, scope, model, session, graph = _loaded_session(planted)
    plan = plan_pruning(model.program, scope, "conv2_w", ratio=0.34, graph=graph)
    assert [len(group.removed) for group in plan.groups] == [1]
    apply_plan(plan, [model.program], scope, graphs=[graph])
    results = session.reconstruct(plan, graph, model, scope)
    fc = [r for r in results if r["weight"] == "fc_w"]
    assert fc and fc[0]["kind"] == "fc", results
    assert fc[0]["error_after"] < fc[0]["error_before"]


def _run(argv, env=None):
    return subprocess.run([sys.executable, "-m", "slim", *argv], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})})


def _params(model_dir):
    executor, scope = paddle.static.Executor(CPU), paddle.static.Scope()
    model = load_inference_model(find_model_files(model_dir), executor, scope)
    return {var.name: np.array(scope.find_var(var.name).get_tensor())
            for var in model.program.list_vars() if var.persistable and var.name not in
            ("feed", "fetch")}


def test_recovery_raises_fidelity_and_resumes_after_kill_9(planted, tmp_path):
    common = ["--criterion", "l1_norm", "--recover_iters", "60", "--recover_lr", "0.01",
              "--batch_size", "8", "--checkpoint_every", "10", "--task", "classify"]
    whole = _run(prune_args(planted, str(tmp_path / "whole"), *common, "--checkpoint_dir",
                            str(tmp_path / "ckpt_whole")))
    assert whole.returncode == 0, whole.stderr[-2000:]
    with open(tmp_path / "whole" / "report.json", encoding="utf-8") as handle:
        report = json.load(handle)
    one_shot, recovered = report["fidelity"]["one_shot"], report["fidelity"]["recovered"]
    assert recovered["relative_l2"] < 0.5 * one_shot["relative_l2"], (one_shot, recovered)
    assert recovered["agreement"] >= one_shot["agreement"]
    assert report["recovery"]["last_loss"] < report["recovery"]["first_loss"]
    assert "recovery 60/60 loss" in whole.stderr and "eta" in whole.stderr
    killed = _run(prune_args(planted, str(tmp_path / "resumed"), *common, "--checkpoint_dir",
                             str(tmp_path / "ckpt")), env={KILL_ENV: "35"})
    assert killed.returncode == -9
    assert not os.path.exists(tmp_path / "resumed")
    assert sorted(os.listdir(tmp_path / "ckpt"), key=lambda n: (len(n), n))[-1] == "30"
    resumed = _run(prune_args(planted, str(tmp_path / "resumed"), *common, "--checkpoint_dir",
                              str(tmp_path / "ckpt")))
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resuming recovery from" in resumed.stderr and "(iteration 30 of 60)" in resumed.stderr
    first, second = _params(str(tmp_path / "whole")), _params(str(tmp_path / "resumed"))
    assert sorted(first) == sorted(second)
    for name in first:
        np.testing.assert_allclose(second[name], first[name], rtol=1e-5, atol=1e-7, err_msg=name)
    other = _run(prune_args(planted, str(tmp_path / "other"), "--criterion", "activation",
                            *common[2:], "--checkpoint_dir", str(tmp_path / "ckpt")))
    assert other.returncode == 2 and "holds a recovery of another prune" in other.stderr


def test_options_needing_images_are_one_line_errors(planted, capsys, tmp_path):
    for extra, message in ((["--criterion", "taylor"], "--criterion taylor needs calibration "
                                                       "images"),
                           (["--recover_iters", "5"], "--recover_iters needs calibration"),
                           (["--reconstruct"], "--reconstruct needs calibration")):
        with pytest.raises(SystemExit) as stop:
            slim_main(["prune", "--model_dir", planted["dir"], "--target_ratio", "0.1",
                       "--out", str(tmp_path / "x"), *extra])
        code = stop.value.code
        err = capsys.readouterr().err
        assert code == 2 and message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "x")


def test_fidelity_measures_on_hand_made_outputs():
    assert ctc_decode(np.eye(4)[[0, 2, 2, 0, 2, 3, 3]]) == (2, 2, 3)
    assert agreement("sequence", np.eye(4)[[1, 1, 0, 2]], np.eye(4)[[1, 0, 1, 2]]) == 0.0
    assert agreement("sequence", np.eye(4)[[1, 1, 0, 2]], np.eye(4)[[1, 0, 0, 2]]) == 1.0
    assert agreement("classify", [0.1, 0.7, 0.2], [0.3, 0.4, 0.3]) == 1.0
    ref = np.zeros((1, 4, 4))
    ref[0, :2, :2] = 0.9
    cand = np.zeros((1, 4, 4))
    cand[0, :2, :1] = 0.9
    assert agreement("dense", ref, cand) == pytest.approx(0.5)
    boxes = np.array([[0, 0.9, 0, 0, 10, 10], [1, 0.8, 20, 20, 30, 30], [1, 0.1, 0, 0, 1, 1]])
    moved = np.array([[0, 0.7, 1, 1, 11, 11], [0, 0.9, 20, 20, 30, 30]])
    assert agreement("detect", boxes, moved) == 0.5  # class 1's box has no same-class match
    record = compare_outputs([np.array([3.0, 4.0])], [np.array([3.0, 5.0])], task="auto")
    assert record["task"] == "classify"
    assert record["relative_l2_median"] == pytest.approx(0.2)
    assert record["cosine_median"] == pytest.approx(29 / (5 * np.sqrt(34)))
    poor = {"outputs": {"p": {"images": 10, "task": "classify", "agreement": 0.5}},
            "agreement": 0.5, "relative_l2": 0.1}
    assert poor_fidelity_warning(poor).startswith("warning: the pruned model agrees with the "
                                                  "unpruned model on only 50% of 10")
    poor["agreement"] = 0.95
    assert poor_fidelity_warning(poor) is None


def test_bounded_search_prunes_the_largest_cut_within_the_error(planted, capsys, tmp_path):
    """conv1 alone: removing its dead channel costs nothing, any second channel a lot. With
    activation the largest cut within 1e-4 output error is the dead channel's (-24.6% FLOPs);
    with l1_norm (which removes the vital channel first) no cut stays within it."""
    out = str(tmp_path / "bounded")
    argv = ["prune", "--model_dir", planted["dir"], "--pruned_params", "conv1_w", "--images",
            planted["images"], "--held_out", "16", *PREPROCESS, "--out", out,
            "--latency_runs", "0", "--max_output_error", "1e-4"]
    assert slim_main(argv + ["--criterion", "activation"]) == 0
    with open(os.path.join(out, "report.json"), encoding="utf-8") as handle:
        report = json.load(handle)
    assert report["groups"] == 1 and report["flops_removed"] == pytest.approx(0.2463, abs=2e-3)
    with open(os.path.join(out, "plan.json"), encoding="utf-8") as handle:
        (group,) = json.load(handle)["groups"]
    assert group["kept"] == [1, 2, 3]
    assert report["fidelity"]["one_shot"]["relative_l2"] <= 1e-4
    assert any(not step["ok"] for step in report["search"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as stop:
        slim_main(argv + ["--criterion", "l1_norm", "--out", str(tmp_path / "l1")])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "no FLOPs cut down to" in err and "Traceback" not in err


def test_recovery_trains_learned_affine_scalars_of_a_model_without_batch_norm(tmp_path):
    from sourcefree_models import affine_model
    info = affine_model(str(tmp_path / "affine"))
    images = write_images(str(tmp_path / "images"), 24, seed=3)
    executor, scope = paddle.static.Executor(CPU), paddle.static.Scope()
    files = find_model_files(info["dir"])
    model = load_inference_model(files, executor, scope)
    session = SourceFreeSession(files, model, executor, SourceFreeOptions(
        images=images, held_out=8, preprocess=("size=8,8", "mean=0", "std=1"),
        recover_iters=40, recover_lr=0.01, batch_size=8), log=lambda message: None)
    graph = analyze_program(model.program, fixed_vars=[v.name for v in model.fetch_vars])
    plan = plan_pruning(model.program, scope, "conv1_w", ratio=0.5, graph=graph)
    apply_plan(plan, [model.program], scope, graphs=[graph])
    before = session.fidelity(model, scope)["relative_l2"]
    affine = {name: float(np.array(scope.find_var(name).get_tensor())[0])
              for name in ("affine_scale", "affine_bias")}
    summary = session.recover(model, scope)
    after = session.fidelity(model, scope)["relative_l2"]
    assert summary["last_loss"] < summary["first_loss"] and after < 0.7 * before, (before, after)
    for name, value in affine.items():  # the learned scalars were trained, not frozen
        assert float(np.array(scope.find_var(name).get_tensor())[0]) != value, name
