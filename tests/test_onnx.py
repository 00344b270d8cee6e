"""ONNX export (`python -m slim export --format onnx`) and onnxruntime inference: the ONNX
model's detections equal Paddle Inference's on real detections (the fitted demo model,
tests/fitted_model.py, and a pruned copy of it), and infer.py runs the .onnx file with
the model's infer_cfg.yml."""
import json
import os
import shutil

import numpy as np
import pytest
from fitted_model import (
    DEMO_CONFIG,
    eval_batch,
    fit_until_map_1,
    fitted_infer_config,
    fitted_model,
    fitting_programs,
    ground_truth_from_xml,
    predictor_detections,
)

pytest.importorskip("onnxruntime", reason="onnxruntime is not installed (requirements/common.txt)")
pytest.importorskip("paddle2onnx", reason="paddle2onnx is not installed (requirements/common.txt)")

import infer as infer_cli
from slim.__main__ import main as slim_main
from slim.errors import UserError
from slim.io.onnx_export import (
    ONNX_MODEL_NAME,
    export_onnx,
    onnx_session,
    run_onnx,
    with_squeeze_axes,
)
from slim.io.output_places import WRITTEN_LIST, foreign_entries

# Paddle Inference and onnxruntime sum the same convolutions in different orders (oneDNN /
# MLAS kernels): float32 rounding moves scores by ~1e-6 and boxes, in pixels of a 128 px
# image, by ~1e-4. The bounds below leave two orders of magnitude of room and are far
# below what any real difference (a wrong channel, a wrong anchor, a missing clip) makes.
SCORE_ATOL = 1e-4
BOX_ATOL_PX = 1e-2
PRUNE_RATIO = 0.3


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fitted_model(tmp_path_factory)


@pytest.fixture(scope="module")
def batch(fitted):
    return eval_batch(fitted)


@pytest.fixture(scope="module")
def models(fitted, tmp_path_factory):
    """{"baseline": a copy of the fitted model dir, "pruned": the fitted model pruned with
    'auto' at ratio 0.3, fine-tuned and exported}, each with its model.onnx written by
    `python -m slim export`."""
    root = tmp_path_factory.mktemp("onnx_models")
    baseline = str(root / "baseline")
    shutil.copytree(fitted["model_dir"], baseline)
    pruned = str(root / "pruned")
    _export_pruned(fitted, pruned)
    for model_dir in (baseline, pruned):
        assert slim_main(["export", "--format", "onnx", "--model_path", model_dir]) == 0
    return {"baseline": baseline, "pruned": pruned}


def _export_pruned(fitted, out_dir):
    """The fitted model pruned ('auto': every prunable conv, ratio 0.3, l1_norm), fine-tuned
    on its 4 images until it scores mAP 1.0 again (pruned alone it scores nothing above
    NMS's 0.01 threshold: no detections to compare), exported with its infer_cfg.yml into
    `out_dir`; returns the iterations it took."""
    from slim.config import load_config
    from slim.io import export
    from slim.io.weights import load_weights
    from slim.prune import apply_plan, plan_pruning
    train, evaluation, scope, executor = fitting_programs(load_config(DEMO_CONFIG, fitted["overrides"]))
    load_weights(scope, evaluation.program, fitted["weights"])
    plan = plan_pruning(evaluation.program, scope, "auto", ratio=PRUNE_RATIO)
    assert plan.groups and all(group.channels_after < group.channels_before
                               for group in plan.groups)
    apply_plan(plan, [train.program, evaluation.program], scope)
    iterations, score = fit_until_map_1(train, evaluation, scope, executor, eval_batch(fitted),
                                        ground_truth_from_xml(fitted["data"], "test.txt"))
    assert score == 1.0, (iterations, score)
    export.export_model(evaluation, scope, executor, out_dir,
                        infer_config=fitted_infer_config(fitted))
    return iterations


def onnx_detections(model_dir, batch, path=None):
    """Per-image detections of `batch` by onnxruntime running `path` (default
    `model_dir`/model.onnx)."""
    from slim.model import split_detections
    session = onnx_session(path or os.path.join(model_dir, ONNX_MODEL_NAME))
    return split_detections(*run_onnx(session, batch))


def by_class_then_score(rows):
    """`rows` in Paddle's NMS output order: by label, then by score, highest first (ONNX
    NonMaxSuppression gives the same rows ordered by score alone)."""
    return rows[np.lexsort((-rows[:, 1], rows[:, 0]))]


