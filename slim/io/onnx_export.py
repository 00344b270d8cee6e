"""ONNX copies of exported models (paddle2onnx) and running them with onnxruntime.

    python -m slim export --format onnx --model_path DIR [--opset 11] [--out FILE.onnx]

converts `DIR/__model__.infer` + `DIR/__params__` (checked first, as every load of an
exported model is: manifest, program, params fit) into `DIR/model.onnx` by default. The
ONNX model keeps the inference program's interface: inputs `image` [1, 3, H, W] float32
(preprocessed as DIR/infer_cfg.yml says) and `im_size` [1, 2] int32 (original height,
width); outputs bbox [D, 6] rows of label, score, x1, y1, x2, y2 in original-image pixels
and bbox_num [1]. NMS (multiclass_nms3) is inside the model: paddle2onnx converts it
into ONNX NonMaxSuppression, which limits the model to batch size 1 (`run_onnx` feeds one
image at a time).

paddle2onnx 1.3.1 is pinned (requirements/common.txt) on both Paddle lines: it reads the
classic ProgramDesc itself. paddle2onnx 2.x (Paddle >= 3 only) goes through Paddle's PIR
translator instead; on these models it fails on the 2x upsample (2.1.0: "the 0th
elementwise MUST be ir::FloatAttribute"), and with that worked around its ONNX model
detected other boxes than Paddle (measured on the fitted test model, 2026-11), so a 2.x
install is refused with a one-line error.
"""
import hashlib
import os

import numpy as np

from slim.errors import UserError, shorten
from slim.io.checkpoint import add_to_checkpoint, is_checkpoint_dir, validate_checkpoint
from slim.io.export import (
    INFER_FETCHES,
    INFER_MODEL_NAME,
    MODEL_MANIFEST_NAME,
    PARAMS_NAME,
    add_model_file,
    check_params_fit,
    is_pir_program_file,
    read_program,
    require_files,
    verify_model_manifest,
)
from slim.io.file_manifest import ManifestError, check_seal, read_manifest_json
from slim.io.output_places import WRITTEN_LIST, WrittenFiles, check_output_file

ONNX_MODEL_NAME = "model.onnx"
DEFAULT_OPSET = 11  # the lowest opset paddle2onnx converts yolo_box in
# The highest opset an export can use (measured on the fitted test model, paddle2onnx
# 1.3.1, onnx 1.17, onnxruntime 1.32, Paddle 3.3.1 and 2.6.2): paddle2onnx takes up to 19
# and calls abort() above it (its C++ side logs "Only support opset_version in range of [7,
# 19]"; exit 134, no Python error), but at 18 and 19 it writes ReduceMin with the axes
# attribute opset 18 removed, which onnxruntime refuses as an invalid graph. Its Python API
# exposes no range, so the number is written here for the pinned version.
PADDLE2ONNX_MAX_OPSET = 17
ONNX_SUFFIX = ".onnx"
PADDLE2ONNX_WORKING_MAJOR = "1"  # see the module docstring


def default_onnx_path(model_dir):
    """Where `python -m slim export --format onnx` writes without --out: next to the model."""
    return os.path.join(model_dir, ONNX_MODEL_NAME)


def import_paddle2onnx():
    """The paddle2onnx module; UserError naming the version to install when it is missing,
    or is a 2.x (which refuses Paddle < 3, and converts these models wrongly on Paddle 3)."""
    install = "pip install -r requirements/common.txt (paddle2onnx 1.3.1)"
    try:
        import paddle2onnx
    except ImportError:
        raise UserError(f"ONNX export needs paddle2onnx: {install}") from None
    except ValueError as error:  # paddle2onnx 2.x on Paddle 2.6
        raise UserError(f"the installed paddle2onnx refuses this Paddle ({shorten(str(error), 80)}); "
                        f"{install}") from None
    version = str(getattr(paddle2onnx, "__version__", "unknown"))
    if version.split(".")[0] != PADDLE2ONNX_WORKING_MAJOR:
        raise UserError(f"paddle2onnx {version} is installed; its conversion of these models "
                        f"detects other boxes than Paddle: {install}")
    return paddle2onnx


