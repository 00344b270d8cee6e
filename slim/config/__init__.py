"""Configuration: YAML with tags, `-o` overrides, a schema declared by the classes themselves.

    from slim.config import load_config, create
    cfg = load_config("configs/yolov3_mobilenet_v1_voc.yml", ["YoloTrainFeed.batch_size=64"])
    model = create(cfg.architecture, cfg)

`python -m slim.config list | help MODULE | generate MODULE... | analyze FILE`
documents every module and checks a config.
"""
from slim.config.loader import Config, apply_override, create, load_config  # noqa: F401
from slim.config.registry import REGISTRY, REQUIRED, ModuleSpec, OptionSpec, register  # noqa: F401
from slim.config.slim_config import SlimConfig, load_slim_config  # noqa: F401
from slim.config.validate import ModuleName  # noqa: F401
from slim.config.yaml_io import ConfigLoader, dump_yaml  # noqa: F401
