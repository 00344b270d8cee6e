"""load_config (a detection YAML + `-o` overrides -> a validated Config) and create().

    cfg = load_config("configs/yolov3_mobilenet_v1_voc.yml",
                      ["max_iters=258", "YoloTrainFeed.batch_size=64"])
    cfg.max_iters                       # 258
    cfg["YoloTrainFeed"]["batch_size"]  # 64
    model = create(cfg.architecture, cfg)   # YOLOv3 with MobileNet + YOLOv3Head injected

Steps: read the file with the tag-aware safe loader, apply the overrides to the
raw tree (remembering which keys each one set or created, so an error names the
`-o` item rather than the file), then validate everything once: top-level keys
against `schema.TOP_LEVEL`, each section against its module's options.
"""
import importlib
import re
from collections.abc import Mapping

from slim.config.registry import REGISTRY
from slim.config.schema import TOP_LEVEL
from slim.config.validate import (
    InvalidValue,
    build_instance,
    format_path,
    instantiate_options,
    instantiate_value,
    option_types,
    options_of,
    validate_options,
)
from slim.config.yaml_io import MAX_NESTING, load_yaml_file, parse_yaml_value
from slim.errors import ConfigError, did_you_mean, shorten, shorten_repr

_INDEX = re.compile(r"-?[0-9]+")  # a key segment that addresses a list item by position

# Packages whose import registers the config modules a detection config names.
MODULE_PACKAGES = ("slim.engine.optimizer", "slim.model", "slim.data")


def import_module_packages():
    """Import every package that registers config modules (a package not written yet is skipped)."""
    for package in MODULE_PACKAGES:
        try:
            importlib.import_module(package)
        except ModuleNotFoundError as error:
            if error.name != package:
                raise


class Config(dict):
    """A loaded detection config: top-level keys (defaults filled) and module sections
    (each a dict of that module's options, validated, defaults filled).

    Keys read as attributes too (`cfg.max_iters`). `path` is the file, `overrides` the
    `-o` items applied, `explicit_keys` the top-level keys the file or `-o` set.
    """

    def __init__(self, data=(), path=None, overrides=(), explicit_keys=()):
        super().__init__(data)
        self.path = path
        self.overrides = tuple(overrides)
        self.explicit_keys = frozenset(explicit_keys)

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"config has no key '{name}'") from None


class _Provenance:
    """Which keys each `-o` item set or created, to blame the right source in errors."""

    def __init__(self, path):
        self.path = path
        self._owned = []  # (key path, '-o item')

    def own(self, key_path, source):
        self._owned.append((tuple(key_path), source))

    def describe(self, key_path):
        """'-o item' if an override set or created `key_path` or a parent of it; the file,
        'with -o item' when an override changed something inside `key_path`."""
        key_path = tuple(key_path)
        for owned, source in reversed(self._owned):
            if key_path[:len(owned)] == owned:
                return source
        inside = [source for owned, source in self._owned if owned[:len(key_path)] == key_path]
        if inside:
            return f"{self.path} (with {', '.join(dict.fromkeys(inside))})"
        return self.path


def load_config(path, overrides=()):
    """Load and validate a detection config, applying `-o` overrides (`key=value` strings).

    Raises ConfigError (a one-line message naming the file or the `-o` item) for a
    missing file, invalid YAML, an unknown tag, key or module, a wrongly typed value
    or an override without '='.
    """
    import_module_packages()
    path = str(path)
    raw = load_yaml_file(path)
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{shorten(path)}: a config must be a YAML mapping of keys, "
                          f"got {type(raw).__name__}")
    raw = dict(raw)
    provenance = _Provenance(shorten(path))
    overrides = list(overrides or ())
    for item in overrides:
        apply_override(raw, item, provenance)
    try:
        return _validate_config(raw, path, overrides)
    except InvalidValue as error:
        raise ConfigError(f"{provenance.describe(error.path)}: {error.message}") from None


def _validate_config(raw, path, overrides):
    top_level_values, sections = {}, {}
    for key, value in raw.items():
        if key in TOP_LEVEL.options:
            top_level_values[key] = value
        elif isinstance(key, str) and key in REGISTRY:
            sections[key] = value
        else:
            raise InvalidValue((key,), unknown_top_level_key_message(key))
    top_level = validate_options(TOP_LEVEL, top_level_values, ())
    explicit = {key: top_level[key] for key in top_level_values}
    config = Config(top_level, path=path, overrides=overrides, explicit_keys=explicit)
    for name, section in sections.items():
        config[name] = validate_options(REGISTRY.get(name), section, (name,), shared_values=explicit)
    return config


def unknown_top_level_key_message(key):
    """The error for a top-level key that is neither a top-level option nor a module."""
    hint = did_you_mean(key, list(TOP_LEVEL.options) + REGISTRY.names())
    return (f"unknown key '{shorten(key)}'{hint}; valid top-level keys: {', '.join(TOP_LEVEL.options)}; "
            f"or a module section: {', '.join(REGISTRY.names())}")


def override_source(item):
    """'-o item' as errors name an override (cut and escaped: the item may be huge or hostile)."""
    return f"-o {shorten(item, 100)}"