def import_onnxruntime():
    """The onnxruntime module; UserError naming the package when it is missing."""
    try:
        import onnxruntime
    except ImportError:
        raise UserError("running an .onnx model needs onnxruntime: pip install -r "
                        "requirements/common.txt") from None
    return onnxruntime


def check_exported_model(model_dir, model_name=INFER_MODEL_NAME, params_name=PARAMS_NAME):
    """Check the exported model in `model_dir` as every load of one is checked (files
    present, manifest, program parses, params fit it); return (model path, params path)."""
    model_path = os.path.join(model_dir, model_name)
    params_path = os.path.join(model_dir, params_name)
    require_files(model_dir, (model_name, params_name))
    verify_model_manifest(model_dir, (model_name, params_name))
    if is_pir_program_file(model_path):
        raise UserError(f"'{shorten(model_path)}' is a Paddle 3 new-IR (PIR) program: the pinned "
                        "paddle2onnx 1.3.1 converts classic programs only, and paddle2onnx 2.x "
                        "(which reads PIR) converts these models wrongly (see slim.io."
                        "onnx_export); export ONNX from the classic model (__model__.infer or "
                        "a .pdmodel)")
    check_params_fit(read_program(model_path), params_path, model_path)
    return model_path, params_path



def onnx_model_bytes(model_dir, opset=DEFAULT_OPSET, model_name=INFER_MODEL_NAME,
                     params_name=PARAMS_NAME):
    """The serialized ONNX model of the exported model in `model_dir` (NMS included)."""
    paddle2onnx = import_paddle2onnx()
    model_path, params_path = check_exported_model(model_dir, model_name, params_name)
    try:
        data = paddle2onnx.export(model_path, params_path, save_file=None,
                                  opset_version=int(opset), auto_upgrade_opset=False,
                                  verbose=False, enable_onnx_checker=True)
    except Exception as error:  # noqa: BLE001 - its C++ side raises RuntimeError and others
        data, reason = None, f"{type(error).__name__}: {shorten(str(error), 200)}"
    else:
        reason = "it returned no model"
    if not data:
        raise UserError(f"paddle2onnx {paddle2onnx.__version__} cannot convert "
                        f"'{shorten(os.path.join(model_dir, model_name))}' at opset {opset} "
                        f"({reason}); its log above names the op (opset >= 11 is needed for "
                        "yolo_box)")
    return with_squeeze_axes(data)


