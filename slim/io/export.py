"""Write eval and inference models that Paddle Inference and `load_inference_model` load.

    <dir>/__model__         the eval program (feeds image, im_size; fetches bbox,
                            bbox_num and the raw head outputs), classic ProgramDesc
    <dir>/__model__.infer   the inference program: feeds image and im_size, fetches
                            the NMS result (bbox, bbox_num) only; every op not needed
                            for it (training-only ops, raw-output fetches) removed
    <dir>/__params__        all parameters both programs read, combined in name order
    <dir>/infer_cfg.yml     what inference needs beside them (with `infer_config`): class
                            names, input size, preprocessing (channel order, resize, mean /
                            std), the NMS settings, and the size and sha256 of the model files

Both programs read exactly the same persistables (the raw head outputs are
upstream of NMS), so one `__params__` serves both, as in the seed:

    config = paddle.inference.Config("<dir>/__model__.infer", "<dir>/__params__")
    paddle.static.load_inference_model("<dir>", exe, model_filename="__model__.infer",
                                       params_filename="__params__")

`infer.py --model_path DIR` needs nothing else (no config, no dataset). Beside them
`model_manifest.json` (written last) lists every file with its size and
sha256 and carries a checksum of itself (slim.io.file_manifest). `load_exported_program`
trusts nothing it loads: it verifies the manifest when there is one, and for every model
dir (with a manifest or without: external models, the seed's) checks that the program
parses and that `__params__` holds exactly the tensors the program reads, in order, with
their shapes and dtypes, and ends with the last one, before Paddle sees the files. Any
mismatch, and any error Paddle still raises while loading, is one line naming the file.
"""
import contextlib
import json
import logging
import os

from slim.config.yaml_io import dump_yaml, load_yaml_file
from slim.errors import ConfigError, UserError, did_you_mean, shorten
from slim.io.checkpoint import persistable_vars
from slim.io.file_manifest import (
    ManifestError,
    check_file_entries,
    check_listed_file,
    check_seal,
    describe_files,
    read_manifest_json,
    seal,
)
from slim.io.weights import check_params_fit as weights_check_params_fit

MODEL_NAME = "__model__"
PIR_SUFFIX = ".json"  # a Paddle 3 new-IR program
INFER_MODEL_NAME = "__model__.infer"
PARAMS_NAME = "__params__"
MODEL_MANIFEST_NAME = "model_manifest.json"
INFER_CONFIG_NAME = "infer_cfg.yml"
INFER_CONFIG_FORMAT = "slim-infer-config"
INFER_CONFIG_VERSION = 1
MODEL_FORMAT = "slim-model"
MODEL_FORMAT_VERSION = 1
EVAL_MODEL_DIR = "eval_model"
INFER_FEEDS = ("image", "im_size")
INFER_FETCHES = ("bbox", "bbox_num")


def _persistable_names(program):
    return sorted(var.name for var in program.list_vars()
                  if var.persistable and var.name not in ("feed", "fetch"))


