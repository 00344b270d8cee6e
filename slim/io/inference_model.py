"""Paddle inference models of any architecture, as Paddle saved them: find, load, save.

    files = find_model_files("resnet50/")      # which program and params files (.json: PIR)
    model = load_inference_model(files, executor, scope)   # program, feeds, fetches
    save_inference_model(model, executor, scope, "pruned/", files.model_filename,
                         files.params_filename)            # same file names, pruned

A model dir holds one classic program (a serialized ProgramDesc) and its parameters,
either combined in one file (`__model__` + `__params__` as the seed wrote them,
`PREFIX.pdmodel` + `PREFIX.pdiparams` as `paddle.static.save_inference_model` and
`paddle.jit.save` write them) or one file per parameter named after it (the oldest
layout: `__model__` and the files beside it). Paddle 3 in its default new IR (PIR) writes
the program as `PREFIX.json` + `PREFIX.pdiparams`: on Paddle 3 such a model is loaded
inside `paddle.pir_utils.IrGuard` (`files.pir`; `slim.prune.pir.ir_guard(files.pir)`
around the whole job), its program given as a `slim.prune.pir.PirProgramView` that the
pruning engine reads like a classic program, and saved back as `.json`; Paddle 2.6 has no
PIR, so there it is refused with the way to save it in the classic format
(`PIR_RESAVE_HINT`).

Unlike slim's own exports (`slim.io.export`, with a manifest and infer_cfg.yml), nothing
here knows the model: its feeds, fetch targets and parameters are what the program says.
"""
import dataclasses
import os

import numpy as np

from slim.errors import UserError, did_you_mean, shorten
from slim.io.checkpoint import persistable_vars
from slim.io.export import (
    first_line,
    is_pir_program_file,
    read_program,
    set_cpu_kernels,
    without_deprecation_notice,
    write_bytes,
)
from slim.io.weights import check_params_fit, numpy_dtype
from slim.prune.pir import pir_supported

SEED_MODEL_NAME = "__model__"
SEED_PARAMS_NAME = "__params__"
MODEL_SUFFIX = ".pdmodel"
PARAMS_SUFFIX = ".pdiparams"
PIR_SUFFIX = ".json"
PIR_RESAVE_HINT = ("save it again in the classic format: run the script that saved it with "
                   "the environment variable FLAGS_enable_pir_api=0 set before paddle is "
                   "imported (e.g. `FLAGS_enable_pir_api=0 python export.py`); "
                   "paddle.jit.save and paddle.static.save_inference_model then write "
                   "PREFIX.pdmodel + PREFIX.pdiparams")
NOT_PARAMETERS = ("feed", "fetch")


class PirModelError(UserError):
    """The model was saved in Paddle 3's new IR (a JSON program) and this Paddle has no PIR."""


@dataclasses.dataclass(frozen=True)
class ModelFiles:
    """Where an inference model lives: `directory`, the program file `model_filename` in
    it, and `params_filename` (None: one file per parameter, named after it)."""
    directory: str
    model_filename: str
    params_filename: object = None

    @property
    def pir(self):
        """True for a Paddle 3 new-IR program (`.json`)."""
        return is_pir_program_file(self.model_path)

    @property
    def model_path(self):
        return os.path.join(self.directory, self.model_filename)

    @property
    def params_path(self):
        return os.path.join(self.directory, self.params_filename) if self.params_filename else None

    def file_names(self, program):
        """The files of the model: the program file, then the params file, or the one file of
        every persistable `program` reads when parameters are saved one per file."""
        if self.params_filename:
            return [self.model_filename, self.params_filename]
        return [self.model_filename] + [var.name for var in persistables(program)]

    def size_bytes(self, program):
        """Bytes on disk of `file_names(program)`."""
        return sum(os.path.getsize(os.path.join(self.directory, name))
                   for name in self.file_names(program))


@dataclasses.dataclass
class InferenceModel:
    """A loaded inference program: its feed names (in order) and fetch target vars."""
    program: object
    feed_names: list
    fetch_vars: list

    @property
    def feed_vars(self):
        block = self.program.global_block()
        return [block.var(name) for name in self.feed_names]


