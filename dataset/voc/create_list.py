#!/usr/bin/env python
"""Write trainval.txt, test.txt and label_list.txt from an extracted VOCdevkit (see README.md here).

    python dataset/voc/create_list.py [--dataset_dir dataset/voc]
"""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))

from slim.data.voc_lists import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
