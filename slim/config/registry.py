"""The config registry: classes declare their options, YAML and `-o` address them by name.

A class becomes a config module with `@register`. Its options are the keyword
parameters of its `__init__` (name, default, type annotation); option docs come
from the `Args:` section of the class docstring. An option listed in the
class attribute `__inject__` names another registered module (e.g.
`YOLOv3.backbone: MobileNet`) which `create` builds and passes in. An option
listed in `__shared__` (e.g. `num_classes`) takes the top-level config key of
the same name when the module's own section does not set it. A class may
define a classmethod `check_config(options)` that checks the validated options
together (e.g. an order of schedulers) and raises ConfigError naming the key.

    @register
    class MobileNet:
        '''MobileNetV1 backbone.

        Args:
            conv_group_scale: width multiplier of every conv.
        '''
        def __init__(self, conv_group_scale: float = 1.0): ...

Registration happens at import time of the defining module; `Registry` is the
one table, created once, read by the loader, schema checks and `create`.
"""
import contextlib
import dataclasses
import inspect
import re
import typing

from slim.errors import ConfigError, did_you_mean, shorten


class _Required:
    def __repr__(self):
        return "<required>"


REQUIRED = _Required()


@dataclasses.dataclass(frozen=True)
class OptionSpec:
    """One option of a config module."""
    name: str
    default: object
    type: object  # a python type, a typing construct, or None when unannotated
    doc: str = ""

    @property
    def required(self):
        return self.default is REQUIRED


@dataclasses.dataclass(frozen=True)
class ModuleSpec:
    """A registered config module: its class, description and options."""
    name: str
    cls: type
    doc: str
    options: dict
    inject: tuple = ()
    yaml_tag: bool = True  # usable as `!Name {...}` in YAML
    shared: tuple = ()

    @property
    def summary(self):
        """The first paragraph of the description, on one line."""
        return " ".join(self.doc.split("\n\n")[0].split()) if self.doc else ""

    @property
    def category(self):
        """The python module that defines the class (groups `list` output)."""
        return self.cls.__module__


def docstring_parts(cls):
    """(summary, {arg: doc}) from a Google-style class docstring."""
    doc = inspect.getdoc(cls) or ""
    summary_lines, arg_docs, current = [], {}, None
    in_args = False
    for line in doc.splitlines():
        if line.strip() in ("Args:", "Arguments:", "Options:"):
            in_args = True
            continue
        if in_args:
            match = re.match(r"^\s{2,}(\w+)\s*(\([^)]*\))?:\s*(.*)$", line)
            if match:
                current = match.group(1)
                arg_docs[current] = match.group(3).strip()
            elif line.strip() and current and line.startswith(" "):
                arg_docs[current] += " " + line.strip()
            elif line.strip() and not line.startswith(" "):
                in_args = False
        if not in_args:
            summary_lines.append(line)
    return "\n".join(summary_lines).strip(), arg_docs


def module_spec_of(cls, name=None, yaml_tag=True):
    """Build the ModuleSpec of `cls` from its __init__ signature and docstring."""
    summary, arg_docs = docstring_parts(cls)
    options = {}
    signature = inspect.signature(cls.__init__)
    type_hints = resolved_type_hints(cls.__init__)
    for param in list(signature.parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = REQUIRED if param.default is param.empty else param.default
        annotation = None if param.annotation is param.empty else param.annotation
        annotation = type_hints.get(param.name, annotation)
        options[param.name] = OptionSpec(param.name, default, annotation,
                                         arg_docs.get(param.name, ""))
    inject = tuple(getattr(cls, "__inject__", ()))
    shared = tuple(getattr(cls, "__shared__", ()))
    for listed in inject + shared:
        if listed not in options:
            raise ValueError(f"{cls.__name__}: '{listed}' is listed in __inject__/__shared__ "
                             f"but is not an __init__ option")
    return ModuleSpec(name or cls.__name__, cls, summary, options, inject, yaml_tag, shared)


def resolved_type_hints(function):
    """Annotations with string (postponed) annotations evaluated; {} when they cannot be yet
    (a forward reference to a class defined later: the checker resolves such names lazily)."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 -- any failure just means "keep the raw annotations"
        return {}


class Registry:
    """Name -> ModuleSpec table of config modules."""

    def __init__(self):
        self._modules = {}

    def register(self, cls=None, *, name=None, yaml_tag=True):
        """Class decorator: make `cls` a config module (optionally under another `name`)."""
        def decorate(target):
            spec = module_spec_of(target, name, yaml_tag)
            existing = self._modules.get(spec.name)
            if existing is not None and existing.cls is not target:
                if (existing.cls.__module__, existing.cls.__qualname__) != (
                        target.__module__, target.__qualname__):
                    raise ValueError(f"config module '{spec.name}' registered twice: "
                                     f"{existing.cls.__module__} and {target.__module__}")
            self._modules[spec.name] = spec
            return target
        return decorate(cls) if cls is not None else decorate

    def get(self, name):
        """The ModuleSpec called `name`; a ConfigError with a suggestion if there is none."""
        try:
            return self._modules[name]
        except KeyError:
            raise ConfigError(f"unknown module '{shorten(name)}'{did_you_mean(name, self._modules)}; "
                              f"known: {', '.join(sorted(self._modules))}") from None

    def __contains__(self, name):
        return name in self._modules

    def spec_of_class(self, cls):
        """The ModuleSpec registered for exactly `cls`, or None."""
        for spec in self._modules.values():
            if spec.cls is cls:
                return spec
        return None

    def spec_of_instance(self, obj):
        """The ModuleSpec of the registered class of `obj` (exact type), or None."""
        return self.spec_of_class(type(obj))

    @contextlib.contextmanager
    def temporary(self):
        """Registrations made inside the `with` block are undone at its end (for tests that
        register throw-away modules without leaking them into the real table). Import the
        real module packages before entering: a first import inside would be undone too."""
        saved = dict(self._modules)
        try:
            yield self
        finally:
            self._modules.clear()
            self._modules.update(saved)

    def names(self):
        """Registered module names, sorted."""
        return sorted(self._modules)

    def specs(self):
        """Registered ModuleSpecs, sorted by name."""
        return [self._modules[n] for n in self.names()]


REGISTRY = Registry()
register = REGISTRY.register
