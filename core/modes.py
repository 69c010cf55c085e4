"""The modes of main.py, one entry each: name, runner, input checks, output folders and one line of help.

main.py dispatches through MODES, core.checks.check_inputs runs an entry's
checks, and --mode takes its choices and help from it: adding a mode is one
Mode entry. A runner is named by its module, imported when the mode runs, so
that --help and --dry_run load no training, sampling or metric code, and so
that the modules a mode runs may use the command line (core.config, which
reads this table) without an import cycle.
"""
import importlib
from typing import Callable, Dict, NamedTuple

from core import checks


class Mode(NamedTuple):
    """One --mode."""
    name: str
    runner: str         # 'module:function' doing the mode's work, function(cfg)
    checks: Callable    # checks(cfg) -> [message]: its inputs, each message naming its flag
    outputs: Callable   # outputs(cfg) -> {flag: folder}: the folders it writes (checked writable first)
    help: str           # one line for --help

    def run(self, cfg):
        """Import the runner's module (only now: --help and --dry_run load no mode code) and run it."""
        module, function = self.runner.split(':')
        return getattr(importlib.import_module(module), function)(cfg)


def _table(*modes):
    return {mode.name: mode for mode in modes}


MODES: Dict[str, Mode] = _table(
    Mode('train', 'core.trainer:train', checks.train_errors, checks.train_outputs,
         'train a model on --train_img_dir, or resume one (--resume_iter)'),
    Mode('sample', 'core.sampling:sample', checks.sample_errors, lambda cfg: checks.folders(cfg, 'result_dir'),
         'reference and latent grids and videos of a checkpoint on --src_dir and --ref_dir'),
    Mode('eval', 'metrics.eval:evaluate', checks.eval_errors, lambda cfg: checks.folders(cfg, 'eval_dir'),
         'the --metrics of a checkpoint: one JSON file per metric, latent- and reference-guided'),
    Mode('translate', 'core.sampling:translate', checks.translate_errors, lambda cfg: checks.folders(cfg, 'result_dir'),
         'translate --src images into --trg_domain (random styles) or the style of --ref'),
    # prepare writes beside the data (its checks test those folders); it leaves no temporary files to clean
    Mode('prepare', 'core.data.prepare:prepare', checks.prepare_errors, lambda cfg: {},
         'split --raw_dir into --train_img_dir and --val_img_dir'),
    Mode('demo', 'core.demo:run_demo', checks.training_errors,
         lambda cfg: checks.folders(cfg, 'checkpoint_dir', 'sample_dir', 'result_dir'),
         'synthetic data, a small trained model, its samples and quality figures, in minutes on a CPU'),
    Mode('export', 'core.export:export', checks.export_errors, lambda cfg: checks.folders(cfg, 'out') if cfg.out else {},
         'the generator, mapping network and style encoder of a checkpoint as ONNX files in --out'),
    Mode('app', 'core.app:serve', checks.app_errors, lambda cfg: {},
         'a local web app on --host/--port: latent, reference and interpolation with a trained model'),
)
