"""Checking option values against their declared types, and building module instances.

`validate_options(spec, values, path)` is the one schema check: YAML sections,
tagged objects (`!PiecewiseDecay {...}`), `-o` overrides and the slim config all
go through it. It raises `InvalidValue` with the path of the bad key; the caller
knows where the value came from (a file, an `-o` item) and turns it into a
one-line ConfigError.

Supported annotations: none (anything goes), bool, int, float (an int is
accepted and converted), str, list / tuple / dict and their typing forms
(`list[int]`, `List[int]`, `Tuple[int, int]`, `Tuple[int, ...]`, `Dict[str, int]`),
`Optional`, `Union` (also `X | Y`), `Literal[...]` (a set of choices), `Any`,
`ModuleName` (the name of a registered module), a registered class (a plain
mapping of its options or a tagged instance) and any other class (isinstance).
"""
import copy
import numbers
import types
import typing
from collections.abc import Mapping

from slim.config.registry import REGISTRY, resolved_type_hints
from slim.errors import ConfigError, did_you_mean, shorten, shorten_repr

# Instances built from config remember their validated options here, so they can be
# dumped back as `!Name {...}` and rebuilt when an `-o` override changes one option.
OPTIONS_ATTRIBUTE = "_config_options"


class InvalidValue(Exception):
    """A key or value at `path` (a tuple of keys and list indexes) is invalid.

    The message is complete but says nothing about the source; the caller adds the
    file name or the `-o` item.
    """

    def __init__(self, path, message):
        super().__init__(message)
        self.path = tuple(path)
        self.message = message


class ModuleName(str):
    """Annotation marker: the value must name a registered config module (e.g. 'YOLOv3')."""