def with_squeeze_axes(data):
    """The serialized ONNX model `data` with every Squeeze that names no axes given the axes
    it is meant to drop: its input's dims that are statically 1 (by ONNX shape inference).

    Why: paddle2onnx's NMS squeezes [k, 1] index columns and the [1, D, 6] result with a
    bare Squeeze, which also drops k or D when it happens to be 1: an image with exactly one
    detection then fails in onnxruntime ("Gather ... axis 0 is not in valid range [-0,-1]").
    Squeezes whose input dims are all static are left alone (nothing can change at run time).
    """
    import onnx
    from onnx import helper, numpy_helper, shape_inference
    model = onnx.load_from_string(data)
    inferred = shape_inference.infer_shapes(model)
    shapes = {info.name: info.type.tensor_type.shape
              for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]}
    opset = max((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")),
                default=DEFAULT_OPSET)
    for node in model.graph.node:
        if node.op_type != "Squeeze" or len(node.input) > 1 or \
                any(attribute.name == "axes" for attribute in node.attribute):
            continue
        shape = shapes.get(node.input[0])
        if shape is None or not shape.dim:
            continue
        static = [dim.HasField("dim_value") for dim in shape.dim]
        axes = [index for index, dim in enumerate(shape.dim) if dim.HasField("dim_value")
                and dim.dim_value == 1]
        if all(static) or not axes:
            continue
        if opset >= 13:  # axes became an input in opset 13
            axes_name = f"{node.name or node.output[0]}_slim_axes"
            model.graph.initializer.append(numpy_helper.from_array(
                np.asarray(axes, dtype=np.int64), axes_name))
            node.input.append(axes_name)
        else:
            node.attribute.append(helper.make_attribute("axes", axes))
    return model.SerializeToString()


def supported_opsets():
    """(lowest, highest) ONNX opset an export can use: from DEFAULT_OPSET (yolo_box) to the
    highest both paddle2onnx (PADDLE2ONNX_MAX_OPSET) and the installed onnx package (which
    checks and edits the model, `onnx.defs.onnx_opset_version()`) know."""
    try:
        import onnx
        highest = min(PADDLE2ONNX_MAX_OPSET, int(onnx.defs.onnx_opset_version()))
    except ImportError:
        highest = PADDLE2ONNX_MAX_OPSET
    return DEFAULT_OPSET, highest


def check_opset(opset):
    """UserError (one line, with the valid range) unless `opset` is an integer in
    `supported_opsets()`: paddle2onnx aborts the process on one it does not know."""
    lowest, highest = supported_opsets()
    if not isinstance(opset, int) or isinstance(opset, bool) or not lowest <= opset <= highest:
        reason = (f"yolo_box needs opset {lowest} or higher" if isinstance(opset, int)
                  and opset < lowest else f"paddle2onnx 1.3.1 converts these models to opsets up to "
                  f"{highest}")
        raise UserError(f"--opset {shorten(str(opset), 40)} is out of range: {reason}; choose "
                        f"one in [{lowest}, {highest}] (default {DEFAULT_OPSET})")
    return opset


def export_onnx(model_dir, out_path=None, opset=DEFAULT_OPSET, model_name=INFER_MODEL_NAME,
                params_name=PARAMS_NAME):
    """Convert the exported model in `model_dir` to ONNX at `out_path`; return the path
    written.

    Default: DIR/model.onnx, a file of the model (`add_model_file`: listed in its
    model_manifest.json). When DIR is a checkpoint's eval_model (compress.py's and
    train.py's `${checkpoint_path}/${epoch}/eval_model`), the checkpoint is rewritten with
    it atomically (`add_to_checkpoint`: its manifest lists the new file too, and a rerun
    replaces it). An explicit `out_path` is a file of the user's place, checked before
    the conversion and recorded as written by slim (.slim-written.json of its directory)."""
    check_opset(opset)
    if out_path is None:
        checkpoint_dir = os.path.dirname(os.path.abspath(model_dir))
        if is_checkpoint_dir(checkpoint_dir):
            return _export_into_checkpoint(model_dir, checkpoint_dir, opset, model_name,
                                           params_name)
        out_path = default_onnx_path(model_dir)
    if not str(out_path).endswith(ONNX_SUFFIX):
        raise UserError(f"--out '{shorten(str(out_path))}' must end with {ONNX_SUFFIX}")
    model_files = check_exported_model(model_dir, model_name, params_name)  # before --out is made
    written, name = check_output_file(out_path, "--out", inputs=model_files)
    data = onnx_model_bytes(model_dir, opset, model_name, params_name)
    path = written.write_bytes(name, data)
    if os.path.samefile(os.path.dirname(os.path.abspath(path)), model_dir):
        add_model_file(model_dir, name, None)  # listed in the model's manifest too
    return path


def _export_into_checkpoint(model_dir, checkpoint_dir, opset, model_name, params_name):
    """DIR/model.onnx of a checkpoint's model dir, added to the checkpoint atomically."""
    model_dir_name = os.path.basename(os.path.abspath(model_dir))
    validate_checkpoint(checkpoint_dir)  # a damaged checkpoint: one line before converting
    data = onnx_model_bytes(model_dir, opset, model_name, params_name)
    add_to_checkpoint(checkpoint_dir, lambda temp_dir: add_model_file(
        os.path.join(temp_dir, model_dir_name), ONNX_MODEL_NAME, data))
    return default_onnx_path(model_dir)


def onnx_session(path, threads=None):
    """An onnxruntime CPU InferenceSession of the ONNX model at `path` (`threads` intra-op
    threads, default onnxruntime's); UserError naming the file when it does not load."""
    onnxruntime = import_onnxruntime()
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 3  # its warnings about unused initializers say nothing to users
    if threads:
        options.intra_op_num_threads = int(threads)
        options.inter_op_num_threads = 1
    data = verified_onnx_bytes(path)  # the bytes checked are the bytes run
    try:
        return onnxruntime.InferenceSession(data, sess_options=options,
                                            providers=["CPUExecutionProvider"])
    except Exception as error:  # noqa: BLE001 - onnxruntime raises its own types for bad files
        raise UserError(f"onnxruntime cannot load '{shorten(path)}': "
                        f"{shorten(str(error).splitlines()[0] if str(error) else '', 160)}") from None


def verified_onnx_bytes(path):
    """The content of the ONNX file `path` when `python -m slim export` wrote it and it still
    has the size and sha256 recorded then; a one-line UserError otherwise: a damaged,
    swapped or foreign file is never run. The record is the one export made: the model
    dir's sealed model_manifest.json when it lists the file (DIR/model.onnx), else the
    WRITTEN_LIST of the file's directory (an --out elsewhere)."""
    directory, name = os.path.split(os.path.abspath(path))
    in_checkpoint = is_checkpoint_dir(os.path.dirname(directory))
    command = "python -m slim export --format onnx --model_path " + (
        shorten(directory) if name == ONNX_MODEL_NAME and not in_checkpoint
        else f"MODEL_DIR --out {'NEW.onnx' if in_checkpoint else shorten(path)}")
    if not os.path.isfile(path):
        raise UserError(f"ONNX model '{shorten(path)}' does not exist; write it with "
                        f"`{command}`")
    # a checkpoint's file cannot be replaced in place (the checkpoint is damaged): a new copy
    rewrite = (f"write a new copy with `{command}`" if in_checkpoint
               else f"move it away, then write it again with `{command}`")
    record, where = _onnx_record(directory, name)
    if record is None:
        raise UserError(f"ONNX model '{shorten(path)}' was not written by `python -m slim export` "
                        f"(neither {MODEL_MANIFEST_NAME} nor {WRITTEN_LIST} beside it records "
                        f"it), so its content cannot be verified; {rewrite}")
    with open(path, "rb") as handle:
        data = handle.read()
    if record != {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}:
        raise UserError(f"ONNX model '{shorten(path)}' is not the file `python -m slim export` "
                        f"wrote: its size or sha256 differs from the one recorded in {where} "
                        f"(damaged or replaced since); {rewrite}")
    return data


def _onnx_record(directory, name):
    """({"size", "sha256"} export recorded for `name` in `directory`, where) or (None, None)."""
    manifest_path = os.path.join(directory, MODEL_MANIFEST_NAME)
    if os.path.lexists(manifest_path):
        try:
            manifest = read_manifest_json(manifest_path, MODEL_MANIFEST_NAME)
            check_seal(manifest, MODEL_MANIFEST_NAME)
        except ManifestError as error:
            raise UserError(f"exported model '{shorten(directory)}' is damaged: {error}") from None
        record = (manifest.get("files") or {}).get(name)
        if isinstance(record, dict):
            return {key: record.get(key) for key in ("size", "sha256")}, MODEL_MANIFEST_NAME
    record = WrittenFiles(directory).files.get(name)
    return (record, WRITTEN_LIST) if record is not None else (None, None)


def check_onnx_interface(session, path):
    """UserError unless the ONNX model takes image and im_size and gives two outputs (bbox,
    bbox_num), as models converted from our exports do."""
    inputs = sorted(item.name for item in session.get_inputs())
    if inputs != ["im_size", "image"] or len(session.get_outputs()) != len(INFER_FETCHES):
        raise UserError(f"ONNX model '{shorten(path)}' takes {inputs} and gives "
                        f"{len(session.get_outputs())} outputs; expected inputs image and "
                        "im_size, outputs bbox and bbox_num (a model written by `python -m slim "
                        "export --format onnx`)")


def run_onnx(session, feeds):
    """Run `session` on {"image": [N, 3, H, W], "im_size": [N, 2]} one image at a time
    (NMS in ONNX takes batch 1); return [bbox rows of all images, bbox_num per image] like
    `slim.io.export.run_predictor` does for `__model__.infer`."""
    rows, counts = [], []
    for index in range(len(feeds["image"])):
        bbox, bbox_num = session.run(None, {
            "image": np.ascontiguousarray(feeds["image"][index:index + 1], dtype=np.float32),
            "im_size": np.ascontiguousarray(feeds["im_size"][index:index + 1], dtype=np.int32)})
        count = int(np.asarray(bbox_num).reshape(-1)[0])
        rows.append(np.asarray(bbox, dtype=np.float32).reshape(-1, 6)[:count])
        counts.append(count)
    return [np.concatenate(rows) if rows else np.zeros((0, 6), np.float32),
            np.asarray(counts, dtype=np.int32)]
