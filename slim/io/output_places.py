"""Where the tool writes: every output place checked before work starts, and only what the
tool wrote itself ever replaced or deleted.

Two kinds of output place:

- a directory the tool makes **as a whole** (a checkpoint epoch dir, a demo dataset, a
  weights dir, a temp dir): it carries the file OWNER_MARKER from the moment it is made,
  and only a directory with that marker is ever replaced or removed;
- a directory the tool **shares** with the user (infer.py's `--output_dir`, `--output_eval`):
  the files written there are listed in its WRITTEN_LIST, and only those are replaced
  on a later run; any other file in the way is an error naming it.

`check_output_dir` is what every command calls for each of its output places before
it does any work: the place is created if needed, proven writable with a probe file,
and refused when it is one of the run's inputs.
"""
import hashlib
import json
import os
import shutil
import tempfile

from slim.errors import UserError, describe_os_error, shorten

OWNER_MARKER = ".slim-owned"
WRITTEN_LIST = ".slim-written.json"


class OutputPlaceError(UserError):
    """An output place cannot be used: not writable, an input, or holding something the
    tool did not write."""


def _same_place(first, second):
    """True when the two paths name the same existing file or directory."""
    try:
        return os.path.samefile(first, second)
    except (OSError, ValueError):  # ValueError: a NUL byte in a path
        return os.path.abspath(first) == os.path.abspath(second)


def input_paths(inputs):
    """The paths of `inputs` as strings, leaving out the unset ones (None or empty: an
    option not given), so every check of an output place against the run's inputs takes
    whatever a command collects."""
    return [str(source) for source in inputs if source is not None and str(source).strip()]


def _missing_ancestors(path):
    """The directories `os.makedirs(path)` would create, deepest first."""
    missing = []
    while path and not os.path.lexists(path):
        missing.append(path)
        parent = os.path.dirname(path)
        if parent == path:
            break
        path = parent
    return missing


def check_output_dir(path, what, inputs=(), for_file=None):
    """Make sure the directory `path` (the option `what`, e.g. '--output_dir') can take the
    tool's output before any work starts: create it if needed and write a probe file.

    OutputPlaceError (one line, exit 2) when `path` is empty, exists as a file, is the
    same as one of `inputs` (paths the run reads), or cannot be created or written. On
    failure the directories this call created are removed again. Returns the absolute path.
    `for_file`: the file (as the user named it) that `path` is the directory of; messages
    then name it and advise another place for the file, not a directory.
    """
    if path is None or str(path).strip() == "":
        raise OutputPlaceError(f"{what} is empty; name a directory to write to")
    absolute = os.path.abspath(str(path))
    for source in input_paths(inputs):
        if os.path.exists(source) and _same_place(absolute, source):
            raise OutputPlaceError(f"{what} '{shorten(path)}' is also an input of this run "
                                   f"('{shorten(source)}'); choose another directory for the output")
    if os.path.lexists(absolute) and not os.path.isdir(absolute):
        raise OutputPlaceError(f"{what} '{shorten(path)}' exists and is not a directory; "
                               "name a directory (it is created if missing)")
    finished = _finished_owned_dir_holding(absolute)
    if finished is not None:
        shown, place = (for_file, "a file path outside it") if for_file else (path, "a directory "
                                                                                "outside it")
        raise OutputPlaceError(f"{what} '{shorten(shown)}' is inside '{shorten(finished)}', a "
                               "directory this tool wrote as a whole (a checkpoint, dataset or "
                               "weights dir): files put there would be lost or block its "
                               f"replacement; choose {place}")
    _create_and_probe(absolute, path, what)
    return absolute


def _finished_owned_dir_holding(path):
    """The nearest existing directory at or above `path` that the tool finished as a whole
    (a sealed OWNER_MARKER, see `seal_owned`), or None. Real paths, so a symlink into such
    a directory counts."""
    current = os.path.realpath(path)
    while True:
        if is_owned_dir(current) and _sealed_entries(current) is not None:
            return current
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _create_and_probe(directory, path, what):
    """Create `directory` if needed and write a probe file into it; OutputPlaceError naming
    `path` (the user's spelling) otherwise, after removing the directories this call made."""
    created = _missing_ancestors(directory)
    try:
        os.makedirs(directory, exist_ok=True)
        handle, probe = tempfile.mkstemp(prefix=".slim-probe-", dir=directory)
        os.close(handle)
        os.remove(probe)
    except OSError as error:
        for made in created:  # deepest first; only the empty dirs this call made
            try:
                os.rmdir(made)
            except OSError:
                break
        raise OutputPlaceError(f"{what} '{shorten(path)}' cannot be written "
                               f"({describe_os_error(error)}); choose a directory you can "
                               "write to") from None


