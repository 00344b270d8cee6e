"""Output places (issue #9): every place a command writes is checked before any work, an
output equal to an input is refused, only what the tool wrote is ever replaced, and Ctrl-C
ends with one line and exit code 130.

Each refusal is one `error:` line naming the path, exit code 2, and the user's files are
byte-for-byte unchanged afterwards.
"""
import hashlib
import os
import signal
import subprocess
import sys
import time

import paddle
import pytest
from test_cli_errors import _exit_code_and_error
from test_compress import ROOT, child_env, compress_command, make_workspace, write_slim_config

import compress as compress_cli
import eval as eval_cli
import infer as infer_cli
from slim.commands import pretrain
from slim.data import demo as data_demo
from slim.errors import Interrupted, UserError
from slim.io.output_places import OWNER_MARKER, WRITTEN_LIST, OutputPlaceError, _current_umask
from slim.runs import pretrain as pretrain_run

UNWRITABLE = "/proc/slim-output-safety/x"  # cannot be created, not even by root


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """The tiny demo dataset and config, and a (random-weights) exported model of it."""
    from slim.config import create, load_config
    from slim.io import export
    from slim.model import build_eval_program
    root = str(tmp_path_factory.mktemp("output_safety"))
    paths = make_workspace(root)
    cfg = load_config(paths["config"])
    evaluation = build_eval_program(create("YOLOv3", cfg), image_shape=[3, 64, 64])
    scope = paddle.static.Scope()
    executor = paddle.static.Executor(paddle.CPUPlace())
    executor.run(evaluation.startup, scope=scope)
    paths["model_dir"] = os.path.join(root, "eval_model")
    export.export_model(evaluation, scope, executor, paths["model_dir"])
    paths["data"] = os.path.join(root, "data")
    paths["images"] = os.path.join(root, "data", "JPEGImages")
    paths["data_args"] = ["-o", "YoloTestFeed.dataset.dataset_dir=" + paths["data"],
                          "YoloEvalFeed.dataset.dataset_dir=" + paths["data"],
                          "YoloTrainFeed.dataset.dataset_dir=" + paths["data"]]
    return paths


def tree_digest(root):
    """{relative path: sha256} of every file under `root` (or of `root` itself, a file)."""
    if os.path.isfile(root):
        with open(root, "rb") as handle:
            return {"": hashlib.sha256(handle.read()).hexdigest()}
    digest = {}
    for directory, _, files in os.walk(root):
        for name in files:
            path = os.path.join(directory, name)
            with open(path, "rb") as handle:
                digest[os.path.relpath(path, root)] = hashlib.sha256(handle.read()).hexdigest()
    return digest


def must_not_run(*_args, **_kwargs):
    """Stands in for the work a refused command must never reach."""
    raise AssertionError("the work started before the output place was refused")


def user_dir(path, files=("notes.txt",)):
    """A directory of the user's with a few files; returns its digest."""
    os.makedirs(path, exist_ok=True)
    for name in files:
        with open(os.path.join(path, name), "w") as handle:
            handle.write(f"the user's {name}\n")
    return tree_digest(path)


# ----------------------------------------------------------------------------- demo dataset

def test_demo_out_an_existing_file_is_refused_and_left_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(data_demo, "_write_dataset", must_not_run)
    (tmp_path / "precious.conf").write_text("the user's settings\n")
    code, error = _exit_code_and_error(capsys, data_demo.main,
                                       ["--out", "precious.conf", "--train", "1", "--test", "1"])
    assert code == 2 and "precious.conf" in error and "did not write" in error
    assert (tmp_path / "precious.conf").read_text() == "the user's settings\n"
    assert sorted(os.listdir(tmp_path)) == ["precious.conf"]  # no .old-*, no .tmp-*


