"""Atomic per-epoch checkpoints: round trip, partial/corrupt dirs never picked, kill mid-write."""
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import paddle
import pytest

from slim.io import checkpoint as ck
from slim.io.output_places import make_owned_temp_dir

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _tiny_train_program(out_channels=4):
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data("image", [None, 3, 8, 8], "float32")
        feature = paddle.static.nn.conv2d(image, out_channels, 3, bias_attr=False,
                                          param_attr=paddle.ParamAttr(name="conv_weights"))
        feature = paddle.static.nn.batch_norm(feature, param_attr=paddle.ParamAttr(name="bn_scale"),
                                              bias_attr=paddle.ParamAttr(name="bn_offset"),
                                              moving_mean_name="bn_mean", moving_variance_name="bn_var")
        loss = paddle.mean(feature * feature)
        paddle.optimizer.Momentum(0.1, momentum=0.9).minimize(loss)
    return main, startup, loss


def _trained_scope(main, startup, loss, steps=2):
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(startup, scope=scope)
    for _ in range(steps):
        executor.run(main, feed={"image": np.random.rand(2, 3, 8, 8).astype("float32")},
                     fetch_list=[loss], scope=scope)
    return scope, executor


def _values(scope, program):
    return {var.name: np.array(scope.find_var(var.name).get_tensor())
            for var in ck.persistable_vars(program)}


def test_round_trip_is_bit_exact_including_optimizer_state(tmp_path):
    # a fresh name generator: the velocity is conv_weights_velocity_0 whatever other tests
    # of the process built before (test_integrity before this file renamed it)
    with paddle.utils.unique_name.guard():
        main, startup, loss = _tiny_train_program()
    scope, executor = _trained_scope(main, startup, loss)
    plans = [{"strategy": "uniform", "epoch": 0, "plan": {"groups": [
        {"key": ["conv_weights", 0, 0], "params": ["conv_weights"], "channels_before": 4,
         "kept": [0, 2]}]}}]
    state = ck.CheckpointState(epoch=3, iteration=12, best_metric=0.5, best_epoch=2,
                               pruning_plans=plans, extra={"history": [1, 2]})
    path = ck.save_checkpoint(str(tmp_path), state, main, scope, executor)
    assert path == str(tmp_path / "3")
    saved = _values(scope, main)
    assert "conv_weights_velocity_0" in saved and "bn_mean" in saved  # optimizer state + BN stats

    fresh = paddle.static.Scope()
    executor.run(startup, scope=fresh)
    checkpoint = ck.latest_complete_checkpoint(str(tmp_path))
    assert checkpoint.state == state
    missing = ck.load_checkpoint_persistables(checkpoint, main, fresh, executor)
    assert missing == []
    loaded = _values(fresh, main)
    assert saved.keys() == loaded.keys()
    for name in saved:
        np.testing.assert_array_equal(saved[name], loaded[name], err_msg=name)
    with open(tmp_path / "3" / ck.PLANS_NAME) as handle:
        assert json.load(handle) == plans
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]


def test_latest_complete_skips_partial_and_corrupt_dirs(tmp_path):
    main, startup, loss = _tiny_train_program()
    scope, executor = _trained_scope(main, startup, loss, steps=1)
    for epoch in range(1, 8):
        ck.save_checkpoint(str(tmp_path), ck.CheckpointState(epoch, epoch * 10), main, scope, executor)
    os.remove(tmp_path / "7" / ck.MANIFEST_NAME)                       # never finished
    (tmp_path / "6" / ck.MANIFEST_NAME).write_text('{"format": "slim-chec')  # torn manifest
    os.remove(tmp_path / "5" / ck.PERSISTABLES_FILE)                  # missing tensor file
    weights_4 = tmp_path / "4" / ck.PERSISTABLES_FILE
    weights_4.write_bytes(weights_4.read_bytes()[:-3])                 # truncated tensor file
    weights_3 = tmp_path / "3" / ck.PERSISTABLES_FILE
    data = bytearray(weights_3.read_bytes())
    data[-1] ^= 0xFF
    weights_3.write_bytes(bytes(data))                                 # same size, flipped bits
    (tmp_path / ".tmp-9-12345").mkdir()                                # a crashed writer's temp dir
    (tmp_path / "notes").mkdir()
    skipped = []
    checkpoint = ck.latest_complete_checkpoint(str(tmp_path), log=skipped.append)
    assert checkpoint.state.epoch == 2 and checkpoint.path == str(tmp_path / "2")
    assert len(skipped) == 5
    for epoch, reason in zip((7, 6, 5, 4, 3),
                             ("no manifest.json", "does not parse", "persistables is missing",
                              "bytes", "sha256")):
        assert any(f"/{epoch}'" in line and reason in line for line in skipped), (epoch, skipped)
    assert ck.latest_complete_checkpoint(str(tmp_path / "nothing_here")) is None


def test_rewriting_an_epoch_replaces_it_and_cleans_stale_temp_dirs(tmp_path):
    main, startup, loss = _tiny_train_program()
    scope, executor = _trained_scope(main, startup, loss, steps=1)
    ck.save_checkpoint(str(tmp_path), ck.CheckpointState(0, 5), main, scope, executor)
    make_owned_temp_dir(str(tmp_path), ".tmp-1-999999999-")  # a crashed writer's: pid not alive
    (tmp_path / ".tmp-1-999999998").mkdir()  # named alike, but not the tool's: kept
    ck.save_checkpoint(str(tmp_path), ck.CheckpointState(0, 9, best_metric=0.25), main, scope, executor)
    assert sorted(os.listdir(tmp_path)) == [".tmp-1-999999998", "0"]
    assert ck.latest_complete_checkpoint(str(tmp_path)).state.iteration == 9


