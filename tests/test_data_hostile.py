"""Hostile dataset input: corrupt JPEG data, non-UTF-8 lines, files outside dataset_dir.

Every bad sample is skipped with one warning line naming it and counted in the summary line;
a config key naming a file outside dataset_dir is a one-line DataError naming the key; no line
of a file outside dataset_dir ever reaches the output.
"""
import json
import logging
import os

import cv2
import numpy as np
import pytest
from test_data_sources import make_coco, make_voc, voc_xml, warning_lines, write_jpeg

from slim.data import VOCDataSet, YoloEvalFeed, YoloTestFeed, YoloTrainFeed
from slim.data import records as records_lib
from slim.data.loader import build_eval_loader, build_test_loader, build_train_loader, dataset_size
from slim.errors import DataError, exit_on_user_error

CAT = voc_xml([("cat", (1, 1, 20, 20), 0)])
SECRET = "SECRET-LINE-do-not-echo"


def textured_jpeg_bytes(seed=0, height=120, width=160):
    """A real JPEG from cv2.imencode whose entropy-coded data is a few kilobytes long."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 256, (height, width, 3)).astype(np.uint8), (5, 5), 1.5)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return encoded.tobytes()


def corrupt_middle(jpeg, garbage_bytes=512, seed=1):
    """`jpeg` with garbage over the middle of its entropy-coded data; header and EOI intact."""
    start_of_scan = jpeg.index(b"\xff\xda")
    data_start = start_of_scan + 2 + int.from_bytes(jpeg[start_of_scan + 2:start_of_scan + 4], "big")
    data_end = len(jpeg) - 2
    assert jpeg[data_end:] == b"\xff\xd9" and data_end - data_start > 4 * garbage_bytes
    middle = (data_start + data_end) // 2 - garbage_bytes // 2
    garbage = np.random.default_rng(seed).integers(0, 256, garbage_bytes).astype(np.uint8).tobytes()
    return jpeg[:middle] + garbage + jpeg[middle + garbage_bytes:]


@pytest.fixture(scope="module")
def corrupt_jpeg():
    return corrupt_middle(textured_jpeg_bytes())


def write_bytes(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as handle:
        handle.write(data)


def voc_with_corrupt_image(root, corrupt_jpeg, list_name="train.txt"):
    """A VOC dataset of good images a, b, d and c.jpg whose compressed data is garbage in the middle."""
    make_voc(root, [(stem, CAT, "good") for stem in "abcd"], list_name=list_name)
    write_bytes(os.path.join(root, "JPEGImages", "c.jpg"), corrupt_jpeg)
    return root


def assert_one_skip_line_and_counted(caplog, name, expected, skipped=1):
    warnings = warning_lines(caplog)
    skips = [w for w in warnings if w.startswith("skipped sample")]
    assert len(skips) == skipped and name in skips[0] and expected in skips[0], warnings
    summaries = [w for w in warnings if w.startswith("dataset ")]
    assert len(summaries) == 1 and f"skipped {skipped} images" in summaries[0], warnings


def assert_no_raw_decoder_line(stderr):
    """libjpeg's own line never reaches stderr: only our warning quotes it."""
    for line in stderr.splitlines():
        if "Corrupt JPEG data" in line:
            assert "skipped sample" in line, line


# ---------------------------------------------------------------- 8: corrupt JPEG data

def test_the_corrupt_test_image_fools_the_header_check_and_opencv_but_not_the_detector(tmp_path,
                                                                                      corrupt_jpeg):
    path = str(tmp_path / "c.jpg")
    write_bytes(path, corrupt_jpeg)
    assert records_lib.image_size(path) == (120, 160)  # header and end marker intact
    assert cv2.imdecode(np.frombuffer(corrupt_jpeg, np.uint8), cv2.IMREAD_COLOR).shape == (120, 160, 3)
    problem = records_lib.decode_problem(path)
    assert problem and problem.startswith("corrupt JPEG data (libjpeg: Corrupt JPEG data"), problem
    assert records_lib.checked_image_size(path) == (None, problem)
    assert records_lib.read_image_rgb(path) is None


