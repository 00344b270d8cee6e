"""The slim config (pruners, strategies, compressor): loading and every user error."""
import os
import textwrap

import pytest

from slim.config import SlimConfig, load_slim_config
from slim.config.slim_config import SensitivePruneStrategy, StructurePruner, UniformPruneStrategy
from slim.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

BASE = """\
version: 1.0
pruners:
    pruner_1:
        class: 'StructurePruner'
        pruning_axis:
            '*': 0
        criterions:
            '*': 'l1_norm'
strategies:
    uniform_pruning_strategy:
        class: 'UniformPruneStrategy'
        pruner: 'pruner_1'
        start_epoch: 0
        target_ratio: 0.5
        pruned_params: '(conv2_1_sep_weights)|(yolo_block.0.0.0.conv.weights)'
        metric_name: 'acc_top1'
compressor:
    epoch: 271
    eval_epoch: 10
    checkpoint_path: './checkpoints/'
    strategies:
        - uniform_pruning_strategy
"""


@pytest.fixture
def write(tmp_path):
    def write_slim(text):
        path = tmp_path / "slim.yaml"
        path.write_text(textwrap.dedent(text))
        return str(path)
    return write_slim


def test_seed_layout_loads_into_a_validated_structure(write):
    path = write(BASE)
    cfg = load_slim_config(path)
    assert isinstance(cfg, SlimConfig) and cfg.path == path and cfg.version == 1.0
    assert cfg.pruners == {"pruner_1": StructurePruner(pruning_axis={"*": 0},
                                                       criterions={"*": "l1_norm"})}
    strategy = cfg.strategies["uniform_pruning_strategy"]
    assert strategy == UniformPruneStrategy(
        pruner="pruner_1", start_epoch=0, target_ratio=0.5,
        pruned_params="(conv2_1_sep_weights)|(yolo_block.0.0.0.conv.weights)", metric_name="acc_top1")
    assert (cfg.compressor.epoch, cfg.compressor.eval_epoch) == (271, 10)
    assert cfg.compressor.checkpoint_path == "./checkpoints/"
    assert cfg.compressor.init_model is None
    assert cfg.compressor.save_eval_model is True and cfg.compressor.prune_infer_model is True
    assert cfg.active_strategies() == [("uniform_pruning_strategy", strategy)]


def test_sensitive_strategy_keys_and_list_of_params_are_accepted(write):
    cfg = load_slim_config(write(BASE.replace("""\
    uniform_pruning_strategy:
        class: 'UniformPruneStrategy'""", """\
    sensitive:
        class: SensitivePruneStrategy
        pruner: pruner_1
        delta_rate: 0.1
        num_steps: 2
        eval_rate: 0.5
        sensitivities_file: out/sens.data
        end_epoch: 3
        target_ratio: 0.3
        pruned_params: [conv2_1_sep_weights, conv2_2_sep_weights]
    uniform_pruning_strategy:
        class: 'UniformPruneStrategy'""")))
    sensitive = cfg.strategies["sensitive"]
    assert isinstance(sensitive, SensitivePruneStrategy)
    assert (sensitive.delta_rate, sensitive.num_steps, sensitive.eval_rate) == (0.1, 2, 0.5)
    assert sensitive.pruned_params == ["conv2_1_sep_weights", "conv2_2_sep_weights"]
    assert sensitive.sensitivities_file == "out/sens.data" and sensitive.metric_name is None


