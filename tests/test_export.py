"""Exported eval/inference models: Paddle Inference and load_inference_model give the
Executor's eval output; the inference program keeps only what the NMS result needs."""
import json
import os

import numpy as np
import paddle
import pytest

from slim.io import export
from slim.io.file_manifest import file_sha256, manifest_checksum
from slim.model import MobileNet, YOLOv3, YOLOv3Head, build_eval_program, split_detections


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    model = YOLOv3(MobileNet(conv_group_scale=0.125), YOLOv3Head(num_classes=3))
    evaluation = build_eval_program(model, image_shape=[3, 64, 64])
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(evaluation.startup, scope=scope)
    rng = np.random.default_rng(3)
    feeds = {"image": rng.random((2, 3, 64, 64), dtype=np.float32),
             "im_size": np.array([[100, 120], [64, 80]], np.int32)}
    bbox, bbox_num = executor.run(evaluation.program, feed=feeds, scope=scope,
                                  fetch_list=[evaluation.fetches["bbox"], evaluation.fetches["bbox_num"]])
    out_dir = str(tmp_path_factory.mktemp("eval_model"))
    written = export.export_model(evaluation, scope, executor, out_dir)
    return {"dir": out_dir, "written": written, "feeds": feeds, "bbox": bbox, "bbox_num": bbox_num,
            "executor": executor, "evaluation": evaluation}


def _in_canonical_order(rows):
    """Detection rows [label, score, x1, y1, x2, y2] sorted by label, score, then box."""
    keys = [np.round(rows[:, column].astype(np.float64), decimals)
            for column, decimals in enumerate((0, 4, 1, 1, 1, 1))]
    return rows[np.lexsort(keys[::-1])]  # lexsort: the last key is the primary one


def _assert_same_detections(actual_bbox, actual_num, expected_bbox, expected_num):
    np.testing.assert_array_equal(np.asarray(actual_num).reshape(-1), np.asarray(expected_num).reshape(-1))
    for actual, expected in zip(split_detections(actual_bbox, actual_num),
                                split_detections(expected_bbox, expected_num)):
        # boxes of equal score may come in either order (the random model of the fixture
        # ties some, depending on the random state other tests leave): compare them sorted
        actual, expected = _in_canonical_order(actual), _in_canonical_order(expected)
        np.testing.assert_array_equal(actual[:, 0], expected[:, 0])                   # labels
        np.testing.assert_allclose(actual[:, 1], expected[:, 1], rtol=0, atol=1e-4)   # scores
        np.testing.assert_allclose(actual[:, 2:], expected[:, 2:], rtol=0, atol=1e-2)  # pixels


def test_files_written(exported):
    assert sorted(os.listdir(exported["dir"])) == ["__model__", "__model__.infer", "__params__",
                                                   "model_manifest.json"]
    with open(os.path.join(exported["dir"], export.MODEL_MANIFEST_NAME)) as handle:
        manifest = json.load(handle)
    assert manifest["format"] == "slim-model" and manifest["checksum"] == manifest_checksum(manifest)
    assert sorted(manifest["files"]) == ["__model__", "__model__.infer", "__params__"]
    for name, record in manifest["files"].items():
        path = os.path.join(exported["dir"], name)
        assert record == {"size": os.path.getsize(path), "sha256": file_sha256(path)}
    assert exported["bbox"].shape[1] == 6 and exported["bbox_num"].sum() == len(exported["bbox"]) > 0


def test_paddle_inference_predictor_equals_executor(exported):
    predictor = export.inference_predictor(exported["dir"])
    assert predictor.get_input_names() == ["image", "im_size"]
    bbox, bbox_num = export.run_predictor(predictor, exported["feeds"])
    _assert_same_detections(bbox, bbox_num, exported["bbox"], exported["bbox_num"])


@pytest.mark.parametrize("model_name, fetch_count", [("__model__.infer", 2), ("__model__", 5)])
def test_load_inference_model_equals_executor(exported, model_name, fetch_count):
    scope = paddle.static.Scope()
    executor = exported["executor"]
    program, feed_names, fetch_vars = export.load_exported_program(exported["dir"], executor, scope,
                                                                   model_name=model_name)
    assert feed_names == ["image", "im_size"] and len(fetch_vars) == fetch_count
    results = executor.run(program, feed=exported["feeds"], fetch_list=fetch_vars, scope=scope)
    assert len(results) == fetch_count
    bbox, bbox_num = results[:2]
    np.testing.assert_array_equal(bbox, exported["bbox"])
    np.testing.assert_array_equal(bbox_num, exported["bbox_num"])


def test_infer_program_has_only_what_nms_needs(exported):
    scope = paddle.static.Scope()
    infer_program, _, _ = export.load_exported_program(exported["dir"], exported["executor"], scope)
    eval_program, _, _ = export.load_exported_program(exported["dir"], exported["executor"], scope,
                                                      model_name="__model__")
    infer_types = [op.type for op in infer_program.global_block().ops]
    eval_types = [op.type for op in eval_program.global_block().ops]
    assert infer_types.count("fetch") == 2 and eval_types.count("fetch") == 5
    assert infer_types.count("multiclass_nms3") == 1 and infer_types.count("yolo_box") == 3
    assert not {"yolov3_loss", "momentum", "fill_constant"} & set(infer_types)
    block = infer_program.global_block()
    consumed = {name for op in block.ops for name in op.input_arg_names}
    for op in block.ops:  # nothing dangling: every op's output is read by a later op or fetched
        if op.type != "fetch":
            assert set(op.output_arg_names) & consumed, op.type


@pytest.mark.parametrize("kind", ["fifo", "device", "directory"])
def test_a_model_file_that_is_no_regular_file_is_named_so_and_never_read(exported, tmp_path, kind):
    """A FIFO would block the read forever; it is said to be no regular file (not 'does not exist')."""
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    with open(os.path.join(exported["dir"], "__model__"), "rb") as handle:
        (model_dir / "__model__").write_bytes(handle.read())
    params = model_dir / "__params__"
    {"fifo": lambda: os.mkfifo(params), "device": lambda: params.symlink_to("/dev/zero"),
     "directory": params.mkdir}[kind]()
    with pytest.raises(Exception, match=f"model file '{params}' is not a regular file"):
        export.load_exported_program(str(model_dir), exported["executor"], paddle.static.Scope(),
                                     model_name="__model__", params_name="__params__")


def test_missing_model_file_names_it(exported, tmp_path):
    with pytest.raises(Exception, match=r"model file '.*__model__.inf' does not exist "
                                        r"\(did you mean '__model__.infer'\?\)"):
        export.load_exported_program(exported["dir"], exported["executor"], paddle.static.Scope(),
                                     model_name="__model__.inf")