def test_valid_jpeg_and_png_pass_the_check_untouched(tmp_path, capfd):
    jpeg, png = str(tmp_path / "a.jpg"), str(tmp_path / "b.png")
    write_bytes(jpeg, textured_jpeg_bytes())
    image = cv2.imdecode(np.frombuffer(textured_jpeg_bytes(), np.uint8), cv2.IMREAD_COLOR)
    assert cv2.imwrite(png, image)
    assert records_lib.checked_image_size(jpeg) == ((120, 160), None)
    assert records_lib.checked_image_size(png) == ((120, 160), None)
    np.testing.assert_array_equal(records_lib.read_image_rgb(png), cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    np.testing.assert_array_equal(records_lib.read_image_rgb(jpeg), cv2.cvtColor(image, cv2.COLOR_BGR2RGB))
    assert capfd.readouterr().err == ""


def test_other_output_during_a_decode_is_passed_on(tmp_path, capfd, monkeypatch, corrupt_jpeg):
    """What another thread or library writes to stderr while fd 2 is captured is not lost."""
    real_cv2 = records_lib._cv2()

    class TalkativeCv2:
        def __getattr__(self, name):
            return getattr(real_cv2, name)

        @staticmethod
        def imdecode(data, flags):
            os.write(2, b"other output line\n")
            return real_cv2.imdecode(data, flags)

    monkeypatch.setattr(records_lib, "_cv2", TalkativeCv2)
    good, bad = str(tmp_path / "good.jpg"), str(tmp_path / "bad.jpg")
    write_bytes(good, textured_jpeg_bytes())
    write_bytes(bad, corrupt_jpeg)
    assert records_lib.decode_problem(good) is None
    assert records_lib.decode_problem(bad).startswith("corrupt JPEG data")
    err = capfd.readouterr().err
    assert err.splitlines() == ["other output line", "other output line"]


def test_corrupt_png_is_refused_with_libpng_message_in_our_line_only(tmp_path, capfd):
    image = cv2.imdecode(np.frombuffer(textured_jpeg_bytes(), np.uint8), cv2.IMREAD_COLOR)
    png = bytearray(cv2.imencode(".png", image)[1].tobytes())
    middle = len(png) // 2
    png[middle:middle + 64] = bytes(64)
    path = str(tmp_path / "bad.png")
    write_bytes(path, bytes(png))
    assert records_lib.image_size(path) == (120, 160)
    size, problem = records_lib.checked_image_size(path)
    assert size is None and problem.startswith("cannot be decoded (libpng error: "), problem
    assert "libpng" not in capfd.readouterr().err


def test_concurrent_checks_in_threads_judge_each_image_right_and_restore_stderr(tmp_path, corrupt_jpeg):
    """fd 2 is one per process: overlapping captures would mix up messages and leave stderr
    pointing at a deleted capture file."""
    import concurrent.futures
    good, bad = str(tmp_path / "good.jpg"), str(tmp_path / "bad.jpg")
    write_bytes(good, textured_jpeg_bytes())
    write_bytes(bad, corrupt_jpeg)
    stderr_before = os.fstat(2)
    paths = [good, bad] * 150
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        problems = list(pool.map(records_lib.decode_problem, paths))
    assert [problem is None for problem in problems] == [path == good for path in paths]
    stderr_after = os.fstat(2)
    assert (stderr_after.st_dev, stderr_after.st_ino) == (stderr_before.st_dev, stderr_before.st_ino)


def test_corrupt_jpeg_is_skipped_and_counted_in_the_training_loader(tmp_path, caplog, capfd, corrupt_jpeg):
    root = voc_with_corrupt_image(tmp_path, corrupt_jpeg)
    feed = YoloTrainFeed(dataset={"dataset_dir": str(root), "annotation": "train.txt",
                                  "use_default_label": False},
                         batch_size=3, num_workers=0, multi_scale_sizes=[64], mixup_epoch=0)
    with caplog.at_level(logging.INFO, logger="slim.data"):
        loader = build_train_loader(feed)
    assert loader.num_samples == 3
    assert sorted(os.path.basename(r["im_file"]) for r in loader.records) == ["a.jpg", "b.jpg", "d.jpg"]
    assert_one_skip_line_and_counted(caplog, "c.jpg", "corrupt JPEG data (libjpeg: Corrupt JPEG data")
    assert_no_raw_decoder_line(capfd.readouterr().err)


def test_corrupt_jpeg_is_skipped_and_counted_in_eval_loading(tmp_path, caplog, capfd, corrupt_jpeg):
    root = voc_with_corrupt_image(tmp_path, corrupt_jpeg, list_name="test.txt")
    feed = YoloEvalFeed(dataset=voc_options(root, annotation="test.txt"), image_shape=[3, 64, 64],
                        batch_size=4, num_workers=0)
    with caplog.at_level(logging.INFO, logger="slim.data"):
        loader = build_eval_loader(feed)
    # Left out of the records, so the metric never counts its ground truth as missed.
    assert [os.path.basename(r["im_file"]) for r in loader.records] == ["a.jpg", "b.jpg", "d.jpg"]
    assert [list(batch["im_id"]) for batch in loader] == [[0, 1, 3]]
    assert_one_skip_line_and_counted(caplog, "c.jpg", "corrupt JPEG data")
    assert_no_raw_decoder_line(capfd.readouterr().err)


def test_corrupt_jpeg_is_skipped_and_counted_in_infer_loading(tmp_path, caplog, capfd, corrupt_jpeg):
    good, bad = str(tmp_path / "good.jpg"), str(tmp_path / "bad.jpg")
    write_bytes(good, textured_jpeg_bytes())
    write_bytes(bad, corrupt_jpeg)
    make_voc(tmp_path / "voc", [("a", CAT, "good")])
    feed = YoloTestFeed(dataset={"dataset_dir": str(tmp_path / "voc"), "use_default_label": False},
                        image_shape=[3, 64, 64])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        loader = build_test_loader(feed, [bad, good])
    assert [batch["im_file"] for batch in loader] == [[good]]
    assert_one_skip_line_and_counted(caplog, "bad.jpg", "corrupt JPEG data")
    with pytest.raises(DataError, match=r"no usable images in --infer_img/--infer_dir \(1 listed, 1 skipped"):
        build_test_loader(feed, [bad])
    assert_no_raw_decoder_line(capfd.readouterr().err)


def png_claiming_size(width, height):
    """A structurally valid PNG (IHDR, one IDAT, IEND) whose header claims width x height."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
            + chunk(b"IEND", b""))


def test_decompression_bomb_header_is_skipped_without_decoding(tmp_path, caplog):
    """A PNG header claiming 100000 x 100000 pixels: skipped naming its size, and a direct
    decode (which OpenCV refuses with an exception) is 'cannot be decoded', not a crash."""
    good, bomb = str(tmp_path / "good.jpg"), str(tmp_path / "bomb.png")
    write_bytes(good, textured_jpeg_bytes())
    write_bytes(bomb, png_claiming_size(100000, 100000))
    make_voc(tmp_path / "voc", [("a", CAT, "good")])
    feed = YoloTestFeed(dataset={"dataset_dir": str(tmp_path / "voc"), "use_default_label": False},
                        image_shape=[3, 64, 64])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        loader = build_test_loader(feed, [bomb, good])
    assert [batch["im_file"] for batch in loader] == [[good]]
    assert_one_skip_line_and_counted(caplog, "bomb.png", "100000x100000 pixels is larger than the limit")
    assert records_lib.read_image_rgb(bomb) is None
    assert records_lib.decode_problem(bomb).startswith("cannot be decoded (OpenCV")


@pytest.mark.parametrize("height, width", [(1, 1), (3, 200), (200, 7)])
def test_images_smaller_than_8_pixels_a_side_are_used(tmp_path, height, width):
    """The 1/8-scale check decode cannot shrink them: they are decoded whole instead."""
    for extension in (".png", ".jpg"):
        path = str(tmp_path / f"tiny{extension}")
        assert cv2.imwrite(path, np.full((height, width, 3), 200, np.uint8))
        assert records_lib.checked_image_size(path) == ((height, width), None)


@pytest.mark.parametrize("use_process", [True, False], ids=["worker processes", "threads"])
def test_image_corrupted_after_loading_is_caught_when_decoded_by_a_worker(tmp_path, capfd, corrupt_jpeg,
                                                                        use_process):
    """The decode-time check works in DataLoader worker processes and threads: the image is
    replaced by the next one and libjpeg's line does not leak."""
    make_voc(tmp_path, [(stem, CAT, "good") for stem in "abcd"])
    feed = YoloTrainFeed(dataset={"dataset_dir": str(tmp_path), "annotation": "train.txt",
                                  "use_default_label": False},
                         batch_size=4, num_workers=1, use_process=use_process, shuffle=False,
                         multi_scale_sizes=[64], mixup_epoch=0)
    loader = build_train_loader(feed)
    write_bytes(str(tmp_path / "JPEGImages" / "b.jpg"), corrupt_jpeg)  # after the load-time check
    batch = next(iter(loader.batches(0, 1)))
    assert list(batch["im_id"]) == [0, 2, 2, 3]
    assert "Corrupt JPEG data" not in capfd.readouterr().err


# ---------------------------------------------------------------- 13: encodings

def test_non_utf8_line_in_a_list_file_is_skipped_with_file_and_line(tmp_path, caplog):
    make_voc(tmp_path, [("a", CAT, "good"), ("b", CAT, "good")])
    with open(tmp_path / "train.txt", "ab") as handle:
        handle.write(b"JPEGImages/caf\xe9.jpg Annotations/caf\xe9.xml\n")
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt",
                             use_default_label=False).load_records(for_training=True)
    assert len(records) == 2
    assert_one_skip_line_and_counted(caplog, f"{tmp_path}/train.txt:3",
                                     "not UTF-8 text (byte 0xe9 at column 15)")
    assert warning_lines(caplog)[-1].endswith("2 usable images of 3; skipped 1 images, dropped 0 objects, "
                                              "clipped 0 boxes")


