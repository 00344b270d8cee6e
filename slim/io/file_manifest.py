"""File manifests that cover themselves: what a checkpoint (`manifest.json`) and an exported
model (`model_manifest.json`) use to prove that what is loaded is what was written.

A manifest is a JSON object with a `files` map (relative name -> size and sha256) and a
`checksum`: the sha256 of the manifest's canonical JSON without that field. An edited or
damaged manifest no longer matches its checksum; a damaged file no longer matches its
entry. File entries must be plain relative names inside the manifest's directory: any
other entry (`../secret.env`, an absolute path, a symlink that leads out) makes the
manifest invalid before the file is opened, and no message echoes anything (size,
content) of a file outside.
"""
import hashlib
import json
import os
import re
import stat

from slim.errors import UserError, shorten
from slim.io.output_places import is_plain_relative_path

CHECKSUM_KEY = "checksum"
MAX_MANIFEST_BYTES = 64 << 20  # far above any real manifest; a bigger file is not one
_SHA256_PATTERN = re.compile(r"[0-9a-f]{64}")


class ManifestError(UserError):
    """A manifest or a file it lists is missing, malformed, edited or damaged."""


def file_sha256(path):
    """Hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_checksum(manifest):
    """sha256 of `manifest`'s canonical JSON (sorted keys, no spaces) without CHECKSUM_KEY."""
    body = {key: value for key, value in manifest.items() if key != CHECKSUM_KEY}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def seal(manifest):
    """`manifest` with its checksum field set (a new dict)."""
    sealed = {key: value for key, value in manifest.items() if key != CHECKSUM_KEY}
    sealed[CHECKSUM_KEY] = manifest_checksum(sealed)
    return sealed


def check_seal(manifest, name):
    """ManifestError unless `manifest` carries the checksum of its own content. `name` is
    how the manifest is named in the message."""
    recorded = manifest.get(CHECKSUM_KEY)
    if not isinstance(recorded, str):
        raise ManifestError(f"{name} has no '{CHECKSUM_KEY}' field")
    if recorded != manifest_checksum(manifest):
        raise ManifestError(f"{name} does not match its own checksum (it was edited or damaged "
                            "after it was written)")


def read_manifest_json(path, name):
    """The JSON object in the manifest file `path`; ManifestError (naming it as `name`) when
    it is missing, not a regular file, too big to be a manifest, or not a JSON object."""
    if _regular_file_size(path, name, missing=f"no {name}") > MAX_MANIFEST_BYTES:
        raise ManifestError(f"{name} is too big to be a manifest")
    try:
        with open(path, encoding="utf-8") as handle:
            manifest = json.load(handle)
    except (OSError, ValueError, RecursionError) as error:
        raise ManifestError(f"{name} does not parse ({shorten(str(error), 120)})") from None
    if not isinstance(manifest, dict):
        raise ManifestError(f"{name} is not a JSON object")
    return manifest


def describe_files(directory, names):
    """{name: {"size", "sha256"}} of the files `names` (relative, '/'-separated) in `directory`."""
    records = {}
    for name in names:
        path = os.path.join(directory, *name.split("/"))
        records[name] = {"size": os.path.getsize(path), "sha256": file_sha256(path)}
    return records


def files_under(directory, skip=()):
    """Relative '/'-separated names of every regular file under `directory`, sorted; top-level
    names in `skip` are left out."""
    names = []
    for dirpath, _, filenames in os.walk(directory):
        for filename in filenames:
            relative = os.path.relpath(os.path.join(dirpath, filename), directory)
            relative = relative.replace(os.sep, "/")
            if relative not in skip:
                names.append(relative)
    return sorted(names)


def check_file_entries(files):
    """ManifestError unless `files` maps plain relative names to {"size": int >= 0,
    "sha256": 64 hex digits}. Nothing is opened."""
    if not isinstance(files, dict):
        raise ManifestError("its 'files' is not a mapping")
    for name, record in files.items():
        if not is_plain_relative_path(name) or any(not char.isprintable() for char in name):
            raise ManifestError(f"it lists '{shorten(name, 80)}', which is not a plain relative "
                                "name inside its directory")
        size = record.get("size") if isinstance(record, dict) else None
        digest = record.get("sha256") if isinstance(record, dict) else None
        if isinstance(size, bool) or not isinstance(size, int) or size < 0 or \
                not isinstance(digest, str) or not _SHA256_PATTERN.fullmatch(digest):
            raise ManifestError(f"its entry for '{shorten(name, 80)}' is not "
                                "{\"size\": bytes, \"sha256\": hex digest}")


def check_listed_file(directory, name, record, verify_hash=True):
    """ManifestError unless the file `name` of a checked entry is a regular file inside
    `directory` with the recorded size (and, with verify_hash, sha256)."""
    path = os.path.join(directory, *name.split("/"))
    inside = os.path.realpath(directory)
    if os.path.commonpath([inside, os.path.realpath(path)]) != inside:
        raise ManifestError(f"{name} leads outside the directory (a symlink)")
    size = _regular_file_size(path, name, missing=f"{name} is missing")
    if size != record["size"]:
        raise ManifestError(f"{name} has {size} bytes, the manifest says {record['size']}")
    if verify_hash and file_sha256(path) != record["sha256"]:
        raise ManifestError(f"{name} does not match its sha256")


def _regular_file_size(path, name, missing):
    """The size of the regular file `path` (not followed if a symlink); ManifestError with
    the message `missing` when it is absent, or naming it as `name` when it is not a
    regular file."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        raise ManifestError(missing) from None
    if not stat.S_ISREG(info.st_mode):
        raise ManifestError(f"{name} is not a regular file")
    return info.st_size