def assert_same_detections(actual, wanted):
    """Same number of boxes per image, labels exactly, scores and boxes within the bounds."""
    assert [len(rows) for rows in actual] == [len(rows) for rows in wanted]
    for got, expected in zip(actual, wanted):
        got, expected = by_class_then_score(got), by_class_then_score(expected)
        np.testing.assert_array_equal(got[:, 0], expected[:, 0])
        np.testing.assert_allclose(got[:, 1], expected[:, 1], rtol=0, atol=SCORE_ATOL)
        np.testing.assert_allclose(got[:, 2:], expected[:, 2:], rtol=0, atol=BOX_ATOL_PX)


@pytest.mark.parametrize("name", ["baseline", "pruned"])
def test_onnx_detections_equal_paddle_inference(models, batch, name):
    wanted = predictor_detections(models[name], batch)
    assert all(len(rows) > 0 for rows in wanted)  # real detections in every image
    assert max(float(rows[:, 1].max()) for rows in wanted) > 0.5
    assert_same_detections(onnx_detections(models[name], batch), wanted)


def test_the_pruned_model_is_smaller_and_still_detects(models):
    sizes = {name: os.path.getsize(os.path.join(path, ONNX_MODEL_NAME))
             for name, path in models.items()}
    assert sizes["pruned"] < 0.8 * sizes["baseline"], sizes


def test_export_records_the_file_and_a_rerun_replaces_it(models):
    model_dir = models["baseline"]
    with open(os.path.join(model_dir, WRITTEN_LIST)) as handle:
        assert ONNX_MODEL_NAME in json.load(handle)["files"]
    before = os.path.getmtime(os.path.join(model_dir, ONNX_MODEL_NAME))
    assert export_onnx(model_dir) == os.path.join(model_dir, ONNX_MODEL_NAME)
    assert os.path.getmtime(os.path.join(model_dir, ONNX_MODEL_NAME)) >= before


def test_export_refuses_a_file_it_did_not_write_before_converting(models, tmp_path, monkeypatch):
    target = tmp_path / "mine.onnx"
    target.write_bytes(b"the user's own file")
    from slim.io import onnx_export
    monkeypatch.setattr(onnx_export, "onnx_model_bytes",
                        lambda *a, **k: pytest.fail("converted before checking --out"))
    with pytest.raises(UserError, match="mine.onnx' exists and was not written by this tool"):
        export_onnx(models["baseline"], str(target))
    assert target.read_bytes() == b"the user's own file"


@pytest.mark.parametrize("out, opset, message", [
    ("model.txt", 11, "must end with .onnx"),
    ("model.onnx", 9, r"--opset 9 is out of range: yolo_box needs opset 11 or higher; "
                      r"choose one in \[11, "),
    ("model.onnx", 99, r"--opset 99 is out of range: paddle2onnx 1.3.1 converts these models "
                       r"to opsets up to 17; choose one in \[11, 17\] \(default 11\)"),
])
def test_export_option_errors_are_one_line(models, tmp_path, out, opset, message):
    with pytest.raises(UserError, match=message):
        export_onnx(models["baseline"], str(tmp_path / out), opset)


def test_export_of_a_missing_model_creates_no_output_dir(tmp_path):
    with pytest.raises(UserError, match="__model__.infer' does not exist"):
        export_onnx(str(tmp_path / "no_model"), str(tmp_path / "new_dir" / "model.onnx"))
    assert not os.path.exists(tmp_path / "new_dir")