def test_non_utf8_label_list_line_is_an_error_naming_file_and_line(tmp_path):
    """Skipping a class would silently renumber every class after it: an error, not a skip."""
    make_voc(tmp_path, [("a", CAT, "good")])
    (tmp_path / "label_list.txt").write_bytes(b"cat\ncaf\xe9\ndog\n")
    dataset = VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt", use_default_label=False)
    with pytest.raises(DataError) as error:
        dataset.label_names()
    message = str(error.value)
    assert f"label list {tmp_path}/label_list.txt line 2: not UTF-8 text (byte 0xe9 at column 4)" in message
    assert "renumbered" in message and "\n" not in message


def test_utf8_bom_and_crlf_in_list_and_label_files_are_read(tmp_path):
    make_voc(tmp_path, [("a", CAT, "good"), ("b", CAT, "good")])
    for name in ("train.txt", "label_list.txt"):
        text = (tmp_path / name).read_text()
        (tmp_path / name).write_bytes(b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode())
    dataset = VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt", use_default_label=False)
    assert dataset.label_names() == ["cat", "dog", "bird"]
    assert len(dataset.load_records(for_training=True)) == 2


def test_binary_list_file_is_one_data_error(tmp_path):
    make_voc(tmp_path, [("a", CAT, "good")])
    (tmp_path / "train.txt").write_bytes("JPEGImages/a.jpg Annotations/a.xml\n".encode("utf-16"))
    with pytest.raises(DataError, match=r"list file .*train.txt is not a UTF-8 text file \(it holds NUL"):
        VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt",
                   use_default_label=False).load_records(for_training=True)