def format_path(path):
    """('LearningRate', 'schedulers', 0, 'gamma') -> 'LearningRate.schedulers[0].gamma', cut
    and escaped for a message (the keys are the user's)."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += ("." if text else "") + shorten(part, 80)
    return shorten(text)


def type_name(annotation):
    """A short human-readable name of an annotation, for error messages and `help`."""
    annotation = _resolve_forward(annotation)
    if annotation is None or annotation is typing.Any:
        return "any"
    if annotation is ModuleName:
        return "module name"
    if annotation is type(None):
        return "None"
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(origin):
        return " or ".join(type_name(a) for a in args)
    if origin in (list, tuple, dict, set, frozenset):
        if not args:
            return origin.__name__
        inner = ", ".join("..." if a is Ellipsis else type_name(a) for a in args)
        return f"{origin.__name__}[{inner}]"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation)


def _is_union(origin):
    return origin is typing.Union or origin is types.UnionType


def _resolve_forward(annotation):
    """A string / ForwardRef annotation naming a registered module -> that class."""
    if isinstance(annotation, typing.ForwardRef):
        annotation = annotation.__forward_arg__
    if isinstance(annotation, str):
        if annotation in REGISTRY:
            return REGISTRY.get(annotation).cls
        builtin = {"int": int, "float": float, "str": str, "bool": bool, "list": list,
                   "dict": dict, "tuple": tuple}.get(annotation)
        if builtin is None:
            raise TypeError(f"cannot resolve the annotation {annotation!r} of a config option")
        return builtin
    return annotation


def _describe(value):
    """'5 (int)': the value, cut for a message, and its type."""
    return f"{shorten_repr(value)} ({type(value).__name__})"


def _registered_subclass_tags(base):
    return sorted(f"!{spec.name}" for spec in REGISTRY.specs()
                  if spec.yaml_tag and issubclass(spec.cls, base))


def check_value(value, annotation, path, default=None):
    """`value` checked against `annotation` (converted where lossless: int -> float,
    YAML list -> tuple); raises InvalidValue naming the key, the value and the expected type.

    `default` is the option's default: a mapping given for a registered-class option
    fills its missing keys from the default instance (e.g. an eval feed's dataset
    keeps annotation test.txt), not from the class's own defaults.
    """
    annotation = _resolve_forward(annotation)
    key = format_path(path)
    if annotation is None or annotation is typing.Any or annotation is object:
        return value
    if annotation is ModuleName:
        if not isinstance(value, str) or value not in REGISTRY:
            hint = did_you_mean(value, REGISTRY.names()) if isinstance(value, str) else ""
            raise InvalidValue(path, f"key '{key}': {_describe(value)} is not a registered module"
                                     f"{hint}; known: {', '.join(REGISTRY.names())}")
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return check_value(value, args[0], path)
    if _is_union(origin):
        return _check_union(value, annotation, args, path, default)
    if origin is typing.Literal:
        for choice in args:
            if value == choice and type(value) is type(choice):
                return value
        raise InvalidValue(path, f"key '{key}': {shorten_repr(value)} is not {type_name(annotation)}"
                                 f"{_choice_hint(value, args)}")
    if origin in (list, set, frozenset) or annotation in (list, set, frozenset):
        return _check_list(value, annotation, origin or annotation, args, path)
    if origin is tuple or annotation is tuple:
        return _check_tuple(value, annotation, args, path)
    if origin in (dict, Mapping) or annotation in (dict, Mapping):
        return _check_dict(value, annotation, args, path)
    if annotation is type(None):
        if value is not None:
            raise InvalidValue(path, f"key '{key}' must be None, got {_describe(value)}")
        return None
    if annotation is bool:
        if not isinstance(value, bool):
            raise InvalidValue(path, f"key '{key}' must be bool (true/false), got {_describe(value)}")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidValue(path, f"key '{key}' must be int, got {_describe(value)}")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            raise InvalidValue(path, f"key '{key}' must be float, got {_describe(value)}")
        return float(value)
    if annotation is str:
        if not isinstance(value, str):
            raise InvalidValue(path, f"key '{key}' must be str, got {_describe(value)}")
        return value
    if isinstance(annotation, type):
        spec = REGISTRY.spec_of_class(annotation)
        if spec is not None:
            return _check_registered(value, spec, path, default)
        if isinstance(value, annotation):
            return value
        tags = _registered_subclass_tags(annotation)
        expected = f"a {annotation.__name__} object" + (f" ({', '.join(tags)})" if tags else "")
        raise InvalidValue(path, f"key '{key}' must be {expected}, got {_describe(value)}")
    raise TypeError(f"unsupported annotation {annotation!r} on config option '{key}'")


def _choice_hint(value, choices):
    """' (did you mean 'VOC'?)' for 'voc' or a near spelling among string choices."""
    if not isinstance(value, str):
        return ""
    strings = [c for c in choices if isinstance(c, str)]
    same_but_case = [c for c in strings if c.lower() == value.lower()]
    if same_but_case:
        return f" (did you mean '{same_but_case[0]}'?)"
    return did_you_mean(value, strings)


def _check_union(value, annotation, args, path, default):
    if value is None and type(None) in args:
        return None
    candidates = [a for a in args if a is not type(None)]
    if len(candidates) == 1:
        return check_value(value, candidates[0], path, default)
    # Try exact types first so 1 stays an int under Union[float, int] and
    # 'auto' matches Literal['auto'] under Union[int, Literal['auto']].
    for candidate in candidates:
        try:
            return check_value(value, candidate, path)
        except InvalidValue:
            continue
    raise InvalidValue(path, f"key '{format_path(path)}' must be {type_name(annotation)}, "
                             f"got {_describe(value)}")


def _check_list(value, annotation, container, args, path):
    if not isinstance(value, (list, tuple)):
        raise InvalidValue(path, f"key '{format_path(path)}' must be {type_name(annotation)} "
                                 f"(a YAML list), got {_describe(value)}")
    item_type = args[0] if args else None
    items = [check_value(item, item_type, path + (i,)) for i, item in enumerate(value)]
    return items if container is list else container(items)


def _check_tuple(value, annotation, args, path):
    if not isinstance(value, (list, tuple)):
        raise InvalidValue(path, f"key '{format_path(path)}' must be {type_name(annotation)} "
                                 f"(a YAML list), got {_describe(value)}")
    if not args:
        return tuple(value)
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(check_value(item, args[0], path + (i,)) for i, item in enumerate(value))
    if len(value) != len(args):
        raise InvalidValue(path, f"key '{format_path(path)}' must be {type_name(annotation)} "
                                 f"({len(args)} items), got {len(value)} items: {shorten_repr(value)}")
    return tuple(check_value(item, item_type, path + (i,))
                 for i, (item, item_type) in enumerate(zip(value, args)))


def _check_dict(value, annotation, args, path):
    if not isinstance(value, Mapping):
        raise InvalidValue(path, f"key '{format_path(path)}' must be {type_name(annotation)} "
                                 f"(a YAML mapping), got {_describe(value)}")
    key_type, value_type = (args if len(args) == 2 else (None, None))
    return {check_value(k, key_type, path + (k,)): check_value(v, value_type, path + (k,))
            for k, v in value.items()}


def _check_registered(value, spec, path, default):
    if isinstance(value, spec.cls):
        return value
    if isinstance(value, Mapping):
        base = {}
        if isinstance(default, spec.cls):
            base = options_of(default)
        elif isinstance(default, Mapping):
            base = dict(default)
        return validate_options(spec, {**base, **value}, path)
    raise InvalidValue(path, f"key '{format_path(path)}' must be a mapping of {spec.name} options "
                             f"(or !{spec.name} {{...}}), got {_describe(value)}")


def option_types(spec):
    """{option: annotation} of a module, with late-resolvable string annotations resolved."""
    types_by_name = {name: option.type for name, option in spec.options.items()}
    if any(isinstance(t, str) for t in types_by_name.values()):
        hints = resolved_type_hints(spec.cls.__init__)
        types_by_name.update({k: v for k, v in hints.items() if k in types_by_name})
    return types_by_name


def validate_options(spec, values, path, shared_values=None):
    """The checked options of module `spec` from the mapping `values`, defaults filled in.

    `path` locates the mapping (for messages); `shared_values` are top-level keys the
    user set, used for options listed in the module's `__shared__` when `values`
    lacks them. Raises InvalidValue for an unknown key (with a close-match hint), a
    missing required key or a wrongly typed value; then runs the class's optional
    `check_config(options)` hook, which raises ConfigError (about the whole mapping)
    or InvalidValue (with the path of the offending key, relative to the mapping).
    """
    location = format_path(path) or spec.name
    if values is None:
        values = {}
    if isinstance(values, spec.cls) and REGISTRY.spec_of_class(spec.cls) is spec:
        values = options_of(values)  # a section written as a tagged object: `X: !X {...}`
    if not isinstance(values, Mapping):
        raise InvalidValue(path, f"'{location}' must be a mapping of {spec.name} options, "
                                 f"got {_describe(values)}")
    for key in values:
        if key not in spec.options:
            raise InvalidValue(path + (key,), unknown_key_message(
                key, spec.options, f"{spec.name} ('{location}')" if location != spec.name
                else spec.name))
    annotations = option_types(spec)
    checked = {}
    for name, option in spec.options.items():
        if name in values:
            raw = values[name]
        elif shared_values and name in spec.shared and name in shared_values:
            raw = shared_values[name]
        elif option.required:
            raise InvalidValue(path + (name,), f"missing required key '{name}' in {location} "
                                               f"({type_name(annotations[name])})")
        else:
            checked[name] = _default_value(option.default, annotations[name], path + (name,))
            continue
        if raw is None and option.default is None:
            checked[name] = None
        elif name in spec.inject:
            checked[name] = _check_injected(raw, annotations[name], path + (name,))
        else:
            checked[name] = check_value(raw, annotations[name], path + (name,), option.default)
    hook = getattr(spec.cls, "check_config", None)
    if callable(hook):
        try:
            hook(checked)
        except InvalidValue as error:  # a hook that names the key (relative to the mapping)
            message = f"{location}: {error.message}" if path else error.message
            raise InvalidValue(path + error.path, message) from None
        except ConfigError as error:
            raise InvalidValue(path, f"{location}: {error}") from None
    return checked


def _default_value(default, annotation, path):
    """A fresh copy of a default, in the annotated form (a tuple default of a list option
    becomes a list) so a default and the same value from YAML compare equal."""
    default = copy.deepcopy(default)
    if default is None:
        return None
    try:
        return check_value(default, annotation, path)
    except InvalidValue:  # a module's default that does not fit its own annotation: keep it
        return default


def unknown_key_message(key, valid_keys, owner):
    """"unknown key 'x' in Owner (did you mean 'y'?); valid keys: ..." (owner None: top level)."""
    where = f" in {owner}" if owner else ""
    return (f"unknown key '{shorten(key)}'{where}{did_you_mean(key, valid_keys)}; "
            f"valid keys: {', '.join(valid_keys) or '(none)'}")


def _check_injected(value, annotation, path):
    """An injected option holds a module name, a tagged instance, or (when annotated with a
    registered class) a mapping of that class's options."""
    if isinstance(value, str):
        return check_value(value, ModuleName, path)
    if REGISTRY.spec_of_instance(value) is not None:
        return value
    if annotation is not None:
        return check_value(value, annotation, path)
    raise InvalidValue(path, f"key '{format_path(path)}' must name a registered module, "
                             f"got {_describe(value)}")


