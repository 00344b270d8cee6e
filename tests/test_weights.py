"""Weights I/O: Paddle's per-parameter files and combined file, bit-exact, mismatches by name."""
import logging
import os
import re
import subprocess
import sys

import numpy as np
import paddle
import pytest

from slim.io.output_places import OWNER_MARKER, OutputPlaceError
from slim.io.weights import (
    LoadReport,
    WeightsError,
    load_weights,
    parameter_names,
    read_weights,
    save_weights,
    weights_format,
)
from slim.model import MobileNet, YOLOv3, YOLOv3Head, build_eval_program, build_train_program


def _model(num_classes=3):
    return YOLOv3(MobileNet(conv_group_scale=0.25), YOLOv3Head(num_classes=num_classes))


@pytest.fixture(scope="module")
def trained_scope():
    """A scope with random (non-default) values in every parameter, incl. bn statistics."""
    train = build_train_program(_model(), image_shape=[3, 64, 64])
    scope = paddle.static.Scope()
    rng = np.random.RandomState(3)
    with paddle.static.scope_guard(scope):
        paddle.static.Executor(paddle.CPUPlace()).run(train.startup)
    for name in parameter_names(train.program):
        tensor = scope.find_var(name).get_tensor()
        shape = np.array(tensor).shape
        tensor.set(rng.standard_normal(shape).astype("float32"), paddle.CPUPlace())
    return train.program, scope


def _values(scope, names):
    return {name: np.array(scope.find_var(name).get_tensor()) for name in names}


def _assert_bit_exact(first, second):
    assert set(first) == set(second)
    for name in first:
        assert first[name].dtype == second[name].dtype and first[name].shape == second[name].shape
        assert first[name].tobytes() == second[name].tobytes(), name


@pytest.mark.parametrize("combined", [False, True])
def test_save_load_is_bit_exact(tmp_path, trained_scope, combined):
    program, scope = trained_scope
    path = str(tmp_path / ("__params__" if combined else "weights"))
    save_weights(scope, program, path, combined=combined)
    assert weights_format(path) == ("combined" if combined else "dir")
    names = parameter_names(program)
    if not combined:
        # one file per parameter, named as it, and the tool's marker
        assert sorted(os.listdir(path)) == sorted(names + [OWNER_MARKER])
        assert "yolo_block.0.0.0.bn.var" in names
    # load into a fresh scope through the *eval* program: same names, same scope layout
    evaluation = build_eval_program(_model(), image_shape=[3, 64, 64])
    fresh = paddle.static.Scope()
    report = load_weights(fresh, evaluation.program, path)
    assert report.complete and sorted(report.loaded) == names
    _assert_bit_exact(_values(scope, names), _values(fresh, names))
    _assert_bit_exact(_values(scope, names), read_weights(path, names if combined else None))


def test_paddle_reads_what_we_write_and_we_read_what_paddle_writes(tmp_path, trained_scope):
    program, scope = trained_scope
    names = parameter_names(program)
    params = program.global_block().all_parameters()
    exe = paddle.static.Executor(paddle.CPUPlace())
    # ours -> paddle.static.load_vars, both layouts
    save_weights(scope, program, str(tmp_path / "ours"))
    save_weights(scope, program, str(tmp_path / "ours_combined" / "__params__"), combined=True)
    for dirname, filename in ((tmp_path / "ours", None), (tmp_path / "ours_combined", "__params__")):
        loaded = paddle.static.Scope()
        with paddle.static.scope_guard(loaded):
            paddle.static.load_vars(exe, str(dirname), main_program=program, vars=params,
                                    filename=filename)
        _assert_bit_exact(_values(scope, names), _values(loaded, names))
    # paddle.static.save_vars -> ours
    with paddle.static.scope_guard(scope):
        paddle.static.save_vars(exe, str(tmp_path / "paddle"), main_program=program, vars=params)
        paddle.static.save_vars(exe, str(tmp_path / "paddle"), main_program=program, vars=params,
                                filename="__params__")
    for path in (tmp_path / "paddle", tmp_path / "paddle" / "__params__"):
        loaded = paddle.static.Scope()
        load_weights(loaded, program, str(path))
        _assert_bit_exact(_values(scope, names), _values(loaded, names))


def _saved_dir(tmp_path, trained_scope):
    program, scope = trained_scope
    path = str(tmp_path / "weights")
    save_weights(scope, program, path)
    return program, scope, path


def test_missing_params_are_named_and_nothing_is_loaded(tmp_path, trained_scope):
    program, scope, path = _saved_dir(tmp_path, trained_scope)
    os.remove(os.path.join(path, "conv1_weights"))
    os.remove(os.path.join(path, "yolo_block.2.tip.bn.mean"))
    fresh = paddle.static.Scope()
    with pytest.raises(WeightsError, match=r"2 missing \(conv1_weights, yolo_block.2.tip.bn.mean\)"
                                           r".*load with partial=True"):
        load_weights(fresh, program, path)
    assert fresh.find_var("conv2_1_sep_weights") is None


