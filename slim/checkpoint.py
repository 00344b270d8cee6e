"""Atomic per-epoch checkpoints: `${checkpoint_path}/${epoch}/`, resumable after any crash.

Layout of one checkpoint (epoch 3):

    checkpoints/3/
        persistables               every persistable of the train program (params, BN
                                   statistics, optimizer accumulators, LR counters) in one
                                   file, Paddle's own combined tensor format (save_combine),
                                   in the name order the manifest lists
        pruning_plans.json         the pruning plans applied so far, in order (replayed on
                                   resume before the persistables are loaded, so shapes match)
        eval_model/...             whatever the caller's `extra_writer` puts there
        manifest.json              written LAST: format, epoch, iteration, best metric,
                                   every file with its size and sha256, every variable
                                   with its shape and dtype

Writing goes into a temp dir beside the final one (`.tmp-3-<pid>`), every file is
fsynced, the manifest is written last, the temp dir is renamed to `3` and the
parent dir fsynced. A crash at any moment leaves either the complete new
checkpoint or none (plus a temp dir, which is never read and is removed by the
next writer), so the previous epoch stays intact. `latest_complete_checkpoint`
picks the highest epoch whose manifest parses and whose files are all present
with the recorded sizes and hashes; anything else is skipped with a warning.

No pickle anywhere: tensors go through Paddle's `save`/`load` ops, the rest is JSON.
The config is not stored (as the seed says: edits to it apply on restart).
"""
import dataclasses
import hashlib
import json
import os
import shutil
import sys
import time

from slim.errors import UserError

CHECKPOINT_FORMAT = "slim-checkpoint"
CHECKPOINT_VERSION = 1
MANIFEST_NAME = "manifest.json"
PLANS_NAME = "pruning_plans.json"
PERSISTABLES_FILE = "persistables"
TEMP_PREFIX = ".tmp-"
OLD_PREFIX = ".old-"
# Test hook: "SECONDS" or "SECONDS@EPOCH": sleep after the tensors are written and before the
# manifest (of every checkpoint, or of that epoch's), so a test can kill the process in the
# middle of a checkpoint write.
PAUSE_ENV = "SLIM_CHECKPOINT_TEST_PAUSE"


class CheckpointError(UserError):
    """A checkpoint cannot be written or does not fit the program it is loaded into."""


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
    """A complete checkpoint on disk: its dir, its state and its manifest."""
    path: str
    state: CheckpointState
    manifest: dict


# ----------------------------------------------------------------------------- writing

def ensure_writable_dir(path, what="checkpoint_path"):
    """Create `path` if needed and prove it is writable; CheckpointError naming it otherwise."""
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f"{TEMP_PREFIX}probe-{os.getpid()}")
        with open(probe, "w") as handle:
            handle.write("ok")
        os.remove(probe)
    except OSError as error:
        raise CheckpointError(f"{what} '{path}' is not writable ({error.strerror or error}); "
                              "choose a directory you can write to") from None
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


def _save_combined(executor, scope, variables, path):
    """Write `variables` (sorted by name) from `scope` to one file with Paddle's save_combine op."""
    import paddle
    from paddle.base import core
    io_program = paddle.static.Program()
    block = io_program.global_block()
    clones = [block.create_var(name=var.name, shape=var.shape, dtype=var.dtype, type=var.type,
                               persistable=True) for var in variables]
    marker = block.create_var(name="saved_persistables", type=core.VarDesc.VarType.RAW,
                              persistable=True)
    block.append_op(type="save_combine", inputs={"X": clones}, outputs={"Y": marker},
                    attrs={"file_path": path})
    executor.run(io_program, scope=scope)


def _fsync_file(path):
    with open(path, "rb") as handle:
        os.fsync(handle.fileno())


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


def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _write_json(path, value):
    with open(path, "w") as handle:
        json.dump(value, handle, indent=1, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())


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