def check_replaceable_dir(path, what, inputs=(), is_ours=None):
    """The check before a job that makes the directory `path` as a whole (built in a temp
    dir beside it, then swapped in with `replace_dir`): `path` must be absent, an empty
    directory or the tool's own (`is_ours(path)`, default `is_owned_dir`), must neither be
    nor contain one of `inputs`, and its parent must be creatable and writable.

    OutputPlaceError (one line) otherwise; nothing is created but the missing parents.
    Returns the absolute path.
    """
    if path is None or str(path).strip() == "":
        raise OutputPlaceError(f"{what} is empty; name a directory to write to")
    absolute = os.path.abspath(str(path))
    for source in input_paths(inputs):
        if os.path.exists(source) and (_same_place(absolute, source) or _is_inside(source, absolute)):
            raise OutputPlaceError(f"{what} '{shorten(path)}' is or holds an input of this run "
                                   f"('{shorten(source)}'); choose another directory for the output")
    if (is_ours or is_owned_dir)(absolute):
        require_no_foreign_entries(absolute, what)
    else:
        require_replaceable(absolute, what)
    _create_and_probe(os.path.dirname(absolute), path, what)
    return absolute


def _is_inside(path, directory):
    """True when `path` lies somewhere under `directory` (real paths compared)."""
    real_path, real_dir = os.path.realpath(path), os.path.realpath(directory)
    return real_path.startswith(real_dir.rstrip(os.sep) + os.sep)


# ----------------------------------------------------------------------------- whole directories

def is_owned_dir(path):
    """True when `path` is a directory the tool made (it holds OWNER_MARKER)."""
    return os.path.isdir(path) and not os.path.islink(path) \
        and os.path.isfile(os.path.join(path, OWNER_MARKER))


def mark_owned(path):
    """Put OWNER_MARKER into the directory `path`, which the tool has just made."""
    with open(os.path.join(path, OWNER_MARKER), "w", encoding="utf-8") as handle:
        handle.write("written by slim; slim may replace or delete this directory\n")


def _entries_under(path):
    """Every file, directory and symlink under `path` (symlinks not followed) as a
    '/'-separated path relative to `path`, OWNER_MARKER left out."""
    entries = set()
    for dirpath, dirnames, filenames in os.walk(path):
        relative = os.path.relpath(dirpath, path)
        for name in dirnames + filenames:
            entry = name if relative == "." else os.path.join(relative, name)
            entries.add(entry.replace(os.sep, "/"))
    entries.discard(OWNER_MARKER)
    return entries


def seal_owned(path):
    """Rewrite OWNER_MARKER of the finished directory `path` to list everything in it, so a
    later replace or delete can tell the tool's entries from what someone put in since."""
    listing = {"written_by": "slim", "entries": sorted(_entries_under(path))}
    write_atomically(os.path.join(path, OWNER_MARKER), json.dumps(listing, indent=0).encode("utf-8"))


def foreign_entries(path):
    """The entries of the owned directory `path` that its sealed OWNER_MARKER does not list
    (sorted): files someone put into the tool's directory. Empty for an unsealed marker (a
    directory still being written, or one written before markers listed their entries)."""
    listed = _sealed_entries(path)
    if listed is None:
        return []
    return sorted(_entries_under(path) - listed)


def _sealed_entries(path):
    """The entries the sealed OWNER_MARKER of `path` lists (a set), or None when the marker
    is missing, unreadable or unsealed."""
    try:
        with open(os.path.join(path, OWNER_MARKER), encoding="utf-8") as handle:
            listed = json.load(handle).get("entries")
    except (OSError, ValueError, AttributeError):
        return None
    if not isinstance(listed, list):
        return None
    return {entry for entry in listed if isinstance(entry, str)}


def require_no_foreign_entries(path, what):
    """OutputPlaceError naming the first entry of the tool's directory `path` that the tool
    did not write: replacing or deleting `path` would lose it."""
    foreign = foreign_entries(path) if is_owned_dir(path) else []
    if foreign:
        raise OutputPlaceError(f"{what} '{shorten(path)}' was written by this tool but now also "
                               f"holds '{shorten(foreign[0])}', which it did not write "
                               f"({len(foreign)} such entries); it is left untouched: move them "
                               f"out or choose another {what}")


def make_owned_temp_dir(parent, prefix):
    """A new, uniquely named directory under `parent`, marked as the tool's from the start."""
    path = tempfile.mkdtemp(prefix=prefix, dir=parent)
    # mkdtemp makes it private (0700); it becomes the final output, which gets the
    # permissions any directory the user makes would get.
    os.chmod(path, 0o777 & ~_current_umask())
    mark_owned(path)
    return path


