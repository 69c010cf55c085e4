"""Command line: parse and validate the flags, then dispatch to one function per mode.

    python main.py --mode train --preset seasons
    python main.py --mode demo
Run with --help for every flag.
"""
import sys

from core.config import parse_config
from core.errors import UserError


def dispatch(cfg):
    """Run the mode; imports are local so that --help and --dry_run stay fast."""
    if cfg.mode == 'train':
        from core.trainer import train
        train(cfg)
    elif cfg.mode == 'sample':
        from core.sampling import sample
        sample(cfg)
    elif cfg.mode == 'translate':
        from core.sampling import translate
        translate(cfg)
    elif cfg.mode == 'eval':
        from metrics.eval import evaluate
        evaluate(cfg)
    elif cfg.mode == 'prepare':
        from core.prepare import prepare
        prepare(cfg)
    elif cfg.mode == 'demo':
        from core.demo import run_demo
        run_demo(cfg)
    else:
        raise UserError(f'--mode {cfg.mode} is not available in this release')


def main(argv=None):
    try:
        cfg = parse_config(argv)
        if cfg.dry_run:
            print(cfg.to_json())
            return 0
        dispatch(cfg)
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0


if __name__ == '__main__':
    sys.exit(main())
