"""Quality benchmark of a checkpoint on the synthetic data: domain accuracy and structure.

    python bench/quality.py                                   # the demo model (--preset demo --resume_iter latest)
    python bench/quality.py --preset demo --checkpoint expr/checkpoints_demo/000400_nets_ema.ckpt
    python bench/quality.py [main.py flags] [--classifier FILE] [--max_sources N]

Takes the checkpoint and data flags of main.py. A small domain classifier is
trained on the real training images (cached in --fid_stats_dir, or the
--classifier file) and labels latent- and reference-guided translations of
the val images; structure is the edge agreement with the ground-truth
rendering of the same layout in the target domain (metrics.quality). CPU-fast:
seconds for the demo model. The last line is
    domain_acc=<float> structure=<float>
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import parse_config  # noqa: E402
from core.device import resolve_device  # noqa: E402
from core.errors import UserError, run_cli  # noqa: E402
from core.inference import load_model  # noqa: E402
from metrics.quality import MAX_SOURCES_PER_DOMAIN, load_or_train_classifier, quality_scores  # noqa: E402

DEFAULT_FLAGS = ['--preset', 'demo', '--resume_iter', 'latest']


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], add_help=True)
    parser.add_argument('--classifier', default=None, help='classifier file (trained and saved there if missing)')
    parser.add_argument('--max_sources', type=int, default=MAX_SOURCES_PER_DOMAIN,
                        help='val images per domain to translate')
    args, rest = parser.parse_known_args(argv)
    cfg = parse_config(['--mode', 'sample'] + (rest or DEFAULT_FLAGS))   # inference flags only
    for flag in ('train_img_dir', 'val_img_dir'):
        if not os.path.isdir(getattr(cfg, flag)):
            raise UserError(f'--{flag} {getattr(cfg, flag)} is not a folder; for the demo model run '
                            f'python main.py --mode demo first (it makes the synthetic data and trains the model)')
    return args, cfg


def main(argv=None):
    def run():
        args, cfg = parse(sys.argv[1:] if argv is None else argv)
        device = resolve_device(cfg.device)
        nets, cfg = load_model(cfg, device)[:2]
        start = time.perf_counter()
        classifier = load_or_train_classifier(cfg, device, args.classifier)
        print(f'domain classifier {classifier.path}: accuracy on the real val images {classifier.val_acc:.3f}')
        scores = quality_scores(nets, cfg, device, classifier, args.max_sources)
        for key, value in scores.items():
            print(f'{key}: {value:.4f}')
        print(f'({time.perf_counter() - start:.1f} s)')
        print(f'domain_acc={scores["domain_acc"]:.4f} structure={scores["structure"]:.4f}')
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
