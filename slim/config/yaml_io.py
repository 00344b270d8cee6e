"""YAML in and out: a safe loader that knows the registered module tags, and a dumper.

`ConfigLoader` is a `yaml.SafeLoader` subclass (never an unsafe loader): plain
YAML, plus `!Name {...}` for every registered module with `yaml_tag=True`, which
builds an instance of that class from validated options. Any other tag
(`!Unknown`, `!!python/object:...`) is a ConfigError naming it and the known
tags. It also refuses duplicate keys in a mapping (PyYAML silently keeps the
last one) and reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`).
"""
import os
import re

import yaml

from slim.config.registry import REGISTRY
from slim.config.validate import InvalidValue, instantiate_options, options_of, validate_options
from slim.errors import ConfigError, did_you_mean

_YAML_TAG_PREFIX = "tag:yaml.org,2002:"


def known_tags():
    """The `!Name` tags the loader accepts, sorted."""
    return [f"!{spec.name}" for spec in REGISTRY.specs() if spec.yaml_tag]


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader + the registered module tags; errors name `source` (and the line)."""

    def __init__(self, stream, source="<string>", show_line=True):
        super().__init__(stream)
        self.source = source
        self.show_line = show_line

    def location(self, node):
        """'file:line' of a node (just the source for one-line `-o` values)."""
        if self.show_line and node is not None and node.start_mark is not None:
            return f"{self.source}:{node.start_mark.line + 1}"
        return self.source

    def construct_undefined(self, node):
        tag = node.tag
        if tag.startswith(_YAML_TAG_PREFIX):
            tag = "!!" + tag[len(_YAML_TAG_PREFIX):]
        raise ConfigError(f"{self.location(node)}: YAML tag '{tag}' is not allowed (safe YAML only); "
                          f"known tags: {', '.join(known_tags())}")

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            first_line = {}
            for key_node, _ in node.value:
                if key_node.tag == _YAML_TAG_PREFIX + "merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    seen_at = first_line.get(key)
                except TypeError:  # unhashable key: SafeLoader reports it below
                    continue
                if seen_at is not None:
                    raise ConfigError(f"{self.location(key_node)}: duplicate key '{key}' "
                                      f"(first set at line {seen_at})")
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _construct_tagged(loader, name, node):
    """`!Name {options}` -> an instance of the registered class `Name`, options validated."""
    spec = REGISTRY.get(name) if name in REGISTRY else None
    if spec is None or not spec.yaml_tag:
        raise ConfigError(f"{loader.location(node)}: unknown tag '!{name}'"
                          f"{did_you_mean('!' + name, known_tags())}; known tags: "
                          f"{', '.join(known_tags())}")
    if isinstance(node, yaml.MappingNode):
        options = loader.construct_mapping(node, deep=True)
    elif isinstance(node, yaml.ScalarNode) and node.value == "":
        options = {}
    else:
        raise ConfigError(f"{loader.location(node)}: tag '!{name}' must tag a mapping of options, "
                          f"e.g. !{name} {{...}}")
    try:
        checked = validate_options(spec, options, (f"!{name}",))
    except InvalidValue as error:
        raise ConfigError(f"{loader.location(node)}: {error.message}") from None
    return instantiate_options(spec, checked, record=True)


ConfigLoader.add_multi_constructor("!", _construct_tagged)
# SafeLoader registered its own construct_undefined for unknown tags; use ours (a ConfigError).
ConfigLoader.add_constructor(None, ConfigLoader.construct_undefined)
# YAML 1.1 needs a dot in a float ('1.0e-3'); users write 1e-3 and mean a number.
ConfigLoader.add_implicit_resolver(
    _YAML_TAG_PREFIX + "float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _yaml_problem(error):
    """A one-line description of a PyYAML error."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = error.problem or error.context or "syntax error"
        if mark is not None:
            return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
        return problem
    return " ".join(str(error).split())


def parse_yaml(text, source, show_line=True):
    """Parse YAML text with ConfigLoader; a syntax error is a ConfigError naming `source`."""
    loader = ConfigLoader(text, source=source, show_line=show_line)
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML: {_yaml_problem(error)}") from None
    finally:
        loader.dispose()


def parse_yaml_value(text, source):
    """The value of an `-o key=value` item, parsed as YAML (tags included)."""
    return parse_yaml(text, source, show_line=False)


def load_yaml_file(path):
    """The parsed content of a YAML file; ConfigError when it is missing or unreadable."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {path}")
    if not os.path.isfile(path):
        raise ConfigError(f"config path is not a file: {path}")
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read config file {path}: {error}") from None
    return parse_yaml(text, source=path)


class ConfigDumper(yaml.SafeDumper):
    """yaml.SafeDumper that writes tuples as lists and registered instances as `!Name {...}`."""


def _represent_registered(dumper, obj):
    spec = REGISTRY.spec_of_instance(obj)
    if spec is None:
        raise yaml.representer.RepresenterError(f"cannot write {obj!r} as config YAML")
    return dumper.represent_mapping(f"!{spec.name}", options_of(obj), flow_style=True)


ConfigDumper.add_representer(tuple, lambda dumper, value: dumper.represent_list(list(value)))
ConfigDumper.add_multi_representer(object, _represent_registered)


def dump_yaml(data):
    """Block-style YAML of `data` in insertion order (tags for registered instances)."""
    return yaml.dump(data, Dumper=ConfigDumper, sort_keys=False, default_flow_style=None,
                     allow_unicode=True, width=100)


def flow_value(value):
    """`value` as one line of YAML (what an `-o key=...` or a template line shows)."""
    text = yaml.dump(value, Dumper=ConfigDumper, sort_keys=False, default_flow_style=True,
                     allow_unicode=True, width=10 ** 9).strip()
    if text.endswith("\n..."):
        text = text[:-4].strip()
    elif text == "...":
        text = ""
    return text
