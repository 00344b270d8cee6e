"""Save and load parameters between a Paddle scope and disk, in Paddle's own tensor format.

Two layouts, both what Paddle (and the 2019 published weights) use:

- a **directory** with one file per parameter, each file named exactly as the
  parameter (written by Paddle's `save` op, as `paddle.static.save_vars` with
  `filename=None` does);
- one **combined** file (`__params__`-style, Paddle's `save_combine` op, as
  `save_vars(filename=...)` / `save_inference_model` write): the tensors one
  after another in parameter-name order, with no names stored.

Each tensor record is Paddle's LoDTensor serialization: uint32 version (0),
uint64 LoD level count and the levels, uint32 tensor version (0), int32 size of
a `TensorDesc` protobuf (data type, dims), the protobuf, then the raw data.
Writing goes through Paddle's own ops; reading parses the records here, so the
file shapes can be checked against the program before anything is loaded, and
a partial load of a combined file is possible. No pickle anywhere.

Loading compares what is on disk with what the program expects: missing,
unexpected and shape- or dtype-mismatched parameters are reported by name in a
`WeightsError`, and nothing is loaded, unless `partial=True` (then the matching
ones are loaded and a warning gives the counts — e.g. ImageNet backbone weights
into the detector).
"""
import dataclasses
import logging
import math
import os
import struct

import numpy as np

from slim.errors import UserError, shorten
from slim.io.output_places import (
    WrittenFiles,
    check_output_file,
    check_replaceable_dir,
    make_owned_temp_dir,
    remove_owned_dir,
    replace_dir,
)

logger = logging.getLogger(__name__)

# Files that sit next to per-parameter files in Paddle model dirs and are not parameters.
NON_PARAM_FILES = ("__model__", "__model__.infer", "__params__", "model_manifest.json")
COMBINED_STAGING_NAME = "__params__"  # the combined file's name inside save_weights' temp dir

# Paddle VarType data type codes -> numpy dtypes (BF16 has no numpy dtype).
_NUMPY_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16,
                 5: np.float32, 6: np.float64, 20: np.uint8, 21: np.int8}

_MAX_LOD_LEVELS = 32  # a record claiming more is damaged (Paddle's LoD is a few levels deep)
_LISTED_NAMES = 8  # names shown per category in one-line error messages


class WeightsError(UserError):
    """A weights file or directory does not match the program (missing, unexpected,
    mismatched parameters) or is not Paddle's tensor format."""


@dataclasses.dataclass(frozen=True)
class TensorRecord:
    """Where one serialized tensor sits in a file."""
    path: str
    shape: tuple
    dtype: np.dtype
    data_offset: int
    data_size: int

    def read(self):
        """The tensor as a numpy array (bit-exact)."""
        with open(self.path, "rb") as file:
            file.seek(self.data_offset)
            data = file.read(self.data_size)
        if len(data) != self.data_size:
            raise WeightsError(f"weights file '{self.path}' is truncated")
        return np.frombuffer(data, dtype=self.dtype).reshape(self.shape).copy()


@dataclasses.dataclass
class LoadReport:
    """What a load found and did: names loaded, missing from disk, unexpected on disk,
    and mismatched ({name: (shape/dtype on disk, in the program)})."""
    loaded: list
    missing: list
    unexpected: list
    mismatched: dict

    @property
    def complete(self):
        """True when disk and program agree exactly."""
        return not (self.missing or self.unexpected or self.mismatched)


def parameter_names(program):
    """Names of all Parameters of `program` (incl. batch norm moving statistics), sorted."""
    return sorted(param.name for param in program.global_block().all_parameters())


def weights_format(path):
    """'dir' for a directory of per-parameter files, 'combined' for a single file."""
    if os.path.isdir(path):
        return "dir"
    if os.path.isfile(path):
        return "combined"
    raise WeightsError(f"weights path '{path}' does not exist (expected a directory of "
                       "per-parameter files or a combined params file)")


