"""Latency tables (slim.prune.latency, slim.workflow.latency_table, python -m slim latency-table).

The pure parts are checked on hand-made numbers: the channel grid, a tiny program's conv
layers (fused neighbours, shape keys, channel counts after pruning), the table's lookup and
bilinear interpolation, the remainder fit. The command runs on a small fully convolutional
model (Paddle Inference, plain CPU kernels, 1 round): every layer's grid is in the table, a
rerun measures nothing, the prediction check is stored; bad options are one line. No timing
is asserted (that is bench/latency.py's job).
"""
import json
import os

import numpy as np
import paddle
import pytest
from test_prune_command import export_fully_convolutional

from slim.__main__ import main as slim_main
from slim.prune import analyze_program, select_params
from slim.prune.latency import (
    LatencyModel,
    LatencyTable,
    LatencyTableError,
    channel_grid,
    context_key,
    conv_layers,
    layer_grid,
)
from slim.workflow.latency_table import fit_remainder


def test_channel_grid_is_multiples_of_the_step_and_the_full_size():
    assert channel_grid(64) == [16, 32, 48, 64]
    assert channel_grid(100, (1.0, 0.5), 8) == [48, 96, 100]  # 96: the aligned count near 100
    assert channel_grid(6, (1.0, 0.5, 0.25), 8) == [6]  # never above the size
    assert channel_grid(20, (0.5, 0.25), 1) == [5, 10, 20]


def tiny_program():
    """conv 3->16 + bn + relu, depthwise 16 + bn + relu6, conv 16->8 + bias + leaky_relu."""
    main, startup = paddle.static.Program(), paddle.static.Program()
    with paddle.static.program_guard(main, startup), paddle.utils.unique_name.guard():
        x = paddle.static.data("x", [1, 3, 12, 12], "float32")
        h = paddle.static.nn.conv2d(x, 16, 3, padding=1, bias_attr=False)
        h = paddle.nn.functional.relu(paddle.static.nn.batch_norm(h, is_test=True))
        h = paddle.static.nn.conv2d(h, 16, 3, stride=2, padding=1, groups=16, bias_attr=False)
        h = paddle.nn.functional.relu6(paddle.static.nn.batch_norm(h, is_test=True))
        h = paddle.static.nn.conv2d(h, 8, 1)
        out = paddle.nn.functional.leaky_relu(h, 0.1)
    return main, out


def test_conv_layers_fuse_neighbours_and_count_pruned_channels():
    main, out = tiny_program()
    graph = analyze_program(main, fixed_vars=[out.name])
    (group,) = select_params(graph, "auto", on_unknown="skip").groups
    layers = conv_layers(main, graph, {group.id: group.id})  # the fixed output: no id
    assert [layer.fused for layer in layers] == [
        (("batch_norm", ()), ("relu", ())), (("batch_norm", ()), ("relu6", ())),
        (("elementwise_add", ()), ("leaky_relu", (("alpha", 0.1),)))]
    first, depthwise, last = layers
    assert (first.in_channels, first.out_channels, first.height) == (3, 16, 12)
    assert depthwise.depthwise and depthwise.shape_key.startswith("conv2d|12x12|k3x3|s2x2|p1x1")
    assert last.height == 6 and "|g1|" in last.shape_key
    assert group.size == 16 and first.groups == depthwise.groups == last.groups == {group.id}
    keeps = {group.id: 8}
    assert first.counts(keeps) == (3, 8)
    assert depthwise.counts(keeps) == (8, 8)
    assert last.counts(keeps) == (8, 8)  # the fetched output keeps its 8 channels
    candidates = {group.id: [8, 16]}
    assert layer_grid(first, candidates) == [(3, 8), (3, 16)]
    assert layer_grid(depthwise, candidates) == [(8, 8), (16, 16)]
    assert layer_grid(last, candidates) == [(8, 8), (16, 8)]


def test_table_lookup_interpolates_between_measured_counts():
    main, out = tiny_program()
    graph = analyze_program(main, fixed_vars=[out.name])
    layers = conv_layers(main, graph)
    table = LatencyTable()
    context = context_key("paddle", 1)
    layer = layers[0]
    for cin in (2, 4):
        for cout in (8, 16):
            table.put(context, layer.shape_key, cin, cout, {"ms": 0.1 * cin * cout})
    assert table.layer_ms(context, layer, 4, 16) == pytest.approx(6.4)
    # bilinear between the four measured pairs: 0.1 * 3 * 12 on this bilinear surface
    assert table.layer_ms(context, layer, 3, 12) == pytest.approx(3.6)
    assert table.layer_ms(context, layer, 9, 40) == pytest.approx(6.4)  # clamped
    assert table.missing(context, [layer], {}) == [(layer, 3, 16)]
    with pytest.raises(LatencyTableError, match="no paddle-onednn|t1 entry"):
        table.layer_ms(context_key("paddle-onednn", 1), layer, 4, 16)


def test_model_prediction_is_fixed_plus_scaled_layers():
    main, out = tiny_program()
    graph = analyze_program(main, fixed_vars=[out.name])
    layers = conv_layers(main, graph)
    (group,) = select_params(graph, "auto", on_unknown="skip").groups
    table = LatencyTable()
    context = context_key("paddle", 1)
    for layer in layers:
        for cin, cout in layer_grid(layer, {group.id: [8, 16]}):
            table.put(context, layer.shape_key, cin, cout, {"ms": float(cin + cout)})
    model = LatencyModel(layers, {group.id: 16}, table, "paddle", 1, {group.id: [8, 16]},
                         fixed_ms=2.0, scale=0.5)
    full = (3 + 16) + (16 + 16) + (16 + 8)
    half = (3 + 8) + (8 + 8) + (8 + 8)
    assert model.predict_ms({group.id: 16}) == pytest.approx(2.0 + 0.5 * full)
    assert model.delta_ms({group.id: 16}, group.id, 8) == pytest.approx(0.5 * (half - full))


