"""What an exported model says about itself (infer_cfg.yml, see slim.io.export): built from the
run's detection config, so infer.py and other runtimes need neither the config nor the
dataset."""
import dataclasses

from slim.data.transforms import eval_preprocessing


def inference_config(cfg, model, label_names, image_shape):
    """The infer_cfg.yml content of `model` (built from detection config `cfg`) whose classes
    are `label_names`, exported with eval input `image_shape` ([3, H, W])."""
    nms = getattr(getattr(model, "yolo_head", None), "nms", None)
    return {
        "architecture": str(cfg.get("architecture")),
        "metric": str(cfg.get("metric", "VOC")),
        "num_classes": len(label_names),
        "label_list": [str(name) for name in label_names],
        "feeds": ["image", "im_size"],
        "fetches": {"bbox": "[N, 6] rows of label, score, x1, y1, x2, y2 in original-image "
                            "pixels, LoD: the rows of each image",
                    "bbox_num": "detections per image"},
        "preprocess": eval_preprocessing(int(image_shape[1]), int(image_shape[2])),
        "nms": {} if nms is None else dataclasses.asdict(nms),
    }
