"""Facts of the seed (FACTS.md section 1 and the seed's README) shared by several tests."""

# The seed's pruned_params regex, verbatim (dots unescaped, as users write them).
SEED_REGEX = (
    "(conv2_1_sep_weights)|(conv2_2_sep_weights)|(conv3_1_sep_weights)|(conv4_1_sep_weights)|"
    "(conv5_1_sep_weights)|(conv5_2_sep_weights)|(conv5_3_sep_weights)|(conv5_4_sep_weights)|"
    "(conv5_5_sep_weights)|(conv5_6_sep_weights)|(yolo_block.0.0.0.conv.weights)|"
    "(yolo_block.0.0.1.conv.weights)|(yolo_block.0.1.0.conv.weights)|"
    "(yolo_block.0.1.1.conv.weights)|(yolo_block.1.0.0.conv.weights)|"
    "(yolo_block.1.0.1.conv.weights)|(yolo_block.1.1.0.conv.weights)|"
    "(yolo_block.1.1.1.conv.weights)|(yolo_block.1.2.conv.weights)|"
    "(yolo_block.2.0.0.conv.weights)|(yolo_block.2.0.1.conv.weights)|"
    "(yolo_block.2.1.1.conv.weights)|(yolo_block.2.2.conv.weights)|"
    "(yolo_block.2.tip.conv.weights)")

# The 24 conv weights that regex names, in its (and the program's) order.
SEED_PARAMS = [
    "conv2_1_sep_weights", "conv2_2_sep_weights", "conv3_1_sep_weights", "conv4_1_sep_weights",
    "conv5_1_sep_weights", "conv5_2_sep_weights", "conv5_3_sep_weights", "conv5_4_sep_weights",
    "conv5_5_sep_weights", "conv5_6_sep_weights",
    "yolo_block.0.0.0.conv.weights", "yolo_block.0.0.1.conv.weights",
    "yolo_block.0.1.0.conv.weights", "yolo_block.0.1.1.conv.weights",
    "yolo_block.1.0.0.conv.weights", "yolo_block.1.0.1.conv.weights",
    "yolo_block.1.1.0.conv.weights", "yolo_block.1.1.1.conv.weights",
    "yolo_block.1.2.conv.weights",
    "yolo_block.2.0.0.conv.weights", "yolo_block.2.0.1.conv.weights",
    "yolo_block.2.1.1.conv.weights", "yolo_block.2.2.conv.weights",
    "yolo_block.2.tip.conv.weights"]
