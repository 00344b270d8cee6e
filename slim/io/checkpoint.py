"""Atomic per-epoch checkpoints: `${checkpoint_path}/${epoch}/`, resumable after any crash.

Layout of one checkpoint (epoch 3):

    checkpoints/3/
        .slim-owned                the tool's marker (slim.output_places.OWNER_MARKER): only a
                                   dir with it (or, written before the marker existed, with a
                                   slim-checkpoint manifest.json) is ever replaced or removed
        persistables               every persistable of the train program (params, BN
                                   statistics, optimizer accumulators, LR counters) in one
                                   file, Paddle's own combined tensor format (save_combine),
                                   in the name order the manifest lists
        pruning_plans.json         the pruning plans applied so far, in order (replayed on
                                   resume before the persistables are loaded, so shapes match)
        eval_model/...             whatever the caller's `extra_writer` puts there
        manifest.json              written LAST: format, epoch, iteration, best metric,
                                   every file with its size and sha256, every variable
                                   with its shape and dtype, and a checksum of the manifest
                                   itself (slim.io.file_manifest)

Writing goes into a temp dir beside the final one (`.tmp-3-<pid>-<random>`, marked as the
tool's before anything else is written into it), every file is fsynced, the manifest is
written last, the temp dir is renamed to `3` and the parent dir fsynced. A crash at any
moment leaves either the complete new checkpoint or none (plus a temp dir, which is never
read and is removed by the next writer), so the previous epoch stays intact. A write that
fails (disk full, a directory turned read-only) removes its temp dir and is one line
naming the checkpoint, the reason and the last complete checkpoint.

`latest_complete_checkpoint` picks the highest epoch whose manifest parses, matches its own
checksum, lists only plain file names inside the checkpoint, and whose files are all
present with the recorded sizes and hashes and whose pruning plans are well formed;
anything else is skipped with a warning. Manifests of version 1 (written before the
checksum existed) are still read, with a warning that their manifest cannot be verified
(their files still are): refusing them would throw away a run's progress on upgrade.

`check_checkpoint_root` is what a run calls before it trains: an epoch-named entry in
checkpoint_path that is not the tool's is an error naming it, and nothing is touched.

No pickle anywhere: tensors go through Paddle's save ops, the rest is JSON.
The config is not stored (as the seed says: edits to it apply on restart).
"""
import contextlib
import dataclasses
import json
import os
import re
import shutil
import sys
import tempfile
import time

from slim.errors import UserError, describe_os_error, shorten
from slim.io.file_manifest import (
    ManifestError,
    check_file_entries,
    check_listed_file,
    check_seal,
    describe_files,
    files_under,
    read_manifest_json,
    seal,
)
from slim.io.output_places import (
    OWNER_MARKER,
    FileLock,
    OutputPlaceError,
    check_output_dir,
    foreign_entries,
    is_owned_dir,
    make_owned_temp_dir,
    open_locked,
    require_no_foreign_entries,
    seal_owned,
)
from slim.prune.errors import PruneError
from slim.prune.plan import PrunePlan

CHECKPOINT_FORMAT = "slim-checkpoint"
CHECKPOINT_VERSION = 2            # 2: the manifest carries its own checksum
UNSEALED_VERSION = 1              # written before the checksum; still read (see above)
MANIFEST_NAME = "manifest.json"
PLANS_NAME = "pruning_plans.json"
PERSISTABLES_FILE = "persistables"
TEMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
EPOCH_NAME = re.compile(r"[0-9]+")
# Test hook: "SECONDS" or "SECONDS@EPOCH": sleep after the tensors are written and before the
# manifest (of every checkpoint, or of that epoch's), so a test can kill the process in the
# middle of a checkpoint write.
PAUSE_ENV = "SLIM_CHECKPOINT_TEST_PAUSE"


class CheckpointError(UserError):
    """A checkpoint cannot be written, is damaged, or does not fit the program it is loaded into."""


