"""`python -m slim inspect`: conv listing, FLOPs against an independent count, JSON, graph."""
import json
import os
import re
import stat
import subprocess
import sys

import pytest
import yaml

from slim.__main__ import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
VOC_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_voc.yml")
TINY = ["-o", "MobileNet.conv_group_scale=0.25", "num_classes=3"]

# FACTS.md §1: (block, sep out channels, dw stride) of MobileNetV1 after conv1 (32, stride 2).
BACKBONE = [("conv2_1", 64, 1), ("conv2_2", 128, 2), ("conv3_1", 128, 1), ("conv3_2", 256, 2),
            ("conv4_1", 256, 1), ("conv4_2", 512, 2), ("conv5_1", 512, 1), ("conv5_2", 512, 1),
            ("conv5_3", 512, 1), ("conv5_4", 512, 1), ("conv5_5", 512, 1), ("conv5_6", 1024, 2),
            ("conv6", 1024, 1)]
SLIM_CONFIG = os.path.join(ROOT, "configs", "yolov3_mobilenet_v1_slim.yaml")


def expected_convs(num_classes=20):
    """{weight name: (filter shape, output stride, has bn, has bias)} from FACTS.md §1."""
    convs = {"conv1_weights": ([32, 3, 3, 3], 2, True, False)}
    channels, stride = 32, 2
    for name, sep_channels, dw_stride in BACKBONE:
        stride *= dw_stride
        convs[f"{name}_dw_weights"] = ([channels, 1, 3, 3], stride, True, False)
        convs[f"{name}_sep_weights"] = ([sep_channels, channels, 1, 1], stride, True, False)
        channels = sep_channels
    block_inputs = [1024, 256 + 512, 128 + 256]
    for i in range(3):
        c, stride, prefix = 512 // 2 ** i, 32 // 2 ** i, f"yolo_block.{i}"
        layers = [("0.0", c, block_inputs[i], 1), ("0.1", 2 * c, c, 3), ("1.0", c, 2 * c, 1),
                  ("1.1", 2 * c, c, 3), ("2", c, 2 * c, 1), ("tip", 2 * c, c, 3)]
        for suffix, out_channels, in_channels, kernel in layers:
            convs[f"{prefix}.{suffix}.conv.weights"] = (
                [out_channels, in_channels, kernel, kernel], stride, True, False)
        convs[f"yolo_output.{i}.conv.weights"] = ([3 * (5 + num_classes), 2 * c, 1, 1], stride,
                                                  False, True)
        if i < 2:
            convs[f"yolo_transition.{i}.conv.weights"] = ([256 // 2 ** i, c, 1, 1], stride,
                                                         True, False)
    return convs


def independent_counts(convs, input_size=608):
    """(FLOPs, params) by hand: per conv Cout*Cin/g*kh*kw*H*W multiply-adds on the
    feature map of its stride, plus one per output element for its batch norm or bias."""
    flops = params = 0
    for shape, stride, has_bn, has_bias in convs.values():
        area = (input_size // stride) ** 2
        weights = shape[0] * shape[1] * shape[2] * shape[3]
        flops += weights * area + (shape[0] * area if has_bn or has_bias else 0)
        params += weights + (4 * shape[0] if has_bn else 0) + (shape[0] if has_bias else 0)
    return flops, params


@pytest.fixture(scope="module")
def voc_report():
    """`python -m slim inspect -c configs/yolov3_mobilenet_v1_voc.yml --json`, as a user runs it."""
    result = subprocess.run([sys.executable, "-m", "slim", "inspect", "-c", VOC_CONFIG, "--json"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_inspect_json_flops_match_an_independent_count(voc_report):
    expected = expected_convs()
    assert {conv["name"]: conv["shape"] for conv in voc_report["convs"]} == \
        {name: spec[0] for name, spec in expected.items()}
    flops, params = independent_counts(expected)
    assert voc_report["flops"] == flops == 21_744_297_471
    assert voc_report["params"] == params == 24_286_881
    assert voc_report["image_shape"] == [3, 608, 608]
    for conv in voc_report["convs"]:
        shape, stride, _, _ = expected[conv["name"]]
        side = 608 // stride
        assert conv["output_shape"] == [shape[0], side, side]
        assert conv["flops"] == shape[0] * shape[1] * shape[2] * shape[3] * side * side


def test_inspect_json_kinds_consumers_and_reaches(voc_report):
    convs = {conv["name"]: conv for conv in voc_report["convs"]}
    depthwise = sorted(name for name, conv in convs.items() if conv["kind"] == "depthwise")
    assert depthwise == sorted(f"{name}_dw_weights" for name, _, _ in BACKBONE)
    assert {conv["kind"] for conv in convs.values()} == {"conv", "depthwise"}
    assert convs["conv1_weights"]["consumers"] == ["batch_norm"]
    assert convs["yolo_output.0.conv.weights"]["consumers"] == ["elementwise_add"]
    assert convs["conv1_weights"]["reaches"] == ["conv:conv2_1_dw_weights"]
    assert sorted(convs["yolo_output.1.conv.weights"]["reaches"]) == ["yolo_box", "yolov3_loss"]
    assert sorted(convs["yolo_block.0.2.conv.weights"]["reaches"]) == [
        "conv:yolo_block.0.tip.conv.weights", "conv:yolo_transition.0.conv.weights"]
    # the convs whose output reaches a concat: the ones the seed could not prune
    to_concat = sorted(name for name, conv in convs.items() if "concat" in conv["reaches"])
    assert to_concat == ["conv3_2_sep_weights", "conv4_2_sep_weights",
                         "yolo_transition.0.conv.weights", "yolo_transition.1.conv.weights"]
    # the shipped slim config (the seed's regex) selects 24 convs, none reaching a concat
    with open(SLIM_CONFIG) as file:
        strategy = yaml.safe_load(file)["strategies"]["uniform_pruning_strategy"]
    seed = [name for name in convs if re.fullmatch(strategy["pruned_params"], name)]
    assert len(seed) == 24 and not set(seed) & set(to_concat)
    assert all(convs[name]["kind"] == "conv" for name in seed)


def test_inspect_table(capsys):
    assert main(["inspect", "-c", VOC_CONFIG, *TINY]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0].split() == ["name", "kind", "shape", "output", "MFLOPs", "params", "reaches"]
    rows = [line.split() for line in lines[2:] if line and not line.startswith(("50 convs", "-"))]
    assert len(rows) == 50
    conv1 = [row for row in rows if row[0] == "conv1_weights"][0]
    # width 0.25: int(32 * 0.25) = 8 filters; 8*3*3*3 * 304*304 multiply-adds
    assert conv1[1:6] == ["conv", "8x3x3x3", "8x304x304", f"{8 * 27 * 304 * 304 / 1e6:.1f}", "216"]
    flops, params = independent_counts(_scaled(expected_convs(num_classes=3)))
    assert f"FLOPs {flops:,} multiply-adds per image" in out
    assert f"params {params:,}" in out


def _scaled(convs, scale=0.25):
    """The width-0.25 backbone (channels int(c * 0.25)) with the full-width head."""
    scaled = {}
    previous = int(32 * scale)
    for name, (shape, stride, has_bn, has_bias) in convs.items():
        shape = list(shape)
        if name == "conv1_weights":
            shape[0] = int(32 * scale)
        elif name.endswith("_dw_weights"):
            shape[0] = previous
        elif name.endswith("_sep_weights"):
            shape = [int(shape[0] * scale), previous, 1, 1]
            previous = shape[0]
        scaled[name] = (shape, stride, has_bn, has_bias)
    scaled["yolo_block.0.0.0.conv.weights"][0][1] = int(1024 * scale)
    scaled["yolo_block.1.0.0.conv.weights"][0][1] = 256 + int(512 * scale)
    scaled["yolo_block.2.0.0.conv.weights"][0][1] = 128 + int(256 * scale)
    return scaled


def test_inspect_graph_writes_dot_and_renders_with_graphviz(tmp_path, monkeypatch, capsys):
    # a stand-in `dot` that records its arguments and writes the requested output file
    fake_bin = tmp_path / "bin"
    fake_bin.mkdir()
    fake_dot = fake_bin / "dot"
    fake_dot.write_text('#!/bin/sh\necho "$@" > "$(dirname "$0")/args"\n'
                        'while [ "$1" != "-o" ]; do shift; done\necho PDF > "$2"\n')
    fake_dot.chmod(fake_dot.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    graph = tmp_path / "model.dot"
    assert main(["inspect", "-c", VOC_CONFIG, *TINY, "--json", "--graph", str(graph)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["graph_files"] == [str(graph), str(tmp_path / "model.pdf")]
    dot_text = graph.read_text()
    assert dot_text.startswith("digraph program {") and dot_text.rstrip().endswith("}")
    filled = re.findall(r'label="(?:depthwise_)?conv2d\\n([^\\]+)\\n[^"]*", style=filled', dot_text)
    assert sorted(filled) == sorted(conv["name"] for conv in report["convs"])
    assert 'label="image", shape=ellipse' in dot_text
    assert (tmp_path / "model.pdf").read_text() == "PDF\n"
    # rendered into a temp file beside it, then renamed (never a half-written PDF)
    arguments = (fake_bin / "args").read_text().split()
    assert arguments[:3] == ["-Tpdf", str(graph), "-o"]
    assert os.path.dirname(arguments[3]) == str(tmp_path) and arguments[3].endswith(".pdf")
    assert sorted(os.listdir(tmp_path)) == [".slim-written.json", "bin", "model.dot", "model.pdf"]


def test_inspect_graph_without_graphviz_writes_only_dot(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path))  # no `dot` here
    graph = tmp_path / "model.dot"
    assert main(["inspect", "-c", VOC_CONFIG, *TINY, "--graph", str(graph)]) == 0
    assert f"graph written: {graph}" in capsys.readouterr().out
    assert sorted(os.listdir(tmp_path)) == [".slim-written.json", "model.dot"]


def test_inspect_user_errors_exit_2_with_one_line(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "-c", VOC_CONFIG, "-o", "MobileNet.norm_type=gn"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "MobileNet.norm_type" in err and "sync_bn" in err
    assert len(err.splitlines()) == 1
    with pytest.raises(SystemExit) as exit_info:
        main(["inspect", "-c", VOC_CONFIG, "--image_shape", "3", "0", "608"])
    assert exit_info.value.code == 2
    assert "image_shape must be [C, H, W] with positive dims" in capsys.readouterr().err


def test_inspect_image_shape_option(capsys):
    assert main(["inspect", "-c", VOC_CONFIG, *TINY, "--json", "--image_shape", "3", "320",
                 "320"]) == 0
    report = json.loads(capsys.readouterr().out)
    flops, _ = independent_counts(_scaled(expected_convs(num_classes=3)), input_size=320)
    assert report["image_shape"] == [3, 320, 320] and report["flops"] == flops
