"""Command line: parse and validate the flags, check the mode's inputs, then dispatch.

    python main.py --mode train --preset seasons
    python main.py --mode demo
Run with --help for every flag.
"""
import sys

from core.checks import check_inputs
from core.config import parse_config
from core.cut.options import is_cut
from core.utils.device import host_settings
from core.utils.errors import run_cli
from metrics.preflight import metric_weight_errors


# One function per --mode (core.config.MODES). Each imports its module when it runs, so that
# --help and --dry_run stay fast.
def _train(cfg):
    if is_cut(cfg):
        from core.cut.trainer import train
    else:
        from core.trainer import train
    train(cfg)


def _sample(cfg):
    from core.sampling import sample
    sample(cfg)


def _translate(cfg):
    if is_cut(cfg):
        from core.cut.inference import translate
    else:
        from core.sampling import translate
    translate(cfg)


def _eval(cfg):
    if is_cut(cfg):
        from core.cut.evaluate import evaluate
    else:
        from metrics.eval import evaluate
    evaluate(cfg)


def _prepare(cfg):
    from core.data.prepare import prepare
    prepare(cfg)


def _demo(cfg):
    if is_cut(cfg):
        from core.cut.demo import run_demo
    else:
        from core.demo import run_demo
    run_demo(cfg)


MODES = {'train': _train, 'sample': _sample, 'translate': _translate, 'eval': _eval,
         'prepare': _prepare, 'demo': _demo}


def run(argv=None):
    cfg = parse_config(argv)
    if cfg.dry_run:
        print(cfg.to_json())
        return
    check_inputs(cfg, metric_weight_errors(cfg))   # input folders and the weight files of its metrics
    MODES[cfg.mode](host_settings(cfg))            # CPU threads and data-loader workers, decided once


def main(argv=None):
    return run_cli(lambda: run(argv))


if __name__ == '__main__':
    sys.exit(main())