def save_weights(scope, program, path, combined=False, var_names=None, what="weights path"):
    """Save `program`'s parameters (or the persistable vars `var_names`) from `scope` to `path`.

    combined=False writes the directory `path` with one file per variable, marked as the
    tool's (OWNER_MARKER); combined=True writes the single file `path`, listed as the
    tool's in its directory's WRITTEN_LIST. The write goes to a marked temp dir beside
    `path` first and replaces `path` only when complete, and only if `path` is absent,
    an empty directory, or what the tool wrote there before (see `check_weights_target`).
    """
    import paddle
    names = sorted(var_names) if var_names is not None else parameter_names(program)
    block = program.global_block()
    missing_in_scope = [name for name in names if not _initialized(scope, name)]
    if missing_in_scope:
        raise ValueError(f"cannot save: not initialized in the scope: {_listed(missing_in_scope)} "
                         "(run the startup program or load weights first)")
    variables = [block._find_var_recursive(name) for name in names]
    unknown = [name for name, var in zip(names, variables) if var is None]
    if unknown:
        raise ValueError(f"cannot save: not variables of the program: {_listed(unknown)}")
    target = check_weights_target(path, combined, what)
    staging = make_owned_temp_dir(os.path.dirname(target), "." + os.path.basename(target) + ".tmp-")
    try:
        executor = paddle.static.Executor(paddle.CPUPlace())
        with paddle.static.scope_guard(scope):
            paddle.static.save_vars(executor, staging, main_program=program, vars=variables,
                                    filename=COMBINED_STAGING_NAME if combined else None)
        _check_written(staging, combined, names, scope, what)
        _replace(staging, target, combined, what)
    finally:
        remove_owned_dir(staging)  # left over only after a failure, or the combined file's


def _check_written(staging, combined, names, scope, what):
    """Read back what Paddle's save ops wrote into `staging`. They do not report a short
    write (a full disk, a file size limit): without this a truncated weights file would be
    swapped in as if complete. WeightsError (one line) unless every tensor is there, whole,
    with the shape it has in `scope`."""
    path = os.path.join(staging, COMBINED_STAGING_NAME) if combined else staging
    try:
        records, count = _records(path, names)
    except WeightsError as error:
        records, count, reason = None, None, str(error)
    else:
        reason = None
        if count is not None or sorted(records) != sorted(names):
            reason = f"{count if count is not None else len(records)} tensors of {len(names)} were written"
        else:
            wrong = [name for name in names
                     if list(records[name].shape) != list(scope.find_var(name).get_tensor().shape())]
            if wrong:
                reason = f"{_listed(wrong)} written with the wrong shape"
    if reason is not None:
        raise WeightsError(f"cannot write {what} '{shorten(path)}': the file written is incomplete "
                           f"({reason}); is the disk full? Nothing was replaced")


def check_weights_target(path, combined=False, what="weights path", inputs=()):
    """Check `path` before the work that ends in `save_weights` (so a run fails before it
    trains, not after): a weights directory must be absent, empty or one the tool wrote
    (OWNER_MARKER); a combined file must be absent or listed as the tool's in its
    directory's WRITTEN_LIST (a user's file of that name is never replaced). Neither may
    be or hold one of `inputs`; the place must be writable. OutputPlaceError (one line)
    otherwise. Returns the absolute path."""
    if not combined:
        return check_replaceable_dir(path, what, inputs)
    check_output_file(path, what, inputs)
    return os.path.abspath(str(path))


