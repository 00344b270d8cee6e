"""Write the PaddleDetection list files of Pascal VOC from an extracted VOCdevkit.

    python dataset/voc/create_list.py [--dataset_dir dataset/voc]

Reads `VOCdevkit/VOC2007` and `VOCdevkit/VOC2012` under dataset_dir and
writes there:
    trainval.txt    VOC2007 trainval + VOC2012 trainval (16551 images)
    test.txt        VOC2007 test (4952 images)
    label_list.txt  the 20 VOC class names
Each list line is `image_path xml_path` relative to dataset_dir. Nothing is
downloaded.
"""
import argparse
import logging
import os
import sys

from slim.data.records import line_excerpt, read_text_lines
from slim.data.voc import VOC_CLASSES
from slim.errors import DataError, exit_on_user_error, shorten

LOGGER = logging.getLogger("slim.data")
TRAIN_SETS = (("VOC2007", "trainval"), ("VOC2012", "trainval"))
TEST_SETS = (("VOC2007", "test"),)


def _image_set_lines(dataset_dir, devkit, year, image_set):
    """List lines of one VOC image set, or None (with a warning) when it is not extracted."""
    year_dir = os.path.join(devkit, year)
    ids_file = os.path.join(dataset_dir, year_dir, "ImageSets", "Main", f"{image_set}.txt")
    if not os.path.isfile(ids_file):
        LOGGER.warning("%s not found; %s %s left out", ids_file, year, image_set)
        return None
    lines = []
    for line_number, text, problem in read_text_lines(ids_file, "image set"):
        if problem or len(text.split()) > 1:
            why = problem or f"expected one image id, got '{line_excerpt(text)}'"
            LOGGER.warning("skipped line %s:%d: %s", shorten(ids_file), line_number, why)
            continue
        image_id = text.strip()
        if image_id:
            lines.append(f"{year_dir}/JPEGImages/{image_id}.jpg {year_dir}/Annotations/{image_id}.xml\n")
    return lines


def _write_list(dataset_dir, devkit, name, sets):
    found = [_image_set_lines(dataset_dir, devkit, year, image_set) for year, image_set in sets]
    lines = [line for part in found if part for line in part]
    if not lines:
        return 0
    path = os.path.join(dataset_dir, name)
    temporary = path + ".tmp"
    with open(temporary, "w", encoding="utf-8") as list_file:
        list_file.writelines(lines)
    os.replace(temporary, path)
    return len(lines)


def write_voc_lists(dataset_dir, devkit="VOCdevkit"):
    """Write trainval.txt, test.txt and label_list.txt; returns {file name: line count}."""
    if not os.path.isdir(os.path.join(dataset_dir, devkit)):
        raise DataError(f"{os.path.join(dataset_dir, devkit)} not found: extract "
                        f"VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and "
                        f"VOCtrainval_11-May-2012.tar into {dataset_dir}")
    counts = {"trainval.txt": _write_list(dataset_dir, devkit, "trainval.txt", TRAIN_SETS),
              "test.txt": _write_list(dataset_dir, devkit, "test.txt", TEST_SETS)}
    if not any(counts.values()):
        raise DataError(f"no VOC image sets under {os.path.join(dataset_dir, devkit)} "
                        f"(expected VOC2007/ImageSets/Main/trainval.txt etc.)")
    with open(os.path.join(dataset_dir, "label_list.txt"), "w", encoding="utf-8") as label_file:
        label_file.write("\n".join(VOC_CLASSES) + "\n")
    counts["label_list.txt"] = len(VOC_CLASSES)
    return counts


@exit_on_user_error
def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset_dir", "-d", default="dataset/voc",
                        help="directory holding VOCdevkit/ (lists are written here)")
    parser.add_argument("--devkit", default="VOCdevkit", help="devkit directory name under dataset_dir")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    for name, count in write_voc_lists(args.dataset_dir, args.devkit).items():
        print(f"{os.path.join(args.dataset_dir, name)}: {count} lines")
    return 0


if __name__ == "__main__":
    sys.exit(main())
