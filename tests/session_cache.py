"""Expensive test set-ups built once per pytest session and shared by several modules."""
import json
import os


def cached_in_session(tmp_path_factory, name, build):
    """`build(root)` -> a JSON-able dict, called once per session with the empty dir
    `root` = <session temp dir>/`name`; later calls read the dict back from root/done.json
    (written only after `build` returned, so a failed build is retried)."""
    root = str(tmp_path_factory.getbasetemp() / name)
    done_marker = os.path.join(root, "done.json")
    if os.path.isfile(done_marker):
        with open(done_marker) as handle:
            return json.load(handle)
    os.makedirs(root, exist_ok=True)
    result = build(root)
    with open(done_marker, "w") as handle:
        json.dump(result, handle)
    return result