def test_export_of_a_damaged_model_names_the_file(models, tmp_path):
    damaged = str(tmp_path / "damaged")
    shutil.copytree(models["baseline"], damaged)
    with open(os.path.join(damaged, "__params__"), "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(UserError, match="__params__"):
        export_onnx(damaged, str(tmp_path / "out.onnx"))
    assert not os.path.exists(tmp_path / "out.onnx")


def test_infer_py_runs_the_onnx_model_like_the_paddle_model(models, fitted, tmp_path):
    """infer.py with --model_name model.onnx (onnxruntime, preprocessing and names from
    infer_cfg.yml) writes the same detections.json as with the Paddle program."""
    results = {}
    for model_name in ("__model__.infer", ONNX_MODEL_NAME):
        out = tmp_path / model_name.replace(".", "_")
        infer_cli.main(["--model_path", models["baseline"], "--model_name", model_name,
                        "--infer_dir", fitted["images"], "--output_dir", str(out),
                        "--draw_threshold", "0.3"])
        with open(out / "detections.json") as handle:
            results[model_name] = json.load(handle)["images"]
    paddle_images, onnx_images = results["__model__.infer"], results[ONNX_MODEL_NAME]
    assert sum(len(image["detections"]) for image in paddle_images) > 0
    assert [image["image"] for image in onnx_images] == [image["image"] for image in paddle_images]
    for onnx_image, paddle_image in zip(onnx_images, paddle_images):
        onnx_rows, paddle_rows = (sorted(image["detections"], key=lambda d: (d["label"], -d["score"]))
                                  for image in (onnx_image, paddle_image))
        assert [d["name"] for d in onnx_rows] == [d["name"] for d in paddle_rows]
        for got, wanted in zip(onnx_rows, paddle_rows):
            assert got["score"] == pytest.approx(wanted["score"], abs=SCORE_ATOL)
            np.testing.assert_allclose(got["bbox"], wanted["bbox"], atol=BOX_ATOL_PX + 0.01)


def test_infer_py_names_a_missing_onnx_file(models, fitted, tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        infer_cli.main(["--model_path", models["pruned"], "--model_name", "other.onnx",
                        "--infer_dir", fitted["images"], "--output_dir", str(tmp_path)])
    assert stopped.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()
    assert len(error) == 1 and "other.onnx' does not exist" in error[0], error


def _squeeze_model(opset):
    """A one-node ONNX model: Squeeze without axes of a [k, 1] input, as paddle2onnx's NMS
    squeezes its index columns."""
    from onnx import TensorProto, helper
    graph = helper.make_graph(
        [helper.make_node("Squeeze", ["x"], ["y"], name="squeeze")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["k", 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                             ir_version=7).SerializeToString()


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_keeps_a_dynamic_dim_of_size_1(opset):
    """One detection (k = 1) stays a [1] vector instead of becoming a scalar; k = 3 is
    unchanged."""
    import onnxruntime
    original = _squeeze_model(opset)
    fixed = onnxruntime.InferenceSession(with_squeeze_axes(original),
                                         providers=["CPUExecutionProvider"])
    bare = onnxruntime.InferenceSession(original, providers=["CPUExecutionProvider"])
    one = np.ones((1, 1), np.float32)
    assert bare.run(None, {"x": one})[0].shape == ()  # the bug the fix is for
    assert fixed.run(None, {"x": one})[0].shape == (1,)
    assert fixed.run(None, {"x": np.ones((3, 1), np.float32)})[0].shape == (3,)


def test_the_exported_nms_squeezes_name_their_axes(models):
    """export runs with_squeeze_axes: the Squeezes of NonMaxSuppression's index columns
    ([k, 1] -> [k]) drop axis 1 only, so one detection does not become a scalar."""
    import onnx
    graph = onnx.load(os.path.join(models["baseline"], ONNX_MODEL_NAME)).graph
    producer = {output: node for node in graph.node for output in node.output}
    nms_outputs = {node.output[0] for node in graph.node if node.op_type == "NonMaxSuppression"}
    squeezes = [node for node in graph.node if node.op_type == "Squeeze"
                and producer.get(node.input[0]) is not None
                and producer[node.input[0]].op_type == "Gather"
                and producer[node.input[0]].input[0] in nms_outputs]
    assert len(squeezes) == 2
    for node in squeezes:
        assert [list(attribute.ints) for attribute in node.attribute if attribute.name == "axes"] \
            == [[1]]


def test_export_at_the_highest_supported_opset_runs_and_above_it_is_one_line(models, batch,
                                                                            tmp_path):
    """Rule (c) for --opset: the top of the stated range converts and gives Paddle's
    detections; one above it is one `error:` line, exit 2, from the real command in a
    subprocess (paddle2onnx called abort() there: exit 134, no message)."""
    import subprocess
    import sys

    from slim.io.onnx_export import supported_opsets
    highest = supported_opsets()[1]
    out = tmp_path / "top.onnx"
    assert slim_main(["export", "--format", "onnx", "--model_path", models["baseline"],
                      "--opset", str(highest), "--out", str(out)]) == 0
    import onnx
    assert max(entry.version for entry in onnx.load(str(out)).opset_import
               if entry.domain in ("", "ai.onnx")) == highest
    assert_same_detections(onnx_detections(models["baseline"], batch, str(out)),
                           predictor_detections(models["baseline"], batch))
    for opset in (str(highest + 1), "20", "99"):  # 18, 19: an invalid graph; 20 up: abort()
        result = subprocess.run([sys.executable, "-m", "slim", "export", "--format", "onnx",
                                 "--model_path", models["baseline"], "--opset", opset,
                                 "--out", str(tmp_path / "high.onnx")],
                                capture_output=True, text=True, timeout=300)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
        assert lines[0].startswith(f"error: --opset {opset} is out of range") and \
            f"[11, {highest}]" in lines[0]
        assert not os.path.exists(tmp_path / "high.onnx")


HOSTILE_ONNX = {
    # case: how model.onnx of a copy of the baseline model dir is made untrustworthy
    "a byte flipped": "flip",
    "truncated": "truncate",
    "swapped for another model's": "swap",
    "written elsewhere, no record": "unrecorded",
}


@pytest.mark.parametrize("case", sorted(HOSTILE_ONNX))
def test_infer_refuses_an_onnx_model_export_did_not_write_and_its_hint_works(
        models, fitted, tmp_path, capsys, case):
    """Rule (b) for ONNX: infer.py checks model.onnx against the size and sha256 that export
    recorded (.slim-written.json) before onnxruntime sees it; a damaged, swapped or
    unrecorded file is one line. Rule (f): the command the message gives, followed, works."""
    import re
    import shlex
    model = tmp_path / "model"
    shutil.copytree(models["baseline"], model)
    onnx_path = model / ONNX_MODEL_NAME
    how = HOSTILE_ONNX[case]
    if how == "flip":
        data = bytearray(onnx_path.read_bytes())
        data[len(data) // 2] ^= 1
        onnx_path.write_bytes(bytes(data))
    elif how == "truncate":
        onnx_path.write_bytes(onnx_path.read_bytes()[:-10])
    elif how == "swap":
        shutil.copy(os.path.join(models["pruned"], ONNX_MODEL_NAME), onnx_path)
    else:  # no record of it left: a model dir without a manifest, as other tools write them
        os.remove(model / WRITTEN_LIST)
        os.remove(model / "model_manifest.json")
    argv = ["--model_path", str(model), "--model_name", ONNX_MODEL_NAME,
            "--infer_dir", fitted["images"], "--output_dir", str(tmp_path / "out")]
    with pytest.raises(SystemExit) as stopped:
        infer_cli.main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 1, lines
    assert str(onnx_path) in lines[0] and ("sha256" in lines[0] or "not written by" in lines[0])
    assert not os.path.exists(tmp_path / "out" / "detections.json")
    # the hint: move the file away, then the command in backquotes
    command = re.findall(r"`([^`]+)`", lines[0])[-1]
    assert lines[0].index("move it away") < lines[0].index(command)
    os.rename(onnx_path, tmp_path / "moved.onnx")
    words = shlex.split(command)
    assert words[:3] == ["python", "-m", "slim"]
    assert slim_main(words[3:]) == 0
    capsys.readouterr()
    infer_cli.main(argv)
    with open(tmp_path / "out" / "detections.json") as handle:
        assert sum(len(image["detections"]) for image in json.load(handle)["images"]) > 0


def test_the_documented_export_of_a_compress_checkpoint(tmp_path_factory, tmp_path, batch):
    """`python -m slim export --format onnx --model_path <checkpoint_path>/<epoch>/eval_model`
    on a real compress.py checkpoint (a copy of the fitted compress run's, which detects):
    model.onnx lands in the eval_model, listed in its model_manifest.json and in the
    checkpoint's manifest and marker, the checkpoint stays complete and the latest, and a
    rerun replaces the file. (It used to be refused: the eval_model is inside a directory
    the tool writes as a whole.)"""
    import subprocess
    import sys

    from test_compress import ROOT, child_env, fitted_compress_run

    from slim.io import checkpoint as ck
    run = fitted_compress_run(tmp_path_factory)
    checkpoints = str(tmp_path / "ckpt")
    shutil.copytree(run["checkpoints"], checkpoints, symlinks=True)
    epoch = max(ck.checkpoint_epochs(checkpoints))
    model_dir = os.path.join(checkpoints, str(epoch), "eval_model")
    for _attempt in range(2):  # the second run replaces the first's file
        result = subprocess.run([sys.executable, "-m", "slim", "export", "--format", "onnx",
                                 "--model_path", model_dir], cwd=ROOT, env=child_env(),
                                capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr[-2000:]
        assert "Traceback" not in result.stderr
    onnx_path = os.path.join(model_dir, ONNX_MODEL_NAME)
    checkpoint = ck.latest_complete_checkpoint(checkpoints)
    assert checkpoint is not None and checkpoint.path == os.path.join(checkpoints, str(epoch))
    assert f"eval_model/{ONNX_MODEL_NAME}" in checkpoint.manifest["files"]
    assert foreign_entries(checkpoint.path) == []
    ck.check_checkpoint_root(checkpoints)  # a resumed run would accept it
    with open(os.path.join(model_dir, "model_manifest.json")) as handle:
        listed = json.load(handle)["files"]
    assert ONNX_MODEL_NAME in listed and listed[ONNX_MODEL_NAME]["size"] == os.path.getsize(onnx_path)
    from slim.io.export import verify_model_manifest
    assert verify_model_manifest(model_dir, ["__model__.infer", "__params__", ONNX_MODEL_NAME])
    assert not [name for name in os.listdir(checkpoints) if name.startswith(".")]
    wanted = predictor_detections(model_dir, batch)
    assert sum(len(rows) for rows in wanted) > 0  # the checkpoint detects
    assert_same_detections(onnx_detections(model_dir, batch), wanted)
