"""Rule (d): every entry point's command-line usage errors (a value of the wrong type, an
unknown option, a missing required one, an unknown subcommand) are one `error:` line,
exit 2, no usage block; the `--help` the line points to works (rule (f))."""
import re

import pytest

import compress as compress_cli
import eval as eval_cli
import infer as infer_cli
import train as train_cli
from slim.__main__ import main as slim_main
from slim.config.cli import main as config_main
from slim.data.demo import main as demo_data_main
from slim.data.voc_lists import main as voc_lists_main

ENTRY_POINTS = {  # prog (as the error line names it) -> its main
    "python compress.py": compress_cli.main, "python train.py": train_cli.main,
    "python eval.py": eval_cli.main, "python infer.py": infer_cli.main,
    "python -m slim": slim_main, "python -m slim.config": config_main,
    "python -m slim.data.demo": demo_data_main, "python -m slim.data.voc_lists": voc_lists_main,
}

CASES = [  # (entry point, the prog its error line names, argv, words of argparse's message)
    ("python compress.py", "python compress.py",
     ["-c", "x.yml", "-s", "y.yaml", "--scale_lr", "abc"], "invalid int value"),
    ("python compress.py", "python compress.py", ["-c", "x.yml"], "required: -s/--slim_file"),
    ("python train.py", "python train.py", ["-c", "x.yml", "--scale_lr", "1.5"],
     "invalid int value"),
    ("python train.py", "python train.py", ["-c", "x.yml", "--nope"],
     "unrecognized arguments: --nope"),
    ("python eval.py", "python eval.py", ["-c", "x.yml"], "required: -m/--model_path"),
    ("python infer.py", "python infer.py", ["--model_path", "m", "--draw_threshold", "abc"],
     "invalid float value"),
    ("python -m slim", "python -m slim", [], "required: COMMAND"),
    ("python -m slim", "python -m slim", ["nope"], "invalid choice: 'nope'"),
    ("python -m slim", "python -m slim prune",
     ["prune", "--model_dir", "m", "--out", "o", "--target_ratio", "abc"],
     "invalid float value: 'abc'"),
    ("python -m slim", "python -m slim prune",
     ["prune", "--model_dir", "m", "--out", "o", "--latency_runs", "x"], "invalid int value"),
    ("python -m slim", "python -m slim export",
     ["export", "--format", "onnx", "--model_path", "m", "--opset", "11.5"], "invalid int value"),
    ("python -m slim", "python -m slim export",
     ["export", "--format", "tflite", "--model_path", "m"], "invalid choice: 'tflite'"),
    ("python -m slim", "python -m slim sensitivity",
     ["sensitivity", "-c", "x", "-s", "y", "--workers", "two"], "invalid int value"),
    ("python -m slim", "python -m slim inspect", ["inspect"], "required: -c/--config"),
    ("python -m slim", "python -m slim pretrain", ["pretrain", "--lr", "fast"],
     "invalid float value"),
    ("python -m slim", "python -m slim", ["demo", "--nope"],  # the top parser finds extras
     "unrecognized arguments: --nope"),
    ("python -m slim.config", "python -m slim.config", ["nope"], "invalid choice: 'nope'"),
    ("python -m slim.config", "python -m slim.config help", ["help"], "required: module"),
    ("python -m slim.data.demo", "python -m slim.data.demo", ["--train", "many"],
     "invalid int value"),
    ("python -m slim.data.voc_lists", "python -m slim.data.voc_lists", ["--nope"],
     "unrecognized arguments"),
]


@pytest.mark.parametrize("entry, prog, argv, words", CASES,
                         ids=[" ".join([c[1], *c[2][:1]]) for c in CASES])
def test_a_usage_error_is_one_error_line_exit_2_and_its_help_works(capsys, entry, prog, argv,
                                                                   words):
    main = ENTRY_POINTS[entry]
    with pytest.raises(SystemExit) as stopped:
        main(argv)
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert stopped.value.code == 2 and len(lines) == 1, err
    assert lines[0].startswith("error: ") and words in lines[0], lines[0]
    assert "usage:" not in err and "Traceback" not in err
    hint = re.search(r"\(`([^`]+) --help` lists the options\)$", lines[0])
    assert hint and hint.group(1) == prog, lines[0]
    # follow the hint: PROG --help prints the usage and exits 0
    help_argv = prog[len(entry):].split()
    with pytest.raises(SystemExit) as helped:
        main([*help_argv, "--help"])
    assert helped.value.code == 0 and "usage:" in capsys.readouterr().out