def _current_umask():
    """The process's umask (read by setting it and setting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def remove_owned_dir(path):
    """Delete `path` if the tool made it (OWNER_MARKER) and it holds nothing else (see
    `foreign_entries`); return whether it did. Anything else is left alone."""
    if not is_owned_dir(path) or foreign_entries(path):
        return False
    shutil.rmtree(path, ignore_errors=True)
    return not os.path.exists(path)


def require_replaceable(path, what):
    """OutputPlaceError unless `path` is absent, an empty directory, or a directory the tool
    made that holds nothing else: the check before a job that will end by replacing `path`."""
    if not os.path.lexists(path):
        return
    if os.path.isdir(path) and not os.path.islink(path) and not os.listdir(path):
        return
    if is_owned_dir(path):
        require_no_foreign_entries(path, what)
        return
    kind = "directory" if os.path.isdir(path) else "file"
    raise OutputPlaceError(f"{what} '{shorten(path)}' is an existing {kind} that this tool did "
                           f"not write (no {OWNER_MARKER}); it is left untouched: choose another "
                           f"{what} or move it away")


def replace_dir(temp_dir, final_dir, what):
    """Move the finished, owned `temp_dir` (sealed here: its marker lists its entries) to
    `final_dir`, replacing a previous `final_dir` only if it is empty or the tool's own with
    nothing else in it; OutputPlaceError otherwise (temp_dir removed)."""
    try:
        require_replaceable(final_dir, what)
    except OutputPlaceError:
        remove_owned_dir(temp_dir)
        raise
    seal_owned(temp_dir)
    previous = None
    if os.path.lexists(final_dir):
        if os.listdir(final_dir):
            previous = tempfile.mkdtemp(prefix=os.path.basename(final_dir) + ".old-",
                                        dir=os.path.dirname(os.path.abspath(final_dir)))
            os.rmdir(previous)
            os.rename(final_dir, previous)
        else:
            os.rmdir(final_dir)
    os.rename(temp_dir, final_dir)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


# ----------------------------------------------------------------------------- shared directories

class WrittenFiles:
    """The files the tool wrote into one directory it shares with the user, listed in
    `directory/WRITTEN_LIST` with the size and sha256 each had when written. Only a listed
    file that still has that content (not a symlink) may be replaced by a later run: a list
    planted or edited by hand cannot make a user's file the tool's, and a file the user
    changed since is theirs.

    Usage: `written = WrittenFiles(dir)`, `written.check(names, what)` before any work,
    then `written.write_bytes(name, data)` / `written.write_json(name, value)` /
    `written.record(name)` after writing a file some other way (e.g. cv2.imwrite).
    """

    def __init__(self, directory, what=None):
        self.directory = directory
        self.what = what  # how errors name the place (the option), default the directory
        self.files = {}
        path = os.path.join(directory, WRITTEN_LIST)
        try:
            with open(path, encoding="utf-8") as handle:
                listed = json.load(handle).get("files", {})
        except (OSError, ValueError, AttributeError):
            listed = {}  # unreadable list: nothing counts as ours, so nothing is replaced
        if isinstance(listed, dict):  # a list of bare names (older versions) proves nothing
            self.files = {name: record for name, record in listed.items()
                          if is_plain_relative_path(name) and isinstance(record, dict)}

    def path(self, name):
        """Where `name` goes in the directory."""
        return os.path.join(self.directory, name)

    def is_ours(self, name):
        """True when `name` is listed and the file there still has the listed size and sha256."""
        record, target = self.files.get(name), self.path(name)
        if record is None or os.path.islink(target) or not os.path.isfile(target):
            return False
        return record == _file_record(target)

    def check(self, names, what, inputs=()):
        """OutputPlaceError naming the first of `names` that exists and was not written by
        the tool (or was changed since), or that is one of `inputs`."""
        inputs = input_paths(inputs)
        for name in names:
            target = self.path(name)
            for source in inputs:
                if os.path.exists(target) and _same_place(target, source):
                    raise OutputPlaceError(f"{what}: writing '{shorten(target)}' would replace the "
                                           f"input '{shorten(source)}'; choose another {what}")
            if os.path.lexists(target) and not self.is_ours(name):
                raise OutputPlaceError(f"{what}: '{shorten(target)}' exists and was not written by "
                                       f"this tool (or was changed since); it is left untouched: "
                                       f"move it or choose another {what}")

    def record(self, name):
        """Note that the tool has written `name`, with its size and sha256 now (the list is
        saved at once)."""
        self.files[name] = _file_record(self.path(name))
        write_atomically(self.path(WRITTEN_LIST),
                         json.dumps({"files": self.files}, indent=1, sort_keys=True).encode("utf-8"))

    def write_bytes(self, name, data):
        """Write `data` to `name` atomically and record it; return the path."""
        self.check([name], self.what or self.directory)
        path = self.path(name)
        write_atomically(path, data)
        self.record(name)
        return path

    def write_json(self, name, value):
        """Write `value` as indented JSON to `name` atomically and record it; return the path."""
        return self.write_bytes(name, json.dumps(value, indent=1).encode("utf-8"))


def check_output_file(path, what, inputs=()):
    """The check before work for one file the tool will write at `path` (e.g. `--graph
    FILE.dot`) in a directory it shares with the user: the directory is created if needed
    and writable, and `path` is no directory, none of `inputs`, and absent or a file the
    tool wrote there before (WRITTEN_LIST). Returns (the WrittenFiles of its directory,
    its file name) to write it with."""
    if path is None or str(path).strip() == "":
        raise OutputPlaceError(f"{what} is empty; name the file to write")
    target = os.path.abspath(str(path))
    if os.path.isdir(target):
        raise OutputPlaceError(f"{what} '{shorten(path)}' is a directory; name a file to write")
    written = WrittenFiles(check_output_dir(os.path.dirname(target), what, inputs, for_file=path),
                           what)
    name = os.path.basename(target)
    written.check([name], what, inputs)
    return written, name


def _file_record(path):
    """{"size", "sha256"} of the file at `path` (None if it cannot be read)."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
            size = handle.tell()
    except OSError:
        return None
    return {"size": size, "sha256": digest.hexdigest()}


