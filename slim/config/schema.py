"""The top-level keys of a detection config (FACTS.md section 2) and their checks.

Every other key of a detection config is a section named after a registered
module. The top-level keys are declared here the same way modules declare
their options (an `__init__` signature and an `Args:` docstring), so `list`,
`help`, `generate` and `analyze` show them with types, defaults and docs.
"""
from typing import Literal, Optional, Union

from slim.config.registry import REQUIRED, module_spec_of
from slim.config.validate import InvalidValue, ModuleName
from slim.errors import shorten_repr


class DetectionConfigKeys:
    """Top-level keys of a detection config.

    Args:
        architecture: the detector, a registered module name (e.g. YOLOv3).
        train_feed: the training data feed module (e.g. YoloTrainFeed).
        eval_feed: the evaluation data feed module (e.g. YoloEvalFeed).
        test_feed: the inference data feed module (e.g. YoloTestFeed).
        use_gpu: run on GPU when Paddle has CUDA; false (or a CPU-only Paddle) runs on CPU.
        max_iters: iterations per epoch of compress.py (total iterations of plain training);
            'auto' derives it from the training set size and the total batch size.
        log_smooth_window: number of iterations the logged losses are averaged over.
        log_iter: print a training log line every this many iterations.
        save_dir: directory for outputs of plain training (snapshots, final model).
        snapshot_iter: save a snapshot every this many iterations of plain training.
        metric: evaluation metric, VOC (mAP over 11 points or the integral) or COCO (pycocotools).
        map_type: VOC mAP variant: 11point (VOC2007) or integral (VOC2010+).
        pretrain_weights: backbone weights to start from (directory, file or URL); only the
            parameters present are loaded.
        weights: trained detector weights used by eval and infer.
        num_classes: number of object classes; modules that list it in __shared__
            (the YOLOv3 head) take it when their own section does not set it.
        random_seed: seed for parameter init and data shuffling; none means not fixed.
    """

    def __init__(self,
                 architecture: ModuleName = REQUIRED,
                 train_feed: Optional[ModuleName] = None,
                 eval_feed: Optional[ModuleName] = None,
                 test_feed: Optional[ModuleName] = None,
                 use_gpu: bool = True,
                 max_iters: Union[int, Literal["auto"]] = "auto",
                 log_smooth_window: int = 20,
                 log_iter: int = 20,
                 save_dir: str = "output",
                 snapshot_iter: int = 10000,
                 metric: Literal["VOC", "COCO"] = "VOC",
                 map_type: Literal["11point", "integral"] = "11point",
                 pretrain_weights: Optional[str] = None,
                 weights: Optional[str] = None,
                 num_classes: int = 80,
                 random_seed: Optional[int] = None):
        pass  # only the signature matters: it is the schema

    @classmethod
    def check_config(cls, options):
        """Positive counts; `max_iters` a positive int or 'auto'."""
        for key in ("log_smooth_window", "log_iter", "snapshot_iter", "num_classes"):
            if options[key] <= 0:
                raise InvalidValue((key,), f"key '{key}' must be a positive integer, "
                                           f"got {shorten_repr(options[key])}")
        max_iters = options["max_iters"]
        if max_iters != "auto" and max_iters <= 0:
            raise InvalidValue(("max_iters",), f"key 'max_iters' must be a positive integer or "
                                               f"'auto', got {shorten_repr(max_iters)}")


TOP_LEVEL = module_spec_of(DetectionConfigKeys, name="top level", yaml_tag=False)