def load_weights(scope, program, path, partial=False, var_names=None, place=None):
    """Load weights from `path` (a directory or a combined file) into `scope`.

    Expects exactly `program`'s parameters (or `var_names`). Any missing, unexpected or
    shape/dtype-mismatched name raises WeightsError listing them and loads nothing,
    unless `partial` (then the matching ones load and a warning gives the counts; none
    matching is still a WeightsError). A parameter holding NaN or inf is a WeightsError too,
    and nothing is loaded.
    `place` is where the tensors go (default CPU). Returns a LoadReport.
    """
    import paddle
    expected_names = sorted(var_names) if var_names is not None else parameter_names(program)
    block = program.global_block()
    expected = {}
    for name in expected_names:
        var = block._find_var_recursive(name)
        if var is None:
            raise ValueError(f"'{name}' is not a variable of the program")
        expected[name] = (tuple(var.shape), numpy_dtype(var.dtype))

    on_disk, unaligned = _records(path, expected_names)
    report = _compare(expected, on_disk)
    if unaligned is not None:
        # a combined file stores no names: a different tensor count cannot be matched up
        raise WeightsError(
            f"weights file '{path}' holds {unaligned} tensors but the program expects "
            f"{len(expected_names)} parameters; a combined file stores no names, so they "
            "cannot be matched (save a directory of per-parameter files to load partially)")
    if not report.complete and not partial:
        raise WeightsError(f"weights '{path}' do not match the program: {_describe(report)}; "
                           f"{len(report.loaded)} match (load with partial=True to load only those)")
    if partial and expected and not report.loaded:
        raise WeightsError(f"weights '{path}' hold none of the program's {len(expected)} parameters "
                           f"({_describe(report)}); name weights saved from this model")
    arrays = {name: on_disk[name].read() for name in report.loaded}
    for name, array in arrays.items():  # all checked before any is loaded
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise WeightsError(f"weights '{path}': parameter '{name}' holds NaN or infinite values "
                               "(saved from a diverged run?); nothing was loaded")
    place = place if place is not None else paddle.CPUPlace()
    for name, array in arrays.items():
        scope.var(name).get_tensor().set(array, place)
    if not report.complete:
        logger.warning("partially loaded weights '%s': %d of %d parameters loaded; %s",
                       path, len(report.loaded), len(expected), _describe(report))
    return report


def check_params_fit(variables, model_path, params_path=None, params_dir=None):
    """The one structural check of the parameters an inference program reads, before Paddle
    loads them (Paddle's own loaders fill what is missing with zeros, silently).

    `variables` are the persistables the program in `model_path` reads (sorted by name, as
    Paddle loads them). Either `params_path`, a combined file, must hold exactly them: the
    same count, shapes and dtypes in order, the last tensor complete and nothing after it;
    or `params_dir` must hold one file per variable, named after it, each exactly one tensor
    of its shape and dtype. WeightsError (one line, naming the file) otherwise."""
    if params_path is not None:
        records = read_combined_records(params_path)  # truncated, not tensors, trailing bytes
        if len(records) != len(variables):
            raise WeightsError(f"params file '{shorten(params_path)}' holds {len(records)} tensors "
                               f"but '{shorten(model_path)}' reads {len(variables)}: they are not "
                               "from the same model")
        pairs = zip(variables, records)
    else:
        pairs = ((var, _single_record(os.path.join(params_dir, var.name), model_path))
                 for var in variables)
    for var, record in pairs:
        shape, dtype = tuple(int(d) for d in var.shape), numpy_dtype(var.dtype)
        if record.shape != shape or record.dtype != dtype:
            raise WeightsError(f"params file '{shorten(record.path)}' does not fit "
                               f"'{shorten(model_path)}': {var.name} is {list(record.shape)} "
                               f"{record.dtype.name} in the file, {list(shape)} {dtype.name} in the "
                               "program (are they from the same model, e.g. both pruned?)")


def _single_record(file_path, model_path):
    """The one TensorRecord of the per-parameter file `file_path`; WeightsError when it is
    missing, not Paddle's tensor format, or not exactly one whole tensor."""
    if not os.path.isfile(file_path):
        raise WeightsError(f"parameter file '{shorten(file_path)}' that '{shorten(model_path)}' "
                           "reads is missing (or not a regular file)")
    with open(file_path, "rb") as file:
        record = _read_record(file, file_path)
        size = file.seek(0, os.SEEK_END)
    if record is None or size != record.data_offset + record.data_size:
        what = "is empty" if record is None else (
            f"is truncated ({record.data_offset + record.data_size - size} bytes short)"
            if size < record.data_offset + record.data_size else
            f"has {size - record.data_offset - record.data_size} bytes after its tensor")
        raise WeightsError(f"parameter file '{shorten(file_path)}' {what}: not one whole Paddle "
                           "tensor")
    return record


