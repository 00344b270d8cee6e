"""`python -m slim export`: convert an exported model for another runtime (ONNX).

    python -m slim export --format onnx --model_path checkpoints/9/eval_model \\
        [--opset 11] [--out FILE.onnx]

Example (${checkpoint_path}/${epoch}: a checkpoint compress.py wrote):
    python -m slim export --format onnx --model_path ${checkpoint_path}/${epoch}/eval_model

Reads `__model__.infer` + `__params__` of the model dir (checked against its manifest
first) and writes, through paddle2onnx, an ONNX model with the same inputs (image,
im_size) and outputs (bbox rows of label, score, x1, y1, x2, y2; bbox_num), NMS
included, batch size 1: by default `DIR/model.onnx`, beside the infer_cfg.yml that says
how to preprocess images for it. The output place is checked before the conversion and
the file is recorded as slim's (.slim-written.json), so a rerun replaces it and nothing
else. Run it with `infer.py --model_path DIR --model_name model.onnx` (onnxruntime),
or from any onnxruntime program with the preprocessing in infer_cfg.yml.
"""
import sys

from slim.io.onnx_export import DEFAULT_OPSET, PADDLE2ONNX_MAX_OPSET, export_onnx

FORMATS = ("onnx",)


def add_arguments(parser):
    """The `export` options."""
    parser.add_argument("--format", required=True, choices=FORMATS, help="what to convert to")
    parser.add_argument("--model_path", required=True, metavar="DIR",
                        help="an exported model dir (eval_model/ with __model__.infer, __params__)")
    parser.add_argument("--model_name", default="__model__.infer", help="program file in DIR")
    parser.add_argument("--params_name", default="__params__", help="combined params file in DIR")
    parser.add_argument("--opset", type=int, default=DEFAULT_OPSET, metavar="N",
                        help=f"ONNX opset, {DEFAULT_OPSET} (the default, the lowest that has "
                             f"yolo_box) to {PADDLE2ONNX_MAX_OPSET} (the highest paddle2onnx "
                             "1.3.1 converts these models to)")
    parser.add_argument("--out", default=None, metavar="FILE.onnx",
                        help="where to write (default DIR/model.onnx)")
    return parser


def run(args, out=None):
    """Convert and write the model; print where it went; returns 0."""
    out = out or sys.stdout
    path = export_onnx(args.model_path, args.out, args.opset, args.model_name, args.params_name)
    print(f"wrote {path} (ONNX opset {args.opset}, NMS inside, batch size 1)", file=out)
    return 0
