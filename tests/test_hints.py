"""Rule (f): every hint a message gives is a command that works. Each test below makes a
message give its hint, then follows the hint once, exactly as written, and the command
then works. The earlier wrong hints: `-o --resume_checkpoint=PATH` (train.py -r is a
flag), `-o compressor.init_model=...` (-o overrides the detection config only) and
`-o infer_cfg.yml.image_shape=...` (a file name, without -c).

Also rule (c) for empty paths: `train.py -r ""` was ignored and training started from
scratch; an empty `weights`, `compressor.init_model` or `--checkpoint_path` is refused
like a missing one, never taken for "not given"."""
import os
import re

import pytest
from test_cli_errors import _exit_code_and_error
from test_compress import make_workspace

import compress as compress_cli
import eval as eval_cli
import train as train_cli

NO_STRATEGY_SLIM = """
version: 1.0
compressor:
  epoch: 1
  eval_epoch: 1
  checkpoint_path: {checkpoint_path}
  init_model: {init_model}
  strategies: []
"""


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    return make_workspace(str(tmp_path_factory.mktemp("hints")))


def _train(tmp_path, *extra):
    return ["-c", "tiny.yml", "-o", "max_iters=1", f"save_dir={tmp_path / 'save'}",
            "--checkpoint_path", str(tmp_path / "ckpt"), *extra]


def test_train_resume_checkpoint_empty_is_refused_and_its_hint_works(workspace, tmp_path,
                                                                     capsys, monkeypatch):
    monkeypatch.chdir(workspace["root"])
    code, line = _exit_code_and_error(capsys, train_cli.main, _train(tmp_path, "-r", ""))
    assert code == 2 and "--resume_checkpoint is empty" in line, line
    assert "-o" not in line.split("empty", 1)[1]  # no -o for a flag
    assert not os.path.exists(tmp_path / "ckpt" / "0")  # nothing trained
    assert "leave out --resume_checkpoint" in line  # the hint, followed:
    summary = train_cli.main(_train(tmp_path))
    assert summary["last_checkpoint"].endswith(os.path.join("ckpt", "0"))
    # the other hint of the same message, `--resume_checkpoint PATH`, followed
    code, line = _exit_code_and_error(capsys, train_cli.main,
                                      _train(tmp_path, "-r", str(tmp_path / "nowhere")))
    assert code == 2 and "(--resume_checkpoint PATH, or leave out" in line, line
    eval_model = os.path.join(str(tmp_path / "ckpt"), "0")
    assert train_cli.main(["-c", "tiny.yml", "-o", "max_iters=1",
                           f"save_dir={tmp_path / 'save'}", "--checkpoint_path",
                           str(tmp_path / "ckpt2"), "-r", eval_model]) is not None


def test_a_repeated_o_adds_to_the_earlier_overrides(workspace, tmp_path, monkeypatch):
    """`-o max_iters=1 save_dir=X -o pretrain_weights=null`: all three apply (a plain
    nargs='*' option would keep only the last -o and train the config's max_iters)."""
    monkeypatch.chdir(workspace["root"])
    summary = train_cli.main(_train(tmp_path, "-o", "pretrain_weights=null"))
    assert summary["max_iters"] == 1
    assert summary["last_checkpoint"].endswith(os.path.join("ckpt", "0"))


@pytest.mark.parametrize("value", ["", "nowhere"])
def test_an_empty_or_missing_weights_path_hint_works(workspace, tmp_path, capsys, monkeypatch,
                                                     value):
    """pretrain_weights (train.py's start) empty or missing: the hint says -o ...=null."""
    monkeypatch.chdir(workspace["root"])
    code, line = _exit_code_and_error(capsys, train_cli.main,
                                      _train(tmp_path, "-o", f"pretrain_weights={value!r}"))
    assert code == 2 and line.startswith("error: pretrain_weights "), line
    hint = re.search(r"or (-o pretrain_weights=null) to start without it", line)
    assert hint and "-o pretrain_weights=PATH" in line, line
    assert train_cli.main(_train(tmp_path, "-o", f"pretrain_weights={value!r}",
                                 *hint.group(1).split()[1:])) is not None


def test_an_empty_init_model_hint_edits_the_slim_config(workspace, tmp_path, capsys, monkeypatch):
    """compressor.init_model is a slim config key: the hint says to edit the slim config
    (there is no -o for it); followed, compress.py runs."""
    monkeypatch.chdir(workspace["root"])
    slim_file = tmp_path / "slim.yaml"
    slim_file.write_text(NO_STRATEGY_SLIM.format(checkpoint_path=tmp_path / "ckpt",
                                                 init_model="''"))
    argv = ["-s", str(slim_file), "-c", "tiny.yml", "-o", "max_iters=1",
            f"save_dir={tmp_path / 'save'}"]
    code, line = _exit_code_and_error(capsys, compress_cli.main, argv)
    assert code == 2 and "compressor.init_model is empty" in line, line
    assert "-o compressor" not in line
    hint = re.search(r"or remove `init_model` from `compressor:` in the slim config", line)
    assert hint, line
    slim_file.write_text("\n".join(row for row in slim_file.read_text().splitlines()
                                   if not row.strip().startswith("init_model:")))
    assert compress_cli.main(argv) is not None
    assert os.path.isdir(tmp_path / "ckpt" / "0")


def test_the_image_shape_hint_of_eval_works(workspace, tmp_path, capsys, monkeypatch):
    """A model exported at 64 px evaluated with a 96 px feed: the hint's -o, added to the
    command as it is written (one shell word), makes it run."""
    monkeypatch.chdir(workspace["root"])
    train_cli.main(_train(tmp_path))
    model = str(tmp_path / "ckpt" / "0" / "eval_model")
    argv = ["-m", model, "--model_name", "__model__", "--params_name", "__params__",
            "-c", "tiny.yml", "-o", "YoloEvalFeed.image_shape=[3,96,96]"]
    code, line = _exit_code_and_error(capsys, eval_cli.main, argv)
    assert code == 2 and "the model takes images of [3, 64, 64]" in line, line
    hint = re.search(r"; add (-o \S+)$", line)
    assert hint and hint.group(1) == "-o YoloEvalFeed.image_shape=[3,64,64]", line
    assert eval_cli.main([*argv, *hint.group(1).split()[1:]]) is not None


def test_an_empty_checkpoint_path_flag_is_refused(workspace, tmp_path, capsys, monkeypatch):
    """train.py --checkpoint_path "" fell back to the default place silently."""
    monkeypatch.chdir(workspace["root"])
    code, line = _exit_code_and_error(capsys, train_cli.main, [
        "-c", "tiny.yml", "-o", "max_iters=1", f"save_dir={tmp_path / 'save'}",
        "--checkpoint_path", ""])
    assert code == 2 and "--checkpoint_path is empty" in line, line
    assert not os.path.exists(tmp_path / "save")
