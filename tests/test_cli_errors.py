"""Bad input to compress.py / eval.py / infer.py: one `error: ...` line naming the file, key or
value, exit 2, no traceback, nothing already written lost."""
import os
import re

import pytest
from test_compress import SEED_REGEX, SLIM_CONFIG, make_workspace, write_slim_config

import compress as compress_cli
import eval as eval_cli
import infer as infer_cli
from slim.io import checkpoint as ck


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("cli_errors"))
    return make_workspace(root)


def _exit_code_and_error(capsys, main, argv):
    """Run a CLI main in-process; return (exit code, the 'error:' line, all of stderr)."""
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr
    error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(error_lines) == 1, stderr[-2000:]
    return exit_info.value.code, error_lines[0]


def _slim_config(root, name, **replacements):
    text = SLIM_CONFIG.replace("SEED_REGEX", SEED_REGEX).replace("EPOCHS", "2") \
        .replace("CHECKPOINT_PATH", os.path.join(root, "ckpt_" + name))
    for old, new in replacements.items():
        assert old in text, old
        text = text.replace(old, new)
    path = os.path.join(root, name + ".yaml")
    with open(path, "w") as handle:
        handle.write(text)
    return path


def test_missing_slim_file(workspace, capsys):
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", "no_such_slim.yaml", "-c", workspace["config"]])
    assert code == 2 and "no_such_slim.yaml" in error and "not found" in error


def test_missing_detection_config(workspace, capsys):
    slim_file = write_slim_config(workspace["root"], "ok.yaml")
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", "no_such_config.yml"])
    assert code == 2 and "no_such_config.yml" in error


@pytest.mark.parametrize("name, replacements, expected", [
    ("unknown_strategy", {"class: UniformPruneStrategy": "class: UniformPrunStrategy"},
     r"unknown class 'UniformPrunStrategy' \(did you mean 'UniformPruneStrategy'\?\); "
     r"known classes: UniformPruneStrategy, SensitivePruneStrategy"),
    ("unknown_pruner", {"    pruner: pruner_1": "    pruner: pruner_2"},
     r"names pruner 'pruner_2', which is not defined \(did you mean 'pruner_1'\?\); pruners: pruner_1"),
    ("ratio_high", {"target_ratio: 0.5": "target_ratio: 1.5"},
     r"'target_ratio' must be in \(0, 1\), got 1.5"),
    ("ratio_zero", {"target_ratio: 0.5": "target_ratio: 0"},
     r"'target_ratio' must be in \(0, 1\), got 0"),
    ("sensitive", {"class: UniformPruneStrategy": "class: SensitivePruneStrategy\n    delta_rate: 1"},
     r"strategies.uniform_pruning_strategy.*'delta_rate' must be in \(0, 1\), got 1"),
    ("criterion", {"'*': l1_norm": "'*': l2_norm"}, r"l2_norm"),
])
def test_bad_slim_config(workspace, capsys, name, replacements, expected):
    slim_file = _slim_config(workspace["root"], name, **replacements)
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", workspace["config"]])
    assert code == 2
    assert name + ".yaml" in error
    assert re.search(expected, error), error
    assert not os.path.exists(os.path.join(workspace["root"], "ckpt_" + name))


def test_misspelled_override_suggests_the_key(workspace, capsys):
    slim_file = write_slim_config(workspace["root"], "ok.yaml")
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", workspace["config"],
                                        "-o", "LeaningRate.base_lr=0.005"])
    assert code == 2 and "did you mean 'LearningRate'" in error


def test_unwritable_checkpoint_dir(workspace, capsys, tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("a file where a directory should be")
    slim_file = write_slim_config(workspace["root"], "blocked.yaml",
                                  checkpoint_path=str(blocker / "ckpt"))
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", workspace["config"]])
    assert code == 2
    assert f"compressor.checkpoint_path '{blocker / 'ckpt'}' cannot be written" in error
    assert blocker.read_text() == "a file where a directory should be"


def test_weights_url_cannot_be_downloaded(workspace, capsys, monkeypatch):
    slim_file = write_slim_config(workspace["root"], "url.yaml", checkpoint_path="ckpt_url")
    url = "https://paddle-imagenet-models-name.bj.bcebos.com/MobileNetV1_pretrained.tar"
    monkeypatch.chdir(workspace["root"])
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", workspace["config"],
                                        "-o", f"pretrain_weights={url}"])
    assert code == 2
    assert f"pretrain_weights '{url}' is a URL" in error and "pass the local path" in error


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(workspace, capsys, monkeypatch):
    # An LR of 1e30 from iteration 2 on (epoch 1) blows the loss up; epoch 0 is saved first.
    slim_file = write_slim_config(workspace["root"], "nan.yaml", epochs=2, checkpoint_path="ckpt_nan")
    exploding = "LearningRate.schedulers=[!PiecewiseDecay {milestones: [2], values: [0.001, 1.0e+30]}]"
    monkeypatch.chdir(workspace["root"])
    code, error = _exit_code_and_error(capsys, compress_cli.main,
                                       ["-s", slim_file, "-c", workspace["config"],
                                        "-o", exploding])
    assert code == 2
    assert error.startswith("error: training stopped: the loss is not finite (")
    assert "at epoch 1 iteration" in error and "the last good checkpoint 'ckpt_nan/0' is kept" in error
    checkpoints = os.path.join(workspace["root"], "ckpt_nan")
    assert sorted(os.listdir(checkpoints)) == ["0"]
    assert ck.latest_complete_checkpoint(checkpoints).state.epoch == 0


def test_eval_with_missing_model_file(workspace, capsys, tmp_path):
    code, error = _exit_code_and_error(capsys, eval_cli.main,
                                       ["-m", str(tmp_path), "-c", workspace["config"]])
    assert code == 2 and f"model file '{tmp_path / 'model'}' does not exist" in error


def test_infer_with_missing_image_dir(workspace, capsys, tmp_path):
    code, error = _exit_code_and_error(capsys, infer_cli.main,
                                       ["--model_path", str(tmp_path), "-c", workspace["config"],
                                        "--infer_dir", str(tmp_path / "nothing")])
    assert code == 2 and "--infer_dir" in error and "nothing" in error


SIGTERM_DURING_RUN = """
import os, signal, sys, time
sys.path.insert(0, {root!r})
import slim.config
def load_config_then_get_killed(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGTERM)  # as `kill PID` would, once the run is under way
    time.sleep(30)
slim.config.load_config = load_config_then_get_killed
import {cli} as cli
cli.main({argv!r})
"""


@pytest.mark.parametrize("cli, argv", [
    ("eval", ["-m", "model", "-c", "x.yml"]),
    ("infer", ["--model_path", "model", "-c", "x.yml", "--infer_img", "x.jpg"]),
    ("compress", ["-s", "s.yaml", "-c", "x.yml"]),
    ("train", ["-c", "x.yml"])])
def test_sigterm_after_paddle_is_imported_stops_like_ctrl_c(cli, argv, tmp_path):
    """Paddle's import installs a C++ SIGTERM handler (a 'C++ Traceback' crash report, exit
    143); eval.py / infer.py put theirs back: one line, exit 130, like Ctrl-C."""
    import subprocess
    import sys
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    script = SIGTERM_DURING_RUN.format(root=root, cli=cli, argv=argv)
    done = subprocess.run([sys.executable, "-c", script], cwd=str(tmp_path), capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 130, done.stderr[-2000:]
    assert done.stderr.strip().splitlines()[-1].startswith("interrupted")
    assert "Traceback" not in done.stderr
