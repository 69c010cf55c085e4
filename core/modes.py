"""The modes of main.py, one entry each: name, runner, input checks, output folders and one line of help.

main.py dispatches through MODES, core.checks.check_inputs runs an entry's
checks, and --mode takes its choices and help from it: adding a mode is one
Mode entry. A runner imports its module when it runs, so that --help and
--dry_run load no training, sampling or metric code.
"""
from typing import Callable, Dict, NamedTuple

from core import checks


class Mode(NamedTuple):
    """One --mode."""
    name: str
    run: Callable       # run(cfg): the mode's work
    checks: Callable    # checks(cfg) -> [message]: its inputs, each message naming its flag
    outputs: Callable   # outputs(cfg) -> {flag: folder}: the folders it writes (checked writable first)
    help: str           # one line for --help


def _train(cfg):
    from core.trainer import train
    return train(cfg)


def _sample(cfg):
    from core.sampling import sample
    return sample(cfg)


def _eval(cfg):
    from metrics.eval import evaluate
    return evaluate(cfg)


def _translate(cfg):
    from core.sampling import translate
    return translate(cfg)


def _prepare(cfg):
    from core.data.prepare import prepare
    return prepare(cfg)


def _demo(cfg):
    from core.demo import run_demo
    return run_demo(cfg)


def _export(cfg):
    from core.export import export
    return export(cfg)


def _app(cfg):
    from core.app import serve
    return serve(cfg)


def _table(*modes):
    return {mode.name: mode for mode in modes}


MODES: Dict[str, Mode] = _table(
    Mode('train', _train, checks.train_errors, checks.train_outputs,
         'train a model on --train_img_dir, or resume one (--resume_iter)'),
    Mode('sample', _sample, checks.sample_errors, lambda cfg: checks.folders(cfg, 'result_dir'),
         'reference and latent grids and videos of a checkpoint on --src_dir and --ref_dir'),
    Mode('eval', _eval, checks.eval_errors, lambda cfg: checks.folders(cfg, 'eval_dir'),
         'the --metrics of a checkpoint: one JSON file per metric, latent- and reference-guided'),
    Mode('translate', _translate, checks.translate_errors, lambda cfg: checks.folders(cfg, 'result_dir'),
         'translate --src images into --trg_domain (random styles) or the style of --ref'),
    # prepare writes beside the data (its checks test those folders); it leaves no temporary files to clean
    Mode('prepare', _prepare, checks.prepare_errors, lambda cfg: {},
         'split --raw_dir into --train_img_dir and --val_img_dir'),
    Mode('demo', _demo, checks.training_errors,
         lambda cfg: checks.folders(cfg, 'checkpoint_dir', 'sample_dir', 'result_dir'),
         'synthetic data, a small trained model, its samples and quality figures, in minutes on a CPU'),
    Mode('export', _export, checks.export_errors, lambda cfg: checks.folders(cfg, 'out') if cfg.out else {},
         'the generator, mapping network and style encoder of a checkpoint as ONNX files in --out'),
    Mode('app', _app, checks.app_errors, lambda cfg: {},
         'a local web app on --host/--port: latent, reference and interpolation with a trained model'),
)
