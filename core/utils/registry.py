"""Tables of classes filled by a class decorator: the patch-loss plug-ins and the metrics.

A leaf module: it imports nothing of the project.
"""


def registrar(table, kind):
    """A decorator factory: @register(name) stores the class in table() under `name` and sets cls.name.

    table is called at every registration (not captured once), so a test can swap the
    module's table for a copy. Registering another class under a taken name is an error;
    the same class again (a module imported twice) is not.
    """
    def register(name):
        def wrap(cls):
            entries = table()
            old = entries.get(name)
            if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
                raise ValueError(f'{kind} {name!r} is already registered by {old.__module__}.{old.__qualname__}')
            cls.name = name
            entries[name] = cls
            return cls
        return wrap
    return register
