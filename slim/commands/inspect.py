"""`python -m slim inspect`: list a detector's conv weights, FLOPs and params; draw its graph.

    python -m slim inspect -c configs/yolov3_mobilenet_v1_voc.yml [-o KEY=VALUE ...]
                           [--json] [--graph out.dot]

Example (the demo model and the seed's pruning plan for it; no training):
    python -m slim inspect -c configs/yolov3_mobilenet_v1_demo.yml \\
        -s configs/yolov3_mobilenet_v1_demo_slim.yaml

Replaces the seed's "paste this into a REPL" recipe for choosing `pruned_params`.
For every conv weight it prints the shape, kind (conv / depthwise / grouped /
transpose), output shape, FLOPs, the ops that read its output directly
(`consumers`, e.g. batch_norm) and the ops its channels reach through
channel-preserving ops (`reaches`: ops whose spec kind is channel-preserving,
such as batch norm, activations, bias adds and upsampling, are walked through;
e.g. `concat`, `yolov3_loss`, `yolo_box` or the next conv's weight). Convs,
kinds and reaches come from the channel analysis
(`slim.prune.graph`) and the op specs (`slim.prune.op_specs`).
A conv that reaches `concat` is one the seed could not prune; one that reaches
`yolov3_loss` / `yolo_box` has a fixed channel layout.

The programs are built at the eval feed's image shape (`YoloEvalFeed.image_shape`,
default [3, 608, 608]; `--image_shape` overrides) so every shape is static.
FLOPs are multiply-accumulates per image (see `slim.prune.flops`). `reaches`
merges the train program (loss) and the eval program (yolo_box).

`--json` prints {"flops", "params", "image_shape", "convs": [{"name", "shape",
"kind", "groups", "output_shape", "flops", "params", "consumers", "reaches"}]}.
`--graph FILE.dot` writes the op graph as graphviz dot with the convs filled;
when the `dot` program is installed it also renders FILE.pdf. Files are checked
before any work and only replaced if this tool wrote them (a user's file of that
name is an error).
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

from slim.commands.cli import add_override_argument
from slim.errors import UserError, shorten
from slim.io.output_places import WrittenFiles, check_output_file
from slim.model.from_config import model_from_config
from slim.prune.flops import is_forward_op
from slim.prune.op_specs import CONV, CONV_TRANSPOSE, OP_SPECS


class GraphRenderError(UserError):
    """The `dot` program failed to render the graph."""


def add_arguments(parser):
    """Add the `inspect` options to `parser` (other subcommands' engineers extend this)."""
    parser.add_argument("-c", "--config", required=True,
                        help="detection config YAML, e.g. configs/yolov3_mobilenet_v1_voc.yml")
    add_override_argument(parser, "override config options (dotted keys, YAML values)")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--graph", metavar="FILE.dot", default=None,
                        help="write the op graph (graphviz dot, convs filled); renders "
                             "FILE.pdf too when graphviz's `dot` is installed")
    parser.add_argument("--image_shape", type=int, nargs=3, metavar=("C", "H", "W"), default=None,
                        help="input shape to count FLOPs at (default: the eval feed's "
                             "image_shape, else 3 608 608)")
    from slim.commands.inspect_plan import add_plan_arguments
    add_plan_arguments(parser)  # -s SLIM.yaml, --chart FILE.png: the pruning plan report
    return parser


def run(args, out=None):
    """Run `inspect` for parsed `args`; prints the table or JSON to `out` (stdout)."""
    out = out or sys.stdout
    from slim.commands.inspect_plan import check_plan_arguments, run_plan_inspect
    check_plan_arguments(args)
    check_file_outputs(args)
    if getattr(args, "slim_file", None):
        result = run_plan_inspect(args, out)
        if args.chart:
            _record_written(args.chart)
        return result
    model, image_shape = model_from_config(args.config, args.opt, args.image_shape)
    train, evaluation = build_inspected_programs(model, image_shape)
    report = inspect_programs(evaluation.program, [train.program, evaluation.program])
    report["image_shape"] = list(image_shape)
    if args.graph:
        written = write_graph(evaluation.program, args.graph)
        report["graph_files"] = written
    if args.json:
        print(json.dumps(report, indent=1), file=out)
    else:
        print(format_table(report), file=out)
    return 0