def billion_laughs(levels=8):
    """An XML document whose entities expand to 10**levels characters."""
    names = "abcdefghij"[:levels]
    entities = ['<!ENTITY a "aaaaaaaaaa">'] + [f'<!ENTITY {name} "{("&" + previous + ";") * 10}">'
                                               for previous, name in zip(names, names[1:])]
    document = f'<!DOCTYPE a [{"".join(entities)}]><annotation>&{names[-1]};</annotation>'
    return b'<?xml version="1.0"?>' + document.encode()


@pytest.mark.parametrize("case, xml", [
    ("latin-1 byte, no declaration", b"<annotation><object><name>caf\xe9</name></object></annotation>"),
    ("unknown encoding", b'<?xml version="1.0" encoding="bogus"?><annotation/>'),
    ("multi-byte encoding", b'<?xml version="1.0" encoding="utf-7"?><annotation/>'),
    ("wrong declared encoding", b'<?xml version="1.0" encoding="utf-16"?><annotation/>'),
    ("entity expansion", billion_laughs()),
    ("external entity", b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
                        b'<annotation>&x;</annotation>'),
    ("empty", b""),
])
def test_xml_with_a_bad_encoding_or_malformed_is_skipped(tmp_path, caplog, case, xml):
    make_voc(tmp_path, [("a", CAT, "good"), ("x", "<annotation/>", "good")])
    (tmp_path / "Annotations" / "x.xml").write_bytes(xml)
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt",
                             use_default_label=False).load_records(for_training=False)
    assert [os.path.basename(r["im_file"]) for r in records] == ["a.jpg"], case
    assert_one_skip_line_and_counted(caplog, "x.xml", "malformed XML")


