"""`python -m slim inspect -c CONFIG -s SLIM [--json] [--chart FILE.png]`: the plan report."""
import json
import os

import pytest

from slim.__main__ import main
from slim.prune.flops import program_flops

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_voc.yml")
SLIM = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_slim.yaml")


def slim_file_with(tmp_path, pruned_params):
    """The seed's slim config with another pruned_params value, written under tmp_path."""
    with open(SLIM) as handle:
        text = handle.read()
    start = text.index("pruned_params:")
    end = text.index("\n", start)
    path = tmp_path / "slim.yaml"
    path.write_text(text[:start] + f"pruned_params: '{pruned_params}'" + text[end:])
    return str(path)


def test_inspect_slim_json_plans_the_seed_config(capsys, tmp_path):
    chart = str(tmp_path / "channels.png")
    assert main(["inspect", "-c", VOC, "-s", SLIM, "--json", "--chart", chart]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"flops_before", "flops_after", "params_before", "params_after", "matched", "ratio",
            "groups"} <= set(report)
    assert len(report["matched"]) == 24 and report["matched"][0] == "conv2_1_sep_weights"
    assert abs(1 - report["flops_after"] / report["flops_before"] - 0.5) <= 0.005
    assert 0 < report["ratio"] < 0.5
    assert report["params_after"] < report["params_before"]
    assert len(report["groups"]) == 24
    first = report["groups"][0]
    assert "conv2_1_sep_weights" in first["params"] and "conv2_2_dw_weights" in first["params"]
    assert first["channels_before"] == 64
    assert first["channels_after"] == 64 - round(64 * report["ratio"])
    # the FLOPs before are those of the plain eval program at the config's 608x608
    from slim.model import build_eval_program
    from slim.model.from_config import model_from_config
    model, shape = model_from_config(VOC, [])
    assert report["flops_before"] == program_flops(build_eval_program(model, list(shape)).program)
    assert report["image_shape"] == [3, 608, 608]
    with open(chart, "rb") as handle:
        assert handle.read(8) == b"\x89PNG\r\n\x1a\n"


def test_inspect_slim_table_and_overrides(capsys, tmp_path):
    assert main(["inspect", "-c", VOC, "-o", "MobileNet.conv_group_scale=0.25",
                 "--image_shape", "3", "320", "320", "-s", slim_file_with(tmp_path, "auto")]) == 0
    out = capsys.readouterr().out
    assert "at input 3x320x320" in out
    assert "47 params matched, 34 groups, uniform ratio" in out
    assert "yolo_transition.0.conv.weights" in out
    for i in range(3):  # fixed layout: the yolo outputs feed the loss (planned on the train
        # program, as compress.py plans)
        assert f"not prunable: yolo_output.{i}.conv.weights: op 'yolov3_loss'" in out


def test_inspect_chart_needs_a_slim_file(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "-c", VOC, "--chart", "x.png"])
    assert exit_info.value.code == 2
    assert "give the slim config with -s" in capsys.readouterr().err


def test_inspect_slim_unmatched_regex_exits_2(capsys, tmp_path):
    slim_file = slim_file_with(tmp_path, "conv2_1_sep_weight")
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "-c", VOC, "--image_shape", "3", "320", "320", "-s", slim_file])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {slim_file}: strategy 'uniform_pruning_strategy': "
                          "pruned_params 'conv2_1_sep_weight' matches no conv weight")
    assert "did you mean 'conv2_1_sep_weights'" in err and len(err.strip().splitlines()) == 1


def test_inspect_slim_runs_the_strategies_themselves(capsys, tmp_path, monkeypatch):
    """The report is what the strategy's own on_epoch_begin planned and applied (the hook
    compress.py calls), not a re-implementation of it."""
    from slim.strategies import UniformPruneStrategy
    fired = []
    original = UniformPruneStrategy.on_epoch_begin

    def spy(self, context):
        record = original(self, context)
        fired.append((context.epoch, record))
        return record
    monkeypatch.setattr(UniformPruneStrategy, "on_epoch_begin", spy)
    assert main(["inspect", "-c", VOC, "-o", "MobileNet.conv_group_scale=0.25", "--image_shape",
                 "3", "320", "320", "-s", SLIM, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert [epoch for epoch, record in fired if record is not None] == [0]  # fired once, at 0
    plan = fired[0][1]["plan"]
    assert report["ratio"] == plan["ratio"]
    assert [group["key"] for group in report["groups"]] == [group["key"] for group in plan["groups"]]
    assert [group["channels_after"] for group in report["groups"]] == \
        [group["channels_after"] for group in plan["groups"]]
