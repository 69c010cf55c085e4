"""--mode demo --preset demo-cut: the CUT family on a laptop CPU in a few minutes, summer -> winter.

Synthetic seasons (core.data.synthetic; more val images than StarGAN v2's demo
uses, so that one direction's accuracy is read from enough translations) -> a
small CUT trained with Single-modal's SRC + hDCE -> --mode translate of the
summer val images -> the quality figures with their reference points: domain
accuracy (a classifier trained on the real images only, metrics.classifier) and
structure (edge agreement with the same layout rendered in winter) against
returning the input unchanged. Running it again reuses the data and the run.
"""
import os
import time

import torch

from core.cut.data import domain_folders, eval_transform
from core.cut.inference import load_generator
from core.cut.translate import translate
from core.cut.trainer import train
from core.data.images import check_images, list_domains, list_images
from core.data.loader import read_image
from core.data.synthetic import make_dataset
from core.utils.device import resolve_device
from core.utils.errors import UserError
from metrics.classifier import accuracy, load_or_train_classifier
from metrics.structure import edge_agreement, structure_targets, synthetic_params

DEMO_TRAIN_PER_DOMAIN = 60
DEMO_VAL_PER_DOMAIN = 32


def quality_cfg(cfg):
    """The fields the quality metrics read, for the synthetic tree under --dataroot; the domain classifier is
    cached in checkpoints_dir/quality."""
    root = cfg.dataroot
    return cfg.replace(train_img_dir=os.path.join(root, 'train'), val_img_dir=os.path.join(root, 'val'),
                       img_size=cfg.crop_size, fid_stats_dir=os.path.join(cfg.checkpoints_dir, 'quality'))


@torch.no_grad()
def quality_scores(G, cfg, device):
    """Domain accuracy and structure of G on the val A images, with their reference points (a dict of floats)."""
    qcfg = quality_cfg(cfg)
    classifier = load_or_train_classifier(qcfg, device)
    dir_a, _, (name_a, name_b) = domain_folders(cfg, 'val')
    paths = check_images(list_images(dir_a))
    x_src = torch.stack([eval_transform(read_image(p), cfg.crop_size, cfg.preprocess) for p in paths]).to(device)
    x_fake = G(x_src)
    target, is_gt = structure_targets(synthetic_params(qcfg.val_img_dir), paths, [name_a] * len(paths), name_b,
                                      x_src, cfg.crop_size)
    label = torch.full((len(paths),), list_domains(qcfg.train_img_dir).index(name_b))
    return {'domain_acc': accuracy(classifier.model, x_fake, label),
            'domain_acc_input': accuracy(classifier.model, x_src, label),
            'domain_acc_chance': 1 / len(list_domains(qcfg.train_img_dir)),
            'classifier_val_acc': classifier.val_acc,
            'structure': float(edge_agreement(x_fake, target).mean()),
            'identity_structure': float(edge_agreement(x_src, target).mean()),
            'structure_ground_truth': float(is_gt), 'num_translations': float(len(paths))}


def report_quality(cfg, device):
    """Print the quality figures of the run's latest generator next to their reference points."""
    G, _ = load_generator(cfg.replace(epoch='latest'), device)
    s = quality_scores(G, cfg, device)
    print(f'demo: quality of {int(s["num_translations"])} val translations {cfg.direction} '
          f'({",".join(domain_folders(cfg, "val")[2])}):\n'
          f'  domain_acc {s["domain_acc"]:.3f}  (inputs unchanged {s["domain_acc_input"]:.2f}, chance '
          f'{s["domain_acc_chance"]:.2f}, real images {s["classifier_val_acc"]:.2f})\n'
          f'  structure  {s["structure"]:.3f}  (input unchanged {s["identity_structure"]:.3f}, perfect 1)')
    return s


def run_demo(cfg):
    """Make the data if needed, train (or resume) the demo model, translate the val A images, report quality."""
    try:
        make_dataset('seasons', cfg.dataroot, num_train=DEMO_TRAIN_PER_DOMAIN, num_val=DEMO_VAL_PER_DOMAIN,
                     img_size=cfg.crop_size)
    except (FileExistsError, NotADirectoryError, ValueError) as err:
        raise UserError(f'cannot prepare the demo data in {cfg.dataroot}: {err}') from None
    start = time.perf_counter()
    train(cfg.replace(mode='train', resume_iter='latest'))
    print(f'demo: training took {time.perf_counter() - start:.0f} s')
    translate(cfg.replace(mode='translate', phase='val', epoch='latest'))
    scores = report_quality(cfg, resolve_device(cfg.device))
    print(f'demo: the run is in {cfg.checkpoint_dir} (sample grids in {cfg.sample_dir}), '
          f'translations in {cfg.result_dir}')
    return scores
