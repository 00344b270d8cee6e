"""Directories a workflow makes whole: marked as the tool's, emptied at the start of a run
(only when everything in them is the tool's)."""
import os

from slim.io.output_places import is_owned_dir, mark_owned, remove_owned_dir


def is_ours(path):
    """True for a directory the tool made: marked with OWNER_MARKER, or holding nothing but
    directories so marked (a checkpoint root that compress.py made, run by hand)."""
    if is_owned_dir(path):
        return True
    if os.path.islink(path) or not os.path.isdir(path):
        return False
    entries = os.listdir(path)
    return bool(entries) and all(is_owned_dir(os.path.join(path, entry)) for entry in entries)


def fresh_owned_dir(path):
    """`path` as a new, empty directory marked as the demo's (its previous contents, which
    `check_demo_places` proved the tool's own, removed)."""
    if not remove_owned_dir(path) and is_ours(path):
        for entry in os.listdir(path):
            remove_owned_dir(os.path.join(path, entry))
    os.makedirs(path, exist_ok=True)
    mark_owned(path)
    return path
