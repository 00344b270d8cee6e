"""MobileNetV1 backbone (config module `MobileNet`) as classic static-graph layers.

Parameter names follow the 2019 PaddleDetection model (FACTS.md §1) so that
published weights load by name and users' `pruned_params` regexes match:
`conv1_weights`, `convX_Y_dw_weights`, `convX_Y_sep_weights`, each followed by
batch norm `<conv>_bn_{scale,offset,mean,variance}` and relu.
"""
import math
import typing

from slim.config.registry import register
from slim.errors import ConfigError, did_you_mean

# norm_type values we build. 'sync_bn' is plain batch norm on one card; the
# multi-card driver converts it (BuildStrategy.sync_batch_norm), so the program
# and the parameter names are the same.
SUPPORTED_NORM_TYPES = ("bn", "sync_bn")

# (name, sep out channels, dw stride) of the depthwise-separable blocks, in order.
DEPTHWISE_SEPARABLE_BLOCKS = (
    ("conv2_1", 64, 1), ("conv2_2", 128, 2),
    ("conv3_1", 128, 1), ("conv3_2", 256, 2),
    ("conv4_1", 256, 1), ("conv4_2", 512, 2),
    ("conv5_1", 512, 1), ("conv5_2", 512, 1), ("conv5_3", 512, 1),
    ("conv5_4", 512, 1), ("conv5_5", 512, 1),
    ("conv5_6", 1024, 2), ("conv6", 1024, 1),
)
# Blocks whose outputs feed the detection head (strides 8, 16, 32).
FEATURE_BLOCKS = ("conv3_2", "conv4_2", "conv6")


def scaled_channels(channels, scale):
    """Channels of a conv at width `scale`, rounded as PaddleDetection did (int(c * scale))."""
    return int(channels * scale)


@register
class MobileNet:
    """MobileNetV1 backbone; returns the stride 8, 16 and 32 feature maps (conv3_2, conv4_2, conv6).

    Args:
        norm_type: normalization after every conv: 'bn' (batch norm) or 'sync_bn'
            (batch norm synchronized across cards; plain batch norm on one card).
        norm_decay: L2 weight decay of the batch norm scale and offset.
        conv_decay: L2 weight decay of the backbone conv weights. null (default): the
            optimizer's global regularizer applies (PaddleDetection v0.1.0); a number F >= 0
            gives each backbone conv weight its own L2Decay(F) instead (later
            PaddleDetection configs set 0: no L2 on the 27 backbone conv weights).
        conv_group_scale: width multiplier of every conv (channels = int(c * scale)).
        with_extra_blocks: SSD extra feature blocks; not supported (YOLOv3 uses three feature maps).
    """

    def __init__(self, norm_type: typing.Literal["bn", "sync_bn"] = "bn", norm_decay: float = 0.,
                 conv_group_scale: float = 1.0, with_extra_blocks: bool = False,
                 conv_decay: typing.Optional[float] = None):
        if norm_type not in SUPPORTED_NORM_TYPES:
            raise ConfigError(f"MobileNet.norm_type: unsupported value '{norm_type}'"
                              f"{did_you_mean(norm_type, SUPPORTED_NORM_TYPES)}; "
                              f"valid: {', '.join(SUPPORTED_NORM_TYPES)}")
        if not conv_group_scale > 0:
            raise ConfigError(f"MobileNet.conv_group_scale: must be > 0, got {conv_group_scale}")
        if scaled_channels(32, conv_group_scale) < 1:
            raise ConfigError(f"MobileNet.conv_group_scale: {conv_group_scale} leaves conv1 "
                              f"with no channels (int(32 * scale) must be >= 1)")
        if conv_decay is not None and not (math.isfinite(conv_decay) and conv_decay >= 0):
            raise ConfigError(f"MobileNet.conv_decay: must be null or a number >= 0, got {conv_decay}")
        if with_extra_blocks:
            raise ConfigError("MobileNet.with_extra_blocks: true (SSD extra blocks) is not "
                              "supported; valid: false")
        self.norm_type = norm_type
        self.norm_decay = float(norm_decay)
        self.conv_group_scale = float(conv_group_scale)
        self.with_extra_blocks = with_extra_blocks
        self.conv_decay = None if conv_decay is None else float(conv_decay)

    def __repr__(self):
        return (f"MobileNet(norm_type={self.norm_type!r}, norm_decay={self.norm_decay}, "
                f"conv_group_scale={self.conv_group_scale}, conv_decay={self.conv_decay})")

    def __call__(self, image, is_test):
        """Append the backbone to the current program; returns [stride 8, 16, 32] feature vars."""
        from slim.model import layers
        scale = self.conv_group_scale
        out = layers.conv_bn_relu(image, scaled_channels(32, scale), 3, 2, 1, "conv1",
                                  self.norm_decay, is_test, conv_decay=self.conv_decay)
        channels = scaled_channels(32, scale)
        features = []
        for name, sep_channels, stride in DEPTHWISE_SEPARABLE_BLOCKS:
            # depthwise 3x3: groups = in channels = out channels
            out = layers.conv_bn_relu(out, channels, 3, stride, 1, name + "_dw",
                                      self.norm_decay, is_test, groups=channels,
                                      conv_decay=self.conv_decay)
            channels = scaled_channels(sep_channels, scale)
            out = layers.conv_bn_relu(out, channels, 1, 1, 0, name + "_sep",
                                      self.norm_decay, is_test, conv_decay=self.conv_decay)
            if name in FEATURE_BLOCKS:
                features.append(out)
        return features