def find_model_files(model_dir, model_filename=None, params_filename=None):
    """The ModelFiles of `model_dir`; a one-line UserError when the dir or a named file is
    missing, the files cannot be told apart, or the program is a PIR (JSON) one.

    Without `model_filename`: `__model__` if present, else the one `*.pdmodel`. Without
    `params_filename`: `__params__` beside `__model__`, `PREFIX.pdiparams` beside
    `PREFIX.pdmodel`, else parameters one per file."""
    if not os.path.isdir(model_dir):
        what = "is not a directory" if os.path.exists(model_dir) else "does not exist"
        raise UserError(f"--model_dir '{shorten(model_dir)}' {what}; name the directory of an "
                        "exported Paddle inference model")
    present = sorted(os.listdir(model_dir))
    for option, name in (("--model_filename", model_filename),
                         ("--params_filename", params_filename)):
        if name is not None:
            require_base_name(name, option)
    if model_filename is None:
        model_filename = _default_model_filename(model_dir, present)
    model_path = os.path.join(model_dir, model_filename)
    _require_file(model_path, "--model_filename", present)
    pir = is_pir_program_file(model_path)
    if pir and not pir_supported():
        raise pir_model_error(model_path)
    if params_filename is None:
        suffix = PIR_SUFFIX if pir and model_filename.endswith(PIR_SUFFIX) else MODEL_SUFFIX
        stem = model_filename[:-len(suffix)] if model_filename.endswith(suffix) else None
        for candidate in (SEED_PARAMS_NAME, stem and stem + PARAMS_SUFFIX):
            if candidate and os.path.isfile(os.path.join(model_dir, candidate)):
                params_filename = candidate
                break
    else:
        _require_file(os.path.join(model_dir, params_filename), "--params_filename", present)
    return ModelFiles(model_dir, model_filename, params_filename)


def require_base_name(name, what):
    """`name` when it is a plain file name (no directory part, not '.' or '..'); else a
    one-line UserError. The tool writes the pruned model under the input's file names
    inside its output dir, so a name with a directory part could lead outside it (e.g.
    onto the input model itself)."""
    if (not name or name in (".", "..") or os.path.basename(name) != name
            or "/" in name or "\\" in name or "\0" in name):
        raise UserError(f"{what} '{shorten(name)}' must be a plain file name inside the "
                        "model dir (no directory part, no '..')")
    return name


def _default_model_filename(model_dir, present):
    if os.path.isfile(os.path.join(model_dir, SEED_MODEL_NAME)):
        return SEED_MODEL_NAME
    programs = [name for name in present if name.endswith(MODEL_SUFFIX)]
    if len(programs) == 1:
        return programs[0]
    if len(programs) > 1:
        raise UserError(f"--model_dir '{shorten(model_dir)}' holds {len(programs)} programs "
                        f"({shorten(', '.join(programs))}); choose one with --model_filename")
    pir = [name for name in present if name.endswith(PIR_SUFFIX) and
           os.path.isfile(os.path.join(model_dir, name[:-len(PIR_SUFFIX)] + PARAMS_SUFFIX))]
    if len(pir) == 1 and pir_supported():
        return pir[0]
    if len(pir) > 1:
        raise UserError(f"--model_dir '{shorten(model_dir)}' holds {len(pir)} PIR programs "
                        f"({shorten(', '.join(pir))}); choose one with --model_filename")
    if pir:
        raise pir_model_error(os.path.join(model_dir, pir[0]))
    listing = f"; it holds: {shorten(', '.join(present))}" if present else "; it is empty"
    raise UserError(f"--model_dir '{shorten(model_dir)}' has no {SEED_MODEL_NAME} and no "
                    f"*{MODEL_SUFFIX} program{listing} (name the program with --model_filename)")


def pir_model_error(path):
    """The PirModelError of the PIR (JSON) program at `path` on a Paddle without PIR, with
    how to save it classic."""
    import paddle
    return PirModelError(f"'{shorten(path)}' is a Paddle 3 new-IR (PIR) program (JSON), which "
                         f"Paddle {paddle.__version__} cannot load (install paddlepaddle>=3, "
                         f"or {PIR_RESAVE_HINT})")


def _require_file(path, option, present):
    if not os.path.isfile(path):
        name = os.path.basename(path)
        what = "is not a regular file" if os.path.exists(path) else "does not exist"
        raise UserError(f"{option}: '{shorten(path)}' {what}{did_you_mean(name, present)}"
                        f"{'; the dir holds: ' + shorten(', '.join(present)) if present else ''}")


def persistables(program):
    """The persistable vars `program` reads from its params, sorted by name (the order of a
    combined params file)."""
    return sorted((var for var in program.list_vars()
                   if var.persistable and var.name not in NOT_PARAMETERS),
                  key=lambda var: var.name)


