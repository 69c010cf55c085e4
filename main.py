"""Command line: parse and validate the flags, check the mode's inputs, then dispatch.

    python main.py --mode train --preset seasons
    python main.py --mode demo
Run with --help for every flag; the modes are each model family's table (core.families; StarGAN v2's is
core.modes.MODES).
"""
import sys

from core.checks import check_inputs
from core.config import parse_config
from core.families import mode_of
from core.utils.device import host_settings
from core.utils.errors import run_cli
from metrics.preflight import metric_weight_errors


def run(argv=None):
    cfg = parse_config(argv)
    if cfg.dry_run:
        print(cfg.to_json())
        return
    mode = mode_of(cfg)
    check_inputs(cfg, mode, metric_weight_errors(cfg))   # input folders and the weight files of its metrics
    mode.run(host_settings(cfg))                         # CPU threads and data-loader workers, decided once


def main(argv=None):
    return run_cli(lambda: run(argv))


if __name__ == '__main__':
    sys.exit(main())