def build_inspected_programs(model, image_shape):
    """The train and eval programs of `model`, both at the static `image_shape`."""
    from slim.model import build_eval_program, build_train_program
    return (build_train_program(model, image_shape=image_shape),
            build_eval_program(model, image_shape=image_shape))


def inspect_programs(program, reach_programs=None, extra_ops=None):
    """{"flops", "params", "convs": [...]} of `program`; `reaches` merged over
    `reach_programs` (default: `program` alone). Convs, their kinds and what they reach
    come from the channel analysis's program index and op specs (`slim.prune.graph`,
    `slim.prune.op_specs`); `extra_ops` ({op type: OpSpec}) adds specs for this call."""
    from slim.prune.flops import program_flops, program_params
    from slim.prune.graph import ProgramIndex, conv_reaches
    from slim.prune.op_specs import op_table
    table = op_table(extra_ops)
    detail = program_flops(program, detail=True, extra_ops=extra_ops)
    _, param_counts = program_params(program, detail=True)
    index = ProgramIndex(program, table)
    reaches = {}
    for other in reach_programs or [program]:
        other_index = index if other is program else ProgramIndex(other, table)
        for name, found in conv_reaches(other_index).items():
            merged = reaches.setdefault(name, [])
            merged.extend(item for item in found if item not in merged)
    convs = []
    for conv in index.convs:
        convs.append({
            "name": conv.weight,
            "shape": list(index.shapes[conv.weight]),
            "kind": conv.kind,
            "groups": conv.groups,
            "output_shape": list(index.shapes[conv.output])[1:],
            "flops": detail.per_param.get(conv.weight, 0),
            "params": param_counts.get(conv.weight, 0),
            "consumers": sorted({reader.type for reader in index.forward_readers(conv.output)}),
            "reaches": reaches.get(conv.weight, []),
        })
    return {"flops": detail.total, "params": sum(param_counts.values()), "convs": convs}


def format_table(report):
    """The inspect report as a text table plus totals."""
    rows = [("name", "kind", "shape", "output", "MFLOPs", "params", "reaches")]
    for conv in report["convs"]:
        rows.append((conv["name"], conv["kind"], "x".join(map(str, conv["shape"])),
                     "x".join(map(str, conv["output_shape"])), f"{conv['flops'] / 1e6:.1f}",
                     str(conv["params"]), ", ".join(conv["reaches"])))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    lines = []
    for index, row in enumerate(rows):
        cells = [cell.rjust(width) if index and column in (4, 5) else cell.ljust(width)
                 for column, (cell, width) in enumerate(zip(row, widths))]
        lines.append("  ".join(cells + [row[-1]]).rstrip())
        if index == 0:
            lines.append("-" * len(lines[0]))
    shape = report.get("image_shape")
    at = f" at input {'x'.join(map(str, shape))}" if shape else ""
    lines.append("")
    lines.append(f"{len(report['convs'])} convs{at}: FLOPs {report['flops']:,} multiply-adds "
                 f"per image ({report['flops'] / 1e9:.2f} G MACs = "
                 f"{2 * report['flops'] / 1e9:.2f} G FLOPs counting multiply and add); "
                 f"params {report['params']:,}")
    for path in report.get("graph_files", []):
        lines.append(f"graph written: {path}")
    return "\n".join(lines)


def file_outputs(args):
    """[(option, path)] of every file this inspect run writes: --graph FILE.dot (and
    FILE.pdf when graphviz's `dot` is installed), or with -s the --chart FILE.png."""
    if getattr(args, "slim_file", None):
        return [("--chart", args.chart)] if getattr(args, "chart", None) else []
    if not args.graph:
        return []
    outputs = [("--graph", args.graph)]
    if shutil.which("dot"):
        outputs.append(("--graph", rendered_graph_path(args.graph)))
    return outputs