def is_plain_relative_path(name):
    """True for a plain file name or relative path inside a directory: no '..', no root."""
    parts = name.replace("\\", "/").split("/")
    return bool(name) and not os.path.isabs(name) and all(part not in ("", ".", "..")
                                                           for part in parts)


def write_atomically(path, data):
    """Write `data` to a temp file beside `path`, fsync, then rename over `path`."""
    directory = os.path.dirname(os.path.abspath(path))
    handle, temp_path = tempfile.mkstemp(prefix=".slim-tmp-", dir=directory)
    try:
        os.chmod(temp_path, 0o666 & ~_current_umask())  # mkstemp's 0600 would stay on the result
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temp_path, path)
    except BaseException:
        if os.path.exists(temp_path):
            os.remove(temp_path)
        raise


# ----------------------------------------------------------------------------- files updated in place

class FileLock:
    """An exclusive flock held on an open descriptor (the hidden lock file of one output
    file, see `lock_file`; or a directory, `path` None); `close()` releases it and removes
    the lock file, if any."""

    def __init__(self, descriptor, path=None):
        self._descriptor, self.path = descriptor, path

    def close(self):
        """Release the lock (the lock file goes first, while it is still held)."""
        if self._descriptor is not None:
            if self.path is not None:
                try:
                    os.remove(self.path)
                except OSError:
                    pass
            os.close(self._descriptor)
            self._descriptor = None

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        self.close()


def open_locked(path, flags, what, shown, error=None, holds=""):
    """A descriptor of `path` opened with `flags` and holding an exclusive flock: the one
    lock of the tool's in-place files and of checkpoint_path. A one-line `error` (default
    OutputPlaceError) naming `what` '`shown`' when it cannot be opened or another run holds
    it (`holds`: what that run holds, said in the message)."""
    import fcntl
    error = error or OutputPlaceError
    try:
        descriptor = os.open(path, flags, 0o666 & ~_current_umask())
    except OSError as failure:
        raise error(f"{what} '{shorten(shown)}' cannot be locked "
                    f"({describe_os_error(failure)})") from None
    try:
        fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(descriptor)
        held = f" (it holds '{shorten(holds)}')" if holds else ""
        raise error(f"{what} '{shorten(shown)}' is in use by another run{held}; wait for it "
                    f"to finish or choose another {what}") from None
    return descriptor


def lock_file(path, what):
    """Claim the file `path` that this run updates in place (e.g. a sensitivities file
    written after every entry), as checkpoint_path is claimed: an exclusive lock on
    `.NAME.lock` beside it, held until the returned FileLock is closed or the process ends.
    A second run on the same file gets a one-line OutputPlaceError at once, before it
    measures anything. A lock file left by a killed run is not locked and is taken over."""
    directory, name = os.path.split(os.path.abspath(str(path)))
    lock_path = os.path.join(directory, f".{name}.lock")
    while True:
        descriptor = open_locked(lock_path, os.O_RDWR | os.O_CREAT, what, path, holds=lock_path)
        try:  # the holder may have removed the file between our open and flock: lock anew
            if os.stat(lock_path).st_ino == os.fstat(descriptor).st_ino:
                return FileLock(descriptor, lock_path)
        except FileNotFoundError:
            pass
        os.close(descriptor)
