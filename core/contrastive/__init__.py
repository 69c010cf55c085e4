"""Registry of patch-wise relation losses (plug-ins) and their shared machinery.

The rule that tells plug-ins from helpers: importing this package imports
every module in it, and a plug-in is exactly a PatchLoss subclass decorated
with @register('name'). A file is a plug-in because it registers one, never
because of its name, so a helper module (base, sampler, objective,
functional, _features, _vgg) needs no mark and appears on no list. A leading
underscore only says that nothing outside this package imports the module.
"""
import importlib
import pkgutil

from core.contrastive.base import (PatchInputs, PatchLoss, config_errors, get, register, registered,
                                   requirement_errors)

for _info in pkgutil.iter_modules(__path__):
    importlib.import_module(f'{__name__}.{_info.name}')

__all__ = ['PatchInputs', 'PatchLoss', 'config_errors', 'get', 'register', 'registered', 'requirement_errors']