def test_infinite_difficult_value_does_not_crash(tmp_path):
    xml = CAT.replace("<difficult>0</difficult>", "<difficult>inf</difficult>")
    make_voc(tmp_path, [("a", xml, "good")])
    record = VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt",
                        use_default_label=False).load_records(for_training=True)[0]
    np.testing.assert_array_equal(record["difficult"], [0])


@pytest.mark.parametrize("box", [(1, 1, "1e309", 20), ("-inf", 1, 20, 20), (1, 1, 20, "nan"),
                                 (1, 1, "1e39", 20)])
def test_box_coordinates_beyond_float32_are_dropped_with_one_warning(tmp_path, caplog, capfd, box):
    """No numpy overflow warning (a multi-line Python warning on stderr): one line naming the object."""
    make_voc(tmp_path, [("a", voc_xml([("cat", box, 0), ("cat", (2, 2, 30, 30), 0)]), "good")])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        record = VOCDataSet(dataset_dir=str(tmp_path), annotation="train.txt",
                            use_default_label=False).load_records(for_training=True)[0]
    np.testing.assert_array_equal(record["gt_bbox"], [[2, 2, 30, 30]])
    dropped = [w for w in warning_lines(caplog) if "object 0" in w]
    assert len(dropped) == 1 and "is not a finite pixel coordinate; object dropped" in dropped[0]
    assert "RuntimeWarning" not in capfd.readouterr().err


# ---------------------------------------------------------------- 14: files outside dataset_dir

@pytest.fixture
def secret_file(tmp_path):
    """A file outside the dataset whose lines must never be echoed."""
    path = tmp_path / "outside" / "secrets.txt"
    path.parent.mkdir()
    path.write_text("".join(f"{SECRET} {i} word\n" for i in range(5)))
    return path


def voc_options(root, **options):
    return dict({"dataset_dir": str(root), "annotation": "train.txt", "use_default_label": False}, **options)


@pytest.mark.parametrize("key, value", [
    ("annotation", "ABSOLUTE"),
    ("annotation", "../outside/secrets.txt"),
    ("label_list", "ABSOLUTE"),
    ("label_list", "../outside/secrets.txt"),
    ("image_dir", "../outside"),
])
def test_config_path_outside_dataset_dir_is_refused_naming_the_key(tmp_path, secret_file, capsys, key, value):
    root = make_voc(tmp_path / "voc", [("a", CAT, "good")])
    value = str(secret_file) if value == "ABSOLUTE" else value
    feed = YoloTrainFeed(dataset=voc_options(root, **{key: value}))
    with pytest.raises(SystemExit) as exit_info:
        exit_on_user_error(lambda: dataset_size(feed))()
    assert exit_info.value.code == 2
    stderr = capsys.readouterr().err
    error_lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert error_lines == [f"error: {key} '{value}' is outside dataset_dir '{root}' (absolute paths, '..' "
                           f"and symlinks out of it are refused); name a file inside the dataset directory"]
    assert "Traceback" not in stderr and SECRET not in stderr


