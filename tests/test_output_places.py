"""Output places: checked before work, and only the tool's own things replaced."""
import json
import os

import pytest

from slim import output_places as places
from slim.errors import shorten


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
    assert listed == ["drawn.jpg"]


def test_written_files_ignore_escaping_names(tmp_path):
    (tmp_path / places.WRITTEN_LIST).write_text(json.dumps({"files": ["../x", "/etc/passwd", "ok"]}))
    assert places.WrittenFiles(str(tmp_path)).names == {"ok"}


@pytest.mark.parametrize("name, plain", [("a.jpg", True), ("eval_model/__params__", True),
                                         ("../secret.env", False), ("/etc/passwd", False),
                                         ("a/../../b", False), ("", False), ("a//b", False)])
def test_is_plain_relative_path(name, plain):
    assert places.is_plain_relative_path(name) is plain


def test_shorten_cuts_and_escapes():
    assert shorten("a\x00b\nc") == "a\\x00b\\nc"
    long_text = shorten("x" * 5000)
    assert len(long_text) < 260 and long_text.startswith("x" * 200)