def load_inference_model(files, executor, scope):
    """The InferenceModel in `files` (a ModelFiles), its parameters loaded into `scope`.

    Saving an inference program drops which vars were Parameters; every persistable it
    reads is made one again here (`mark_parameters`), as they were when it was built, so
    the pruning engine and FLOPs / params counts see the weights. Any error Paddle raises
    while loading is one line naming the files."""
    import paddle
    if files.pir:
        return _load_pir_model(files, executor, scope)
    check_model_files(files)
    try:
        with paddle.static.scope_guard(scope), without_deprecation_notice():
            program, feed_names, fetch_vars = paddle.static.load_inference_model(
                os.path.normpath(files.directory), executor, model_filename=files.model_filename,
                params_filename=files.params_filename)
    except Exception as error:  # noqa: BLE001 - Paddle raises many types; each is the files' fault here
        params = files.params_filename or "one file per parameter"
        raise UserError(f"Paddle cannot load the inference model '{shorten(files.model_path)}' "
                        f"with params '{shorten(params)}': {first_line(error)}") from None
    mark_parameters(program)
    return InferenceModel(program, list(feed_names), list(fetch_vars))


def _load_pir_model(files, executor, scope):
    """A `.json` model as an InferenceModel over a PirProgramView (call inside
    `ir_guard(True)`); the view can make its concrete copy (`concrete_copy`) by running in
    `scope` with `executor`."""
    import paddle

    from slim.prune.pir import PirProgramView
    try:
        with paddle.static.scope_guard(scope), without_deprecation_notice():
            program, feed_names, fetch_values = paddle.static.load_inference_model(
                files.directory, executor, model_filename=files.model_filename,
                params_filename=files.params_filename)
        view = PirProgramView(program)
    except Exception as error:  # noqa: BLE001 - Paddle raises many types; each is the files' fault here
        params = files.params_filename or "one file per parameter"
        raise UserError(f"Paddle cannot load the inference model '{shorten(files.model_path)}' "
                        f"with params '{shorten(params)}': {first_line(error)}") from None
    view.runner = (scope, executor)
    return InferenceModel(view, list(feed_names), [view.var_of(value) for value in fetch_values])


def check_model_files(files):
    """Check the model in `files` structurally before Paddle reads it, as every exported
    model is checked (`slim.io.weights.check_params_fit`): the program must parse, and the
    params must be exactly the tensors it reads, whole (Paddle's loader would silently fill
    a short file's last weights with zeros). Per-parameter files must be plain names inside
    the model dir. One-line UserError otherwise; returns the parsed program."""
    program = read_program(files.model_path)
    variables = persistable_vars(program)
    if not files.params_filename:  # one file per parameter, named after it: inside the dir
        for var in variables:
            require_base_name(var.name, f"'{shorten(files.model_path)}': parameter file name")
    check_params_fit(variables, files.model_path, params_path=files.params_path,
                     params_dir=None if files.params_filename else files.directory)
    return program


def mark_parameters(program):
    """Make every persistable var of `program` (but feed / fetch) a Parameter, in place."""
    from paddle.base.framework import Parameter
    block = program.global_block()
    for var in list(block.vars.values()):
        if var.persistable and var.name not in NOT_PARAMETERS and not isinstance(var, Parameter):
            parameter = block.create_parameter(name=var.name, shape=var.shape, dtype=var.dtype,
                                               type=var.type)
            parameter.stop_gradient = True
    return program


def save_inference_model(model, executor, scope, directory, model_filename, params_filename):
    """Write `model` (an InferenceModel) with the parameters in `scope` into `directory` as
    `model_filename` and `params_filename` (None: one file per parameter). Returns the
    names of the files written."""
    import paddle
    if getattr(model.program, "is_pir_view", False):
        return _save_pir_model(model, executor, scope, directory, model_filename, params_filename)
    for name in [model_filename, params_filename] + (
            [] if params_filename else [var.name for var in persistables(model.program)]):
        if name is not None:  # every file stays inside `directory`, whatever the names say
            require_base_name(name, "a file name of the saved model")
    feed_vars = model.feed_vars
    program_bytes = paddle.static.serialize_program(feed_vars, model.fetch_vars,
                                                    program=model.program)
    write_bytes(os.path.join(directory, model_filename), program_bytes)
    with paddle.static.scope_guard(scope):
        if params_filename:
            params_bytes = paddle.static.serialize_persistables(
                feed_vars, model.fetch_vars, executor, program=model.program)
            write_bytes(os.path.join(directory, params_filename), params_bytes)
            return [model_filename, params_filename]
        saved = paddle.static.normalize_program(model.program, feed_vars, model.fetch_vars)
        saved_vars = persistables(saved)
        paddle.static.save_vars(executor, directory, main_program=saved, vars=saved_vars)
    return [model_filename] + [var.name for var in saved_vars]