def test_remainder_fit_goes_through_both_runs_and_stays_physical():
    fixed, scale = fit_remainder(10.0, 14.0, 4.0, 8.0)  # whole - layers = 4 at both: fixed 4
    assert (fixed, scale) == pytest.approx((4.0, 1.0))
    fixed, scale = fit_remainder(10.0, 14.0, 4.0, 5.0)  # shrinks faster than the layers
    assert fixed == pytest.approx(0.0) and scale == pytest.approx(1.4)
    fixed, scale = fit_remainder(10.0, 14.0, 10.0, 9.0)  # nothing changed: plain remainder
    assert (fixed, scale) == pytest.approx((4.0, 1.0))


def latency_table(argv):
    try:
        return slim_main(["latency-table", *argv])
    except SystemExit as stop:
        return stop.code


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    directory = str(tmp_path_factory.mktemp("latency_table") / "model")
    export_fully_convolutional(directory)
    return directory


def test_command_measures_the_grid_once_and_checks_the_prediction(model_dir, tmp_path, capsys):
    out = str(tmp_path / "table.json")
    argv = ["--model_dir", model_dir, "--input_shape", "3,16,16", "--runtime", "paddle",
            "--grid", "1,0.5", "--rounds", "1", "--out", out]
    assert latency_table(argv) == 0
    printed = capsys.readouterr().out
    assert "3 conv layers, 2 channel groups" in printed and "8 layer counts to measure" in printed
    table = json.load(open(out))
    entries = table["entries"]["paddle|t1"]
    # conv 3->16 (8, 16) and conv 16->32 (8, 16 x 16, 32) share their shape key (3x3 at
    # 16 px, bias + relu): 6 pairs; the 1x1 head 32->6: (16, 32)
    assert sorted(len(counts) for counts in entries.values()) == [2, 6]
    # ms: the run call's time less the overhead program's, measured interleaved with it
    assert all(record["raw_ms"] > 0 and record["overhead_ms"] > 0 and record["n"] == 1 and
               record["ms"] == pytest.approx(max(record["raw_ms"] - record["overhead_ms"], 0),
                                             abs=1e-4)
               for counts in entries.values() for record in counts.values())
    (model,) = table["models"]["paddle|t1"].values()
    assert model["check"]["measured"]["ms"] > 0 and model["check"]["predicted_ms"] > 0
    assert "error" in printed and "predicted" in printed
    before = {key: dict(counts) for key, counts in entries.items()}
    assert latency_table(argv) == 0
    assert "0 layer counts to measure" in capsys.readouterr().out
    assert json.load(open(out))["entries"]["paddle|t1"] == before  # kept, not re-measured
    assert sorted(os.listdir(tmp_path)) == [".slim-written.json", "table.json"]


@pytest.mark.parametrize("option, value, expected", [
    ("--runtime", "tensorrt", "--runtime 'tensorrt' is not a runtime"),
    ("--grid", "1,1.5", "--grid '1,1.5': expected fractions in (0, 1]"),
    ("--threads", "0", "--threads must be >= 1"),
    ("--out", "table.txt", "must end with .json"),
])
def test_bad_options_are_one_line(model_dir, tmp_path, capsys, option, value, expected):
    argv = ["--model_dir", model_dir, "--input_shape", "3,16,16", "--out",
            str(tmp_path / "t.json"), option,
            str(tmp_path / value) if option == "--out" else value]
    assert latency_table(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and expected in err and err.count("error:") == 1
    assert not os.path.exists(tmp_path / "t.json")


def test_a_foreign_file_is_not_a_table(model_dir, tmp_path, capsys):
    out = tmp_path / "table.json"
    out.write_text(json.dumps({"something": "else"}))
    assert latency_table(["--model_dir", model_dir, "--input_shape", "3,16,16",
                          "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert json.loads(out.read_text()) == {"something": "else"}


def test_command_on_onnxruntime(model_dir, tmp_path, capsys):
    out = str(tmp_path / "table.json")
    assert latency_table(["--model_dir", model_dir, "--input_shape", "3,16,16", "--runtime",
                          "onnxruntime", "--grid", "1", "--rounds", "1", "--out", out]) == 0
    assert "3 layer counts to measure" in capsys.readouterr().out
    table = json.load(open(out))
    assert sum(len(counts) for counts in table["entries"]["onnxruntime|t1"].values()) == 3
    (model,) = table["models"]["onnxruntime|t1"].values()
    assert model["full"]["ms"] > 0


def test_a_temporary_scope_frees_its_tensors():
    """Five 100 MB tensors, each in a temporary scope: the process does not grow by 500 MB
    (plain paddle.static.Scope() keeps every one: Paddle's scope pool)."""
    from slim.io.scopes import temporary_scope

    def rss_mb():
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20
    values = np.ones((25600, 1024), np.float32)
    with temporary_scope() as scope:  # the allocator's first chunk, kept for reuse
        scope.var("w").get_tensor().set(values, paddle.CPUPlace())
    before = rss_mb()
    for _ in range(5):
        with temporary_scope() as scope:
            scope.var("w").get_tensor().set(values, paddle.CPUPlace())
    assert rss_mb() - before < 150