def test_unexpected_params_are_named(tmp_path, trained_scope):
    program, scope, path = _saved_dir(tmp_path, trained_scope)
    os.rename(os.path.join(path, "conv1_weights"), os.path.join(path, "fc7_weights"))
    with pytest.raises(WeightsError, match=r"1 missing \(conv1_weights\); "
                                           r"1 unexpected \(fc7_weights\)"):
        load_weights(paddle.static.Scope(), program, path)


def test_shape_mismatch_is_named(tmp_path, trained_scope):
    program, scope, path = _saved_dir(tmp_path, trained_scope)
    # 20 VOC classes on disk, 3 classes in the program: the yolo_output convs differ
    voc = build_eval_program(_model(num_classes=20), image_shape=[3, 64, 64])
    with pytest.raises(WeightsError, match=r"6 mismatched \(yolo_output.0.conv.bias: "
                                           r"file \[24\] float32 vs program \[75\] float32"):
        load_weights(paddle.static.Scope(), voc.program, path)


def test_partial_load_loads_the_matching_ones_and_warns(tmp_path, trained_scope, caplog):
    program, scope, path = _saved_dir(tmp_path, trained_scope)
    voc = build_eval_program(_model(num_classes=20), image_shape=[3, 64, 64])
    fresh = paddle.static.Scope()
    with caplog.at_level(logging.WARNING, logger="slim.io.weights"):
        report = load_weights(fresh, voc.program, path, partial=True)
    mismatched = {f"yolo_output.{i}.conv.{s}" for i in range(3) for s in ("weights", "bias")}
    assert set(report.mismatched) == mismatched
    assert not report.missing and not report.unexpected
    assert set(report.loaded) == set(parameter_names(program)) - mismatched
    assert fresh.find_var("yolo_output.0.conv.bias") is None
    _assert_bit_exact(_values(scope, report.loaded), _values(fresh, report.loaded))
    total = len(parameter_names(program))
    assert f"{total - 6} of {total} parameters loaded" in caplog.text
    assert "6 mismatched" in caplog.text


def test_partial_load_of_weights_with_none_of_the_params_is_an_error(tmp_path, trained_scope):
    """An empty dir or another model's weights as pretrain_weights: not a warning and random
    weights, but an error (partial loading is for a backbone's subset)."""
    program, _, path = _saved_dir(tmp_path, trained_scope)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(WeightsError, match=f"weights '{empty}' hold none of the program's"):
        load_weights(paddle.static.Scope(), program, str(empty), partial=True)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_weights_holding_nan_or_inf_load_nothing(tmp_path, trained_scope, bad):
    program, scope = trained_scope
    values = np.array(scope.find_var("conv1_bn_mean").get_tensor())
    scope.find_var("conv1_bn_mean").get_tensor().set(np.where(np.arange(values.size) == 3, bad, values)
                                                     .astype("float32"), paddle.CPUPlace())
    try:
        save_weights(scope, program, str(tmp_path / "weights"))
    finally:
        scope.find_var("conv1_bn_mean").get_tensor().set(values, paddle.CPUPlace())
    fresh = paddle.static.Scope()
    for partial in (False, True):
        with pytest.raises(WeightsError, match="parameter 'conv1_bn_mean' holds NaN or infinite values"):
            load_weights(fresh, program, str(tmp_path / "weights"), partial=partial)
    assert fresh.find_var("conv1_weights") is None  # nothing loaded


def test_backbone_weights_load_partially_into_the_detector(tmp_path, trained_scope):
    # like ImageNet MobileNetV1 weights: backbone names only, plus a classifier
    program, scope = trained_scope
    backbone = [name for name in parameter_names(program) if name.startswith("conv")]
    path = str(tmp_path / "imagenet")
    save_weights(scope, program, path, var_names=backbone)
    save_weights(scope, program, str(tmp_path / "fc"), var_names=["conv1_weights"])
    os.rename(str(tmp_path / "fc" / "conv1_weights"), os.path.join(path, "fc7_weights"))
    fresh = paddle.static.Scope()
    with pytest.raises(WeightsError, match="unexpected \\(fc7_weights\\)"):
        load_weights(fresh, program, path)
    report = load_weights(fresh, program, path, partial=True)
    assert sorted(report.loaded) == backbone
    assert report.unexpected == ["fc7_weights"]
    assert report.missing and all(name.startswith("yolo_") for name in report.missing)
    _assert_bit_exact(_values(scope, backbone), _values(fresh, backbone))


def test_combined_file_with_another_tensor_count_cannot_be_matched(tmp_path, trained_scope):
    program, scope = trained_scope
    path = str(tmp_path / "__params__")
    save_weights(scope, program, path, combined=True, var_names=parameter_names(program)[:-1])
    with pytest.raises(WeightsError, match=r"holds 240 tensors but the program expects 241 "
                                           r"parameters; a combined file stores no names"):
        load_weights(paddle.static.Scope(), program, path, partial=True)