def test_demo_out_a_user_directory_is_refused_and_left_alone(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(data_demo, "_write_dataset", must_not_run)
    target = tmp_path / "photos"
    before = user_dir(str(target), ("a.jpg", "b.txt"))
    code, error = _exit_code_and_error(capsys, data_demo.main,
                                       ["--out", str(target), "--train", "1", "--test", "1"])
    assert code == 2 and str(target) in error and "not a demo dataset" in error
    assert tree_digest(str(target)) == before
    assert sorted(os.listdir(tmp_path)) == ["photos"]


def test_demo_out_under_an_unwritable_parent_is_one_line(capsys):
    code, error = _exit_code_and_error(capsys, data_demo.main,
                                       ["--out", UNWRITABLE, "--train", "1", "--test", "1"])
    assert code == 2 and f"--out '{UNWRITABLE}' cannot be written" in error


def test_demo_never_touches_temp_or_backup_names_it_did_not_make(tmp_path):
    out = str(tmp_path / "demo")
    data_demo.generate_demo_dataset(out, num_train=1, num_test=1)
    # what the old code would have removed (`{out}.tmp-<pid>`) or renamed to (`.old-<pid>`)
    traps = {suffix: user_dir(f"{out}{suffix}{os.getpid()}") for suffix in (".tmp-", ".old-")}
    data_demo.generate_demo_dataset(out, num_train=2, num_test=1)
    assert len((tmp_path / "demo" / "train.txt").read_text().splitlines()) == 2
    for suffix, digest in traps.items():
        assert tree_digest(f"{out}{suffix}{os.getpid()}") == digest
    assert sorted(os.listdir(tmp_path)) == sorted(["demo", f"demo.tmp-{os.getpid()}",
                                                   f"demo.old-{os.getpid()}"])


def test_demo_replaces_an_older_demo_dataset_without_the_owner_marker(tmp_path):
    out = str(tmp_path / "demo")
    data_demo.generate_demo_dataset(out, num_train=1, num_test=1)
    os.remove(os.path.join(out, OWNER_MARKER))  # as written before the marker existed
    data_demo.generate_demo_dataset(out, num_train=2, num_test=1)
    assert len((tmp_path / "demo" / "train.txt").read_text().splitlines()) == 2
    assert os.path.isfile(os.path.join(out, OWNER_MARKER))
    # the usual permissions of a new directory, not the temp dir's private 0700
    assert os.stat(out).st_mode & 0o777 == 0o777 & ~_current_umask()


# ----------------------------------------------------------------------------- infer.py

def _infer(capsys, workspace, *arguments, model_dir=None):
    return _exit_code_and_error(capsys, infer_cli.main, [
        "--model_path", model_dir or workspace["model_dir"], "-c", workspace["config"],
        *workspace["data_args"], *arguments])


def test_infer_output_dir_equal_to_infer_dir_is_refused_before_the_model_loads(
        workspace, capsys, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("test_00000.jpg", "test_00001.jpg"):
        (images / name).write_bytes(open(os.path.join(workspace["images"], name), "rb").read())
    before = tree_digest(str(images))
    # a model dir that does not exist: the output check must come first
    code, error = _infer(capsys, workspace, "--infer_dir", str(images), "--output_dir", str(images),
                         model_dir=str(tmp_path / "no_model"))
    assert code == 2 and "--output_dir" in error and "also an input" in error
    assert str(images) in error
    assert tree_digest(str(images)) == before and sorted(os.listdir(images)) == sorted(before)


def test_infer_img_inside_output_dir_is_refused(workspace, capsys, tmp_path):
    image = tmp_path / "photo.jpg"
    image.write_bytes(open(os.path.join(workspace["images"], "test_00000.jpg"), "rb").read())
    before = tree_digest(str(tmp_path))
    code, error = _infer(capsys, workspace, "--infer_img", str(image), "--output_dir", str(tmp_path))
    assert code == 2 and f"would replace the input '{image}'" in error
    assert tree_digest(str(tmp_path)) == before


@pytest.mark.parametrize("name", ["test_00001.jpg", "detections.json"])
def test_infer_refuses_a_user_file_of_an_output_name(workspace, capsys, tmp_path, name):
    (tmp_path / name).write_text("the user's own file\n")
    code, error = _infer(capsys, workspace, "--infer_dir", workspace["images"],
                         "--output_dir", str(tmp_path))
    assert code == 2 and str(tmp_path / name) in error and "not written by this tool" in error
    assert (tmp_path / name).read_text() == "the user's own file\n"
    assert sorted(os.listdir(tmp_path)) == [name]  # nothing drawn before the refusal


def test_infer_runs_again_into_its_own_output_dir(workspace, capsys, tmp_path):
    arguments = ["--infer_dir", workspace["images"], "--output_dir", str(tmp_path)]
    infer_cli.main(["--model_path", workspace["model_dir"], "-c", workspace["config"],
                    *workspace["data_args"], *arguments])
    first = sorted(os.listdir(tmp_path))
    assert WRITTEN_LIST in first and "detections.json" in first and "test_00003.jpg" in first
    inode = os.stat(tmp_path / "test_00003.jpg").st_ino
    infer_cli.main(["--model_path", workspace["model_dir"], "-c", workspace["config"],
                    *workspace["data_args"], *arguments])
    assert sorted(os.listdir(tmp_path)) == first  # no temp files left
    assert os.stat(tmp_path / "test_00003.jpg").st_ino != inode  # infer's own file, replaced
    (tmp_path / "test_00003.jpg").write_bytes(b"my edit")  # changed since: the user's now
    code, error = _infer(capsys, workspace, *arguments)
    assert code == 2 and "test_00003.jpg' exists and was not written by this tool (or was changed" in error
    assert (tmp_path / "test_00003.jpg").read_bytes() == b"my edit"


# ----------------------------------------------------------------------------- eval.py, compress.py

def test_eval_output_eval_unwritable_fails_before_evaluating(workspace, capsys, tmp_path):
    code, error = _exit_code_and_error(capsys, eval_cli.main, [
        "-m", str(tmp_path / "no_model"), "-c", workspace["config"], "-d", workspace["data"],
        "--output_eval", UNWRITABLE])
    assert code == 2 and f"--output_eval '{UNWRITABLE}' cannot be written" in error


@pytest.mark.parametrize("place", ["model_dir", "data"])
def test_eval_output_eval_equal_to_an_input_is_refused(workspace, capsys, place):
    before = tree_digest(workspace[place])
    code, error = _exit_code_and_error(capsys, eval_cli.main, [
        "-m", workspace["model_dir"], "--model_name", "__model__", "--params_name", "__params__",
        "-c", workspace["config"], "-d", workspace["data"], "--output_eval", workspace[place]])
    assert code == 2 and "--output_eval" in error and "also an input" in error
    assert tree_digest(workspace[place]) == before


def test_eval_never_replaces_a_user_result_file(workspace, capsys, tmp_path):
    (tmp_path / "eval_result.json").write_text("{\"mine\": true}\n")
    # a model dir that does not exist: the output check must come first
    code, error = _exit_code_and_error(capsys, eval_cli.main, [
        "-m", str(tmp_path / "no_model"), "-c", workspace["config"], "-d", workspace["data"],
        "--output_eval", str(tmp_path)])
    assert code == 2 and str(tmp_path / "eval_result.json") in error
    assert (tmp_path / "eval_result.json").read_text() == "{\"mine\": true}\n"


def test_eval_coco_never_replaces_a_user_detections_file(workspace, capsys, tmp_path):
    (tmp_path / "bbox.json").write_text("[]\n")
    code, error = _exit_code_and_error(capsys, eval_cli.main, [
        "-m", str(tmp_path / "no_model"), "-c", workspace["config"], "-d", workspace["data"],
        "-o", "metric=COCO", "--output_eval", str(tmp_path)])
    assert code == 2 and str(tmp_path / "bbox.json") in error
    assert (tmp_path / "bbox.json").read_text() == "[]\n"


def _compress_argv(workspace, root, *extra):
    slim_file = write_slim_config(str(root), "slim.yaml", checkpoint_path=str(root / "ckpt"))
    return ["-s", slim_file, "-c", workspace["config"], "-d", workspace["data"], *extra]


def test_compress_into_a_checkpoint_path_another_run_holds_is_refused(workspace, capsys, tmp_path):
    """While one run holds checkpoint_path (its lock), a second compress.py into it stops with
    one line before it restores or trains; once the lock is free the same command runs."""
    from slim.io import checkpoint as ck
    argv = _compress_argv(workspace, tmp_path)
    with ck.lock_checkpoint_root(str(tmp_path / "ckpt")):
        code, error = _exit_code_and_error(capsys, compress_cli.main, argv)
    assert code == 2 and f"'{tmp_path / 'ckpt'}' is in use by another run" in error
    assert os.listdir(tmp_path / "ckpt") == []


def test_compress_output_eval_unwritable_fails_before_training(workspace, capsys, tmp_path):
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       _compress_argv(workspace, tmp_path, "--output_eval", UNWRITABLE))
    assert code == 2 and f"--output_eval '{UNWRITABLE}' cannot be written" in error
    assert os.listdir(tmp_path / "ckpt") == []  # checked, nothing trained or saved


def test_compress_output_eval_equal_to_the_dataset_is_refused(workspace, capsys, tmp_path):
    before = tree_digest(workspace["data"])
    code, error = _exit_code_and_error(capsys, compress_cli.main, _compress_argv(
        workspace, tmp_path, "--output_eval", workspace["data"]))
    assert code == 2 and f"--output_eval '{workspace['data']}' is also an input" in error
    assert tree_digest(workspace["data"]) == before


@pytest.mark.parametrize("inside", ["0", "3/eval"])
def test_compress_output_eval_inside_a_checkpoint_epoch_dir_is_refused(workspace, capsys, tmp_path,
                                                                      inside):
    output_eval = str(tmp_path / "ckpt" / inside)
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       _compress_argv(workspace, tmp_path, "--output_eval", output_eval))
    assert code == 2 and f"--output_eval '{output_eval}' lies in the checkpoint directory" in error
    assert not os.path.exists(tmp_path / "ckpt" / inside.split("/")[0])  # nothing made there