def write_bytes(path, data):
    """Write `data` to `path` and fsync it (an export is trusted only once on disk)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def export_model(eval_built, scope, executor, out_dir, with_eval_model=True, with_infer_model=True,
                 infer_config=None):
    """Write `__model__` (if with_eval_model), `__model__.infer` (if with_infer_model) and
    `__params__` of the eval program `eval_built` (a slim.model BuiltProgram) with the
    parameters in `scope` into `out_dir`, then `infer_cfg.yml` (if `infer_config`, a dict
    such as slim.runs.inference.inference_config returns; the model files' sizes and sha256
    are added) and `model_manifest.json` covering them all; return {file name: path} of the
    files written."""
    import paddle
    if not (with_eval_model or with_infer_model):
        return {}
    os.makedirs(out_dir, exist_ok=True)
    program = eval_built.program
    feeds = [eval_built.feeds[name] for name in INFER_FEEDS]
    infer_fetches = [eval_built.fetches[name] for name in INFER_FETCHES]
    eval_fetches = list(eval_built.fetches.values())

    written = {}
    programs = []
    if with_eval_model:
        programs.append((MODEL_NAME, eval_fetches))
    if with_infer_model:
        programs.append((INFER_MODEL_NAME, infer_fetches))
    param_sets = []
    for file_name, fetches in programs:
        data = paddle.static.serialize_program(feeds, fetches, program=program)
        param_sets.append(_persistable_names(paddle.static.deserialize_program(data)))
        path = os.path.join(out_dir, file_name)
        write_bytes(path, data)
        written[file_name] = path
    if len(param_sets) == 2 and param_sets[0] != param_sets[1]:
        # One combined __params__ file stores no names; both programs must read the same list.
        raise RuntimeError("the eval and inference programs read different parameters: "
                           f"{sorted(set(param_sets[0]) ^ set(param_sets[1]))[:5]}")
    fetches_for_params = programs[-1][1]
    with paddle.static.scope_guard(scope):
        params = paddle.static.serialize_persistables(feeds, fetches_for_params, executor,
                                                      program=program)
    path = os.path.join(out_dir, PARAMS_NAME)
    write_bytes(path, params)
    written[PARAMS_NAME] = path
    if infer_config is not None:
        described = {"format": INFER_CONFIG_FORMAT, "version": INFER_CONFIG_VERSION,
                     **infer_config, "files": describe_files(out_dir, sorted(written))}
        path = os.path.join(out_dir, INFER_CONFIG_NAME)
        write_bytes(path, (f"# {INFER_CONFIG_FORMAT}: what inference needs beside the model "
                            "files (written by slim)\n" + dump_yaml(described)).encode("utf-8"))
        written[INFER_CONFIG_NAME] = path
    manifest = seal({"format": MODEL_FORMAT, "version": MODEL_FORMAT_VERSION,
                     "files": describe_files(out_dir, sorted(written))})
    write_bytes(os.path.join(out_dir, MODEL_MANIFEST_NAME),
                 json.dumps(manifest, indent=1, sort_keys=True).encode("utf-8"))
    return written


def is_pir_program_file(path):
    """True for a Paddle 3 new-IR (PIR) program file: named `.json`, or JSON text (a
    ProgramDesc is binary protobuf, which never starts with '{')."""
    if str(path).endswith(PIR_SUFFIX):
        return True
    try:
        with open(path, "rb") as handle:
            return handle.read(64).lstrip()[:1] == b"{"
    except OSError:
        return False


def load_exported_program(model_dir, executor, scope, model_name=INFER_MODEL_NAME,
                          params_name=PARAMS_NAME):
    """(program, feed names, fetch vars) of an exported model, parameters loaded into `scope`.

    Checked first (see the module docstring): a missing file, a manifest mismatch, a
    program that does not parse, or params that do not fit the program raise a one-line
    UserError naming the file; so does any error of Paddle's own load. A PIR program
    (`.json`, Paddle 3) is loaded as one (call this, and run the program, inside
    `slim.prune.pir.ir_guard(True)`); its fetch targets are PIR Values.
    """
    import paddle
    model_path = os.path.join(model_dir, model_name)
    params_path = os.path.join(model_dir, params_name)
    require_files(model_dir, (model_name, params_name))
    verify_model_manifest(model_dir, (model_name, params_name))
    if is_pir_program_file(model_path):
        from slim.prune.pir import pir_supported
        if not pir_supported():
            raise UserError(f"'{shorten(model_path)}' is a Paddle 3 new-IR (PIR) program, which "
                            f"Paddle {paddle.__version__} cannot load: install "
                            "paddlepaddle>=3, or use the classic model (__model__.infer)")
    else:
        program = read_program(model_path)
        check_params_fit(program, params_path, model_path)
    try:
        with paddle.static.scope_guard(scope), without_deprecation_notice():
            # normpath: Paddle takes 'dir/' (the seed's documented form) for a file prefix
            program, feed_names, fetch_vars = paddle.static.load_inference_model(
                os.path.normpath(model_dir), executor, model_filename=model_name,
                params_filename=params_name)
    except Exception as error:  # noqa: BLE001 - Paddle raises many types; each is the files' fault here
        raise UserError(f"Paddle cannot load the model '{shorten(model_path)}' with "
                        f"'{shorten(params_path)}': {first_line(error)}") from None
    return program, feed_names, fetch_vars


class _DropDeprecationNotice(logging.Filter):
    """Drops Paddle's "The old way to load inference model is deprecated" line: the files
    are named as the seed named them (`__model__`, `__params__`), on purpose."""

    def filter(self, record):
        return "old way to load inference model" not in record.getMessage()


@contextlib.contextmanager
def without_deprecation_notice():
    """Silence Paddle's 'old way to load inference model is deprecated' log line inside."""
    loggers = [logging.getLogger(name) for name in ("paddle.static.io", "paddle.static.pir_io")]
    notice_filter = _DropDeprecationNotice()
    for logger in loggers:
        logger.addFilter(notice_filter)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(notice_filter)


