"""`python -m slim.config help / list` cover the slim config's classes (issue #14)."""
import re

import pytest

from slim.config import load_slim_config
from slim.config.cli import help_module, list_modules, main
from slim.errors import ConfigError

SLIM_CLASSES = ("StructurePruner", "UniformPruneStrategy", "SensitivePruneStrategy", "compressor")

# A slim config with an unknown key inside each part: the validator's error lists the keys it
# accepts there, so the tests compare `help` with the validator itself, not with a copy.
UNKNOWN_KEY_CONFIGS = {
    "StructurePruner": "pruners: {p: {class: StructurePruner, nokey: 1}}\ncompressor: {epoch: 1}\n",
    "UniformPruneStrategy": "pruners: {p: {class: StructurePruner}}\n"
                            "strategies: {s: {class: UniformPruneStrategy, pruner: p, nokey: 1}}\n"
                            "compressor: {epoch: 1}\n",
    "SensitivePruneStrategy": "pruners: {p: {class: StructurePruner}}\n"
                              "strategies: {s: {class: SensitivePruneStrategy, pruner: p, nokey: 1}}\n"
                              "compressor: {epoch: 1}\n",
    "compressor": "compressor: {epoch: 1, nokey: 1}\n",
}


def validator_keys(tmp_path, name):
    path = tmp_path / "unknown_key.yaml"
    path.write_text(UNKNOWN_KEY_CONFIGS[name])
    with pytest.raises(ConfigError) as error:
        load_slim_config(path)
    return set(str(error.value).split("valid keys: ")[1].split(", "))


def help_sections(text):
    """{heading: body} of a `help` text (headings are the unindented upper-case lines)."""
    sections, heading = {}, None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Z ]+\b", line) and line.split(" (")[0].isupper():
            heading = line.split(" (")[0]
            sections[heading] = []
        elif heading:
            sections[heading].append(line)
    return {key: "\n".join(lines).strip("\n") for key, lines in sections.items()}


@pytest.mark.parametrize("name", SLIM_CLASSES)
def test_help_lists_every_option_the_validator_accepts(tmp_path, name):
    options = help_sections(help_module(name))["OPTIONS"].splitlines()
    assert options[0].split() == ["option", "type", "default", "description"]
    names = {line.split()[0] for line in options[1:] if line.startswith("  ") and line[2] != " "}
    assert names == validator_keys(tmp_path, name)


@pytest.mark.parametrize("name", SLIM_CLASSES)
def test_help_template_is_a_slim_config_that_loads(tmp_path, name):
    template = help_sections(help_module(name))["SLIM CONFIG TEMPLATE"]
    path = tmp_path / "template.yaml"
    path.write_text(template)
    cfg = load_slim_config(path)
    if name == "compressor":
        every_option = set(validator_keys(tmp_path, name))
        assert set(line.split(":")[0].strip() for line in template.splitlines()[2:]) == every_option
    elif name == "StructurePruner":
        assert [type(p).__name__ for p in cfg.pruners.values()] == [name]
    else:  # a strategy: under `strategies:` with its class, run by the compressor
        assert [type(s).__name__ for _, s in cfg.active_strategies()] == [name]
        assert f"strategies:\n  strategy_1:\n    class: {name}\n" in template


def test_uniform_prune_strategy_help_shows_type_default_and_description():
    text = help_module("UniformPruneStrategy")
    assert text.splitlines()[0].startswith("UniformPruneStrategy (slim config: an entry of `strategies`")
    rows = help_sections(text)["OPTIONS"]
    assert re.search(r"^  target_ratio +float +0\.5 +fraction of the model's FLOPs", rows, re.M)
    assert re.search(r"^  pruner +str +<required> +name of a pruner", rows, re.M)


def test_list_has_a_slim_config_section():
    slim_part = list_modules().split("SLIM CONFIG CLASSES")[1]
    listed = [line.split()[0] for line in slim_part.splitlines()[1:] if line.startswith("    ")]
    assert listed == ["StructurePruner", "UniformPruneStrategy", "SensitivePruneStrategy",
                      "DistillationStrategy", "compressor"]
    assert "  [strategies]" in slim_part


@pytest.mark.parametrize("argv, message", [
    (["help", "UniformPrunStrategy"],
     "error: unknown module 'UniformPrunStrategy' (did you mean 'UniformPruneStrategy'?); known: "),
    (["help", "YoloTrainFed"], "error: unknown module 'YoloTrainFed' (did you mean 'YoloTrainFeed'?)"),
    (["generate", "compressor"], "error: 'compressor' is part of the slim config, not a detection "
                                 "config module; python -m slim.config help compressor"),
])
def test_misspelled_names_exit_2_with_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    err = capsys.readouterr().err
    assert exit_info.value.code == 2
    assert err.startswith(message) and err.count("\n") == 1 and "Traceback" not in err
    if argv[0] == "help":
        assert "slim config classes: StructurePruner, UniformPruneStrategy" in err
