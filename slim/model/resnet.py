"""ResNet backbone (config module `ResNet`) as classic static-graph layers: ResNet18/34, the
backbone of PaddleDetection v0.1.0's ResNet34-YOLOv3 (`configs/yolov3_r34_voc.yml`, also the
distillation teacher of its slim example).

Structure and parameter names follow PaddleDetection v0.1.0 (`ppdet/modeling/backbones/
resnet.py` and `name_adapter.py`), so ImageNet `ResNet34_pretrained` weights load by name:

- stem: `conv1_weights` (7x7, stride 2) + batch norm `bn_conv1_{scale,offset,mean,variance}`
  + relu, then 3x3 max pooling with stride 2;
- stage s (2..5) has blocks `res<s>a`, `res<s>b`, ...; a basic block is
  `res<s><x>_branch2a` (3x3, the block's stride, relu) -> `res<s><x>_branch2b` (3x3), added to
  the shortcut, then relu. Each conv `<name>_weights` has its batch norm
  `bn<s><x>_<branch>_{scale,offset,mean,variance}` (the conv name with "res" -> "bn");
- the shortcut is a 1x1 conv `res<s><x>_branch1` (+ `bn<s><x>_branch1_*`) where the block
  changes channels or stride, and in the first block of stage 2 (PaddleDetection's
  `is_first` for depth < 50), otherwise the block's input itself.

So every block's output channels are the sum of two convs (branch2b and the shortcut): those
convs share their output channels, and every identity block of a stage adds to them too.
"""
import typing

from slim.config.registry import register
from slim.errors import ConfigError, did_you_mean

# norm_type values we build ('sync_bn' is plain batch norm on one card, as for MobileNet).
# PaddleDetection's third value, 'affine_channel', is not supported here.
SUPPORTED_NORM_TYPES = ("bn", "sync_bn")

# depth -> basic blocks per stage 2..5 (PaddleDetection's depth_cfg; 50+ are bottleneck nets,
# not built here).
BASIC_BLOCKS_PER_STAGE = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}
# PaddleDetection's variants; for basic blocks 'a' and 'b' build the same net ('a' moves a
# bottleneck's stride to its first 1x1 conv). 'c' and 'd' (a 3-conv stem, pooled shortcuts)
# are not built here.
SUPPORTED_VARIANTS = ("a", "b")
STAGE_FILTERS = (64, 128, 256, 512)
STEM_FILTERS = 64
STAGES = (2, 3, 4, 5)
DEFAULT_FEATURE_MAPS = [2, 3, 4, 5]  # PaddleDetection's


def layer_name(stage, count, index):
    """PaddleDetection's block name (NameAdapter.fix_layer_warp_name): res<stage><letter>,
    or res4a, res4b1, res4b2, ... in a stage 4 of more than 10 blocks."""
    name = f"res{stage}"
    if count > 10 and stage == 4:
        return name + "a" if index == 0 else name + "b" + str(index)
    return name + chr(ord("a") + index)


def norm_name(conv_name):
    """PaddleDetection's batch norm name of a conv (NameAdapter.fix_conv_norm_name)."""
    return "bn_" + conv_name if conv_name == "conv1" else "bn" + conv_name[3:]


