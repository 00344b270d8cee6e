"""Output places: checked before work, and only the tool's own things replaced."""
import hashlib
import json
import os

import pytest

from slim.errors import shorten
from slim.io import output_places as places


def test_check_output_dir_creates_and_probes(tmp_path):
    target = tmp_path / "a" / "b"
    assert places.check_output_dir(str(target), "--out") == str(target)
    assert target.is_dir() and os.listdir(target) == []  # the probe is gone


def test_check_output_dir_refuses_a_file(tmp_path):
    existing = tmp_path / "file.txt"
    existing.write_text("user data")
    with pytest.raises(places.OutputPlaceError, match="exists and is not a directory"):
        places.check_output_dir(str(existing), "--out")
    assert existing.read_text() == "user data"


def test_check_output_dir_refuses_an_input(tmp_path):
    with pytest.raises(places.OutputPlaceError, match="also an input"):
        places.check_output_dir(str(tmp_path), "--output_dir", inputs=[str(tmp_path) + "/."])


def test_check_output_dir_unwritable_removes_what_it_made(tmp_path):
    with pytest.raises(places.OutputPlaceError, match="cannot be written"):
        places.check_output_dir("/proc/slim-test/x", "--output_eval")
    assert not os.path.exists("/proc/slim-test")


def test_replace_dir_refuses_a_user_dir(tmp_path):
    user_dir = tmp_path / "data"
    user_dir.mkdir()
    (user_dir / "keep.txt").write_text("mine")
    temp = places.make_owned_temp_dir(str(tmp_path), ".tmp-")
    with pytest.raises(places.OutputPlaceError, match="did not write"):
        places.replace_dir(temp, str(user_dir), "--out")
    assert (user_dir / "keep.txt").read_text() == "mine"
    assert not os.path.exists(temp)


def test_replace_dir_replaces_its_own(tmp_path):
    first = places.make_owned_temp_dir(str(tmp_path), ".tmp-")
    (tmp_path / first / "v").write_text("1")
    places.replace_dir(first, str(tmp_path / "out"), "--out")
    second = places.make_owned_temp_dir(str(tmp_path), ".tmp-")
    (tmp_path / second / "v").write_text("2")
    places.replace_dir(second, str(tmp_path / "out"), "--out")
    assert (tmp_path / "out" / "v").read_text() == "2"
    assert sorted(os.listdir(tmp_path)) == ["out"]


def _sealed_dir(tmp_path, name="out"):
    """A finished owned dir `tmp_path/name` holding v and sub/w, put there by replace_dir."""
    temp = places.make_owned_temp_dir(str(tmp_path), ".tmp-")
    os.makedirs(os.path.join(temp, "sub"))
    (tmp_path / temp / "v").write_text("1")
    (tmp_path / temp / "sub" / "w").write_text("2")
    places.replace_dir(temp, str(tmp_path / name), "--out")
    return tmp_path / name


@pytest.mark.parametrize("planted", ["notes.txt", "sub/notes.txt", "sub/more/deep.txt"])
def test_a_users_file_inside_the_tools_dir_stops_replace_and_remove(tmp_path, planted):
    """The tool's dir lists what it wrote (its sealed marker): a file put into it since, at
    any depth, makes replacing or deleting the dir an error naming the file; nothing lost."""
    out = _sealed_dir(tmp_path)
    assert places.foreign_entries(str(out)) == []
    (out / planted).parent.mkdir(parents=True, exist_ok=True)
    (out / planted).write_text("mine")
    assert places.remove_owned_dir(str(out)) is False
    for check in (lambda: places.check_replaceable_dir(str(out), "--out"),
                  lambda: places.replace_dir(places.make_owned_temp_dir(str(tmp_path), ".tmp-"),
                                             str(out), "--out")):
        with pytest.raises(places.OutputPlaceError, match=f"now also holds '{planted.split('/more')[0]}"):
            check()
    assert (out / planted).read_text() == "mine" and (out / "v").read_text() == "1"
    assert sorted(os.listdir(tmp_path)) == ["out"]


@pytest.mark.parametrize("where", [".", "sub", "sub/new/deeper", "link"])
def test_no_output_place_inside_a_finished_tool_dir(tmp_path, where):
    """infer --output_dir or --output_eval inside a checkpoint, dataset or weights dir the tool
    finished: refused before work (its files would block replacing that dir), also through a
    symlink; nothing created. A dir still being filled (unsealed marker) may hold outputs."""
    out = _sealed_dir(tmp_path)
    os.symlink(out / "sub", tmp_path / "link")
    target = tmp_path / "link" if where == "link" else out / where
    before = sorted(os.listdir(out / "sub"))
    with pytest.raises(places.OutputPlaceError, match=f"is inside '{out}', a directory this tool wrote"):
        places.check_output_dir(str(target), "--output_dir")
    assert sorted(os.listdir(out / "sub")) == before and places.foreign_entries(str(out)) == []
    filling = tmp_path / "filling"
    filling.mkdir()
    places.mark_owned(str(filling))
    assert places.check_output_dir(str(filling / "eval"), "--output_eval") == str(filling / "eval")


def test_an_unsealed_marker_is_still_the_tools(tmp_path):
    """A dir marked before markers listed entries (or still being written) is replaced as before."""
    old = tmp_path / "old"
    old.mkdir()
    places.mark_owned(str(old))
    (old / "v").write_text("0")
    assert places.foreign_entries(str(old)) == [] and places.remove_owned_dir(str(old))