@dataclasses.dataclass
class CheckpointState:
    """What a checkpoint records besides tensors; JSON-able.

    Attributes:
        epoch: the epoch that was just finished (0-based); training resumes at epoch + 1.
        iteration: global iterations done so far (drives the LR schedule on resume).
        best_metric: the best eval metric so far, or None before the first eval.
        best_epoch: the epoch that reached best_metric, or None.
        pruning_plans: JSON plans applied so far, in order, each
            `{"strategy": name, "epoch": e, "plan": <engine JSON>}`.
        extra: free-form JSON (metric history, ...).
    """
    epoch: int
    iteration: int
    best_metric: object = None
    best_epoch: object = None
    pruning_plans: list = dataclasses.field(default_factory=list)
    extra: dict = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk: its dir, its state and its manifest. `sealed` is False
    for a version-1 manifest, which has no checksum of its own."""
    path: str
    state: CheckpointState
    manifest: dict
    sealed: bool = True


# ----------------------------------------------------------------------------- ownership

def is_checkpoint_dir(path):
    """True when `path` is a directory this tool wrote as a checkpoint (or as a checkpoint's
    temp dir): it holds OWNER_MARKER, or a manifest.json of format slim-checkpoint (how
    checkpoints written before the marker are recognised). A symlink never is."""
    if is_owned_dir(path):
        return True
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    try:
        manifest = read_manifest_json(os.path.join(path, MANIFEST_NAME), MANIFEST_NAME)
    except ManifestError:
        return False
    return manifest.get("format") == CHECKPOINT_FORMAT


def _foreign_entry_message(path, what):
    return (f"{what}: '{shorten(path)}' is named like a checkpoint epoch but was not written by "
            f"this tool (no {OWNER_MARKER}, no {CHECKPOINT_FORMAT} {MANIFEST_NAME}); it is left "
            f"untouched: move it away or choose another {what}")


def check_checkpoint_root(checkpoint_root, what="compressor.checkpoint_path"):
    """CheckpointError (one line, nothing touched) naming the first entry of `checkpoint_root`
    named like an epoch (digits) that is not the tool's checkpoint dir: a later checkpoint
    of that epoch would otherwise replace it. Call before training starts."""
    if not checkpoint_root or not os.path.isdir(checkpoint_root):
        return
    for name in sorted(os.listdir(checkpoint_root)):
        path = os.path.join(checkpoint_root, name)
        if EPOCH_NAME.fullmatch(name) and not (name == str(int(name)) and is_checkpoint_dir(path)):
            raise CheckpointError(_foreign_entry_message(path, what))
        if EPOCH_NAME.fullmatch(name):
            _require_only_ours(path, what)


def _require_only_ours(checkpoint_dir, what):
    """CheckpointError when the tool's `checkpoint_dir` holds an entry the tool did not
    write (a later checkpoint of its epoch would replace it, and the entry with it)."""
    try:
        require_no_foreign_entries(checkpoint_dir, what)
    except OutputPlaceError as error:
        raise CheckpointError(str(error)) from None


class CheckpointRootLock(FileLock):
    """An exclusive flock on the checkpoint_path directory itself (no file is left in it),
    released by `close()` or when the process ends, however it ends."""


def lock_checkpoint_root(checkpoint_root, what="compressor.checkpoint_path"):
    """Claim `checkpoint_root` for this run: an exclusive lock on the directory, held until
    the returned CheckpointRootLock is closed (or the process ends). A second run into the
    same checkpoint_path would overwrite this run's checkpoints epoch by epoch and resume
    from a mix of both: it gets a one-line CheckpointError naming the path instead. Call
    before training starts; keep the lock while running."""
    ensure_writable_dir(checkpoint_root, what)
    descriptor = open_locked(checkpoint_root, os.O_RDONLY | os.O_DIRECTORY, what,
                             checkpoint_root, error=CheckpointError)
    return CheckpointRootLock(descriptor)


def hold_checkpoint_root(checkpoint_root, what="compressor.checkpoint_path"):
    """`lock_checkpoint_root` as a context manager; nothing to lock without a checkpoint_root."""
    return lock_checkpoint_root(checkpoint_root, what) if checkpoint_root else contextlib.nullcontext()


# ----------------------------------------------------------------------------- writing

def ensure_writable_dir(path, what="checkpoint_path"):
    """Create `path` if needed and prove it is writable (output_places.check_output_dir);
    CheckpointError naming it otherwise."""
    try:
        check_output_dir(path, what)
    except OutputPlaceError as error:
        raise CheckpointError(str(error)) from None
    return path


def persistable_vars(program):
    """The variables of `program` a checkpoint must hold: persistable dense tensors
    (parameters, BN statistics, optimizer accumulators, LR counters), sorted by name."""
    from paddle.base import core
    skip_types = {core.VarDesc.VarType.FEED_MINIBATCH, core.VarDesc.VarType.FETCH_LIST,
                  core.VarDesc.VarType.READER, core.VarDesc.VarType.RAW}
    found = {}
    for var in program.list_vars():
        if var.persistable and var.type not in skip_types:
            found[var.name] = var
    return [found[name] for name in sorted(found)]


def _initialized_tensor(scope, name):
    var = scope.find_var(name)
    if var is None:
        return None
    tensor = var.get_tensor()
    return tensor if tensor._is_initialized() else None


def serialize_combined(executor, scope, variables):
    """`variables` (sorted by name) from `scope` as the bytes of one combined tensor file
    (Paddle's save_combine op, into memory).

    Into memory, not to a file: Paddle's file writer does not report a failed write (a
    full disk or a file size limit leaves a short file and no error), Python's does.
    """
    import paddle
    from paddle.base import core
    io_program = paddle.static.Program()
    block = io_program.global_block()
    clones = [block.create_var(name=var.name, shape=var.shape, dtype=var.dtype, type=var.type,
                               persistable=True) for var in variables]
    output_name = "slim_serialized_persistables"
    output = block.create_var(name=output_name, type=core.VarDesc.VarType.RAW, persistable=True)
    block.append_op(type="save_combine", inputs={"X": clones}, outputs={"Y": output},
                    attrs={"file_path": "", "save_to_memory": True})
    # A throwaway executor: the caller's caches compiled programs, and one cached for an
    # earlier (since freed) io_program would still point at the output var erased below.
    paddle.static.Executor(executor.place).run(io_program, scope=scope)
    data = scope.find_var(output_name).get_bytes()
    scope.erase([output_name])  # one copy of every tensor is enough
    return data


def _write_file(path, data):
    """Write `data` to the new file `path` and fsync it; an OSError names `path` (a failed
    write() or fsync() does not say which file it was)."""
    try:
        with open(path, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
    except OSError as error:
        raise OSError(error.errno, error.strerror or str(error), path) from None


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems refuse fsync on directories; rename is still atomic there
    finally:
        os.close(fd)


def _write_json(path, value):
    _write_file(path, json.dumps(value, indent=1, sort_keys=True).encode("utf-8"))


def _test_pause_seconds(epoch):
    """Seconds the PAUSE_ENV test hook asks to sleep while writing `epoch` (0: no pause)."""
    value = os.environ.get(PAUSE_ENV, "")
    if not value:
        return 0.0
    seconds, _, only_epoch = value.partition("@")
    if only_epoch and int(only_epoch) != int(epoch):
        return 0.0
    return float(seconds)


def _pid_alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _writer_of(name):
    """(epoch, pid) from a temp/old dir name `.tmp-<epoch>-<pid>[-<random>]`, or None."""
    parts = name.split("-")
    if len(parts) < 3 or not (parts[1].isdigit() and parts[2].isdigit()):
        return None
    return int(parts[1]), int(parts[2])


def remove_stale_temp_dirs(checkpoint_root):
    """Clean up after crashed writers in `checkpoint_root`: remove their temp dirs, and put
    back a previous checkpoint a crash left renamed to `.old-*` with nothing in its place.

    Only the tool's own dirs (`is_checkpoint_dir`) of writers that are no longer running
    are touched; a user's `.tmp-x` or `.old-x`, a file, or a live writer's dir is left
    alone. Returns the names removed or put back.
    """
    if not os.path.isdir(checkpoint_root):
        return []
    handled = []
    for name in sorted(os.listdir(checkpoint_root)):
        if not (name.startswith(TEMP_PREFIX) or name.startswith(OLD_PREFIX)):
            continue
        writer = _writer_of(name)
        path = os.path.join(checkpoint_root, name)
        if writer is None or not is_checkpoint_dir(path):
            continue
        epoch, pid = writer
        if pid != os.getpid() and _pid_alive(pid):
            continue
        final_dir = os.path.join(checkpoint_root, str(epoch))
        if name.startswith(OLD_PREFIX) and not os.path.lexists(final_dir):
            try:
                os.rename(path, final_dir)  # the crash hit between the two renames of a rewrite
            except OSError:
                continue
        elif foreign_entries(path):
            continue  # someone put a file into the tool's old dir: never delete it
        else:
            shutil.rmtree(path, ignore_errors=True)
        handled.append(name)
    return handled


def _write_contents(temp_dir, state, program, scope, executor, extra_writer):
    """Write the tensors, the plans, the caller's files and last the sealed manifest."""
    variables = [var for var in persistable_vars(program)
                 if _initialized_tensor(scope, var.name) is not None]
    data = serialize_combined(executor, scope, variables)
    _write_file(os.path.join(temp_dir, PERSISTABLES_FILE), data)
    var_records = {}
    for var in variables:
        tensor = _initialized_tensor(scope, var.name)
        var_records[var.name] = {"shape": list(tensor.shape()),
                                 "dtype": str(tensor._dtype()).replace("paddle.", "")}
    _write_json(os.path.join(temp_dir, PLANS_NAME), list(state.pruning_plans))
    if extra_writer is not None:
        extra_writer(temp_dir)
    names = files_under(temp_dir, skip=(OWNER_MARKER,))
    for dirpath, _, _ in os.walk(temp_dir):
        _fsync_dir(dirpath)

    pause = _test_pause_seconds(state.epoch)
    if pause > 0:
        print(f"checkpoint: pausing {pause:g}s before the manifest of epoch {state.epoch} "
              f"({PAUSE_ENV})", flush=True)
        time.sleep(pause)

    manifest = seal({
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "state": dataclasses.asdict(state),
        "variables": var_records,
        "files": describe_files(temp_dir, names),
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    })
    _write_json(os.path.join(temp_dir, MANIFEST_NAME), manifest)
    seal_owned(temp_dir)
    _fsync_dir(temp_dir)


