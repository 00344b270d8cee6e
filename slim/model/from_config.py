"""A detection config's model, built for analysis (inspect, pruning plans, benches)."""
from slim.errors import ConfigError

DEFAULT_IMAGE_SHAPE = (3, 608, 608)


def model_from_config(config_path, overrides, image_shape=None):
    """(model, image_shape) of a detection config: `architecture` built with its sections."""
    from slim.config import load_config
    return model_of_loaded_config(load_config(config_path, overrides), config_path, image_shape)


def model_of_loaded_config(cfg, config_path, image_shape=None):
    """`model_from_config` of a config already loaded from `config_path` (named in errors)."""
    from slim.config import create
    architecture = cfg.get("architecture")
    if not architecture:
        raise ConfigError(f"{config_path}: missing top-level key 'architecture' (e.g. YOLOv3)")
    model = create(architecture, cfg)
    if image_shape is None:
        image_shape = _eval_image_shape(cfg)
    if len(image_shape) != 3 or any(int(dim) <= 0 for dim in image_shape):
        raise ConfigError(f"{config_path}: image_shape must be [C, H, W] with positive dims "
                          f"to count FLOPs, got {list(image_shape)}")
    return model, tuple(int(dim) for dim in image_shape)


def _eval_image_shape(cfg):
    feed_name = cfg.get("eval_feed")
    section = cfg.get(feed_name) if feed_name else None
    shape = section.get("image_shape") if isinstance(section, dict) else \
        getattr(section, "image_shape", None)
    if not shape or any(dim is None or int(dim) <= 0 for dim in shape):
        return DEFAULT_IMAGE_SHAPE
    return tuple(shape)
