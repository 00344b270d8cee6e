"""The YOLOv3 architecture (config module `YOLOv3`): a backbone plus a YOLOv3 head."""
from slim.config.registry import register
from slim.config.validate import ModuleName


@register
class YOLOv3:
    """YOLOv3 detector: backbone feature maps (stride 8, 16, 32) into a YOLOv3 head.

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
        features = self.backbone(image, is_test=is_test)
        return self.yolo_head.outputs(features, is_test=is_test)