@pytest.mark.parametrize("old, new, message", [
    ("class: 'UniformPruneStrategy'", "class: 'UniformPrunStrategy'",
     "'strategies.uniform_pruning_strategy': unknown class 'UniformPrunStrategy' (did you mean "
     "'UniformPruneStrategy'?); known classes: UniformPruneStrategy, SensitivePruneStrategy"),
    ("class: 'StructurePruner'", "class: 'FilterPruner'",
     "'pruners.pruner_1': unknown class 'FilterPruner'; known classes: StructurePruner"),
    ("pruner: 'pruner_1'", "pruner: 'pruner_2'",
     "strategy 'uniform_pruning_strategy' names pruner 'pruner_2', which is not defined (did you "
     "mean 'pruner_1'?); pruners: pruner_1"),
    ("        - uniform_pruning_strategy", "        - uniform_prune_strategy",
     "compressor.strategies names 'uniform_prune_strategy', which is not defined (did you mean "
     "'uniform_pruning_strategy'?); strategies: uniform_pruning_strategy"),
    ("target_ratio: 0.5", "target_ratio: 1.5", "key 'target_ratio' must be in (0, 1), got 1.5"),
    ("target_ratio: 0.5", "target_ratio: 0", "key 'target_ratio' must be in (0, 1), got 0.0"),
    ("target_ratio: 0.5", "target_ratio: 1", "key 'target_ratio' must be in (0, 1), got 1.0"),
    ("target_ratio: 0.5", "target_ratio: half", "key 'strategies.uniform_pruning_strategy."
                                                "target_ratio' must be float, got 'half' (str)"),
    ("metric_name: 'acc_top1'", "metric_nam: 'acc_top1'",
     "unknown key 'metric_nam' in UniformPruneStrategy ('strategies.uniform_pruning_strategy') "
     "(did you mean 'metric_name'?)"),
    ("'*': 'l1_norm'", "'*': 'l2_norm'",
     "key 'pruners.pruner_1.criterions.*': 'l2_norm' is not one of 'l1_norm', 'fpgm', 'bn_scale' "
     "(did you mean 'l1_norm'?)"),
    ("'*': 0", "'*': 1", "pruning_axis '*': axis 1 is not supported; only 0"),
    ("start_epoch: 0", "start_epoch: 271", "strategy 'uniform_pruning_strategy' starts at epoch 271, "
                                           "but compressor.epoch is 271: it would never run"),
    ("eval_epoch: 10", "eval_epoch: 0", "key 'eval_epoch' must be >= 1, got 0"),
    ("version: 1.0", "version: 2.0", "key 'version': 2.0 is not supported; use 1.0"),
    ("compressor:", "compresor:", "unknown key 'compresor' (did you mean 'compressor'?); valid keys: "
                                  "version, pruners, strategies, compressor"),
    ("        pruner: 'pruner_1'\n", "",
     "missing required key 'pruner' in strategies.uniform_pruning_strategy (str)"),
    ("    epoch: 271\n", "", "missing required key 'epoch' in compressor (int)"),
])
def test_slim_config_errors_name_file_key_and_valid_values(write, old, new, message):
    assert old in BASE
    path = write(BASE.replace(old, new))
    with pytest.raises(ConfigError) as error:
        load_slim_config(path)
    assert str(error.value).startswith(f"{path}: ")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_missing_slim_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="^config file not found: .*nope.yaml$"):
        load_slim_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", ["yolov3_mobilenet_v1_slim.yaml",
                                  "yolov3_mobilenet_v1_demo_slim.yaml"])
def test_shipped_slim_configs_load(name):
    cfg = load_slim_config(os.path.join(ROOT, "configs", name))
    (strategy_name, strategy), = cfg.active_strategies()
    assert strategy_name == "uniform_pruning_strategy" and strategy.target_ratio == 0.5
    assert cfg.pruners[strategy.pruner].criterions == {"*": "l1_norm"}


def test_slim_config_criteria_are_the_pruning_engines_criteria():
    # The slim config lists criteria without importing paddle; keep it in step with the engine.
    from slim.config import slim_config
    from slim.prune.criteria import CRITERIA, DATA_CRITERIA
    assert set(slim_config.CRITERIA) == set(CRITERIA) - set(DATA_CRITERIA)


def test_shipped_auto_slim_config_is_the_seed_config_with_auto_selection():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    seed = load_slim_config(os.path.join(root, "configs", "yolov3_mobilenet_v1_slim.yaml"))
    auto = load_slim_config(os.path.join(root, "configs", "yolov3_mobilenet_v1_auto_slim.yaml"))
    seed_strategy = seed.strategies["uniform_pruning_strategy"]
    auto_strategy = auto.strategies["uniform_pruning_strategy"]
    assert auto_strategy.pruned_params == "auto" != seed_strategy.pruned_params
    assert auto_strategy.target_ratio == seed_strategy.target_ratio == 0.5
    assert auto.compressor == seed.compressor
