"""infer.py without -c (the model's own infer_cfg.yml), the README's "no config needed"
command, tried as a careless user would: twice into one --output_dir (the second run
died with a TypeError: the unset --infer_dir went into the output-place checks as None),
into the model dir, over an input image, with an image inside --output_dir, and with a
tampered infer_cfg.yml. Each run either works or is one `error:` line, exit 2, with the
model dir and the images unchanged."""
import os
import shutil

import pytest
from fitted_model import fitted_model
from test_output_safety import tree_digest

import infer as infer_cli
from slim.io.output_places import WRITTEN_LIST


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    return fitted_model(tmp_path_factory)


def _run(capsys, argv):
    """(exit code, the one error line or None) of infer.py ARGV in-process."""
    try:
        infer_cli.main(argv)
        code = 0
    except SystemExit as stop:
        code = stop.code
    stderr = capsys.readouterr().err
    assert "Traceback" not in stderr, stderr[-3000:]
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == (1 if code else 0), stderr[-2000:]
    return code, errors[0] if errors else None


def test_infer_without_config_twice_into_one_output_dir(fitted, tmp_path, capsys):
    model = tmp_path / "model"
    shutil.copytree(fitted["model_dir"], model)
    image = os.path.join(fitted["images"], sorted(os.listdir(fitted["images"]))[0])
    out = tmp_path / "out"
    argv = ["--model_path", str(model), "--infer_img", image, "--output_dir", str(out)]
    assert _run(capsys, argv) == (0, None)
    first = sorted(os.listdir(out))
    assert first == sorted([WRITTEN_LIST, "detections.json", os.path.basename(image)])
    assert _run(capsys, argv) == (0, None)  # the second run: a TypeError before the fix
    assert sorted(os.listdir(out)) == first


HOSTILE = {
    # case: (argv with {model} {image} {images} {out} placeholders, words of the error line)
    "output_dir is the model dir": (["--infer_img", "{image}", "--output_dir", "{model}"],
                                    "also an input"),
    "output_dir is the image dir": (["--infer_dir", "{images}", "--output_dir", "{images}"],
                                    "also an input"),
    "image inside output_dir": (["--infer_img", "{images}/{name}", "--output_dir", "{images}"],
                                "would replace the input"),
    "output_dir a file": (["--infer_img", "{image}", "--output_dir", "{file}"],
                          "is not a directory"),
    "empty output_dir": (["--infer_img", "{image}", "--output_dir", ""], "--output_dir is empty"),
    "infer_img missing": (["--infer_img", "{out}/nothing.jpg", "--output_dir", "{out}"],
                          "nothing.jpg"),
    # a byte of __params__ flipped: the checksum infer_cfg.yml records for it catches that
    "params differ from infer_cfg.yml": (["--infer_img", "{image}", "--output_dir", "{out}"],
                                         "does not match its infer_cfg.yml"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_infer_without_config_hostile(fitted, tmp_path, capsys, case):
    argv_tail, expected = HOSTILE[case]
    model = tmp_path / "model"
    shutil.copytree(fitted["model_dir"], model)
    images = tmp_path / "images"
    shutil.copytree(fitted["images"], images)
    name = sorted(os.listdir(images))[0]
    if case == "params differ from infer_cfg.yml":
        with open(model / "__params__", "r+b") as handle:
            handle.seek(1000)
            byte = handle.read(1)
            handle.seek(1000)
            handle.write(bytes([byte[0] ^ 1]))
    (tmp_path / "a_file").write_text("the user's")
    fill = {"model": str(model), "image": str(images / name), "images": str(images),
            "name": name, "out": str(tmp_path / "out"), "file": str(tmp_path / "a_file")}
    before = {"model": tree_digest(model), "images": tree_digest(images),
              "a_file": (tmp_path / "a_file").read_text()}
    code, error = _run(capsys, ["--model_path", str(model),
                                *[part.format(**fill) for part in argv_tail]])
    assert code == 2 and expected in error, error
    assert {"model": tree_digest(model), "images": tree_digest(images),
            "a_file": (tmp_path / "a_file").read_text()} == before