def test_compress_checkpoint_path_equal_to_the_dataset_is_refused(workspace, capsys, tmp_path):
    before = tree_digest(workspace["data"])
    slim_file = write_slim_config(str(tmp_path), "slim.yaml", checkpoint_path=workspace["data"])
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", workspace["config"],
                                        "-d", workspace["data"]])
    assert code == 2 and "compressor.checkpoint_path" in error and "also an input" in error
    assert tree_digest(workspace["data"]) == before


def test_compress_never_replaces_a_user_summary_file(workspace, capsys, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "compress_summary.json").write_text("mine\n")
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       _compress_argv(workspace, tmp_path, "--output_eval", str(out)))
    assert code == 2 and str(out / "compress_summary.json") in error
    assert (out / "compress_summary.json").read_text() == "mine\n"
    assert os.listdir(tmp_path / "ckpt") == []


def test_interruption_message_names_the_last_checkpoint_or_says_there_is_none():
    from types import SimpleNamespace

    from slim.runs.job import RunState
    from slim.runs.loop import interruption_message
    job = SimpleNamespace(compressor=SimpleNamespace(checkpoint_path="ckpt"))
    assert interruption_message(job, RunState(last_checkpoint="ckpt/3")) == \
        "the last complete checkpoint is 'ckpt/3'; the same command resumes after it"
    assert interruption_message(job, RunState()) == \
        "there is no complete checkpoint in 'ckpt' yet; the same command starts from the beginning"
    assert "no checkpoint was written" in interruption_message(
        SimpleNamespace(compressor=SimpleNamespace(checkpoint_path=None)), RunState())
    assert interruption_message(None, None).startswith("stopped before training started")


