"""Quality benchmark of a checkpoint on the synthetic data: domain accuracy, structure and diversity.

    python bench/quality.py                                   # the demo model (--preset demo --resume_iter latest)
    python bench/quality.py --resume_iter 600                 # the demo run's step 600
    python bench/quality.py --preset demo --checkpoint expr/checkpoints_demo/001200_nets_ema.ckpt
    python bench/quality.py [main.py flags] [--classifier FILE] [--max_sources N]

Takes the checkpoint and data flags of main.py. A small domain classifier is
trained on the real training images (cached in --fid_stats_dir, or the
--classifier file) and labels latent- and reference-guided translations of
the val images; structure is the edge agreement with the ground-truth
rendering of the same layout in the target domain; diversity is the spread
of one source's outputs across styles of a domain relative to the real
images' spread (metrics.benchmark). Each figure is printed next to its
reference points: chance and the real images for domain_acc, the unchanged
input and a perfect translation for structure, zero and the real data for
diversity. CPU-fast: seconds for the demo model. The last line is
    domain_acc=<float> structure=<float> diversity=<float> identity_structure=<float>
"""
import argparse
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import parse_config  # noqa: E402
from core.demo import demo_model_flags  # noqa: E402
from core.utils.device import resolve_device  # noqa: E402
from core.utils.errors import UserError, run_cli  # noqa: E402
from core.inference import load_model  # noqa: E402
from metrics.benchmark import MAX_SOURCES_PER_DOMAIN, quality_scores  # noqa: E402
from metrics.classifier import load_or_train_classifier  # noqa: E402

LAST_LINE = ('domain_acc', 'structure', 'diversity', 'identity_structure')


def report(scores):
    """A table: each figure per mode and overall, next to its reference points."""
    gt = 'ground-truth rendering' if scores['structure_ground_truth'] else 'source image (no ground truth)'
    rows = [
        ('domain_acc', f'chance {scores["domain_acc_chance"]:.3f}, '
                       f'real val images {scores["classifier_val_acc"]:.3f}'),
        ('structure', f'input unchanged {scores["identity_structure"]:.3f}, perfect translation 1.000 '
                      f'(edges vs the {gt})'),
        ('diversity', f'one output per source 0.000, real data 1.000 (raw spread {scores["real_spread"]:.3f})'),
    ]
    lines = [f'{"":12s} {"latent":>8s} {"reference":>10s} {"mean":>8s}   reference points']
    for key, refs in rows:
        lines.append(f'{key:12s} {scores[key + "_latent"]:8.3f} {scores[key + "_reference"]:10.3f} '
                     f'{scores[key]:8.3f}   {refs}')
    lines.append(f'({int(scores["num_translations"])} translations for domain_acc and structure)')
    return '\n'.join(lines)


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0], add_help=True)
    parser.add_argument('--classifier', default=None, help='classifier file (trained and saved there if missing)')
    parser.add_argument('--max_sources', type=int, default=MAX_SOURCES_PER_DOMAIN,
                        help='val images per domain to translate')
    args, rest = parser.parse_known_args(argv)
    cfg = parse_config(['--mode', 'sample'] + demo_model_flags(rest))   # inference flags only
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
        print(f'({time.perf_counter() - start:.1f} s)')
        print(report(scores))
        print(' '.join(f'{key}={scores[key]:.4f}' for key in LAST_LINE))
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
