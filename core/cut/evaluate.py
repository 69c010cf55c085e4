"""--mode eval for the CUT family: FID of the translated test A images against the real test B images.

The protocol is the one CUT and Hneg_SRC report (`python -m pytorch_fid fake_B
testB`): the TF-Inception (2015-12-05) FID of pytorch-fid / clean-fid, labelled
'standard' in this toolkit (metrics/fid.py). The translations are those of
--mode translate (the first --num_test test A images, CUT's result layout);
both folders are read at --crop_size, the size the test loader gives the
translations (the released test sets are 256 x 256 already). The result goes
to results_dir/name/<phase>_<epoch>/fid_standard.json.

With --seg_scores (Cityscapes label -> photo, --direction BtoA: real_A holds the
label colour maps), the translations are also segmented by DRN-D-22 and scored
against their inputs (metrics/cityscapes_seg.py: mIoU, which Hneg_SRC prints as
"mAP", pixAcc, classAcc), written to seg_scores.json beside the FID.
"""
import json
import os

from core.cut.data import domain_folders
from core.cut.translate import translate
from core.cut.options import with_run_flags
from core.data.images import list_images
from core.utils.device import resolve_device
from core.utils.fileio import atomic_write_text
from metrics.cityscapes_seg import paired_images, segmentation_scores
from metrics.fid import FIDExtractor, fid_given_paths

PROTOCOL = 'standard'
PROTOCOL_LABEL = 'standard: TF-Inception (2015-12-05) FID, as pytorch-fid and clean-fid compute it'


def evaluate(cfg, extractor=None):
    """Translate test A, then FID(real test B, fake B); returns the result dict (also written as JSON).

    extractor: a metrics.fid.FIDExtractor of the standard protocol (built with the cached weights when None).
    """
    cfg = with_run_flags(cfg)
    device = resolve_device(cfg.device)
    out_dir = translate(cfg)
    real_dir, fake_dir = domain_folders(cfg, cfg.phase)[1], os.path.join(out_dir, 'fake_B')
    extractor = extractor or FIDExtractor(PROTOCOL).eval().requires_grad_(False).to(device)
    value = fid_given_paths([real_dir, fake_dir], cfg.crop_size, protocol=PROTOCOL, device=device,
                            extractor=extractor)
    result = {'FID': float(value), 'protocol': PROTOCOL_LABEL, 'feature_network': extractor.identity,
              'real': real_dir, 'fake': fake_dir, 'num_real': len(list_images(real_dir)),
              'num_fake': len(list_images(fake_dir)), 'epoch': cfg.epoch, 'direction': cfg.direction}
    path = os.path.join(os.path.dirname(out_dir), f'fid_{PROTOCOL}.json')
    atomic_write_text(path, json.dumps(result, indent=2) + '\n')
    print(f'eval: FID ({PROTOCOL}, TF-Inception) of {result["num_fake"]} translations against {result["num_real"]} '
          f'images of {real_dir}: {value:.2f} -> {path}')
    if cfg.seg_scores:
        result['segmentation'] = evaluate_segmentation(cfg, out_dir, device)
    return result


def evaluate_segmentation(cfg, out_dir, device, model=None):
    """The Cityscapes scores of fake_B against real_A (the label maps translated), written to seg_scores.json."""
    fakes, labels = paired_images(os.path.join(out_dir, 'fake_B'), os.path.join(out_dir, 'real_A'))
    scores = segmentation_scores(fakes, labels, weights_path=cfg.seg_weights, device=device,
                                 release_quirks=cfg.seg_release_quirks, model=model)
    path = os.path.join(os.path.dirname(out_dir), 'seg_scores.json')
    atomic_write_text(path, json.dumps(scores, indent=2) + '\n')
    print(f'eval: segmentation of {scores["num_images"]} translations ({scores["protocol"]}): mIoU ("mAP") '
          f'{scores["mIoU"]:.1f}, pixAcc {scores["pixAcc"]:.1f}, classAcc {scores["classAcc"]:.1f} -> {path}')
    return scores