def build_instance(spec, kwargs, record=None):
    """`spec.cls(**kwargs)`; with `record`, the instance remembers those config options
    (tagged YAML objects do, so they can be dumped back and changed by `-o`)."""
    instance = spec.cls(**kwargs)
    if record is not None:
        try:
            setattr(instance, OPTIONS_ATTRIBUTE, dict(record))
        except AttributeError:  # frozen or __slots__ classes: options_of reads attributes
            pass
    return instance


def options_of(instance):
    """The config options an instance of a registered class was built with.

    Recorded at build time; otherwise read from attributes named like the options
    (the PaddleDetection convention), skipping any the instance does not have.
    """
    recorded = getattr(instance, OPTIONS_ATTRIBUTE, None)
    if recorded is not None:
        return dict(recorded)
    spec = REGISTRY.spec_of_instance(instance)
    if spec is None:
        raise TypeError(f"{type(instance).__name__} is not a registered config module")
    return {name: getattr(instance, name) for name in spec.options if hasattr(instance, name)}


def instantiate_value(value, annotation):
    """Turn validated option mappings of registered-class options into instances, recursively."""
    annotation = _resolve_forward(annotation)
    if value is None or annotation is None:
        return value
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if _is_union(origin):
        registered = [a for a in args if isinstance(a, type) and REGISTRY.spec_of_class(a)]
        if isinstance(value, Mapping) and len(registered) == 1:
            return instantiate_value(value, registered[0])
        return value
    if origin in (list, tuple, set, frozenset) and args and isinstance(value, (list, tuple)):
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return tuple(instantiate_value(v, a) for v, a in zip(value, args))
        item_type = args[0]
        return type(value)(instantiate_value(v, item_type) for v in value)
    if origin in (dict, Mapping) and len(args) == 2 and isinstance(value, Mapping):
        return {k: instantiate_value(v, args[1]) for k, v in value.items()}
    if isinstance(annotation, type) and isinstance(value, Mapping):
        spec = REGISTRY.spec_of_class(annotation)
        if spec is not None:
            return instantiate_options(spec, value)
    return value


def instantiate_options(spec, options, record=False):
    """An instance of `spec.cls` from already-validated options (nested mappings built too);
    `record` makes it remember `options` (see build_instance)."""
    annotations = option_types(spec)
    kwargs = {name: instantiate_value(value, annotations.get(name)) for name, value in options.items()}
    return build_instance(spec, kwargs, record=options if record else None)
