"""The YOLOv3 architecture (config module `YOLOv3`): a backbone plus a YOLOv3 head."""
import math

from slim.config.registry import register
from slim.config.validate import ModuleName
from slim.errors import ConfigError
from slim.model.yolo_head import DOWNSAMPLE_RATIOS

_STRIDES_HINT = f"strides {sorted(DOWNSAMPLE_RATIOS)}; for ResNet, feature_maps: [3, 4, 5]"


@register
class YOLOv3:
    """YOLOv3 detector: backbone feature maps (stride 8, 16, 32) into a YOLOv3 head.

    The head reads the backbone's deepest three feature maps, as PaddleDetection's head
    does (a ResNet with feature_maps [2, 3, 4, 5] gives four).

    Args:
        backbone: name of the backbone module (its section configures it).
        yolo_head: name of the head module (its section configures it).
    """
    __inject__ = ["backbone", "yolo_head"]

    def __init__(self, backbone: ModuleName = "MobileNet", yolo_head: ModuleName = "YOLOv3Head"):
        self.backbone = backbone
        self.yolo_head = yolo_head

    def __repr__(self):
        return f"YOLOv3(backbone={self.backbone!r}, yolo_head={self.yolo_head!r})"

    def outputs(self, image, is_test):
        """Raw head outputs (stride 32, 16, 8) for `image`."""
        features = list(self.backbone(image, is_test=is_test))
        if len(features) < len(DOWNSAMPLE_RATIOS):
            raise ConfigError(f"YOLOv3: the backbone {type(self.backbone).__name__} gives "
                              f"{len(features)} feature maps; the head needs "
                              f"{len(DOWNSAMPLE_RATIOS)} ({_STRIDES_HINT})")
        features = features[-len(DOWNSAMPLE_RATIOS):]
        height = image.shape[2]
        if height is not None and height > 0:  # a fixed input size: check the strides
            sizes = [feature.shape[2] for feature in features]
            if sizes != [math.ceil(height / ratio) for ratio in sorted(DOWNSAMPLE_RATIOS)]:
                raise ConfigError(f"YOLOv3: the backbone {type(self.backbone).__name__}'s deepest "
                                  f"feature maps are {sizes} px high on a {height} px input; the "
                                  f"head needs {_STRIDES_HINT}")
        return self.yolo_head.outputs(features, is_test=is_test)
