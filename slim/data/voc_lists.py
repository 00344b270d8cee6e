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
import logging
import os
import sys

from slim.data.records import line_excerpt, read_text_lines
from slim.data.voc import VOC_CLASSES
from slim.errors import ArgumentParser, DataError, exit_on_user_error, shorten
from slim.io.output_places import WrittenFiles, check_output_dir

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


def _list_lines(dataset_dir, devkit, sets):
    found = [_image_set_lines(dataset_dir, devkit, year, image_set) for year, image_set in sets]
    return [line for part in found if part for line in part]


def write_voc_lists(dataset_dir, devkit="VOCdevkit"):
    """Write trainval.txt, test.txt and label_list.txt; returns {file name: line count}.

    Before anything is written, each of them must be absent or a file this tool wrote there
    (listed in the dir's .slim-written.json): a list of the user's is never replaced."""
    if not os.path.isdir(os.path.join(dataset_dir, devkit)):
        raise DataError(f"{os.path.join(dataset_dir, devkit)} not found: extract "
                        f"VOCtrainval_06-Nov-2007.tar, VOCtest_06-Nov-2007.tar and "
                        f"VOCtrainval_11-May-2012.tar into {dataset_dir}")
    lists = {"trainval.txt": _list_lines(dataset_dir, devkit, TRAIN_SETS),
             "test.txt": _list_lines(dataset_dir, devkit, TEST_SETS)}
    if not any(lists.values()):
        raise DataError(f"no VOC image sets under {os.path.join(dataset_dir, devkit)} "
                        f"(expected VOC2007/ImageSets/Main/trainval.txt etc.)")
    lists = {name: lines for name, lines in lists.items() if lines}
    lists["label_list.txt"] = [name + "\n" for name in VOC_CLASSES]
    written = WrittenFiles(check_output_dir(dataset_dir, "--dataset_dir"))
    written.check(list(lists), "--dataset_dir")
    for name, lines in lists.items():
        written.write_bytes(name, "".join(lines).encode("utf-8"))
    return {name: len(lists.get(name, ())) for name in ("trainval.txt", "test.txt", "label_list.txt")}


@exit_on_user_error
def main(argv=None):
    parser = ArgumentParser(prog="python -m slim.data.voc_lists",
                            description=__doc__.splitlines()[0])
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