def test_remove_owned_dir_leaves_others(tmp_path):
    (tmp_path / "user").mkdir()
    assert places.remove_owned_dir(str(tmp_path / "user")) is False
    assert (tmp_path / "user").is_dir()


def test_written_files_replace_only_their_own(tmp_path):
    (tmp_path / "photo.jpg").write_bytes(b"user")
    written = places.WrittenFiles(str(tmp_path))
    with pytest.raises(places.OutputPlaceError, match="not written by this tool"):
        written.check(["photo.jpg"], "--output_dir")
    written.write_bytes("drawn.jpg", b"ours")
    again = places.WrittenFiles(str(tmp_path))
    again.check(["drawn.jpg"], "--output_dir")  # ours: may be replaced
    again.write_bytes("drawn.jpg", b"ours 2")
    assert (tmp_path / "drawn.jpg").read_bytes() == b"ours 2"
    assert (tmp_path / "photo.jpg").read_bytes() == b"user"
    listed = json.loads((tmp_path / places.WRITTEN_LIST).read_text())["files"]
    assert listed == {"drawn.jpg": {"size": 6, "sha256": hashlib.sha256(b"ours 2").hexdigest()}}


def test_written_files_ignore_escaping_names(tmp_path):
    record = {"size": 1, "sha256": hashlib.sha256(b"x").hexdigest()}
    (tmp_path / places.WRITTEN_LIST).write_text(json.dumps(
        {"files": {"../x": record, "/etc/passwd": record, "ok": record}}))
    assert set(places.WrittenFiles(str(tmp_path)).files) == {"ok"}


@pytest.mark.parametrize("planted", [["eval_result.json"],  # the older list of bare names
                                     {"eval_result.json": {"size": 4, "sha256": "0" * 64}},
                                     {"eval_result.json": None}])
def test_a_planted_written_list_does_not_make_a_users_file_the_tools(tmp_path, planted):
    """Only a listed file whose size and sha256 are what the tool wrote is the tool's."""
    (tmp_path / "eval_result.json").write_text("mine")
    (tmp_path / places.WRITTEN_LIST).write_text(json.dumps({"files": planted}))
    written = places.WrittenFiles(str(tmp_path))
    with pytest.raises(places.OutputPlaceError, match="'.*eval_result.json' exists and was not written"):
        written.write_json("eval_result.json", {})
    assert (tmp_path / "eval_result.json").read_text() == "mine"


def test_a_written_file_changed_or_swapped_for_a_symlink_is_no_longer_the_tools(tmp_path):
    written = places.WrittenFiles(str(tmp_path))
    written.write_bytes("detections.json", b"[]")
    written.write_bytes("a.jpg", b"drawn")
    (tmp_path / "detections.json").write_bytes(b"[] my notes")
    (tmp_path / "mine.jpg").write_bytes(b"drawn")
    os.remove(tmp_path / "a.jpg")
    os.symlink(tmp_path / "mine.jpg", tmp_path / "a.jpg")  # same bytes, but a link to the user's
    again = places.WrittenFiles(str(tmp_path))
    for name in ("detections.json", "a.jpg"):
        with pytest.raises(places.OutputPlaceError, match="or was changed since"):
            again.check([name], "--output_dir")


def test_written_files_get_the_usual_permissions(tmp_path):
    mask = os.umask(0o022)
    try:
        path = places.WrittenFiles(str(tmp_path)).write_bytes("out.json", b"{}")
    finally:
        os.umask(mask)
    assert oct(os.stat(path).st_mode & 0o777) == oct(0o644)
    assert oct(os.stat(tmp_path / places.WRITTEN_LIST).st_mode & 0o777) == oct(0o644)


@pytest.mark.parametrize("name, plain", [("a.jpg", True), ("eval_model/__params__", True),
                                         ("../secret.env", False), ("/etc/passwd", False),
                                         ("a/../../b", False), ("", False), ("a//b", False)])
def test_is_plain_relative_path(name, plain):
    assert places.is_plain_relative_path(name) is plain


def test_shorten_cuts_and_escapes():
    assert shorten("a\x00b\nc") == "a\\x00b\\nc"
    long_text = shorten("x" * 5000)
    assert len(long_text) < 260 and long_text.startswith("x" * 200)


def test_a_file_inside_a_finished_tool_dir_is_refused_with_file_advice(tmp_path):
    """#20 cause 9: `slim export --out CKPT/3/eval_model/x.onnx` (a file inside a checkpoint)
    was told to choose 'a directory' where --out must be a .onnx file: the message names the
    file and asks for a file path outside; for a directory option it still says directory."""
    from slim.io.output_places import (
        OutputPlaceError,
        check_output_dir,
        check_output_file,
        make_owned_temp_dir,
        seal_owned,
    )
    finished = make_owned_temp_dir(str(tmp_path), "ckpt-")
    os.makedirs(os.path.join(finished, "eval_model"))
    seal_owned(finished)
    target = os.path.join(finished, "eval_model", "x.onnx")
    with pytest.raises(OutputPlaceError) as raised:
        check_output_file(target, "--out")
    message = str(raised.value)
    assert message.startswith(f"--out '{target}' is inside '{finished}'")
    assert message.endswith("choose a file path outside it") and "a directory outside" not in message
    assert not os.path.exists(target)
    with pytest.raises(OutputPlaceError, match="choose a directory outside it$"):
        check_output_dir(os.path.join(finished, "eval_model"), "--output_dir")