def test_checkpoint_of_other_shapes_is_refused_by_name(tmp_path):
    main, startup, loss = _tiny_train_program(out_channels=4)
    scope, executor = _trained_scope(main, startup, loss, steps=1)
    ck.save_checkpoint(str(tmp_path), ck.CheckpointState(0, 1), main, scope, executor)
    other_main, other_startup, _ = _tiny_train_program(out_channels=3)
    other_scope = paddle.static.Scope()
    executor.run(other_startup, scope=other_scope)
    checkpoint = ck.latest_complete_checkpoint(str(tmp_path))
    with pytest.raises(ck.CheckpointError, match=r"conv_weights \[4, 3, 3, 3\] in checkpoint vs "
                                                  r"\[3, 3, 3, 3\] in program"):
        ck.load_checkpoint_persistables(checkpoint, other_main, other_scope, executor)


def test_unwritable_checkpoint_dir_is_a_user_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with pytest.raises(ck.CheckpointError, match=r"checkpoint_path '.*a_file/ckpt' cannot be written"):
        ck.ensure_writable_dir(str(blocker / "ckpt"))


WRITER = textwrap.dedent("""
    import sys
    sys.path.insert(0, {root!r})
    import slim, paddle
    paddle.enable_static()
    sys.path.insert(0, {tests!r})
    from test_checkpoint import _tiny_train_program, _trained_scope
    from slim.io import checkpoint as ck
    main, startup, loss = _tiny_train_program()
    scope, executor = _trained_scope(main, startup, loss, steps=1)
    ck.save_checkpoint({root_dir!r}, ck.CheckpointState(int(sys.argv[1]), 1), main, scope, executor)
    print("saved", flush=True)
""")


def test_kill_during_write_keeps_previous_epoch(tmp_path):
    root_dir = str(tmp_path / "ckpt")
    script = tmp_path / "writer.py"
    script.write_text(WRITER.format(root=ROOT, tests=os.path.join(ROOT, "tests"), root_dir=root_dir))
    subprocess.run([sys.executable, str(script), "0"], check=True, capture_output=True)
    env = dict(os.environ, **{ck.PAUSE_ENV: "30"})
    writer = subprocess.Popen([sys.executable, str(script), "1"], env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        line = writer.stdout.readline()
        assert "pausing" in line, line
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.wait()
    temp_dir, final_dir = sorted(os.listdir(root_dir))
    assert temp_dir.startswith(".tmp-1-%d-" % writer.pid) and final_dir == "0"
    assert ck.latest_complete_checkpoint(root_dir).state.epoch == 0
    subprocess.run([sys.executable, str(script), "1"], check=True, capture_output=True)
    assert sorted(os.listdir(root_dir)) == ["0", "1"]  # the dead writer's temp dir is gone
    assert ck.latest_complete_checkpoint(root_dir).state.epoch == 1


def test_add_to_checkpoint_is_all_or_nothing(tmp_path):
    """add_to_checkpoint (what `slim export` uses to put model.onnx into a checkpoint's
    eval_model): the new file is listed by the resealed manifest and the marker; a writer
    that fails leaves the checkpoint as it was, and no temp dir; a root in use is refused."""
    main, startup, loss = _tiny_train_program()
    scope, executor = _trained_scope(main, startup, loss, steps=1)

    def eval_model(temp_dir):
        os.makedirs(os.path.join(temp_dir, "eval_model"))
        with open(os.path.join(temp_dir, "eval_model", "a.txt"), "w") as handle:
            handle.write("a")
    path = ck.save_checkpoint(str(tmp_path), ck.CheckpointState(2, 7), main, scope, executor,
                              extra_writer=eval_model)
    before = dict(ck.validate_checkpoint(path).manifest["files"])

    def add(temp_dir):
        with open(os.path.join(temp_dir, "eval_model", "b.onnx"), "wb") as handle:
            handle.write(b"onnx")
    assert ck.add_to_checkpoint(path, add) == path
    checkpoint = ck.latest_complete_checkpoint(str(tmp_path))
    assert checkpoint.path == path and checkpoint.state.iteration == 7
    assert set(checkpoint.manifest["files"]) == set(before) | {"eval_model/b.onnx"}
    assert checkpoint.manifest["files"]["persistables"] == before["persistables"]
    ck.check_checkpoint_root(str(tmp_path))  # the marker lists the new file: nothing foreign
    assert sorted(os.listdir(tmp_path)) == ["2"]

    def fail(temp_dir):
        os.remove(os.path.join(temp_dir, "eval_model", "a.txt"))
        raise OSError(28, "No space left on device")
    with pytest.raises(ck.CheckpointError, match="kept as it was"):
        ck.add_to_checkpoint(path, fail)
    assert os.path.isfile(os.path.join(path, "eval_model", "a.txt"))
    assert ck.latest_complete_checkpoint(str(tmp_path)).manifest == checkpoint.manifest
    assert sorted(os.listdir(tmp_path)) == ["2"]
    with ck.lock_checkpoint_root(str(tmp_path)):
        with pytest.raises(ck.CheckpointError, match="in use"):
            ck.add_to_checkpoint(path, add)