@register
class ResNet:
    """ResNet18/34 backbone (PaddleDetection v0.1.0 names); returns the feature maps of `feature_maps`.

    Args:
        depth: 18 or 34 (basic blocks; PaddleDetection's 50-200 bottleneck nets are not built
            here, and its default, 50, is therefore 34 here).
        freeze_at: the stem and stages 2..freeze_at get no gradient (the output of stage
            freeze_at stops it; 0 and 1 train everything, as in PaddleDetection). The YOLOv3
            configs set 0; PaddleDetection's default is 2.
        norm_type: normalization after every conv: 'bn' or 'sync_bn' (synchronized across
            cards; plain batch norm on one card). PaddleDetection's default, 'affine_channel',
            is not supported.
        freeze_norm: keep the batch norm scale and offset fixed (learning rate 0, no gradient)
            and normalize with the moving statistics also in training (PaddleDetection's
            default true; the YOLOv3 configs set false).
        norm_decay: L2 weight decay of the batch norm scale and offset.
        variant: 'a' or 'b' (the same net for basic blocks); 'c' and 'd' are not supported.
        feature_maps: stages (2..5) whose outputs are returned, shallowest first. YOLOv3 uses
            the deepest three and needs them at strides 8, 16, 32: [3, 4, 5].
        width_scale: ours, not PaddleDetection's: multiplier of every conv's channels
            (channels = int(c * scale)) for small CPU models such as the demo's; 1.0 is the
            published net. Names are unchanged.
    """

    def __init__(self, depth: int = 34, freeze_at: int = 2,
                 norm_type: typing.Literal["bn", "sync_bn"] = "bn", freeze_norm: bool = True,
                 norm_decay: float = 0., variant: str = "b",
                 feature_maps: typing.List[int] = DEFAULT_FEATURE_MAPS, width_scale: float = 1.0):
        if depth not in BASIC_BLOCKS_PER_STAGE:
            raise ConfigError(f"ResNet.depth: {depth} is not built here; valid: "
                              f"{', '.join(str(d) for d in BASIC_BLOCKS_PER_STAGE)}")
        if not 0 <= freeze_at <= 4:
            raise ConfigError(f"ResNet.freeze_at: must be 0, 1, 2, 3 or 4, got {freeze_at}")
        if norm_type not in SUPPORTED_NORM_TYPES:
            raise ConfigError(f"ResNet.norm_type: unsupported value '{norm_type}'"
                              f"{did_you_mean(norm_type, SUPPORTED_NORM_TYPES)}; "
                              f"valid: {', '.join(SUPPORTED_NORM_TYPES)}")
        if variant not in SUPPORTED_VARIANTS:
            raise ConfigError(f"ResNet.variant: '{variant}' is not supported; valid: "
                              f"{', '.join(SUPPORTED_VARIANTS)}")
        feature_maps = [int(stage) for stage in feature_maps]
        if not feature_maps or sorted(set(feature_maps)) != feature_maps or \
                not set(feature_maps) <= set(STAGES):
            raise ConfigError(f"ResNet.feature_maps: must be increasing stages out of "
                              f"{list(STAGES)}, e.g. [3, 4, 5], got {feature_maps}")
        if not width_scale > 0 or int(min(STEM_FILTERS, *STAGE_FILTERS) * width_scale) < 1:
            raise ConfigError(f"ResNet.width_scale: {width_scale} leaves a conv with no channels "
                              f"(int(64 * scale) must be >= 1)")
        self.depth = int(depth)
        self.freeze_at = int(freeze_at)
        self.norm_type = norm_type
        self.freeze_norm = bool(freeze_norm)
        self.norm_decay = float(norm_decay)
        self.variant = variant
        self.feature_maps = feature_maps
        self.width_scale = float(width_scale)

    def __repr__(self):
        return (f"ResNet(depth={self.depth}, freeze_at={self.freeze_at}, "
                f"norm_type={self.norm_type!r}, freeze_norm={self.freeze_norm}, "
                f"norm_decay={self.norm_decay}, variant={self.variant!r}, "
                f"feature_maps={self.feature_maps}, width_scale={self.width_scale})")

    def channels(self, base):
        """Channels of a conv of `base` channels in the published net, at width_scale."""
        return int(base * self.width_scale)

    def __call__(self, image, is_test):
        """Append the backbone to the current program; returns the `feature_maps` outputs."""
        import paddle
        out = self._conv_norm(image, self.channels(STEM_FILTERS), 7, 2, "conv1", is_test, "relu")
        out = paddle.nn.functional.max_pool2d(out, kernel_size=3, stride=2, padding=1)
        features = []
        for stage in range(STAGES[0], max(self.feature_maps) + 1):
            out = self._stage(out, stage, is_test)
            if stage in self.feature_maps:
                features.append(out)
            if self.freeze_at >= stage:
                out.stop_gradient = True
        return features

    def _stage(self, input, stage, is_test):
        count = BASIC_BLOCKS_PER_STAGE[self.depth][stage - STAGES[0]]
        out = input
        for index in range(count):
            out = self._basic_block(out, self.channels(STAGE_FILTERS[stage - STAGES[0]]),
                                    2 if index == 0 and stage != STAGES[0] else 1,
                                    index == 0 and stage == STAGES[0],
                                    layer_name(stage, count, index), is_test)
        return out

    def _basic_block(self, input, channels, stride, is_first, name, is_test):
        import paddle
        conv0 = self._conv_norm(input, channels, 3, stride, name + "_branch2a", is_test, "relu")
        conv1 = self._conv_norm(conv0, channels, 3, 1, name + "_branch2b", is_test, None)
        if input.shape[1] != channels or stride != 1 or is_first:
            short = self._conv_norm(input, channels, 1, stride, name + "_branch1", is_test, None)
        else:
            short = input
        return paddle.nn.functional.relu(paddle.add(short, conv1))

    def _conv_norm(self, input, channels, filter_size, stride, name, is_test, act):
        """Conv (no bias) `<name>_weights` + batch norm `<norm_name(name)>_*` (+ act)."""
        import paddle

        from slim.model.layers import named_batch_norm  # imports paddle: after slim's IR switch
        conv = paddle.static.nn.conv2d(
            input, channels, filter_size, stride=stride, padding=(filter_size - 1) // 2,
            param_attr=paddle.ParamAttr(name=name + "_weights",
                                        initializer=paddle.nn.initializer.KaimingNormal()),
            bias_attr=False)
        bn = norm_name(name)
        out = named_batch_norm(
            conv, act, (bn + "_scale", bn + "_offset", bn + "_mean", bn + "_variance"),
            self.norm_decay, is_test, learning_rate=0. if self.freeze_norm else 1.,
            use_global_stats=self.freeze_norm)
        if self.freeze_norm:
            block = out.block.program.global_block()
            for param in (bn + "_scale", bn + "_offset"):
                block.var(param).stop_gradient = True
        return out
