"""train.py: plain training from a detection config ends in a checkpoint, an evaluation and
model_final, which compress.py's `-o weights=...` loads; its output places are checked first."""
import json
import os

import pytest
from test_cli_errors import _exit_code_and_error
from test_compress import make_workspace, reference_run

import compress as compress_cli
import train as train_cli
from slim.io import checkpoint as ck

NO_STRATEGY_SLIM_CONFIG = """
version: 1.0
compressor:
  epoch: 1
  eval_epoch: 1
  checkpoint_path: {checkpoint_path}
  strategies: []
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("train"))
    os.symlink(os.path.join(reference_run(tmp_path_factory)["root"], "data"),
               os.path.join(root, "data"))
    return make_workspace(root)


@pytest.fixture(scope="module")
def trained(workspace):
    """train.py -c tiny.yml -o weights=null max_iters=2, run in the workspace."""
    cwd = os.getcwd()
    os.chdir(workspace["root"])
    try:
        summary = train_cli.main(["-c", "tiny.yml", "-o", "weights=null", "max_iters=2",
                                  "--output_eval", "out"])
    finally:
        os.chdir(cwd)
    return dict(workspace, summary=summary)


def test_train_py_trains_evaluates_and_writes_model_final(trained):
    root = trained["root"]
    # checkpoint_path defaults to save_dir/<config name>/, as PaddleDetection's
    checkpoint = ck.validate_checkpoint(os.path.join(root, "output", "tiny", "0"))
    assert (checkpoint.state.epoch, checkpoint.state.iteration) == (0, 2)
    assert checkpoint.state.pruning_plans == []
    assert [entry["epoch"] for entry in checkpoint.state.extra["history"]] == [0]
    model_final = os.path.join("output", "tiny", "model_final")
    assert trained["summary"]["model_final"] == model_final
    assert os.path.isfile(os.path.join(root, model_final, "conv1_weights"))
    with open(os.path.join(root, "out", "eval_result.json")) as handle:
        assert json.load(handle)["epoch"] == 0
    with open(os.path.join(root, "out", "train_summary.json")) as handle:
        assert json.load(handle)["last_checkpoint"] == os.path.join("output", "tiny", "0")


def test_compress_loads_model_final_as_weights(trained, capsys):
    root = trained["root"]
    slim_file = os.path.join(root, "plain.yaml")
    with open(slim_file, "w") as handle:
        handle.write(NO_STRATEGY_SLIM_CONFIG.format(checkpoint_path="ckpt_from_final"))
    capsys.readouterr()
    model_final = os.path.join(root, "output", "tiny", "model_final")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        compress_cli.main(["-s", slim_file, "-c", "tiny.yml", "-o", f"weights={model_final}",
                           "max_iters=1"])
    finally:
        os.chdir(cwd)
    loaded = [line for line in capsys.readouterr().out.splitlines()
              if line.startswith("loaded weights ")]
    trained_params = ck.read_checkpoint_tensors(
        ck.validate_checkpoint(os.path.join(root, "output", "tiny", "0")))
    parameters = len(os.listdir(model_final)) - 1  # every parameter file and the owner marker
    assert loaded == [f"loaded weights '{model_final}': {parameters} parameters"]
    assert "conv1_weights" in trained_params


def test_train_py_checks_its_output_places_before_training(workspace, tmp_path, capsys,
                                                           monkeypatch):
    config = workspace["config"]
    monkeypatch.chdir(workspace["root"])  # where the config's data is: only the places can fail
    # a model_final directory that the tool did not write is never replaced
    foreign = tmp_path / "ckpt" / "model_final"
    foreign.mkdir(parents=True)
    (foreign / "notes.txt").write_text("mine")
    code, line = _exit_code_and_error(capsys, train_cli.main, [
        "-c", config, "-o", "weights=null", "max_iters=1", f"save_dir={tmp_path / 'save'}",
        "--checkpoint_path", str(tmp_path / "ckpt")])
    assert code == 2 and "model_final" in line and str(foreign) in line
    assert sorted(os.listdir(tmp_path / "ckpt")) == ["model_final"]  # nothing trained
    assert (foreign / "notes.txt").read_text() == "mine"
    # a checkpoint_path that is a file
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, line = _exit_code_and_error(capsys, train_cli.main, [
        "-c", config, "-o", "weights=null", "--checkpoint_path", str(blocker)])
    assert code == 2 and "--checkpoint_path" in line and str(blocker) in line
    assert blocker.read_text() == "x"


def test_snapshot_iter_splits_max_iters_into_checkpoints(workspace, tmp_path):
    cwd = os.getcwd()
    os.chdir(workspace["root"])
    try:
        summary = train_cli.main(["-c", "tiny.yml", "-o", "weights=null", "max_iters=3",
                                  "snapshot_iter=2", "--checkpoint_path", str(tmp_path / "c")])
    finally:
        os.chdir(cwd)
    assert sorted(os.listdir(tmp_path / "c")) == ["0", "1", "model_final"]
    assert [ck.validate_checkpoint(str(tmp_path / "c" / epoch)).state.iteration
            for epoch in ("0", "1")] == [2, 3]
    assert [entry["epoch"] for entry in summary["history"]] == [1]  # no --eval: the end only


def test_the_demo_trains_its_baseline_with_train_py():
    from slim.commands.demo import DETECTION_CONFIG, baseline_schedule, baseline_train_command
    from slim.config import load_config
    cfg = load_config(os.path.join(os.path.dirname(train_cli.__file__), DETECTION_CONFIG),
                      ["max_iters=5"])
    command = baseline_train_command(cfg, 3, "out/baseline/checkpoints", "out/baseline",
                                     "out/pretrained_backbone", ["max_iters=5", "log_iter=1"])
    assert command[1:] == [
        "train.py", "-c", DETECTION_CONFIG, "-o", "weights=null", baseline_schedule(cfg, 3),
        "pretrain_weights=out/pretrained_backbone", "max_iters=5", "log_iter=1", "max_iters=15",
        "snapshot_iter=5", "--checkpoint_path", "out/baseline/checkpoints", "--output_eval",
        "out/baseline"]
    args = train_cli.parse_args(command[2:])
    baseline = load_config(os.path.join(os.path.dirname(train_cli.__file__), args.config),
                           args.opt)
    # the user's -o apply, then 3 epochs of their max_iters with a checkpoint after each
    assert (baseline["max_iters"], baseline["snapshot_iter"], baseline["log_iter"]) == (15, 5, 1)
    assert baseline["weights"] is None


def test_resume_checkpoint_continues_a_given_checkpoint(trained, tmp_path, capsys):
    """-r CHECKPOINT (PaddleDetection's --resume_checkpoint): a new checkpoint_path continues
    after the named checkpoint's iteration instead of starting over."""
    root = trained["root"]
    start = os.path.join(root, "output", "tiny", "0")  # epoch 0, iteration 2
    cwd = os.getcwd()
    os.chdir(root)
    capsys.readouterr()
    try:
        summary = train_cli.main(["-c", "tiny.yml", "-o", "weights=null", "max_iters=4",
                                  "snapshot_iter=2", "--checkpoint_path", str(tmp_path / "c"),
                                  "-r", start])
    finally:
        os.chdir(cwd)
    out = capsys.readouterr().out
    assert f"resumed from checkpoint '{start}': epoch 0 done, iteration 2" in out
    assert sorted(os.listdir(tmp_path / "c")) == ["1", "model_final"]  # epoch 0 not retrained
    assert ck.validate_checkpoint(str(tmp_path / "c" / "1")).state.iteration == 4
    assert summary["last_checkpoint"] == str(tmp_path / "c" / "1")


def test_resume_checkpoint_must_be_a_checkpoint(trained, tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(trained["root"])
    model_final = os.path.join("output", "tiny", "model_final")
    code, line = _exit_code_and_error(capsys, train_cli.main, [
        "-c", "tiny.yml", "-o", "weights=null", "max_iters=2",
        "--checkpoint_path", str(tmp_path / "c"), "-r", model_final])
    assert code == 2
    assert line.startswith(f"error: --resume_checkpoint '{model_final}' is not a checkpoint")
    assert not os.listdir(tmp_path / "c")  # nothing trained or written


def test_scale_lr_rescales_the_schedule_to_the_total_batch(workspace, tmp_path, capsys,
                                                          monkeypatch):
    monkeypatch.chdir(workspace["root"])
    capsys.readouterr()
    train_cli.main(["-c", "tiny.yml", "-o", "weights=null", "max_iters=1",
                    "--checkpoint_path", str(tmp_path / "c"), "--scale_lr", "8"])
    lines = [line for line in capsys.readouterr().out.splitlines() if "--scale_lr" in line]
    assert len(lines) == 1 and lines[0].startswith("--scale_lr: total batch 2 vs the recipe's 8")