@pytest.mark.parametrize("key", ["annotation", "label_list"])
def test_symlink_escape_is_refused(tmp_path, secret_file, key):
    root = make_voc(tmp_path / "voc", [("a", CAT, "good")])
    os.symlink(secret_file, root / "innocent.txt")
    feed = YoloTrainFeed(dataset=voc_options(root, **{key: "innocent.txt"}))
    with pytest.raises(DataError, match=f"^{key} 'innocent.txt' is outside dataset_dir"):
        dataset_size(feed)


def test_symlink_inside_dataset_dir_and_a_linked_dataset_dir_are_fine(tmp_path):
    real = make_voc(tmp_path / "real", [("a", CAT, "good")])
    os.symlink("train.txt", real / "alias.txt")
    os.symlink(real, tmp_path / "linked")
    feed = YoloTrainFeed(dataset=voc_options(tmp_path / "linked", annotation="alias.txt"))
    assert dataset_size(feed) == 1


def test_list_line_naming_a_path_outside_is_skipped_with_a_warning(tmp_path, secret_file, caplog):
    root = make_voc(tmp_path / "voc", [("a", CAT, "good")])
    os.symlink(secret_file, root / "Annotations" / "link.xml")
    write_jpeg(str(tmp_path / "outside" / "x.jpg"))
    with open(root / "train.txt", "a") as handle:
        handle.write(f"JPEGImages/a.jpg {secret_file}\n"
                     f"JPEGImages/a.jpg ../outside/secrets.txt\n"
                     f"JPEGImages/a.jpg Annotations/link.xml\n"
                     f"../outside/x.jpg Annotations/a.xml\n")
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = VOCDataSet(**voc_options(root)).load_records(for_training=True)
    assert len(records) == 1
    skips = [w for w in warning_lines(caplog) if w.startswith("skipped sample")]
    assert [w.split(": ")[0] for w in skips] == [f"skipped sample {root}/train.txt:{n}" for n in (2, 3, 4, 5)]
    assert all("is outside dataset_dir" in w for w in skips), skips
    assert "image path '../outside/x.jpg'" in skips[3]
    assert warning_lines(caplog)[-1].startswith(f"dataset {root}/train.txt: 1 usable images of 5; skipped 4")


def test_no_line_of_an_outside_file_appears_in_any_output(tmp_path, secret_file, capfd, caplog):
    root = make_voc(tmp_path / "voc", [("a", CAT, "good")])
    os.symlink(secret_file, root / "link.txt")
    os.symlink(secret_file, root / "link.json")
    attempts = [dict(annotation=str(secret_file)), dict(annotation="../outside/secrets.txt"),
                dict(annotation="link.txt"), dict(label_list=str(secret_file)), dict(label_list="link.txt"),
                dict(annotation="link.json"), dict(annotation="../outside/secrets.txt/../secrets.json")]
    with caplog.at_level(logging.DEBUG):
        for options in attempts:
            with pytest.raises(DataError) as error:
                dataset_size(YoloTrainFeed(dataset=voc_options(root, **options)))
            assert SECRET not in str(error.value)
        with open(root / "train.txt", "a") as handle:
            handle.write(f"{secret_file} {secret_file}\nJPEGImages/a.jpg ../outside/secrets.txt\n")
        dataset_size(YoloTrainFeed(dataset=voc_options(root)))
    captured = capfd.readouterr()
    assert SECRET not in captured.out + captured.err
    assert not [r for r in caplog.records if SECRET in r.getMessage()]