def read_infer_config(model_dir):
    """The checked content of `model_dir`/infer_cfg.yml, or None when there is none (a model
    exported without it, or by another tool). UserError naming the file when it is not one
    this version wrote, lacks a key inference needs, or its model files do not have the
    recorded sizes and sha256 (checked here, before the files are trusted)."""
    path = os.path.join(model_dir, INFER_CONFIG_NAME)
    if not os.path.lexists(path):
        return None
    verify_model_manifest(model_dir, [INFER_CONFIG_NAME])  # when the dir has a manifest
    try:
        config = load_yaml_file(path)
    except ConfigError as error:
        raise UserError(f"{shorten(path)}: {error}") from None
    if not isinstance(config, dict) or config.get("format") != INFER_CONFIG_FORMAT or \
            config.get("version") != INFER_CONFIG_VERSION:
        raise UserError(f"{shorten(path)} is not a {INFER_CONFIG_FORMAT} of version "
                        f"{INFER_CONFIG_VERSION}; re-export the model, or pass its detection "
                        "config with -c")
    _check_infer_config_values(config, path)
    try:
        check_file_entries(config.get("files"))
        for name, record in config["files"].items():
            check_listed_file(model_dir, name, record)
    except ManifestError as error:
        raise UserError(f"exported model '{shorten(model_dir)}' does not match its "
                        f"{INFER_CONFIG_NAME}: {error}") from None
    return config


def _check_infer_config_values(config, path):
    """UserError naming the first key of infer_cfg.yml that inference needs and that is
    missing or malformed."""
    labels = config.get("label_list")
    shape = (config.get("preprocess") or {}).get("resize") if isinstance(
        config.get("preprocess"), dict) else None
    problems = [
        ("label_list", isinstance(labels, list) and labels and all(isinstance(n, str) for n in labels),
         "a non-empty list of class names"),
        ("num_classes", isinstance(config.get("num_classes"), int) and isinstance(labels, list)
         and config.get("num_classes") == len(labels), "the number of names in label_list"),
        ("preprocess.resize", isinstance(shape, dict) and all(
            isinstance(shape.get(key), int) and not isinstance(shape.get(key), bool)
            and shape.get(key) > 0 for key in ("height", "width")),
         "a mapping with positive integer height and width"),
    ]
    for key, valid, expected in problems:
        if not valid:
            raise UserError(f"{shorten(path)}: '{key}' must be {expected}; re-export the model, "
                            "or pass its detection config with -c")


def require_files(model_dir, names):
    """UserError naming the first of `names` that is not a file in `model_dir`."""
    for name in names:
        path = os.path.join(model_dir, name)
        if os.path.exists(path) and not os.path.isfile(path):
            raise UserError(f"model file '{shorten(path)}' is not a regular file (a directory, pipe "
                            "or device); name the model's program and params files")
        if not os.path.isfile(path):
            present = sorted(os.listdir(model_dir)) if os.path.isdir(model_dir) else []
            raise UserError(f"model file '{shorten(os.path.join(model_dir, name))}' does not exist"
                            f"{did_you_mean(name, present)}"
                            f"{'; the dir holds: ' + shorten(', '.join(present)) if present else ''}")


def verify_model_manifest(model_dir, names):
    """If `model_dir` has a model_manifest.json: UserError unless it is intact (its own
    checksum) and each of `names` is listed with the size and sha256 the file has. Without
    a manifest nothing is checked here (see `check_params_fit`). Returns whether there was
    a manifest."""
    path = os.path.join(model_dir, MODEL_MANIFEST_NAME)
    if not os.path.lexists(path):
        return False
    try:
        manifest = read_manifest_json(path, MODEL_MANIFEST_NAME)
        if manifest.get("format") != MODEL_FORMAT or manifest.get("version") != MODEL_FORMAT_VERSION:
            raise ManifestError(f"{MODEL_MANIFEST_NAME} is not a {MODEL_FORMAT} manifest of "
                                f"version {MODEL_FORMAT_VERSION}")
        check_seal(manifest, MODEL_MANIFEST_NAME)
        check_file_entries(manifest.get("files"))
        for name in names:
            record = manifest["files"].get(name)
            if record is None:
                raise ManifestError(f"{MODEL_MANIFEST_NAME} does not list {name}, so it was not "
                                    "exported with this model")
            check_listed_file(model_dir, name, record)
    except ManifestError as error:
        raise UserError(f"exported model '{shorten(model_dir)}' is damaged: {error}") from None
    return True


