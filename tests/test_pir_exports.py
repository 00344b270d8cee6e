"""eval.py, infer.py and `python -m slim export --format onnx` on a `.json` (PIR) model.

The fitted demo detector (tests/fitted_model.py), exported classic by slim, is translated
to Paddle 3's new IR (`paddle.pir.translate_to_pir`) and saved as `model.json` +
`model.pdiparams` beside the classic files: eval.py must score it as it scores the
classic model (same mAP), infer.py must draw the same detections, and the ONNX export
must refuse it in one line (the pinned paddle2onnx reads classic programs only). On
Paddle 2.6 (no PIR) eval.py refuses such a model in one line.
"""
import json
import os
import shutil

import numpy as np
import paddle
import pytest
from fitted_model import CLASSES, config_arguments, fitted_model

import eval as eval_cli
import infer as infer_cli
from slim.errors import UserError
from slim.prune.pir import pir_supported

CPU = paddle.CPUPlace()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """The fitted model's export dir copied, with `model.json` + `model.pdiparams` (the
    inference program in PIR) added; no manifest (it lists the classic files only)."""
    fitted = fitted_model(tmp_path_factory)
    model_dir = str(tmp_path_factory.mktemp("pir_export") / "model")
    shutil.copytree(fitted["model_dir"], model_dir)
    os.remove(os.path.join(model_dir, "model_manifest.json"))
    if pir_supported():
        save_as_pir(model_dir)
    return dict(fitted, model_dir=model_dir)


def save_as_pir(model_dir, model_filename="__model__.infer", params_filename="__params__",
                feed_names=("image", "im_size"), prefix="model"):
    """The classic model in `model_dir` translated to PIR, saved beside it as PREFIX.json +
    PREFIX.pdiparams (the translation's feed ops made data ops, as saving wants)."""
    from slim.prune.pir import ir_guard
    scope, executor = paddle.static.Scope(), paddle.static.Executor(CPU)
    with paddle.static.scope_guard(scope):
        program, _, _ = paddle.static.load_inference_model(
            model_dir, executor, model_filename=model_filename, params_filename=params_filename)
    translated = paddle.pir.translate_to_pir(program.desc)
    with ir_guard(True):
        ops = list(translated.global_block().ops)
        fetches = [op.operand_source(0) for op in ops if op.name() == "pd_op.fetch"]
        feeds = {}
        with paddle.static.program_guard(translated):
            for op in ops:
                if op.name() == "pd_op.fetch":
                    op.erase()
                elif op.name() == "pd_op.feed":  # what save_inference_model wants: data ops
                    old = op.result(0)
                    paddle.pir.set_insertion_point(op)
                    new = paddle.static.data(op.attrs()["name"], old.shape, old.dtype)
                    old.replace_all_uses_with(new)
                    op.erase()
                    feeds[new.name] = new
            paddle.pir.reset_insertion_point_to_end()
        with paddle.static.scope_guard(scope):
            paddle.static.save_inference_model(
                os.path.join(model_dir, prefix), [feeds[name] for name in feed_names], fetches,
                executor, program=translated)
    assert {prefix + ".json", prefix + ".pdiparams"} <= set(os.listdir(model_dir))


def eval_result(exported, tmp_path, model_name, params_name):
    out = tmp_path / model_name.replace(".", "_")
    eval_cli.main(["-m", exported["model_dir"], "--model_name", model_name, "--params_name",
                   params_name, *config_arguments(exported), "--output_eval", str(out)])
    with open(out / "eval_result.json") as handle:
        return json.load(handle)


@pytest.mark.skipif(not pir_supported(), reason=f"Paddle {paddle.__version__} has no PIR")
def test_eval_py_scores_the_json_model_like_the_classic_one(exported, tmp_path):
    classic = eval_result(exported, tmp_path, "__model__.infer", "__params__")
    pir = eval_result(exported, tmp_path, "model.json", "model.pdiparams")
    assert classic["mAP"] > 0.5  # real detections, then compare
    assert pir["mAP"] == pytest.approx(classic["mAP"], abs=1e-6)
    assert list(pir["per_class_ap"].values()) == pytest.approx(
        list(classic["per_class_ap"].values()), abs=1e-6)


@pytest.mark.skipif(not pir_supported(), reason=f"Paddle {paddle.__version__} has no PIR")
def test_infer_py_draws_the_same_detections_from_the_json_model(exported, tmp_path):
    images = os.path.join(exported["data"], "JPEGImages")
    listed = {}
    for model_name, params_name in (("__model__.infer", "__params__"),
                                    ("model.json", "model.pdiparams")):
        out = tmp_path / model_name.replace(".", "_")
        infer_cli.main(["--model_path", exported["model_dir"], "--model_name", model_name,
                        "--params_name", params_name, *config_arguments(exported),
                        "--infer_dir", images, "--output_dir", str(out),
                        "--draw_threshold", "0.3"])
        with open(out / "detections.json") as handle:
            listed[model_name] = {os.path.basename(item["image"]): item["detections"]
                                  for item in json.load(handle)["images"]}
    classic, pir = listed["__model__.infer"], listed["model.json"]
    assert sum(len(rows) for rows in classic.values()) > 0
    assert classic.keys() == pir.keys()
    for image, rows in classic.items():
        assert [d["label"] for d in pir[image]] == [d["label"] for d in rows], image
        assert [d["name"] for d in pir[image]] == [CLASSES[d["label"]] for d in rows]
        for got, wanted in zip(pir[image], rows):
            assert got["score"] == pytest.approx(wanted["score"], abs=1e-4)
            np.testing.assert_allclose(got["bbox"], wanted["bbox"], atol=0.02)


def test_onnx_export_of_a_json_model_is_one_line(exported, tmp_path):
    pytest.importorskip("paddle2onnx", reason="paddle2onnx is not installed")
    from slim.io.onnx_export import export_onnx
    if not pir_supported():  # a JSON program file, written by hand
        with open(os.path.join(exported["model_dir"], "model.json"), "w") as handle:
            handle.write('{"base_code": {"magic": "pir"}}')
        shutil.copy(os.path.join(exported["model_dir"], "__params__"),
                    os.path.join(exported["model_dir"], "model.pdiparams"))
    with pytest.raises(UserError, match="new-IR \\(PIR\\) program: the pinned paddle2onnx"):
        export_onnx(exported["model_dir"], str(tmp_path / "model.onnx"), model_name="model.json",
                    params_name="model.pdiparams")
    assert not os.path.exists(tmp_path / "model.onnx")


@pytest.mark.skipif(pir_supported(), reason="Paddle 3 loads PIR models")
def test_eval_py_refuses_a_json_model_on_paddle_2_6(exported, tmp_path, capsys):
    with open(os.path.join(exported["model_dir"], "model.json"), "w") as handle:
        handle.write('{"base_code": {"magic": "pir"}}')
    shutil.copy(os.path.join(exported["model_dir"], "__params__"),
                os.path.join(exported["model_dir"], "model.pdiparams"))
    with pytest.raises(SystemExit) as stop:
        eval_cli.main(["-m", exported["model_dir"], "--model_name", "model.json", "--params_name",
                       "model.pdiparams", *config_arguments(exported)])
    assert stop.value.code == 2
    assert "paddlepaddle>=3" in capsys.readouterr().err
