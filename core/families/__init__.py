"""Registry of model families (plug-ins): StarGAN v2, CUT. Importing the package registers every family in it.

A file here is a family because it registers a Family subclass with
@register('name') (see base.py for the contract and how a command line picks
its family); adding a family is adding a file, with its networks and training
loop in a package of their own (core/cut/ for CUT).
"""
from core.families.base import (FAMILIES, Family, default_family, family_of, family_of_preset, get, in_order, mode_names,
                                mode_of, presets, register, registered, select)
from core.utils.registry import import_modules

import_modules(__name__, __path__)

__all__ = ['FAMILIES', 'Family', 'default_family', 'family_of', 'family_of_preset', 'get', 'in_order', 'mode_names',
           'mode_of', 'presets', 'register', 'registered', 'select']
