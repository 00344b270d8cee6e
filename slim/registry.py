"""`Registry`: the one kind of name table (op rules, attribute fixers, FLOPs counters,
criteria, strategies, metrics...). Registering is one entry in one place; looking up an
unknown name is a one-line error with a did-you-mean hint and the known names.

    CRITERIA = Registry("pruning criterion", error=PruneError)

    @CRITERIA.register("l1_norm")
    def l1_norm(group, read_param): ...

    CRITERIA.get("l1_nrom")  # PruneError: unknown pruning criterion 'l1_nrom' (did you mean ...

`with_extra({...})` gives a view that adds or overrides entries for one caller without
changing the table (Torch-Pruning's customized pruners).
"""
from slim.errors import UserError, did_you_mean, shorten


class Registry:
    """A table from names to things (functions, classes, specs)."""

    def __init__(self, kind, error=UserError, parent=None):
        """`kind` names what the table holds in errors ('op rule'); `error` is the exception
        class an unknown name raises; `parent` is the table a `with_extra` view falls back to."""
        self.kind = kind
        self.error = error
        self._items = {}
        self._parent = parent

    def register(self, *names):
        """Decorator: register the decorated object under `names` (default: its __name__).
        Registering a name twice is a programming error (ValueError)."""
        def decorate(item):
            for name in names or (item.__name__,):
                self.add(name, item)
            return item
        return decorate

    def add(self, name, item):
        """Register `item` under `name`."""
        if name in self._items:
            raise ValueError(f"{self.kind} '{name}' is registered twice")
        self._items[name] = item

    def get(self, name):
        """The thing registered as `name`; `self.error` naming the known ones otherwise."""
        found = self.find(name)
        if found is None:
            known = self.names()
            raise self.error(f"unknown {self.kind} '{shorten(name)}'{did_you_mean(name, known)}; "
                             f"known: {', '.join(known)}")
        return found

    def find(self, name):
        """The thing registered as `name`, or None."""
        if name in self._items:
            return self._items[name]
        return self._parent.find(name) if self._parent is not None else None

    def names(self):
        """Every registered name, sorted (the parent's too, for a view)."""
        own = set(self._items)
        if self._parent is not None:
            own |= set(self._parent.names())
        return sorted(own, key=str)

    def items(self):
        """(name, thing) pairs, sorted by name; a view's own entries win."""
        return [(name, self.find(name)) for name in self.names()]

    def with_extra(self, extra):
        """A view with `extra` ({name: thing}) added or overriding, this table unchanged."""
        view = Registry(self.kind, self.error, parent=self)
        for name, item in dict(extra or {}).items():
            view._items[name] = item
        return view

    def __iter__(self):
        return iter(self.names())

    def __contains__(self, name):
        return self.find(name) is not None

    def __len__(self):
        return len(self.names())

    def __repr__(self):
        return f"Registry({self.kind!r}, {len(self)} entries)"