def test_long_list_line_is_echoed_only_as_a_short_excerpt(tmp_path, caplog):
    make_voc(tmp_path, [("a", CAT, "good")])
    with open(tmp_path / "train.txt", "a") as handle:
        handle.write("x" * 70 + "MIDDLE" + "y" * 500 + "\n")
    with caplog.at_level(logging.INFO, logger="slim.data"):
        VOCDataSet(**voc_options(tmp_path)).load_records(for_training=True)
    skip = [w for w in warning_lines(caplog) if w.startswith("skipped sample")]
    assert len(skip) == 1 and "got '" + "x" * 60 + "... (" in skip[0], skip
    assert "MIDDLE" not in skip[0] and "yyy" not in skip[0]


# ---------------------------------------------------------------- COCO

def test_coco_annotation_outside_dataset_dir_is_refused(tmp_path, secret_file):
    make_coco(tmp_path / "coco")
    (secret_file.parent / "instances.json").write_text(json.dumps({"images": [], "categories": []}))
    os.symlink(secret_file.parent / "instances.json", tmp_path / "coco" / "link.json")
    for value in (str(secret_file.parent / "instances.json"), "../outside/instances.json", "link.json"):
        feed = YoloEvalFeed(dataset={"dataset_dir": str(tmp_path / "coco"), "annotation": value,
                                     "image_dir": "images"})
        with pytest.raises(DataError, match=f"^annotation '{value}' is outside dataset_dir"):
            build_eval_loader(feed)


def test_coco_file_name_outside_dataset_dir_is_skipped(tmp_path, secret_file, caplog):
    write_jpeg(str(secret_file.parent / "x.jpg"))
    dataset = make_coco(tmp_path / "coco", images_extra=[
        {"id": 40, "file_name": "../../outside/x.jpg", "width": 64, "height": 48},
        {"id": 50, "file_name": ["not", "a", "name"], "width": 64, "height": 48}])
    with caplog.at_level(logging.INFO, logger="slim.data"):
        records = dataset.load_records(for_training=False)
    assert [int(r["im_id"]) for r in records] == [10, 20, 30]
    skips = [w for w in warning_lines(caplog) if w.startswith("skipped sample")]
    assert len(skips) == 2
    assert "image 40: file_name '../../outside/x.jpg' is outside dataset_dir" in skips[0]
    assert "image 50: file_name" in skips[1] and "is not a file name" in skips[1]


@pytest.mark.parametrize("content, message", [
    (b'{"images": [], "categories": [{"id": 1, "name": "caf\xe9"}]}', "malformed JSON in .*: 'utf-8' codec"),
    (b'{"images": [', "malformed JSON in .*: Expecting value"),
    (b"[" * 100000 + b"]" * 100000, "malformed JSON in .*"),
    (b'{"images": [], "categories": [{"id": 1}]}', r"categories\[0\] must be an object with id \(int\), "
                                                   r"name \(str\); got \{'id': 1\}"),
    (b'{"images": [{"file_name": "a.jpg"}], "categories": []}', r"images\[0\] must be an object with id"),
    (b'{"images": [{"id": [1]}], "categories": []}', r"images\[0\] must be an object with id"),
    (b'{"images": [], "categories": [], "annotations": [3]}', r"annotations\[0\] must be an object"),
    (b'{"images": [], "categories": [], "annotations": {}}', "not a COCO instances file"),
    (b'{"images": [], "categories": [{"id": 1, "name": "a"}, {"id": 1, "name": "b"}]}',
     "categories repeat the id 1"),
])
def test_coco_non_utf8_or_malformed_json_is_one_data_error(tmp_path, content, message):
    os.makedirs(tmp_path / "annotations")
    (tmp_path / "annotations" / "bad.json").write_bytes(content)
    feed = YoloEvalFeed(dataset={"dataset_dir": str(tmp_path), "annotation": "annotations/bad.json",
                                 "image_dir": ""})
    with pytest.raises(DataError, match=message) as error:
        build_eval_loader(feed)
    assert "\n" not in str(error.value) and len(str(error.value)) < 400