def test_combined_file_shape_mismatch_is_named(tmp_path, trained_scope):
    program, scope = trained_scope
    path = str(tmp_path / "__params__")
    save_weights(scope, program, path, combined=True)
    voc = build_eval_program(_model(num_classes=20), image_shape=[3, 64, 64])
    with pytest.raises(WeightsError, match=r"6 mismatched \(yolo_output.0.conv.bias"):
        load_weights(paddle.static.Scope(), voc.program, path)
    report = load_weights(paddle.static.Scope(), voc.program, path, partial=True)
    assert isinstance(report, LoadReport) and len(report.loaded) == 241 - 6


def test_corrupt_and_missing_files_are_user_errors(tmp_path, trained_scope):
    program, scope, path = _saved_dir(tmp_path, trained_scope)
    with open(os.path.join(path, "conv1_weights"), "r+b") as file:
        file.truncate(100)  # header intact, data cut short
    with pytest.raises(WeightsError, match=r"conv1_weights' is not a single Paddle tensor"):
        load_weights(paddle.static.Scope(), program, path)
    (tmp_path / "garbage").write_bytes(b"\x01\x00\x00\x00not a tensor")
    with pytest.raises(WeightsError, match=r"garbage' is not Paddle's tensor format at byte 0"):
        load_weights(paddle.static.Scope(), program, str(tmp_path / "garbage"))
    with pytest.raises(WeightsError, match=r"'.*nowhere' does not exist"):
        load_weights(paddle.static.Scope(), program, str(tmp_path / "nowhere"))


def test_saving_over_existing_weights_replaces_them_whole(tmp_path, trained_scope):
    program, scope, path = _saved_dir(tmp_path, trained_scope)
    save_weights(scope, program, path)
    expected = sorted(parameter_names(program) + [OWNER_MARKER])
    assert sorted(os.listdir(path)) == expected
    assert sorted(os.listdir(tmp_path)) == ["weights"]  # no staging leftovers
    planted = os.path.join(path, "stale_param")  # not written by the tool: never deleted
    with open(planted, "wb") as file:
        file.write(b"old")
    with pytest.raises(OutputPlaceError, match="now also holds 'stale_param', which it did not write"):
        save_weights(scope, program, path)
    assert sorted(os.listdir(path)) == sorted(expected + ["stale_param"])
    os.remove(planted)
    with pytest.raises(ValueError, match="not initialized in the scope"):
        save_weights(paddle.static.Scope(), program, path)
    assert sorted(os.listdir(path)) == expected  # untouched after a failure


SIZE_LIMITED_SAVER = """
import resource, signal, sys
sys.path.insert(0, {root!r})
import slim, paddle
import numpy as np
paddle.enable_static()
from slim.errors import exit_on_user_error
from slim.io.weights import save_weights
main, startup = paddle.static.Program(), paddle.static.Program()
with paddle.static.program_guard(main, startup):
    image = paddle.static.data("image", [None, 3, 8, 8], "float32")
    paddle.static.nn.conv2d(image, 256, 3, name="conv")
scope = paddle.static.Scope()
paddle.static.Executor(paddle.CPUPlace()).run(startup, scope=scope)
combined, limit = sys.argv[2] == "combined", int(sys.argv[3])
if limit:  # writes past the limit fail (EFBIG) instead of killing the process
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
exit_on_user_error(lambda: save_weights(scope, main, sys.argv[1], combined=combined))()
"""


@pytest.mark.parametrize("layout", ["dir", "combined"])
def test_save_weights_refuses_a_short_write(tmp_path, layout):
    """Paddle's save ops leave a truncated file without an error when the disk is full (here:
    a file size limit); save_weights reads back what was written and replaces nothing."""
    script = tmp_path / "saver.py"
    script.write_text(SIZE_LIMITED_SAVER.format(root=os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))))
    target = str(tmp_path / ("weights" if layout == "dir" else "params"))

    def save(limit):
        return subprocess.run([sys.executable, str(script), target, layout, str(limit)],
                              capture_output=True, text=True, timeout=300)
    assert save(0).returncode == 0
    saved = {name: os.path.getsize(os.path.join(target, name)) for name in os.listdir(target)} \
        if layout == "dir" else os.path.getsize(target)
    limited = save(4096)  # the conv weight alone is 256 * 3 * 9 * 4 = 27 KB
    assert limited.returncode == 2, limited.stderr[-2000:]
    assert "Traceback" not in limited.stderr
    assert re.search(r"^error: cannot write weights path '.*': the file written is incomplete "
                     r"\(.*\); is the disk full\? Nothing was replaced$", limited.stderr, re.M), \
        limited.stderr
    after = {name: os.path.getsize(os.path.join(target, name)) for name in os.listdir(target)} \
        if layout == "dir" else os.path.getsize(target)
    assert after == saved  # the complete earlier save is still there
    assert [name for name in os.listdir(tmp_path) if ".tmp-" in name] == []