def _save_pir_model(model, executor, scope, directory, model_filename, params_filename):
    """Write a PIR model: its view's pruning committed into the program and every value's
    type checked against a run (`slim.prune.pir.check_types`), then `.json` + params."""
    import paddle

    from slim.prune.pir import check_types
    view = model.program
    for name in (model_filename, params_filename):
        require_base_name(name or "", "a file name of the saved model")
    view.commit()
    if view.check_feeds is not None:
        check_types(view.program, scope, view.check_feeds, executor, known=view.known_mismatches)
    prefix = os.path.join(directory, "inference")
    feed_values = [view.global_block().var(name).value for name in model.feed_names]
    fetch_values = [var.value for var in model.fetch_vars]
    with paddle.static.scope_guard(scope), without_deprecation_notice():
        paddle.static.save_inference_model(prefix, feed_values, fetch_values, executor,
                                           program=view.program)
    for written, wanted in ((prefix + PIR_SUFFIX, model_filename),
                            (prefix + PARAMS_SUFFIX, params_filename)):
        target = os.path.join(directory, wanted)
        if written != target:
            os.replace(written, target)
    return [model_filename, params_filename]


def inference_config(files, threads=1, onednn=None):
    """The Paddle Inference (`paddle.inference`) Config of the model in `files` on the CPU,
    with `threads` math threads; `onednn` True / False turns oneDNN kernels on / off, None
    keeps Paddle's default (oneDNN where Paddle enables it: `config.mkldnn_enabled()`),
    except for PIR models (below)."""
    import paddle.inference as paddle_infer
    if files.params_filename:
        config = paddle_infer.Config(files.model_path, files.params_path)
    else:
        config = paddle_infer.Config(files.directory)
        config.set_prog_file(files.model_path)
    if onednn is None and files.pir:
        # Paddle 3.3.1 runs PIR models with oneDNN into "ConvertPirAttribute2RuntimeAttribute
        # not support ArrayAttribute<DoubleAttribute>" (PP-OCRv5's nearest_interp scale),
        # the unpruned model too; its plain CPU kernels run them.
        onednn = False
    set_cpu_kernels(config, threads, onednn)
    config.disable_glog_info()
    return config


LATENCY_SEED = 0  # random_feeds' seed


def feed_shapes(model, input_shapes=None):
    """{feed name: shape}: the program's feed shapes with an unknown batch axis 1 and the
    dims of `input_shapes` (['[FEED=]C,H,W', ...]) put in; a one-line error when a given
    shape does not fit or a dim stays unknown."""
    block = model.program.global_block()
    declared = {name: list(block.var(name).shape) for name in model.feed_names}
    given = parse_input_shapes(input_shapes or [], model.feed_names)
    shapes = {}
    for name, shape in declared.items():
        if not shape:  # a scalar feed
            shapes[name] = []
            continue
        rest = given.get(name, shape[1:])
        if len(rest) != len(shape) - 1:
            raise UserError(f"--input_shape {name}={','.join(map(str, rest))}: feed '{name}' "
                            f"has {len(shape) - 1} dims besides the batch axis ({shape})")
        for dim, fixed in zip(shape[1:], rest):
            if dim >= 0 and fixed != dim:
                raise UserError(f"--input_shape {name}={','.join(map(str, rest))} does not fit "
                                f"feed '{name}' of shape {shape}")
        if any(dim < 0 for dim in rest):
            raise UserError(f"feed '{name}' has shape {shape}: give its size with --input_shape "
                            f"{name}={','.join('N' if d < 0 else str(d) for d in shape[1:])}")
        shapes[name] = [shape[0] if shape[0] > 0 else 1] + list(rest)
    return shapes


def parse_input_shapes(values, feed_names):
    """{feed name: [dims]} of ['[FEED=]D,D,...']; a bare shape is the only feed's."""
    result = {}
    for value in values:
        name, _, dims = value.rpartition("=")
        if not name:
            if len(feed_names) != 1:
                raise UserError(f"--input_shape '{shorten(value, 60)}': the model has "
                                f"{len(feed_names)} feeds ({', '.join(feed_names)}); write "
                                "FEED=C,H,W")
            name = feed_names[0]
        if name not in feed_names:
            raise UserError(f"--input_shape '{shorten(value, 60)}': no feed '{shorten(name, 60)}'; "
                            f"feeds: {', '.join(feed_names)}")
        try:
            shape = [int(dim) for dim in dims.split(",")]
        except ValueError:
            shape = []
        if not shape or any(dim < 1 for dim in shape):
            raise UserError(f"--input_shape '{shorten(value, 60)}': expected positive integers "
                            "separated by commas, e.g. 3,224,224")
        result[name] = shape
    return result


def random_feeds(model, shapes):
    """{feed: array}: standard normal floats (seeded), ones for integer feeds, at `shapes`."""
    rng = np.random.default_rng(LATENCY_SEED)
    block = model.program.global_block()
    feeds = {}
    for name in model.feed_names:
        dtype = numpy_dtype(block.var(name).dtype)
        if np.issubdtype(dtype, np.floating):
            feeds[name] = rng.standard_normal(shapes[name]).astype(dtype)
        else:
            feeds[name] = np.ones(shapes[name], dtype)
    return feeds
