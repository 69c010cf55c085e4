"""Evaluation metrics. Importing the package imports every module in it, so each metric registers
(metrics.registry); a helper module registers nothing and needs no mark."""
from core.utils.registry import import_modules

import_modules(__name__, __path__)
