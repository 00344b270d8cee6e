"""bench/zoo.py: its table rows and Markdown, the output-conv finder its PaddleSlim worker
uses, the model selection, and a --quick run (ours only, no PaddleSlim venv)."""
import json

import paddle
import pytest
from bench_modules import load_bench

from slim.errors import UserError

bench = load_bench("zoo")


def side(flops_after, times, **extra):
    return {"flops_before": 1000, "flops_after": flops_after, "times": times, **extra}


OURS = side(500, [0.03, 0.01, 0.02], convs=20, prunable=19, ratio=0.3125, status="runs",
            max_relative_error=2.5e-7)


def test_a_row_with_both_sides():
    theirs = side(600, [1.5, 0.5, 2.5], accepted=12, usable=11, ratio=0.5, status="runs")
    row = bench.table_row("resnet18", {"input": [1, 3, 64, 64], "ours": OURS,
                                       "paddleslim": theirs})
    assert row["input"] == "64x64"
    assert (row["ours_removed"], row["paddleslim_removed"]) == (pytest.approx(0.5),
                                                                pytest.approx(0.4))
    assert (row["ours_ms"], row["paddleslim_ms"]) == (pytest.approx(20.0), pytest.approx(1500.0))
    lines = bench.format_table([row]).splitlines()
    assert len(lines) == 3 and lines[0].count("|") == lines[1].count("|") == lines[2].count("|")
    assert lines[2] == ("| resnet18 | 64x64 | 20 | 19 | 12 / 11 | -50.0% (ratio 0.312) "
                        "| -40.0% (ratio 0.500) | 20 | 1500 | runs | runs | 2.5e-07 |")


def test_a_row_with_ours_only_or_a_failed_paddleslim():
    entry = {"input": [1, 1, 28, 28], "ours": {**OURS, "status": "fails: " + "x" * 80,
                                               "max_relative_error": None}}
    line = bench.format_table([bench.table_row("lenet", entry)]).splitlines()[2]
    assert line == ("| lenet | 28x28 | 20 | 19 | — | -50.0% (ratio 0.312) | — | 20 | — "
                    f"| fails: {'x' * 50}... | — | — |")
    entry["paddleslim"] = {"error": "ValueError: no op"}
    row = bench.table_row("lenet", entry)
    assert row["paddleslim_status"] == "error: ValueError: no op"
    assert row["paddleslim_accepted"] is None
    # PaddleSlim accepted no conv: counts, no prune
    entry["paddleslim"] = {"flops_before": 1000, "accepted": 0, "usable": 0}
    row = bench.table_row("lenet", entry)
    assert (row["paddleslim_accepted"], row["paddleslim_removed"]) == (0, None)
    assert row["paddleslim_status"] == "nothing to prune"


def conv_program():
    """image -> conv (+ bias) -> relu -> conv (+ bias): the second conv's output fetched."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        image = paddle.static.data("image", [1, 3, 8, 8], "float32")
        hidden = paddle.nn.functional.relu(paddle.static.nn.conv2d(image, 4, 3, name="first"))
        out = paddle.static.nn.conv2d(hidden, 5, 1, name="last")
    return main, out


def test_output_convs_walks_back_from_a_changed_output_to_its_conv():
    program, out = conv_program()
    assert bench.output_convs(program, [out], program) == []  # nothing changed
    pruned = program.clone()
    pruned.global_block().var(out.name).desc.set_shape([1, 3, 6, 6])
    assert bench.output_convs(program, [out], pruned) == ["last.w_0"]


def test_models_are_the_zoo_tests_classifiers_and_the_detector():
    names = bench.model_names()
    assert names[-1] == bench.DETECTOR
    assert set(names[:-1]) == set(bench.zoo_tests().CLASSIFIERS)
    assert bench.selected_models("resnet18, lenet", False) == ["resnet18", "lenet"]
    assert bench.selected_models(None, True) == list(bench.QUICK_MODELS)
    with pytest.raises(UserError, match="unknown model resnet19; valid: alexnet"):
        bench.selected_models("resnet19", False)
    assert bench.input_size(32) == 64 and bench.input_size(224) == 224


def test_quick_run_prunes_to_half_the_flops_exactly(tmp_path, capsys):
    out = tmp_path / "zoo.json"
    result = bench.main(["--quick", "--out", str(out)])
    assert json.loads(out.read_text())["rows"] == json.loads(json.dumps(result["rows"]))
    assert [row["model"] for row in result["rows"]] == list(bench.QUICK_MODELS)
    for row in result["rows"]:
        assert row["ours_status"] == "runs"
        assert row["ours_removed"] == pytest.approx(0.5, abs=0.01)
        assert row["ours_error"] < 1e-5  # the pruned outputs equal the masked reference
        assert row["ours_prunable"] == row["convs"] > 0
        assert row["paddleslim_status"] is None
    assert result["models"]["lenet"]["input"] == [1, 1, 28, 28]
    assert result["models"]["mobilenet_v1"]["input"] == [1, 3, 64, 64]
    assert "| mobilenet_v1 | 64x64 | 27 | 27 |" in capsys.readouterr().out
