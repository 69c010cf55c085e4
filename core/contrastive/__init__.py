"""Registry of patch-wise relation losses (plug-ins) and their shared machinery.

The rule that tells plug-ins from helpers: importing this package imports
every module in it (core.utils.registry.import_modules, as metrics/ does), and
a plug-in is exactly a PatchLoss subclass decorated with @register('name'). A
file is a plug-in because it registers one, never because of its name, so a
helper module (base, sampler, objective, functional, _features, _vgg) needs no
mark and appears on no list. A leading underscore only says that nothing
outside this package imports the module.
"""
from core.contrastive.base import (PATCH_LOSSES, PatchInputs, PatchLoss, config_errors, get, register, registered,
                                   requirement_errors)
from core.utils.registry import import_modules

import_modules(__name__, __path__)

__all__ = ['PATCH_LOSSES', 'PatchInputs', 'PatchLoss', 'config_errors', 'get', 'register', 'registered',
           'requirement_errors']