def _install(temp_dir, final_dir, checkpoint_root, epoch):
    """Rename the finished `temp_dir` to `final_dir`, replacing the tool's previous checkpoint
    of that epoch; if the second rename fails the previous one is put back."""
    previous = None
    if os.path.lexists(final_dir):
        previous = tempfile.mkdtemp(prefix=f"{OLD_PREFIX}{epoch}-{os.getpid()}-",
                                    dir=checkpoint_root)
        os.rmdir(previous)
        os.rename(final_dir, previous)
    try:
        os.rename(temp_dir, final_dir)
    except BaseException:
        if previous is not None:
            os.rename(previous, final_dir)
        raise
    _fsync_dir(checkpoint_root)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def _discard(temp_dir):
    """Remove the tool's temp dir `temp_dir` if it is there; True when nothing is left."""
    if temp_dir is None or not os.path.lexists(temp_dir):
        return True
    shutil.rmtree(temp_dir, ignore_errors=True)
    return not os.path.lexists(temp_dir)


def _kept(last_complete):
    return (f"the last complete checkpoint '{last_complete}' is kept" if last_complete
            else "no checkpoint of this run was complete yet")


def save_checkpoint(checkpoint_root, state, program, scope, executor, extra_writer=None,
                    last_complete=None):
    """Write `state` and every persistable of `program` (read from `scope`) atomically to
    `checkpoint_root/<state.epoch>/`; return that path.

    `extra_writer(temp_dir)`, if given, adds files (e.g. `eval_model/`) inside the temp
    dir before the manifest is written, so they are part of the same atomic step.
    An existing checkpoint of the same epoch is replaced atomically too; anything else of
    that name is a CheckpointError and stays untouched.

    A failed write (any OSError: disk full, file too large, a directory turned read-only)
    removes the temp dir and raises a one-line CheckpointError naming the checkpoint, the
    reason and `last_complete` (the caller's last complete checkpoint, if any).
    """
    ensure_writable_dir(checkpoint_root)
    remove_stale_temp_dirs(checkpoint_root)
    epoch = int(state.epoch)
    final_dir = os.path.join(checkpoint_root, str(epoch))
    if os.path.lexists(final_dir) and not is_checkpoint_dir(final_dir):
        raise CheckpointError(_foreign_entry_message(final_dir, "checkpoint_path"))
    if os.path.lexists(final_dir):
        _require_only_ours(final_dir, "checkpoint_path")
    temp_dir = None
    try:
        temp_dir = make_owned_temp_dir(checkpoint_root, f"{TEMP_PREFIX}{epoch}-{os.getpid()}-")
        _write_contents(temp_dir, state, program, scope, executor, extra_writer)
        _install(temp_dir, final_dir, checkpoint_root, epoch)
    except OSError as error:
        left = "" if _discard(temp_dir) else (f"; its partial temp dir '{temp_dir}' could not be "
                                              "removed (the next run removes it)")
        raise CheckpointError(f"cannot write checkpoint '{final_dir}': "
                              f"{describe_os_error(error)}; {_kept(last_complete)}{left}") from None
    except BaseException:
        _discard(temp_dir)
        raise
    return final_dir


