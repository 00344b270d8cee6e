"""YAML in and out: a safe loader that knows the registered module tags, and a dumper.

`ConfigLoader` is a `yaml.SafeLoader` subclass (never an unsafe loader): plain
YAML, plus `!Name {...}` for every registered module with `yaml_tag=True`, which
builds an instance of that class from validated options. Any other tag
(`!Unknown`, `!!python/object:...`) is a ConfigError naming it and the known
tags. It also refuses duplicate keys in a mapping (PyYAML silently keeps the
last one) and reads `1e-3` as a float (YAML 1.1 wants `1.0e-3`).

Hostile input is refused with a one-line ConfigError naming the file (and line) or the
`-o` item, before it can hang, exhaust memory or hit Python's limits: a control
character or NUL byte, nesting deeper than MAX_NESTING levels, anchors and aliases that
expand to more than MAX_EXPANDED_VALUES values or MAX_EXPANDED_CHARACTERS characters
("billion laughs": each alias adds the expanded size of its anchor, measured once per
node, so the check itself is cheap), a recursive alias, an integer literal longer than
MAX_NUMBER_CHARACTERS, a file larger than MAX_CONFIG_BYTES. Date-like scalars stay
strings (no config key takes a date, and PyYAML's date constructor raises on '2001-13-45').
"""
import os
import re
import typing

import yaml

from slim.config.registry import REGISTRY
from slim.config.validate import InvalidValue, instantiate_options, options_of, validate_options
from slim.errors import ConfigError, describe_os_error, did_you_mean, shorten, shorten_repr

_YAML_TAG_PREFIX = "tag:yaml.org,2002:"
_TIMESTAMP_TAG = _YAML_TAG_PREFIX + "timestamp"

MAX_NESTING = 50  # levels of lists/mappings (aliases expanded); a config needs about five
MAX_EXPANDED_VALUES = 10_000  # values with every alias expanded; a config has a few hundred
# Characters of the scalars with every alias expanded: a long string aliased many times.
MAX_EXPANDED_CHARACTERS = 4 * 256 * 1024
MAX_NUMBER_CHARACTERS = 100  # of an integer literal; no key takes a longer number
MAX_CONFIG_BYTES = 256 * 1024  # of a config file or an -o value; configs are a few KB


class _Size(typing.NamedTuple):
    """The size of a YAML node with every alias in it expanded."""
    values: int  # nodes: scalars, lists and mappings
    characters: int  # of the scalars
    levels: int  # of nesting, the node itself included


def known_tags():
    """The `!Name` tags the loader accepts, sorted."""
    return [f"!{spec.name}" for spec in REGISTRY.specs() if spec.yaml_tag]


