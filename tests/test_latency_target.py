"""Pruning to a latency target (slim.prune.latency.choose_keeps / plan_for_latency, the
`--target_latency_ratio` of python -m slim prune, the strategy options).

The greedy knapsack runs on a hand-made table of a three-conv program: it meets the target,
prunes the group whose channels carry little importance first, and never picks a channel
count the table says is not faster than a larger one. The command prunes a small model to a
latency target from a table measured in the test (Paddle Inference, 1 round: no timing is
asserted, only that predicted and measured latency are both reported and the prediction
meets the target).
"""
import json
import os

import numpy as np
import paddle
import pytest
from test_latency_table import latency_table, model_dir  # noqa: F401  (fixture)
from test_prune_command import prune

from slim.config import load_slim_config
from slim.errors import ConfigError
from slim.prune import analyze_program, select_params
from slim.prune.latency import (
    LatencyModel,
    LatencyTable,
    LatencyTableError,
    choose_keeps,
    context_key,
    conv_layers,
    importance_losses,
    layer_grid,
)

COUNTS = [8, 16, 24, 32]


def three_convs():
    """conv 3->32 (group a) -> conv 32->32 (group b) -> conv 32->8 (the fetched output)."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [1, 3, 8, 8], "float32")
        h = paddle.static.nn.conv2d(x, 32, 3, padding=1, act="relu")
        h = paddle.static.nn.conv2d(h, 32, 3, padding=1, act="relu")
        out = paddle.static.nn.conv2d(h, 8, 1)
    graph = analyze_program(main, fixed_vars=[out.name])
    groups = select_params(graph, "auto", on_unknown="skip").groups
    a, b = sorted(groups, key=lambda group: group.key[0])
    layers = conv_layers(main, graph, {a.id: a.id, b.id: b.id})
    return layers, a.id, b.id


def synthetic_model(layers, a, b, slow=None):
    """ms = cin * cout / 100 per layer; when `slow` is a count of group a, the layers
    producing it are 5x slower there (a count the runtime handles badly)."""
    table = LatencyTable()
    context = context_key("paddle", 1)
    candidates = {a: COUNTS, b: COUNTS}
    for layer in layers:
        for cin, cout in layer_grid(layer, candidates):
            ms = cin * cout / 100.0
            if slow is not None and a in {g for g, _, _ in layer.out_segments} and cout == slow:
                ms *= 5
            table.put(context, layer.shape_key, cin, cout, {"ms": ms})
    return LatencyModel(layers, {a: 32, b: 32}, table, "paddle", 1, candidates)


def scores(a, b):
    """Group a: 16 channels of near-zero importance, 16 strong; group b: all alike."""
    return {a: np.r_[np.full(16, 0.01), np.full(16, 1.0)], b: np.ones(32)}


def test_knapsack_meets_the_target_and_prunes_the_cheap_group_first():
    layers, a, b = three_convs()
    model = synthetic_model(layers, a, b)
    full = model.predict_ms(model.full_keeps())
    keeps, predicted = choose_keeps(model, importance_losses(scores(a, b)), 0.75 * full)
    assert predicted <= 0.75 * full + 1e-9
    assert predicted == pytest.approx(model.predict_ms(keeps))
    assert keeps[a] == 16 and keeps[b] == 32  # the weak half of a goes, b is untouched
    losses = importance_losses(scores(a, b))
    for fraction in (0.5, 0.3):  # as little loss as the best of all count pairs
        keeps, predicted = choose_keeps(model, losses, fraction * full)
        assert predicted <= fraction * full + 1e-9
        best = min(losses[a](ka) + losses[b](kb) for ka in COUNTS for kb in COUNTS
                   if model.predict_ms({a: ka, b: kb}) <= fraction * full + 1e-9)
        assert losses[a](keeps[a]) + losses[b](keeps[b]) == pytest.approx(best)


def test_knapsack_snaps_to_counts_where_the_runtime_is_fast():
    layers, a, b = three_convs()
    # a's 8 weakest channels cost next to nothing: a -> 24 is the step to take ...
    weak = importance_losses({a: np.r_[np.full(8, 0.001), np.ones(24)], b: np.ones(32)})
    model = synthetic_model(layers, a, b)
    full = model.predict_ms(model.full_keeps())
    keeps, _ = choose_keeps(model, weak, 0.9 * full)
    assert keeps == {a: 24, b: 32}
    # ... unless the runtime is slow at 24 channels: then another count, never 24
    slow = synthetic_model(layers, a, b, slow=24)
    full = slow.predict_ms(slow.full_keeps())
    keeps, predicted = choose_keeps(slow, weak, 0.9 * full)
    assert keeps == {a: 32, b: 24} and predicted <= 0.9 * full + 1e-9


def test_an_unreachable_target_is_one_error():
    layers, a, b = three_convs()
    model = synthetic_model(layers, a, b)
    with pytest.raises(LatencyTableError, match="out of reach"):
        choose_keeps(model, importance_losses(scores(a, b)), 0.01)


def test_prune_command_to_a_latency_target(model_dir, tmp_path, capsys):  # noqa: F811
    table = str(tmp_path / "table.json")
    assert latency_table(["--model_dir", model_dir, "--input_shape", "3,16,16", "--runtime",
                          "paddle", "--grid", "1,0.5", "--rounds", "1", "--out", table]) == 0
    capsys.readouterr()
    # measured times are noise at this size: the entries become MACs-like (cin * cout) and the
    # fit the plain sum, so the choice is deterministic
    data = json.load(open(table))
    for counts in data["entries"]["paddle|t1"].values():
        for pair, record in counts.items():
            cin, cout = map(int, pair.split("x"))
            record["ms"] = cin * cout / 1000.0
    for record in data["models"]["paddle|t1"].values():
        record["fixed_ms"], record["scale"] = 0.0, 1.0
    with open(table, "w") as handle:
        json.dump(data, handle)
    out = str(tmp_path / "pruned")
    assert prune(["--model_dir", model_dir, "--input_shape", "3,16,16", "--target_latency_ratio",
                  "0.8", "--latency_table", table, "--runtime", "paddle", "--latency_runs", "2",
                  "--out", out]) == 0
    printed = capsys.readouterr().out
    assert "latency on paddle: predicted" in printed and "measured" in printed
    report = json.load(open(os.path.join(out, "report.json")))
    predicted = report["latency_target"]
    assert predicted["predicted_after_ms"] <= predicted["target_ms"] + 1e-9
    assert predicted["target_ms"] == pytest.approx(0.8 * predicted["predicted_before_ms"])
    assert report["latency"]["runtime"] == "paddle" and report["latency"]["pairs"] == 2
    plan = json.load(open(os.path.join(out, "plan.json")))
    kept = {group["key"][0]: len(group["kept"]) for group in plan["groups"]}
    assert sum(kept.values()) < 16 + 32  # something was pruned, to grid counts
    assert all(count in (8, 16, 32) for count in kept.values())
    assert report["flops_ratio"] < 1.0


@pytest.mark.parametrize("extra, expected", [
    (["--target_latency_ratio", "0.5"], "needs --latency_table"),
    (["--target_latency_ratio", "1.5", "--latency_table", "t.json"], "must be in (0, 1)"),
    (["--target_latency_ratio", "0.5", "--latency_table", "t.json", "--runtime", "gpu"],
     "runtime 'gpu' is not one of"),
    (["--target_latency_ratio", "0.5", "--target_ratio", "0.5", "--latency_table", "t.json"],
     "replaces --target_ratio"),
    (["--target_latency_ratio", "0.5", "--latency_table", "missing.json"], "does not exist"),
])
def test_bad_latency_options_are_one_line(model_dir, tmp_path, capsys, extra,  # noqa: F811
                                          expected):
    out = tmp_path / "pruned"
    assert prune(["--model_dir", model_dir, "--input_shape", "3,16,16", "--out", str(out),
                  *[str(tmp_path / e) if e.endswith(".json") else e for e in extra]]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error:") == 1 and expected in err, err
    assert not out.exists()


def test_a_table_of_another_model_is_one_line(model_dir, tmp_path, capsys):  # noqa: F811
    table = tmp_path / "table.json"
    table.write_text(json.dumps({"format": "slim-latency-table", "version": 1, "entries": {},
                                 "models": {}}))
    assert prune(["--model_dir", model_dir, "--input_shape", "3,16,16", "--target_latency_ratio",
                  "0.5", "--latency_table", str(table), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "no whole-model fit of this model" in err


SLIM_YAML = """version: 1.0
pruners:
  pruner_1: {class: StructurePruner, criterions: {'*': l1_norm}}
