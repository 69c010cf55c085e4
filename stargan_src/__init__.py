"""StarGAN v2 + semantic relation losses, importable from anywhere once installed (pip install .).

    from stargan_src import Translator
    model = Translator.load('path/to/checkpoints')

The project's own packages are named `core` and `metrics` and import each other
by those names. An install keeps their files inside this package's folder
(stargan_src/core, stargan_src/metrics), so it never writes a top-level `core`
or `metrics` into site-packages over another distribution's, and binds the
names `core` and `metrics` only in processes that import stargan_src. A
process that already imported a different `core` or `metrics` gets an
ImportError saying so instead of a mix of the two. Import the project through
this package (or, after importing it, as `core.…`), never as `stargan_src.core.…`.
"""
import importlib.util
import os
import sys

PROJECT_PACKAGES = ('core', 'metrics')
_HERE = os.path.dirname(os.path.abspath(__file__))


def _package_folder(name):
    """Where package `name` lives: inside this folder when installed, beside it in the repository."""
    inside = os.path.join(_HERE, name)
    return inside if os.path.isdir(inside) else os.path.join(os.path.dirname(_HERE), name)


def _bind(name):
    """Import the project's package `name` under its own name from its folder; returns the module.

    The module is registered before it runs, as an ordinary import does, so the package's
    own `from core... import` lines find it.
    """
    folder = _package_folder(name)
    found = sys.modules.get(name)
    if found is not None:
        if os.path.dirname(os.path.abspath(getattr(found, '__file__', '') or '')) != folder:
            raise ImportError(f'stargan_src needs the module name {name!r}, but this process already imported '
                              f'another {name!r} ({getattr(found, "__file__", None) or found}); import '
                              f'stargan_src first, or use it in a separate process')
        return found
    spec = importlib.util.spec_from_file_location(name, os.path.join(folder, '__init__.py'),
                                                  submodule_search_locations=[folder])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[name]
        raise
    return module


for _name in PROJECT_PACKAGES:
    _bind(_name)

from core.translator import Translator  # noqa: E402

__all__ = ['Translator']
