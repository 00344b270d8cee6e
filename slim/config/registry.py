"""The config registry: classes declare their options, YAML and `-o` address them by name.

A class becomes a config module with `@register`. Its options are the keyword
parameters of its `__init__` (name, default, type annotation); option docs come
from the `Args:` section of the class docstring. An option listed in the
class attribute `__inject__` names another registered module (e.g.
`YOLOv3.backbone: MobileNet`) which `create` builds and passes in.

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
import dataclasses
import inspect
import re

from slim.errors import ConfigError, did_you_mean


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


def _docstring_parts(cls):
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
    summary, arg_docs = _docstring_parts(cls)
    options = {}
    signature = inspect.signature(cls.__init__)
    for param in list(signature.parameters.values())[1:]:
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        default = REQUIRED if param.default is param.empty else param.default
        annotation = None if param.annotation is param.empty else param.annotation
        options[param.name] = OptionSpec(param.name, default, annotation,
                                         arg_docs.get(param.name, ""))
    inject = tuple(getattr(cls, "__inject__", ()))
    return ModuleSpec(name or cls.__name__, cls, summary, options, inject, yaml_tag)


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
            raise ConfigError(f"unknown module '{name}'{did_you_mean(name, self._modules)}; "
                              f"known: {', '.join(sorted(self._modules))}") from None

    def __contains__(self, name):
        return name in self._modules

    def names(self):
        return sorted(self._modules)

    def specs(self):
        return [self._modules[n] for n in self.names()]


REGISTRY = Registry()
register = REGISTRY.register