def remove_stale_temp_dirs(checkpoint_root):
    """Delete temp/old dirs that crashed writers left in `checkpoint_root` (never a
    checkpoint itself, never a dir of a writer that is still running)."""
    if not os.path.isdir(checkpoint_root):
        return []
    removed = []
    for name in os.listdir(checkpoint_root):
        if not (name.startswith(TEMP_PREFIX) or name.startswith(OLD_PREFIX)):
            continue
        pid_text = name.rsplit("-", 1)[-1]
        if pid_text.isdigit() and int(pid_text) != os.getpid() and _pid_alive(int(pid_text)):
            continue
        path = os.path.join(checkpoint_root, name)
        if os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
        else:
            try:
                os.remove(path)
            except OSError:
                pass
        removed.append(name)
    return removed


def save_checkpoint(checkpoint_root, state, program, scope, executor, extra_writer=None):
    """Write `state` and every persistable of `program` (read from `scope`) atomically to
    `checkpoint_root/<state.epoch>/`; return that path.

    `extra_writer(temp_dir)`, if given, adds files (e.g. `eval_model/`) inside the temp
    dir before the manifest is written, so they are part of the same atomic step.
    An existing checkpoint of the same epoch is replaced atomically too.
    """
    ensure_writable_dir(checkpoint_root)
    remove_stale_temp_dirs(checkpoint_root)
    final_dir = os.path.join(checkpoint_root, str(int(state.epoch)))
    temp_dir = os.path.join(checkpoint_root, f"{TEMP_PREFIX}{int(state.epoch)}-{os.getpid()}")
    shutil.rmtree(temp_dir, ignore_errors=True)
    os.makedirs(temp_dir)

    variables = [var for var in persistable_vars(program)
                 if _initialized_tensor(scope, var.name) is not None]
    _save_combined(executor, scope, variables, os.path.join(temp_dir, PERSISTABLES_FILE))
    var_records = {}
    for var in variables:
        tensor = _initialized_tensor(scope, var.name)
        var_records[var.name] = {"shape": list(tensor.shape()),
                                 "dtype": str(tensor._dtype()).replace("paddle.", "")}
    _write_json(os.path.join(temp_dir, PLANS_NAME), list(state.pruning_plans))
    if extra_writer is not None:
        extra_writer(temp_dir)

    files = {}
    for dirpath, _, filenames in os.walk(temp_dir):
        for filename in filenames:
            path = os.path.join(dirpath, filename)
            _fsync_file(path)
            relative = os.path.relpath(path, temp_dir).replace(os.sep, "/")
            files[relative] = {"size": os.path.getsize(path), "sha256": _sha256(path)}
    for dirpath, _, _ in os.walk(temp_dir):
        _fsync_dir(dirpath)

    pause = _test_pause_seconds(state.epoch)
    if pause > 0:
        print(f"checkpoint: pausing {pause:g}s before the manifest of epoch {state.epoch} "
              f"({PAUSE_ENV})", flush=True)
        time.sleep(pause)

    manifest = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "state": dataclasses.asdict(state),
        "variables": var_records,
        "files": files,
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    _write_json(os.path.join(temp_dir, MANIFEST_NAME), manifest)
    _fsync_dir(temp_dir)

    old_dir = None
    if os.path.exists(final_dir):
        old_dir = os.path.join(checkpoint_root, f"{OLD_PREFIX}{int(state.epoch)}-{os.getpid()}")
        shutil.rmtree(old_dir, ignore_errors=True)
        os.rename(final_dir, old_dir)
    os.rename(temp_dir, final_dir)
    _fsync_dir(checkpoint_root)
    if old_dir is not None:
        shutil.rmtree(old_dir, ignore_errors=True)
    return final_dir


# ----------------------------------------------------------------------------- reading

