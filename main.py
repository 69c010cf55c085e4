"""Command line: parse and validate the flags, then dispatch to one function per mode.

    python main.py --mode train --preset seasons
    python main.py --mode demo
Run with --help for every flag.
"""
import importlib
import sys

from core.config import parse_config
from core.errors import UserError, run_cli


# mode -> (module, function); imported only when run, so --help and --dry_run stay fast.
MODES = {
    'train': ('core.trainer', 'train'),
    'sample': ('core.sampling', 'sample'),
    'translate': ('core.sampling', 'translate'),
    'eval': ('metrics.eval', 'evaluate'),
    'prepare': ('core.prepare', 'prepare'),
    'demo': ('core.demo', 'run_demo'),
}


def dispatch(cfg):
    """Run the function of cfg.mode."""
    if cfg.mode not in MODES:
        raise UserError(f'--mode {cfg.mode} is not available in this release')
    module, function = MODES[cfg.mode]
    getattr(importlib.import_module(module), function)(cfg)


def run(argv=None):
    cfg = parse_config(argv)
    if cfg.dry_run:
        print(cfg.to_json())
    else:
        dispatch(cfg)


def main(argv=None):
    return run_cli(lambda: run(argv))


if __name__ == '__main__':
    sys.exit(main())