def add_to_checkpoint(checkpoint_dir, writer, what="checkpoint"):
    """Add files to the complete checkpoint `checkpoint_dir` as atomically as
    `save_checkpoint` writes one; return its path.

    Under the checkpoint root's lock (a run still writing there is a CheckpointError), the
    checkpoint is validated, its listed files are linked (or copied) into a temp dir beside
    it, `writer(temp_dir)` adds or replaces files there (never in place: a listed file is
    replaced by a new one, so the links keep the old content), the manifest is written anew
    (same state and variables, every file described again) and sealed, and the copy
    replaces the checkpoint. A crash leaves the old checkpoint or the new one."""
    checkpoint = validate_checkpoint(checkpoint_dir)
    checkpoint_dir = os.path.abspath(checkpoint_dir)
    root, name = os.path.split(checkpoint_dir)
    if not EPOCH_NAME.fullmatch(name):
        raise CheckpointError(f"'{shorten(checkpoint_dir)}' is not named after its epoch, so it "
                              "is no checkpoint of a checkpoint_path")
    _require_only_ours(checkpoint_dir, what)
    temp_dir = None
    with lock_checkpoint_root(root, what):
        remove_stale_temp_dirs(root)
        try:
            temp_dir = make_owned_temp_dir(root, f"{TEMP_PREFIX}{int(name)}-{os.getpid()}-")
            for relative in checkpoint.manifest["files"]:
                source = os.path.join(checkpoint_dir, *relative.split("/"))
                target = os.path.join(temp_dir, *relative.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                try:
                    os.link(source, target)
                except OSError:
                    shutil.copyfile(source, target)
            writer(temp_dir)
            names = files_under(temp_dir, skip=(OWNER_MARKER, MANIFEST_NAME))
            manifest = dict(checkpoint.manifest, version=CHECKPOINT_VERSION,
                            files=describe_files(temp_dir, names))
            _write_json(os.path.join(temp_dir, MANIFEST_NAME), seal(manifest))
            seal_owned(temp_dir)
            _fsync_dir(temp_dir)
            _install(temp_dir, checkpoint_dir, root, int(name))
        except OSError as error:
            _discard(temp_dir)
            raise CheckpointError(f"cannot add to checkpoint '{checkpoint_dir}': "
                                  f"{describe_os_error(error)}; it is kept as it was") from None
        except BaseException:
            _discard(temp_dir)
            raise
    return checkpoint_dir


# ----------------------------------------------------------------------------- reading

def read_manifest(checkpoint_dir):
    """The parsed manifest of `checkpoint_dir`, checked: format, version, its own checksum
    (version 2), and the shape of its sections and file entries (nothing listed is opened).
    CheckpointError naming the checkpoint and what is wrong."""
    try:
        manifest = read_manifest_json(os.path.join(checkpoint_dir, MANIFEST_NAME), MANIFEST_NAME)
        if manifest.get("format") != CHECKPOINT_FORMAT:
            raise ManifestError(f"{MANIFEST_NAME} is not a {CHECKPOINT_FORMAT} manifest")
        version = manifest.get("version")
        if version not in (CHECKPOINT_VERSION, UNSEALED_VERSION) or isinstance(version, bool):
            raise ManifestError(f"manifest version {shorten(version, 40)} is not one this slim "
                                f"reads ({UNSEALED_VERSION}, {CHECKPOINT_VERSION})")
        if version == CHECKPOINT_VERSION:
            check_seal(manifest, MANIFEST_NAME)
        for key in ("state", "variables", "files"):
            if not isinstance(manifest.get(key), dict):
                raise ManifestError(f"{MANIFEST_NAME} lacks '{key}'")
        check_file_entries(manifest["files"])
        _check_variable_records(manifest["variables"])
    except ManifestError as error:
        raise CheckpointError(f"checkpoint '{checkpoint_dir}' is damaged: {error}") from None
    return manifest


def _check_variable_records(variables):
    for name, record in variables.items():
        shape = record.get("shape") if isinstance(record, dict) else None
        if not isinstance(shape, list) or not all(_is_count(dim) for dim in shape) or \
                not isinstance(record.get("dtype"), str):
            raise ManifestError(f"its variable '{shorten(name, 80)}' is not "
                                "{\"shape\": [sizes], \"dtype\": name}")


def _is_count(value):
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _state_of(manifest):
    """The CheckpointState of a manifest, every field checked, every pruning plan parsed;
    ManifestError naming the first bad one."""
    data = manifest["state"]
    fields = {field.name for field in dataclasses.fields(CheckpointState)}
    unknown = sorted(set(data) - fields)
    if unknown:
        raise ManifestError(f"its state has unknown fields {shorten(unknown, 80)}")
    checks = {"epoch": _is_count, "iteration": _is_count,
              "best_metric": lambda v: v is None or _is_number(v),
              "best_epoch": lambda v: v is None or _is_count(v),
              "pruning_plans": lambda v: isinstance(v, list),
              "extra": lambda v: isinstance(v, dict)}
    for name, is_valid in checks.items():
        if name in ("epoch", "iteration") and name not in data:
            raise ManifestError(f"its state lacks '{name}'")
        if name in data and not is_valid(data[name]):
            raise ManifestError(f"its state has a bad '{name}' ({shorten(data[name], 60)})")
    for index, record in enumerate(data.get("pruning_plans", [])):
        if not isinstance(record, dict) or not isinstance(record.get("strategy"), str):
            raise ManifestError(f"pruning plan {index} is not {{\"strategy\": name, \"plan\": ...}}")
        try:
            PrunePlan.from_dict(record.get("plan"))
        except PruneError as error:
            reason = str(error).removeprefix("pruning plan: ")
            raise ManifestError(f"pruning plan {index} ({shorten(record['strategy'], 60)}) is "
                                f"malformed: {reason}") from None
    return CheckpointState(**data)


def validate_checkpoint(checkpoint_dir, verify_hashes=True):
    """A complete Checkpoint at `checkpoint_dir`, or CheckpointError saying why not:
    missing, unparsable, edited or malformed manifest, a file entry that is not a plain
    name inside the checkpoint, a missing file, a file of the wrong size or (with
    verify_hashes) the wrong sha256, a variable without its file, or a malformed state or
    pruning plan."""
    manifest = read_manifest(checkpoint_dir)
    try:
        for relative, record in manifest["files"].items():
            check_listed_file(checkpoint_dir, relative, record, verify_hash=verify_hashes)
        if manifest["variables"] and PERSISTABLES_FILE not in manifest["files"]:
            raise ManifestError(f"the manifest lists no {PERSISTABLES_FILE} file")
        state = _state_of(manifest)
    except ManifestError as error:
        raise CheckpointError(f"checkpoint '{checkpoint_dir}' is damaged: {error}") from None
    return Checkpoint(checkpoint_dir, state, manifest,
                      sealed=manifest["version"] == CHECKPOINT_VERSION)


def checkpoint_epochs(checkpoint_root):
    """Epoch numbers of the dirs named like an epoch in `checkpoint_root`, highest first."""
    if not os.path.isdir(checkpoint_root):
        return []
    epochs = [int(name) for name in os.listdir(checkpoint_root)
              if EPOCH_NAME.fullmatch(name) and name == str(int(name))
              and os.path.isdir(os.path.join(checkpoint_root, name))]
    return sorted(epochs, reverse=True)


def complete_checkpoints(checkpoint_root, log=None):
    """Every complete Checkpoint under `checkpoint_root`, highest epoch first (a generator:
    each is validated when it is reached).

    Temp dirs, dirs the tool did not write, dirs without a manifest, edited or unparsable
    manifests and missing or damaged files are skipped; each skipped epoch dir is reported
    through `log` (default: a warning line on stderr), and so is a version-1 manifest.
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    for epoch in checkpoint_epochs(checkpoint_root):
        path = os.path.join(checkpoint_root, str(epoch))
        if not is_checkpoint_dir(path):
            log(f"warning: skipping '{path}': not a checkpoint written by this tool")
            continue
        try:
            checkpoint = validate_checkpoint(path)
        except CheckpointError as error:
            log(f"warning: skipping {error}")
            continue
        if checkpoint.state.epoch != epoch:
            log(f"warning: skipping checkpoint '{path}': its manifest says epoch "
                f"{checkpoint.state.epoch}")
            continue
        if not checkpoint.sealed:
            log(f"warning: checkpoint '{path}' has a version-{UNSEALED_VERSION} manifest without "
                "a checksum (written by an older slim): its files are verified, its manifest "
                "cannot be")
        yield checkpoint


def latest_complete_checkpoint(checkpoint_root, log=None):
    """The highest-epoch complete Checkpoint under `checkpoint_root`, or None (see
    `complete_checkpoints` for what is skipped)."""
    return next(complete_checkpoints(checkpoint_root, log), None)


def read_checkpoint_tensors(checkpoint):
    """{name: ndarray} of every variable in `checkpoint` (bit-exact), each checked against
    the shape its manifest records; CheckpointError naming the checkpoint otherwise."""
    from slim.io.weights import WeightsError, read_weights
    variables = checkpoint.manifest["variables"]
    if not variables:
        return {}
    try:
        tensors = read_weights(os.path.join(checkpoint.path, PERSISTABLES_FILE),
                               names=sorted(variables))
    except WeightsError as error:
        raise CheckpointError(f"checkpoint '{checkpoint.path}' is damaged: {error}") from None
    for name, tensor in tensors.items():
        if list(tensor.shape) != variables[name]["shape"]:
            raise CheckpointError(f"checkpoint '{checkpoint.path}' is damaged: {name} is "
                                  f"{list(tensor.shape)} in {PERSISTABLES_FILE}, the manifest "
                                  f"says {variables[name]['shape']}")
    return tensors


def load_checkpoint_persistables(checkpoint, program, scope, executor, only_parameters=False):
    """Load every persistable of `program` (or, with only_parameters, its Parameters:
    weights and BN statistics, no optimizer state) from `checkpoint` into `scope`.

    Shapes are checked first: a CheckpointError names the variables whose shapes differ
    (pruning plans not replayed, or the model section of the config changed). Variables
    the program has but the checkpoint lacks keep their current values and are returned.
    """
    tensors = read_checkpoint_tensors(checkpoint)
    wanted = persistable_vars(program)
    if only_parameters:
        parameter_names = {param.name for param in program.global_block().all_parameters()}
        wanted = [var for var in wanted if var.name in parameter_names]
    missing, mismatched = [], []
    for var in wanted:
        if var.name not in tensors:
            missing.append(var.name)
            continue
        program_shape = [int(d) for d in var.shape]
        saved_shape = list(tensors[var.name].shape)
        if program_shape != saved_shape:
            mismatched.append(f"{var.name} {saved_shape} in checkpoint vs {program_shape} in program")
    if mismatched:
        raise CheckpointError(f"checkpoint '{checkpoint.path}' does not fit the model: "
                              f"{'; '.join(mismatched[:5])}"
                              f"{' ...' if len(mismatched) > 5 else ''} (was the config's model "
                              "section changed since it was written?)")
    place = executor.place
    for var in wanted:
        if var.name in tensors:
            scope.var(var.name).get_tensor().set(tensors[var.name], place)
    return missing