def add_model_file(model_dir, name, data):
    """Write `data` as the plain file `name` into the exported model dir `model_dir` (None:
    the file is there already), and, when the dir has a model_manifest.json, list it there
    (re-sealed; written last), so the file travels and is verified with the model. Returns
    the file's path."""
    from slim.io.output_places import write_atomically
    if name in ("", ".", "..") or os.path.basename(name) != name:
        raise UserError(f"'{shorten(name)}' must be a plain file name inside the model dir")
    path = os.path.join(model_dir, name)
    if data is not None:
        write_atomically(path, data)
    manifest_path = os.path.join(model_dir, MODEL_MANIFEST_NAME)
    if os.path.lexists(manifest_path):
        manifest = read_manifest_json(manifest_path, MODEL_MANIFEST_NAME)
        files = dict(manifest.get("files") or {}, **describe_files(model_dir, [name]))
        write_atomically(manifest_path, json.dumps(seal(dict(manifest, files=files)), indent=1,
                                                   sort_keys=True).encode("utf-8"))
    return path


def read_program(model_path):
    """The Program in the file `model_path`; UserError when it is not a Paddle inference
    program (does not parse, or has no feed and fetch ops)."""
    import paddle
    with open(model_path, "rb") as handle:
        data = handle.read()
    try:
        program = paddle.static.deserialize_program(data)
        op_types = {op.type for op in program.global_block().ops}
    except Exception as error:  # noqa: BLE001 - protobuf and Paddle raise many types here
        raise UserError(f"model file '{shorten(model_path)}' is not a Paddle program "
                        f"({first_line(error, 120)})") from None
    if not {"feed", "fetch"} <= op_types:
        raise UserError(f"model file '{shorten(model_path)}' is not a Paddle inference program "
                        "(it has no feed or no fetch ops)")
    return program


def check_params_fit(program, params_path, model_path):
    """UserError unless the combined params file holds exactly the persistables `program`
    reads (`slim.io.weights.check_params_fit`: count, shapes and dtypes in order, the last
    tensor complete and nothing after it)."""
    weights_check_params_fit(persistable_vars(program), model_path, params_path=params_path)


def first_line(error, limit=300):
    """The telling line of an exception's message (Paddle's span dozens of lines; the
    `XxxError: what` line is the one to show)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    telling = [line for line in lines if "Error:" in line]
    text = telling[-1] if telling else (lines[0] if lines else "")
    return shorten(f"{type(error).__name__}: {text}", limit)


def inference_predictor(model_dir, model_name=INFER_MODEL_NAME, params_name=PARAMS_NAME,
                        use_gpu=False, cpu_threads=None, onednn=None):
    """A `paddle.inference` predictor of an exported model (CPU unless use_gpu); on CPU
    `onednn` True / False turns oneDNN (MKL-DNN) kernels on / off (None: Paddle's default)."""
    import paddle.inference as paddle_infer
    config = paddle_infer.Config(os.path.join(model_dir, model_name),
                                 os.path.join(model_dir, params_name))
    if use_gpu:
        config.enable_use_gpu(256, 0)
    else:
        set_cpu_kernels(config, cpu_threads, onednn)
    config.disable_glog_info()
    return paddle_infer.create_predictor(config)


def set_cpu_kernels(config, threads=None, onednn=None):
    """A Paddle Inference Config on the CPU with `threads` math threads (None: Paddle's
    default); `onednn` True / False turns oneDNN (MKL-DNN) kernels on / off (None: Paddle's
    default)."""
    config.disable_gpu()
    if threads:
        config.set_cpu_math_library_num_threads(int(threads))
    if onednn is True:
        config.enable_mkldnn()
    elif onednn is False:
        config.disable_mkldnn()


def run_predictor(predictor, feeds):
    """Run `predictor` on {input name: ndarray}; return its outputs as a list of ndarrays
    in fetch order (for `__model__.infer`: bbox, bbox_num)."""
    for name in predictor.get_input_names():
        handle = predictor.get_input_handle(name)
        array = feeds[name]
        handle.reshape(list(array.shape))
        handle.copy_from_cpu(array)
    predictor.run()
    return [predictor.get_output_handle(name).copy_to_cpu()
            for name in predictor.get_output_names()]