def rendered_graph_path(path):
    """FILE.pdf beside the dot file FILE.dot."""
    return os.path.splitext(path)[0] + ".pdf"


def check_file_outputs(args):
    """Before any work: each file of `file_outputs` can be written and is absent or one this
    tool wrote there before (a user's file is never replaced), and is not the config or the
    slim config. A one-line OutputPlaceError otherwise."""
    inputs = [path for path in (args.config, getattr(args, "slim_file", None)) if path]
    if args.graph and not getattr(args, "slim_file", None) \
            and os.path.abspath(rendered_graph_path(args.graph)) == os.path.abspath(args.graph):
        raise UserError(f"--graph '{shorten(args.graph)}' is where the PDF is rendered; name the "
                        "dot file FILE.dot")
    for what, path in file_outputs(args):
        check_output_file(path, what, inputs)


def _record_written(path):
    """Note in its directory's WRITTEN_LIST that the tool wrote the file `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    WrittenFiles(directory).record(os.path.basename(path))


def write_graph(program, path):
    """Write `program`'s forward op graph as graphviz dot to `path` (convs filled, edges
    labelled with the var shape); with `dot` installed also render the PDF next to it.
    Both are written atomically and only over files the tool wrote before (see
    `check_file_outputs`). Returns the written file paths."""
    written_files, name = check_output_file(path, "--graph")
    written_files.write_bytes(name, program_to_dot(program).encode("utf-8"))
    written = [path]
    dot = shutil.which("dot")
    if dot:
        rendered = rendered_graph_path(path)
        rendered_files, rendered_name = check_output_file(rendered, "--graph")
        handle, temp_path = tempfile.mkstemp(prefix=".slim-tmp-", suffix=".pdf",
                                             dir=rendered_files.directory)
        os.close(handle)
        try:
            result = subprocess.run([dot, "-Tpdf", path, "-o", temp_path],
                                    capture_output=True, text=True)
            if result.returncode != 0:
                raise GraphRenderError(
                    f"dot failed to render '{path}': "
                    f"{result.stderr.strip().splitlines()[-1:] or result.returncode}")
            os.replace(temp_path, rendered)
        finally:
            if os.path.exists(temp_path):
                os.remove(temp_path)
        rendered_files.record(rendered_name)
        written.append(rendered)
    return written


def program_to_dot(program):
    """Graphviz dot text of `program`'s forward ops: one node per op (conv nodes filled and
    labelled with their weight and shape), one edge per var from producer to reader."""
    block = program.global_block()
    ops = [op for op in block.ops if is_forward_op(op) and op.type not in ("feed", "fetch")]
    lines = ["digraph program {", "  rankdir=TB;", '  node [shape=box, fontsize=10];']
    producer = {}
    for index, op in enumerate(ops):
        label = op.type
        style = ""
        spec = OP_SPECS.find(op.type)
        if spec is not None and spec.kind in (CONV, CONV_TRANSPOSE):
            weight = op.input("Filter")[0]
            shape = list(block._find_var_recursive(weight).shape)
            label = f"{op.type}\\n{weight}\\n{shape}"
            style = ', style=filled, fillcolor="#f4a261"'
        lines.append(f'  op{index} [label="{_dot_escape(label)}"{style}];')
        for name in op.output_arg_names:
            producer[name] = index
    inputs = {}
    for index, op in enumerate(ops):
        for name in op.input_arg_names:
            var = block._find_var_recursive(name)
            if var is None or var.persistable:
                continue
            if name in producer:
                source = f"op{producer[name]}"
            else:
                source = inputs.setdefault(name, f"in{len(inputs)}")
            lines.append(f'  {source} -> op{index} [label="{_dot_escape(str(list(var.shape)))}", '
                         "fontsize=8];")
    for name, node in inputs.items():
        lines.append(f'  {node} [label="{_dot_escape(name)}", shape=ellipse];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def _dot_escape(text):
    return text.replace('"', '\\"')