class ConfigLoader(yaml.SafeLoader):
    """yaml.SafeLoader + the registered module tags; errors name `source` (and the line)."""

    def __init__(self, stream, source="<string>", show_line=True):
        super().__init__(stream)
        self.source = source
        self.show_line = show_line
        self._nesting = 0  # levels of the node being composed
        self._measured = {}  # node -> its _Size with aliases expanded
        self._values = self._characters = 0  # of the document so far, aliases expanded

    def location(self, node):
        """'file:line' of a node (just the source for one-line `-o` values)."""
        return self._mark_location(node.start_mark if node is not None else None)

    def _mark_location(self, mark):
        if self.show_line and mark is not None:
            return f"{self.source}:{mark.line + 1}"
        return self.source

    def compose_node(self, parent, index):
        """PyYAML's compose_node, with nesting and alias expansion bounded (see the module doc)."""
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            node = super().compose_node(parent, index)
            self._count_alias(node, event)
            return node
        self._nesting += 1
        try:
            if self._nesting > MAX_NESTING:
                raise ConfigError(f"{self._mark_location(event.start_mark)}: nested more than "
                                  f"{MAX_NESTING} levels deep (brackets or indentation); a config "
                                  f"needs a few levels")
            node = super().compose_node(parent, index)
        finally:
            self._nesting -= 1
        self._measure(node)
        return node

    def _measure(self, node):
        """Record the expanded size of a node whose children are all measured, and grow the
        document by the node itself (its children were counted as they were composed)."""
        if isinstance(node, yaml.MappingNode):
            children = [child for pair in node.value for child in pair]
        elif isinstance(node, yaml.SequenceNode):
            children = node.value
        else:
            children = ()
        own_characters = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
        values, characters, levels = 1, own_characters, 1
        for child in children:
            size = self._measured[child]
            values += size.values
            characters += size.characters
            levels = max(levels, size.levels + 1)
        self._measured[node] = _Size(values, characters, levels)
        self._grow(1, own_characters, self.location(node))

    def _count_alias(self, node, event):
        """Refuse an alias that makes the document recursive, too large or too deep."""
        where = self._mark_location(event.start_mark)
        alias = f"*{shorten(event.anchor, 60)}"
        size = self._measured.get(node)
        if size is None:  # its anchor's node is still being composed: it contains itself
            raise ConfigError(f"{where}: alias '{alias}' is inside the value its anchor names "
                              f"(a recursive structure); a config value cannot contain itself")
        self._grow(size.values, size.characters, where, alias)
        if self._nesting + size.levels > MAX_NESTING:
            raise ConfigError(f"{where}: alias '{alias}' nests values more than {MAX_NESTING} "
                              f"levels deep; a config needs a few levels")

    def _grow(self, values, characters, where, alias=None):
        """Add to the document's expanded size; past a limit, a ConfigError at `where`."""
        self._values += values
        self._characters += characters
        if self._values > MAX_EXPANDED_VALUES:
            amount = f"{MAX_EXPANDED_VALUES} values"
        elif self._characters > MAX_EXPANDED_CHARACTERS:
            amount = f"{MAX_EXPANDED_CHARACTERS} characters"
        else:
            return
        if alias is None:
            raise ConfigError(f"{where}: more than {amount}; a config has a few hundred values")
        raise ConfigError(f"{where}: alias '{alias}' expands the YAML to more than {amount} "
                          f"(anchors that repeat aliases of anchors multiply); a config has a "
                          f"few hundred values")

    def construct_object(self, node, deep=False):
        """PyYAML's construct_object; a value error from a constructor (e.g. '!!float abc')
        becomes a ConfigError naming the line and the value."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, ArithmeticError) as error:
            value = f" {shorten_repr(node.value)}" if isinstance(node, yaml.ScalarNode) else ""
            raise ConfigError(f"{self.location(node)}: cannot read {_tag_text(node.tag)} "
                              f"value{value}: {shorten(str(error))}") from None

    def construct_yaml_int(self, node):
        """An int, refusing literals so long that Python's int conversion limit (or any
        echo of the number) would fail."""
        if len(node.value) > MAX_NUMBER_CHARACTERS:
            raise ConfigError(f"{self.location(node)}: integer {shorten(node.value, 40)} has "
                              f"{len(node.value)} characters; at most {MAX_NUMBER_CHARACTERS}")
        return super().construct_yaml_int(node)

    def construct_undefined(self, node):
        raise ConfigError(f"{self.location(node)}: YAML tag '{_tag_text(node.tag)}' is not "
                          f"allowed (safe YAML only); known tags: {', '.join(known_tags())}")

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
                    raise ConfigError(f"{self.location(key_node)}: duplicate key '{shorten(key)}' "
                                      f"(first set at line {seen_at})")
                first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def _tag_text(tag):
    """A node's tag as the user wrote it ('!!timestamp' rather than 'tag:yaml.org,2002:...')."""
    if tag.startswith(_YAML_TAG_PREFIX):
        tag = "!!" + tag[len(_YAML_TAG_PREFIX):]
    return shorten(tag, 80)