def read_weights(path, names=None):
    """{name: ndarray} of a weights directory, or of a combined file given its `names`
    (the parameter names in the order saved, i.e. sorted)."""
    if weights_format(path) == "combined" and names is None:
        raise ValueError("a combined params file stores no names: pass the parameter names")
    records, unaligned = _records(path, sorted(names) if names is not None else None)
    if unaligned is not None:
        raise WeightsError(f"weights file '{path}' holds {unaligned} tensors, "
                           f"expected {len(names)}")
    return {name: record.read() for name, record in records.items()}


def _records(path, expected_names):
    """({name: TensorRecord}, None) or, for a combined file whose tensor count differs
    from `expected_names`, ({}, tensor count)."""
    if weights_format(path) == "dir":
        records = {}
        for entry in sorted(os.listdir(path)):
            file_path = os.path.join(path, entry)
            if entry.startswith(".") or entry in NON_PARAM_FILES or not os.path.isfile(file_path):
                continue
            with open(file_path, "rb") as file:
                record = _read_record(file, file_path)
                if record is None or file.seek(0, os.SEEK_END) != record.data_offset + record.data_size:
                    raise WeightsError(f"weights file '{file_path}' is not a single Paddle tensor")
            records[entry] = record
        return records, None
    records = read_combined_records(path)
    if expected_names is None or len(records) != len(expected_names):
        return {}, len(records)
    return dict(zip(expected_names, records)), None


def read_combined_records(path):
    """The TensorRecords of the combined params file `path`, in file order.

    The file must be exactly the records: WeightsError (one line, naming the file) when a
    record's data is cut short or anything follows the last record, so a truncated or
    over-long file is never taken for a complete one.
    """
    records = []
    with open(path, "rb") as file:
        file_size = file.seek(0, os.SEEK_END)
        file.seek(0)
        while True:
            record = _read_record(file, path)
            if record is None:
                return records
            end = record.data_offset + record.data_size
            if end > file_size:
                raise WeightsError(f"weights file '{path}' is truncated: tensor {len(records)} "
                                   f"{list(record.shape)} needs {end - file_size} more bytes "
                                   "than the file has")
            records.append(record)
            file.seek(end)


def _read_record(file, path):
    """The next TensorRecord of `file`, or None at end of file."""
    start = file.tell()
    header = file.read(4)
    if not header:
        return None
    try:
        (version,) = struct.unpack("<I", header)
        if version != 0:
            raise ValueError(f"LoDTensor version {version}")
        (lod_levels,) = struct.unpack("<Q", _read_exactly(file, 8))
        if lod_levels > _MAX_LOD_LEVELS:
            raise ValueError(f"{lod_levels} LoD levels")
        for _ in range(lod_levels):
            (level_size,) = struct.unpack("<Q", _read_exactly(file, 8))
            file.seek(level_size, os.SEEK_CUR)
        (tensor_version,) = struct.unpack("<I", _read_exactly(file, 4))
        if tensor_version != 0:
            raise ValueError(f"tensor version {tensor_version}")
        (desc_size,) = struct.unpack("<i", _read_exactly(file, 4))
        if not 0 < desc_size < 4096:
            raise ValueError(f"tensor description size {desc_size}")
        data_type, dims = _parse_tensor_desc(_read_exactly(file, desc_size))
        if data_type not in _NUMPY_DTYPES:
            raise ValueError(f"unsupported data type code {data_type}")
        dtype = np.dtype(_NUMPY_DTYPES[data_type])
        data_offset = file.tell()
        data_size = math.prod(dims) * dtype.itemsize
    except (ValueError, struct.error) as error:
        raise WeightsError(f"weights file '{path}' is not Paddle's tensor format at byte "
                           f"{start} ({error})") from None
    return TensorRecord(path, tuple(dims), dtype, data_offset, data_size)