strategies:
  s: {class: UniformPruneStrategy, pruner: pruner_1, pruned_params: auto, %s}
compressor: {epoch: 1, strategies: [s]}
"""


@pytest.mark.parametrize("options, expected", [
    ("target_latency_ratio: 0.5", "needs key 'latency_table'"),
    ("target_latency_ratio: 0.5, target_latency_ms: 3, latency_table: t.json", "not both"),
    ("target_latency_ratio: 0.5, latency_table: t.json, runtime: gpu", "runtime"),
])
def test_strategy_latency_options_are_checked(tmp_path, options, expected):
    path = tmp_path / "slim.yaml"
    path.write_text(SLIM_YAML % options)
    with pytest.raises(ConfigError, match=expected):
        load_slim_config(str(path))


def test_strategy_latency_options_load(tmp_path):
    path = tmp_path / "slim.yaml"
    path.write_text(SLIM_YAML % "target_latency_ratio: 0.5, latency_table: t.json, "
                                "runtime: onnxruntime")
    options = load_slim_config(str(path)).strategies["s"]
    assert (options.target_latency_ratio, options.runtime, options.latency_threads) == \
        (0.5, "onnxruntime", 1)


def synthetic_table_for(program, path, runtime="paddle-onednn"):
    """A table for `program`'s layers at the default grid: ms = cin * cout * h * w / 1e6 per
    layer, the fit the plain sum (no timing: the strategy's choice is deterministic)."""
    from slim.prune.latency import DEFAULT_GRID, DEFAULT_STEP, channel_grid, model_signature
    graph = analyze_program(program)
    selection = select_params(graph, "auto", on_unknown="skip")
    layers = conv_layers(program, graph, {group.id: group.id for group in selection.groups})
    candidates = {group.id: channel_grid(group.size) for group in selection.groups}
    table = LatencyTable()
    context = context_key(runtime, 1)
    for layer in layers:
        for cin, cout in layer_grid(layer, candidates):
            table.put(context, layer.shape_key, cin, cout,
                      {"ms": cin * cout * layer.height * layer.width / 1e6})
    table.models[context] = {model_signature(layers): {
        "fixed_ms": 0.0, "scale": 1.0, "grid": list(DEFAULT_GRID), "step": DEFAULT_STEP}}
    with open(path, "w") as handle:
        json.dump(table.to_dict(), handle)


def test_uniform_strategy_prunes_to_a_latency_target(tmp_path):
    from test_compress import DETECTION_CONFIG
    from test_distillation import build_run, detection_config, fake_runner  # noqa: F401

    from slim.config import load_config
    from slim.prune.flops import program_flops
    config = tmp_path / "tiny.yml"
    config.write_text(DETECTION_CONFIG)
    cfg = load_config(str(config), ["LearningRate.schedulers=[]", "LearningRate.base_lr=0.01"])
    table = str(tmp_path / "table.json")
    slim_file = tmp_path / "slim.yaml"
    slim_file.write_text(SLIM_YAML % f"target_latency_ratio: 0.5, latency_table: {table}")
    programs, scope, executor, strategies = build_run(cfg, str(slim_file), hooks=False)
    synthetic_table_for(programs.eval.program, table)
    before = program_flops(programs.eval.program)
    logged = []
    runner = fake_runner(programs, scope, executor, log=logged.append)
    (strategy,) = strategies
    strategy.validate(runner.context)
    record = strategy.on_epoch_begin(runner.context)
    predicted = record["latency"]
    assert predicted["predicted_after_ms"] <= 0.5 * predicted["predicted_before_ms"] + 1e-9
    assert predicted["runtime"] == "paddle-onednn"
    assert program_flops(programs.eval.program) < before
    assert any("predicted" in line and "ms" in line for line in logged)
    assert strategy.state_dict()["options"]["latency"]["ratio"] == 0.5
