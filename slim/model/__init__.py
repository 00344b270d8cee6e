"""MobileNetV1-YOLOv3 and ResNet34-YOLOv3 as classic Paddle static programs (train / eval / infer).

Config modules registered here: `MobileNet`, `ResNet`, `YOLOv3Head`, `MultiClassNMS`, `YOLOv3`.
Program builders live in `slim.model.programs`; see its docstring for the
feeds, fetches and the NMS output layout.
"""
from slim.model.mobilenet import MobileNet  # noqa: F401
from slim.model.programs import BuiltProgram, build_eval_program, build_train_program, split_detections  # noqa: F401
from slim.model.resnet import ResNet  # noqa: F401
from slim.model.yolo_head import MultiClassNMS, YOLOv3Head  # noqa: F401
from slim.model.yolov3 import YOLOv3  # noqa: F401