def _read_exactly(file, size):
    data = file.read(size)
    if len(data) != size:
        raise ValueError("unexpected end of file")
    return data


def _parse_tensor_desc(data):
    """(data_type, dims) from a serialized `VarType.TensorDesc` protobuf
    (field 1: data_type varint; field 2: repeated int64 dims, packed or not)."""
    data_type, dims, position = None, [], 0
    while position < len(data):
        key, position = _varint(data, position)
        field, wire_type = key >> 3, key & 7
        if field == 1 and wire_type == 0:
            data_type, position = _varint(data, position)
        elif field == 2 and wire_type == 0:
            dim, position = _varint(data, position)
            dims.append(_signed64(dim))
        elif field == 2 and wire_type == 2:
            length, position = _varint(data, position)
            end = position + length
            while position < end:
                dim, position = _varint(data, position)
                dims.append(_signed64(dim))
        else:
            raise ValueError(f"unexpected field {field} in tensor description")
    if data_type is None or any(dim < 0 for dim in dims):
        raise ValueError("bad tensor description")
    return data_type, dims


def _varint(data, position):
    value, shift = 0, 0
    while True:
        if position >= len(data):
            raise ValueError("truncated varint")
        byte = data[position]
        position += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, position
        shift += 7


def _signed64(value):
    return value - (1 << 64) if value >= 1 << 63 else value


def numpy_dtype(var_dtype):
    """numpy dtype of a static Variable's dtype (a VarType on 2.6, a DataType on 3.x)."""
    from paddle.base.data_feeder import convert_dtype
    return np.dtype(convert_dtype(var_dtype))


def _compare(expected, on_disk):
    loaded, mismatched = [], {}
    for name, (shape, dtype) in expected.items():
        record = on_disk.get(name)
        if record is None:
            continue
        if record.shape != shape or record.dtype != dtype:
            mismatched[name] = (_shape_text(record.shape, record.dtype), _shape_text(shape, dtype))
        else:
            loaded.append(name)
    missing = [name for name in expected if name not in on_disk]
    unexpected = sorted(name for name in on_disk if name not in expected)
    return LoadReport(loaded, missing, unexpected, mismatched)


def _shape_text(shape, dtype):
    return f"{list(shape)} {np.dtype(dtype).name}"


def _listed(names):
    names = list(names)
    shown = ", ".join(names[:_LISTED_NAMES])
    return shown + (f" ... and {len(names) - _LISTED_NAMES} more" if len(names) > _LISTED_NAMES else "")


def _describe(report):
    parts = []
    if report.missing:
        parts.append(f"{len(report.missing)} missing ({_listed(report.missing)})")
    if report.unexpected:
        parts.append(f"{len(report.unexpected)} unexpected ({_listed(report.unexpected)})")
    if report.mismatched:
        items = [f"{name}: file {disk} vs program {program}"
                 for name, (disk, program) in report.mismatched.items()]
        parts.append(f"{len(items)} mismatched ({_listed(items)})")
    return "; ".join(parts)


def _initialized(scope, name):
    var = scope.find_var(name)
    return var is not None and var.get_tensor()._is_initialized()


def _replace(staging, target, combined, what):
    """Move what `save_weights` wrote into `staging` to `target`, replacing only what the
    tool wrote before (the check is repeated: time has passed since the first one)."""
    if not combined:
        replace_dir(staging, target, what)
        return
    written = WrittenFiles(os.path.dirname(target))
    written.check([os.path.basename(target)], what)
    os.replace(os.path.join(staging, COMBINED_STAGING_NAME), target)
    written.record(os.path.basename(target))
