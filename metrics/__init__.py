"""Evaluation metrics. Importing the package registers the built-in metrics (metrics.registry)."""
from metrics import fid, lpips, quality  # noqa: F401  (each module's @register_metric runs on import)
