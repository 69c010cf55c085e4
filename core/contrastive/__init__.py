"""Registry of patch-wise relation losses; every module in this package is a plug-in.

Importing the package imports each plug-in module once so that its
@register decorator runs. Private modules (leading underscore) and the
shared plumbing (base, sampler, objective, functional) are skipped.
"""
import importlib
import pkgutil

from core.contrastive.base import (PatchInputs, PatchLoss, config_errors, get, register, registered,
                                   requirement_errors)

_PLUMBING = {'base', 'sampler', 'objective', 'functional'}

for _info in pkgutil.iter_modules(__path__):
    if _info.name.startswith('_') or _info.name in _PLUMBING:
        continue
    importlib.import_module(f'{__name__}.{_info.name}')

__all__ = ['PatchInputs', 'PatchLoss', 'config_errors', 'get', 'register', 'registered', 'requirement_errors']
