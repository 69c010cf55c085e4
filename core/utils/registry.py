"""Plug-ins: one Registry per kind (patch losses, metrics), one decorator, one contract for flags.

A plug-in package imports every module in it when it is imported
(import_modules, pkgutil over the package): a module registers its plug-in
with @register('name'), so adding a file adds a plug-in and no list names it.
A plug-in class is a Plugin: it declares its own flags (add_arguments) and
checks their values (validate); the command line asks every registry for the
flags of all its plug-ins and validates the plug-ins a run uses.

A leaf module: it imports nothing of the project but core.utils.errors.
"""
import contextlib
import importlib
import pkgutil

from core.utils.errors import UserError


class UnknownPlugin(UserError):
    """A name under which no plug-in of the kind is registered; the message lists the registered ones."""


class Plugin:
    """The contract every registered class follows; the defaults declare no flag and find no error."""
    name = ''   # the registered name, set by Registry.register

    @classmethod
    def add_arguments(cls, parser):
        """Add this plug-in's own command-line flags (optional)."""

    @classmethod
    def validate(cls, cfg):
        """Errors in the values of this plug-in's own flags, each naming its flag.

        Checks only the flags the plug-in adds in add_arguments (and their
        combination with other flags): a flag is checked where it is declared,
        so no error is reported twice. Pure: no file system, and never cfg.mode;
        the caller decides when a plug-in is in use.
        """
        return []


def import_modules(package, path):
    """Import every module of the package `package` (its __name__) found on `path` (its __path__)."""
    for info in pkgutil.iter_modules(path):
        importlib.import_module(f'{package}.{info.name}')


class Registry:
    """The plug-in classes of one kind by name, filled by the class decorator register(name)."""

    def __init__(self, kind):
        self.kind = kind   # what a plug-in is called in messages, e.g. 'metric'
        self._classes = {}

    def register(self, name):
        """Class decorator: store the class under `name` and set cls.name.

        Registering another class under a taken name is an error; the same class
        again (a module imported twice) is not. A module run as a script
        (python -m metrics.fid) registers nothing: its package copy registers the class.
        """
        def wrap(cls):
            if cls.__module__ == '__main__':
                cls.name = name
                return cls
            old = self._classes.get(name)
            if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ValueError(f'{self.kind} {name!r} is already registered by {old.__module__}.{old.__qualname__}')
            cls.name = name
            self._classes[name] = cls
            return cls
        return wrap

    def registered(self):
        """Sorted names of every registered plug-in."""
        return sorted(self._classes)

    def __contains__(self, name):
        return name in self._classes

    def get(self, name):
        """The class registered under `name`; UnknownPlugin, listing the registered names, if there is none."""
        try:
            return self._classes[name]
        except KeyError:
            raise UnknownPlugin(f'unknown {self.kind} {name!r}; available: {self.available()}') from None

    def available(self):
        """The registered names as a comma-separated list, for messages."""
        return ', '.join(self.registered())

    def add_arguments(self, parser):
        """Add the flags of every registered plug-in to the argparse parser, in name order."""
        for name in self.registered():
            self._classes[name].add_arguments(parser)

    def unknown_errors(self, names, flag):
        """'<flag>: unknown <kind> <name>; available: ...' for each of `names` that is not registered."""
        return [f'{flag}: unknown {self.kind} {name!r}; available: {self.available()}'
                for name in names if name not in self._classes]

    def errors(self, names, check):
        """The messages check(cls) returns for the registered plug-ins among `names`, in name order, each once
        (plug-ins that share flags report the same problem); unknown names are skipped (see unknown_errors)."""
        used = sorted({name for name in names if name in self._classes})
        return list(dict.fromkeys(e for name in used for e in check(self._classes[name])))

    def validation_errors(self, names, cfg):
        """The Plugin.validate(cfg) errors of the plug-ins among `names` (see errors)."""
        return self.errors(names, lambda cls: cls.validate(cfg))

    @contextlib.contextmanager
    def restored(self):
        """Put the table back as it is now when the block ends (tests register throw-away plug-ins in it)."""
        saved = dict(self._classes)
        try:
            yield self
        finally:
            self._classes = saved