def parse_override(item):
    """'A.b.c=value' -> (['A', 'b', 'c'], parsed value); ConfigError without '=' or a key."""
    source = override_source(item)
    key, separator, text = str(item).partition("=")
    if not separator:
        raise ConfigError(f"{source}: expected key=value (e.g. YoloTrainFeed.batch_size=64)")
    segments = key.strip().split(".")
    if not all(segment.strip() for segment in segments):
        raise ConfigError(f"{source}: empty key; expected key=value with a dotted key "
                          f"such as YoloTrainFeed.batch_size=64")
    if len(segments) > MAX_NESTING:
        raise ConfigError(f"{source}: the key has {len(segments)} dotted parts; at most "
                          f"{MAX_NESTING} (a config needs a few levels)")
    return [segment.strip() for segment in segments], parse_yaml_value(text, source)


def apply_override(raw, item, provenance=None):
    """Set one `-o key=value` item into the raw config tree `raw` (a dict), in place.

    Dotted keys walk mappings (missing ones are created), lists (by index, or by
    the name of a tagged object in them: `LearningRate.schedulers.PiecewiseDecay.gamma`)
    and tagged objects (rebuilt with the changed option).
    """
    segments, value = parse_override(item)
    source = override_source(item)
    provenance = provenance or _Provenance("<config>")
    _set_path(raw, segments, value, (), source, provenance)


def _set_path(node, segments, value, path, source, provenance):
    """`node` with `segments` set to `value` (a new node only for tagged objects)."""
    key, rest = segments[0], segments[1:]
    if isinstance(node, dict):
        if not rest:
            node[key] = value
            provenance.own(path + (key,), source)
            return node
        child = node.get(key)
        if child is None:
            child = {}
            provenance.own(path + (key,), source)
        node[key] = _set_path(child, rest, value, path + (key,), source, provenance)
        return node
    if isinstance(node, list):
        index = _list_index(node, key, path, source)
        if not rest:
            node[index] = value
        else:
            node[index] = _set_path(node[index], rest, value, path + (index,), source, provenance)
        provenance.own(path + (index,), source)
        return node
    spec = REGISTRY.spec_of_instance(node)
    if spec is not None:
        options = _set_path(options_of(node), segments, value, path, source, provenance)
        try:
            checked = validate_options(spec, options, path or (f"!{spec.name}",))
        except InvalidValue as error:
            raise ConfigError(f"{source}: {error.message}") from None
        return instantiate_options(spec, checked, record=True)
    raise ConfigError(f"{source}: cannot set '{shorten(key)}' inside '{format_path(path)}', "
                      f"which is {shorten_repr(node)}, not a mapping")


def _list_index(items, key, path, source):
    """The index a key segment names in a list: a number, or the tag name of one element."""
    if _INDEX.fullmatch(key):
        # A long digit string is out of range anyway (and int() refuses past 4300 digits).
        index = int(key) if len(key) <= 18 else None
        if index is None or not -len(items) <= index < len(items):
            raise ConfigError(f"{source}: index {shorten(key, 40)} out of range for "
                              f"'{format_path(path)}' ({len(items)} items)")
        return index % len(items)
    names = [getattr(REGISTRY.spec_of_instance(item), "name", None) for item in items]
    named = [i for i, name in enumerate(names) if name == key]
    if len(named) != 1:
        present = [name for name in names if name]
        reason = "no" if not named else "more than one"
        raise ConfigError(f"{source}: '{format_path(path)}' has {reason} item '{shorten(key)}'; "
                          f"address an item by index (0..{len(items) - 1}) or by tag name"
                          + (f" ({', '.join(present)})" if present else ""))
    return named[0]


def create(name, cfg):
    """An instance of the registered module `name` built from `cfg[name]`.

    Options missing from the section take their defaults (or, for `__shared__`
    options, the top-level key of the same name when the config sets it); options
    in `__inject__` naming another module get an instance built from that module's
    section; options annotated with a registered class get an instance built from
    their mapping. `cfg` is a Config from load_config or a plain mapping of the same shape.
    """
    try:
        return _create(name, cfg, ())
    except ConfigError as error:
        # A module's own __init__ check does not know the file: name it here.
        source = getattr(cfg, "path", None)
        source = shorten(source) if source else source
        if source and not str(error).startswith(source):
            raise ConfigError(f"{source}: {error}") from None
        raise


def _create(name, cfg, building):
    if name in building:
        raise ConfigError(f"circular module injection: {' -> '.join(building + (name,))}")
    spec = REGISTRY.get(name)
    if isinstance(cfg, Config):
        explicit = {key: cfg[key] for key in cfg.explicit_keys}
    else:
        explicit = {key: value for key, value in cfg.items() if key in TOP_LEVEL.options}
    try:
        options = validate_options(spec, cfg.get(name) or {}, (name,), shared_values=explicit)
    except InvalidValue as error:
        source = shorten(getattr(cfg, "path", None) or "config")
        raise ConfigError(f"{source}: {error.message}") from None
    annotations = option_types(spec)
    kwargs = {}
    for option, value in options.items():
        if option in spec.inject and isinstance(value, str):
            kwargs[option] = _create(value, cfg, building + (name,))
        else:
            kwargs[option] = instantiate_value(value, annotations.get(option))
    return build_instance(spec, kwargs)