def read_manifest(checkpoint_dir):
    """The parsed manifest of `checkpoint_dir`; CheckpointError naming what is wrong."""
    path = os.path.join(checkpoint_dir, MANIFEST_NAME)
    if not os.path.isfile(path):
        raise CheckpointError(f"checkpoint '{checkpoint_dir}' is incomplete: no {MANIFEST_NAME}")
    try:
        with open(path) as handle:
            manifest = json.load(handle)
    except (OSError, ValueError) as error:
        raise CheckpointError(f"checkpoint '{checkpoint_dir}': {MANIFEST_NAME} does not parse "
                              f"({error})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"checkpoint '{checkpoint_dir}': {MANIFEST_NAME} is not a "
                              f"{CHECKPOINT_FORMAT} manifest")
    if manifest.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"checkpoint '{checkpoint_dir}': manifest version "
                              f"{manifest.get('version')!r}, this slim reads {CHECKPOINT_VERSION}")
    for key in ("state", "variables", "files"):
        if not isinstance(manifest.get(key), dict):
            raise CheckpointError(f"checkpoint '{checkpoint_dir}': manifest lacks '{key}'")
    return manifest


def validate_checkpoint(checkpoint_dir, verify_hashes=True):
    """A complete Checkpoint at `checkpoint_dir`, or CheckpointError saying why not:
    missing or unparsable manifest, a missing file, a file of the wrong size or
    (with verify_hashes) the wrong sha256, or a variable without its file."""
    manifest = read_manifest(checkpoint_dir)
    for relative, record in manifest["files"].items():
        path = os.path.join(checkpoint_dir, *relative.split("/"))
        if not os.path.isfile(path):
            raise CheckpointError(f"checkpoint '{checkpoint_dir}' is incomplete: {relative} is missing")
        if os.path.getsize(path) != record.get("size"):
            raise CheckpointError(f"checkpoint '{checkpoint_dir}' is corrupt: {relative} has "
                                  f"{os.path.getsize(path)} bytes, the manifest says {record.get('size')}")
        if verify_hashes and _sha256(path) != record.get("sha256"):
            raise CheckpointError(f"checkpoint '{checkpoint_dir}' is corrupt: {relative} does not "
                                  "match its sha256")
    if manifest["variables"] and PERSISTABLES_FILE not in manifest["files"]:
        raise CheckpointError(f"checkpoint '{checkpoint_dir}' is incomplete: the manifest lists "
                              f"no {PERSISTABLES_FILE} file")
    try:
        state = CheckpointState(**manifest["state"])
    except TypeError as error:
        raise CheckpointError(f"checkpoint '{checkpoint_dir}': bad state in manifest ({error})") from None
    return Checkpoint(checkpoint_dir, state, manifest)


def checkpoint_epochs(checkpoint_root):
    """Epoch numbers of the dirs named like an epoch in `checkpoint_root`, highest first."""
    if not os.path.isdir(checkpoint_root):
        return []
    epochs = [int(name) for name in os.listdir(checkpoint_root)
              if name.isdigit() and os.path.isdir(os.path.join(checkpoint_root, name))]
    return sorted(epochs, reverse=True)


def latest_complete_checkpoint(checkpoint_root, log=None):
    """The highest-epoch complete Checkpoint under `checkpoint_root`, or None.

    Temp dirs, dirs without a manifest, unparsable manifests and missing or damaged
    files are skipped; each skipped epoch dir is reported through `log` (default:
    a warning line on stderr).
    """
    log = log or (lambda message: print(message, file=sys.stderr))
    for epoch in checkpoint_epochs(checkpoint_root):
        path = os.path.join(checkpoint_root, str(epoch))
        try:
            checkpoint = validate_checkpoint(path)
        except CheckpointError as error:
            log(f"warning: skipping {error}")
            continue
        if checkpoint.state.epoch != epoch:
            log(f"warning: skipping checkpoint '{path}': its manifest says epoch "
                f"{checkpoint.state.epoch}")
            continue
        return checkpoint
    return None


def read_checkpoint_tensors(checkpoint):
    """{name: ndarray} of every variable in `checkpoint` (bit-exact)."""
    from slim.weights import read_weights
    return read_weights(os.path.join(checkpoint.path, PERSISTABLES_FILE),
                        names=sorted(checkpoint.manifest["variables"]))


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