def _construct_tagged(loader, name, node):
    """`!Name {options}` -> an instance of the registered class `Name`, options validated."""
    spec = REGISTRY.get(name) if name in REGISTRY else None
    if spec is None or not spec.yaml_tag:
        raise ConfigError(f"{loader.location(node)}: unknown tag '!{shorten(name, 80)}'"
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
ConfigLoader.add_constructor(_YAML_TAG_PREFIX + "int", ConfigLoader.construct_yaml_int)
# No config key takes a date: a date-like scalar ('2001-12-14', a save_dir) stays a string,
# and an explicit !!timestamp is an unknown tag rather than a date constructor's ValueError.
ConfigLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP_TAG]
    for first, resolvers in ConfigLoader.yaml_implicit_resolvers.items()}
ConfigLoader.add_constructor(_TIMESTAMP_TAG, ConfigLoader.construct_undefined)


def _yaml_problem(error):
    """A one-line description of a PyYAML error."""
    if isinstance(error, yaml.MarkedYAMLError):
        mark = error.problem_mark or error.context_mark
        problem = shorten(error.problem or error.context or "syntax error")
        if mark is not None:
            return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
        return problem
    return shorten(" ".join(str(error).split()))


def _bad_character_message(text, error, source, show_line):
    """The error for a character YAML does not allow (PyYAML's ReaderError has a position)."""
    position = error.position
    line = text.count("\n", 0, position) + 1
    column = position - (text.rfind("\n", 0, position) + 1) + 1
    code = error.character if isinstance(error.character, int) else ord(error.character)
    if code == 0:
        kind = "a NUL byte"
    elif 0xD800 <= code <= 0xDFFF:
        kind = "an undecodable byte (not UTF-8)"
    elif code < 0x20 or 0x7F <= code <= 0x9F:
        kind = "a control character"
    else:
        kind = "a character"
    where = f"{source}:{line}" if show_line else source
    return (f"{where}: {kind} (U+{code:04X}) at column {column} is not allowed in YAML; "
            f"remove it")


def parse_yaml(text, source, show_line=True):
    """Parse YAML text with ConfigLoader; bad YAML or a refused value is a ConfigError naming
    `source` (a file name or an -o item, as it may be shown: already shortened)."""
    if len(text) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{source}: {len(text)} characters is too long for a config "
                          f"(at most {MAX_CONFIG_BYTES})")
    try:
        loader = ConfigLoader(text, source=source, show_line=show_line)
    except yaml.reader.ReaderError as error:
        raise ConfigError(_bad_character_message(text, error, source, show_line)) from None
    try:
        return loader.get_single_data()
    except yaml.YAMLError as error:
        raise ConfigError(f"{source}: invalid YAML: {_yaml_problem(error)}") from None
    except (ValueError, ArithmeticError) as error:  # a constructor run outside construct_object
        raise ConfigError(f"{source}: invalid value: {shorten(str(error))}") from None
    finally:
        loader.dispose()


def parse_yaml_value(text, source):
    """The value of an `-o key=value` item, parsed as YAML (tags included)."""
    return parse_yaml(text, source, show_line=False)


def load_yaml_file(path):
    """The parsed content of a YAML file; ConfigError when it is missing, unreadable, not
    UTF-8 or larger than MAX_CONFIG_BYTES."""
    path = os.fspath(path)
    name = shorten(path)
    if "\0" in path:
        raise ConfigError(f"config file name '{name}' contains a NUL byte")
    if not os.path.exists(path):
        raise ConfigError(f"config file not found: {name}")
    if not os.path.isfile(path):
        raise ConfigError(f"config path is not a file: {name}")
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_CONFIG_BYTES + 1)
    except OSError as error:
        raise ConfigError(f"cannot read config file: {describe_os_error(error)}") from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{name}: larger than {MAX_CONFIG_BYTES // 1024} KiB; a config file is "
                          f"a few KB of YAML")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        line = data.count(b"\n", 0, error.start) + 1
        raise ConfigError(f"{name}:{line}: not UTF-8 text (byte 0x{data[error.start]:02x}); "
                          f"save the config as UTF-8") from None
    return parse_yaml(text, source=name)


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