@pytest.fixture
def sigint_raises():
    """SIGINT raising KeyboardInterrupt in this process, and at its default (so Python's
    handler) in the children it starts, also when the suite runs in the background
    (`make test &`), where SIGINT starts out ignored and the ignoring is inherited."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)


def test_ctrl_c_stops_compress_with_one_line_naming_the_checkpoint(workspace, tmp_path,
                                                                    sigint_raises):
    """Ctrl-C as a terminal sends it: SIGINT to the whole process group, worker processes of
    the training data loader included."""
    slim_file = write_slim_config(str(tmp_path), "slim.yaml", epochs=50, checkpoint_path="ckpt")
    command = compress_command(slim_file, workspace["config"], "-d", workspace["data"], "-o",
                               "YoloTrainFeed.num_workers=2", "YoloTrainFeed.use_process=true")
    process = subprocess.Popen(command, cwd=str(tmp_path), env=child_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.time() + 300
        while not os.path.isdir(tmp_path / "ckpt" / "0") and time.time() < deadline \
                and process.poll() is None:
            time.sleep(0.05)
        time.sleep(0.3)  # into epoch 1
        os.killpg(process.pid, signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 130, stderr[-3000:]
    assert "Traceback" not in stderr and "Traceback" not in stdout
    lines = [line for line in stderr.splitlines()
             if line.strip() and " INFO] " not in line and "eval epoch" not in line]
    assert len(lines) == 1, stderr[-3000:]
    assert lines[0].startswith("interrupted: the last complete checkpoint is 'ckpt/"), lines
    named = lines[0].split("'")[1]
    assert os.path.isfile(tmp_path / named / "manifest.json")  # complete: a restart resumes there


# ----------------------------------------------------------------------------- weights, pretrain

def _tiny_program():
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup):
        image = paddle.static.data("image", [-1, 3, 8, 8], "float32")
        paddle.static.nn.conv2d(image, 2, 3, param_attr=paddle.ParamAttr(name="w"),
                                bias_attr=False)
    scope = paddle.static.Scope()
    paddle.static.Executor(paddle.CPUPlace()).run(startup, scope=scope)
    return main, scope


def test_save_weights_refuses_a_user_directory_and_replaces_its_own(tmp_path, monkeypatch):
    from slim.io.weights import save_weights
    program, scope = _tiny_program()
    target = str(tmp_path / "weights")
    before = user_dir(target)
    with monkeypatch.context() as patched:
        patched.setattr(paddle.static, "save_vars", must_not_run)  # refused before writing
        with pytest.raises(OutputPlaceError, match="did not write"):
            save_weights(scope, program, target)
    assert tree_digest(target) == before
    assert sorted(os.listdir(tmp_path)) == ["weights"]  # no staging dir left
    ours = str(tmp_path / "ours")
    save_weights(scope, program, ours)
    save_weights(scope, program, ours)  # its own: replaced
    assert sorted(os.listdir(ours)) == [OWNER_MARKER, "w"]


def test_save_weights_combined_replaces_only_a_file_it_wrote(tmp_path, monkeypatch):
    from slim.io.weights import save_weights
    program, scope = _tiny_program()
    (tmp_path / "__params__").write_bytes(b"the user's file")
    with monkeypatch.context() as patched:
        patched.setattr(paddle.static, "save_vars", must_not_run)  # refused before writing
        with pytest.raises(OutputPlaceError, match="not written by this tool"):
            save_weights(scope, program, str(tmp_path / "__params__"), combined=True)
    assert (tmp_path / "__params__").read_bytes() == b"the user's file"
    ours = tmp_path / "mine" / "params.bin"
    save_weights(scope, program, str(ours), combined=True)
    first = ours.read_bytes()
    save_weights(scope, program, str(ours), combined=True)  # listed as its own: replaced
    assert ours.read_bytes() == first
    assert sorted(os.listdir(ours.parent)) == [WRITTEN_LIST, "params.bin"]


@pytest.mark.parametrize("combined", [False, True])
def test_save_weights_checks_again_before_replacing(tmp_path, monkeypatch, combined):
    """A user's file or directory that appears at the target while the weights are being
    written is not replaced either (the check is repeated at the swap)."""
    from slim.io.weights import save_weights
    program, scope = _tiny_program()
    target = tmp_path / "weights"
    save_vars = paddle.static.save_vars

    def save_then_user_writes(*args, **kwargs):
        save_vars(*args, **kwargs)
        if combined:
            target.write_text("the user's file")
        else:
            user_dir(str(target))
    monkeypatch.setattr(paddle.static, "save_vars", save_then_user_writes)
    with pytest.raises(OutputPlaceError):
        save_weights(scope, program, str(target), combined=combined)
    if combined:
        assert target.read_text() == "the user's file"
        assert sorted(os.listdir(tmp_path)) == ["weights"]
    else:
        assert sorted(os.listdir(target)) == ["notes.txt"]
        assert sorted(os.listdir(tmp_path)) == ["weights"]  # the staging dir removed


def test_pretrain_out_a_user_directory_is_refused_before_training(workspace, tmp_path, capsys,
                                                                 monkeypatch):
    monkeypatch.setattr(pretrain_run, "decode_images", must_not_run)
    target = str(tmp_path / "mine")
    before = user_dir(target)
    code, error = _exit_code_and_error(capsys, pretrain.main, [
        "-c", workspace["config"], "--out", target, "--epochs", "1", "--size", "32",
        *workspace["data_args"]])
    assert code == 2 and f"--out '{target}'" in error and "did not write" in error
    assert tree_digest(target) == before


def test_pretrain_out_the_dataset_dir_is_refused(workspace, capsys, monkeypatch):
    monkeypatch.setattr(pretrain_run, "decode_images", must_not_run)
    before = tree_digest(workspace["data"])  # a demo dataset: the tool's own, but an input
    code, error = _exit_code_and_error(capsys, pretrain.main, [
        "-c", workspace["config"], "--out", workspace["data"], "--epochs", "1", "--size", "32",
        *workspace["data_args"]])
    assert code == 2 and "--out" in error and "an input of this run" in error
    assert tree_digest(workspace["data"]) == before


def test_pretrain_ctrl_c_is_one_line_naming_out(monkeypatch, workspace, tmp_path, capsys):
    def stopped(*_args, **_kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(pretrain, "pretrain_backbone", stopped)
    with pytest.raises(SystemExit) as exit_info:
        pretrain.main(["-c", workspace["config"], "--out", str(tmp_path / "w")])
    assert exit_info.value.code == 130
    assert capsys.readouterr().err == (f"interrupted: pretraining stopped before its weights were "
                                       f"written; --out '{tmp_path / 'w'}' is unchanged\n")


# ----------------------------------------------------------------------------- slim.commands.demo, inspect

def test_slim_demo_checks_every_output_place_first(tmp_path, monkeypatch):
    from slim.commands import demo
    from slim.config import load_config, load_slim_config
    monkeypatch.chdir(ROOT)
    cfg = load_config(demo.DETECTION_CONFIG)
    slim_cfg = load_slim_config(demo.SLIM_CONFIG)
    out = tmp_path / "demo"
    places = demo.demo_places(str(out), cfg, slim_cfg, with_pretraining=True)
    places.owned_dirs["pruned_checkpoints"] = str(tmp_path / "ckpt")
    places.weights["model_final"] = str(out / "model_final")
    places.dataset = str(tmp_path / "dataset")
    demo.check_demo_places(places, [])  # all absent: fine
    demo.fresh_owned_dir(places["baseline"])
    (out / "baseline" / "train.log").write_text("an earlier run")
    demo.check_demo_places(places, [])  # the demo's own: fine
    before = user_dir(str(out / "infer_baseline"))
    with pytest.raises(OutputPlaceError, match="infer_baseline"):
        demo.check_demo_places(places, [])
    assert tree_digest(str(out / "infer_baseline")) == before
    os.rename(out / "infer_baseline", tmp_path / "moved")
    (out / "results.md").write_text("the user's notes")
    with pytest.raises(OutputPlaceError, match="results.md"):
        demo.check_demo_places(places, [])


def test_slim_demo_fresh_dir_clears_only_the_tools_own(tmp_path):
    from slim.io.output_places import make_owned_temp_dir
    from slim.workflow import places as demo
    root = tmp_path / "checkpoints"  # a checkpoint root made by compress.py: owned epoch dirs
    root.mkdir()
    os.rename(make_owned_temp_dir(str(root), "x"), root / "0")
    assert demo.is_ours(str(root))
    demo.fresh_owned_dir(str(root))
    assert sorted(os.listdir(root)) == [OWNER_MARKER]
    (tmp_path / "user").mkdir()
    (tmp_path / "user" / "a").write_text("a")
    assert not demo.is_ours(str(tmp_path / "user"))


@pytest.mark.parametrize("code, error", [(2, UserError), (130, Interrupted)])
def test_slim_demo_step_exit_codes(code, error):
    from slim.workflow import steps as demo
    with pytest.raises(error, match=f"exit {code}"):
        demo.run_step("step", [sys.executable, "-c", f"import sys; sys.exit({code})"])


def test_inspect_graph_onto_a_user_file_is_refused_before_work(tmp_path, capsys, monkeypatch):
    from slim.__main__ import main
    from slim.commands import inspect
    monkeypatch.setattr(inspect, "model_from_config", must_not_run)
    monkeypatch.setenv("PATH", str(tmp_path))  # no graphviz
    graph = tmp_path / "notes.dot"
    graph.write_text("the user's graph")
    config = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_voc.yml")
    code, error = _exit_code_and_error(capsys, main, ["inspect", "-c", config, "--graph", str(graph)])
    assert code == 2 and str(graph) in error and "not written by this tool" in error
    assert graph.read_text() == "the user's graph"
    code, error = _exit_code_and_error(capsys, main, ["inspect", "-c", config, "--graph", config])
    assert code == 2 and "input" in error


def test_slim_demo_ctrl_c_lets_the_step_say_what_it_kept(monkeypatch, capsys, sigint_raises):
    """Ctrl-C reaching the demo alone: the running step is interrupted in turn, its last line
    still reaches the output, and the demo stops with Interrupted (exit 130)."""
    import threading

    from slim.workflow import steps as demo
    monkeypatch.setattr(demo, "STEP_STOP_SECONDS", 0.5)
    child = ("import sys, time\nprint('working', flush=True)\ntry:\n    time.sleep(60)\n"
             "except KeyboardInterrupt:\n    print('interrupted: kept checkpoint 7', flush=True)\n"
             "    sys.exit(130)\n")
    timer = threading.Timer(1.5, os.kill, (os.getpid(), signal.SIGINT))
    timer.start()
    try:
        with pytest.raises(Interrupted, match="demo step 'step' was stopped"):
            demo.run_step("step", [sys.executable, "-c", child])
    finally:
        timer.cancel()
    assert capsys.readouterr().out.splitlines()[-2:] == ["working", "interrupted: kept checkpoint 7"]
