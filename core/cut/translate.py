"""--mode translate for the CUT family (CUT test.py): A -> B for the test A images or the --src images.

Loading and translating are the Python API's (core.cut.translator.OneSidedTranslator), as for every
other consumer of a model; this module adds the file layout. Network flags come from the command
line; for a run of ours, those not given come from the run's config.json, so a small run translates
without repeating --ngf. Output, in CUT's layout: results_dir/name/<phase>_<epoch>/images/real_A
and fake_B/<name>.png, with 8-bit values truncated as the release writes them (util.tensor2im),
the files FID is computed on. Test images are resized to --crop_size (CUT test.py: load_size =
crop_size, no flip).
"""
import io
import os

import torch
from PIL import Image
from tqdm import tqdm

from core.cut.data import domain_folders, eval_transform
from core.cut.translator import OneSidedTranslator
from core.data.images import DataError, check_images, list_images
from core.data.loader import read_image
from core.sampling import output_stems
from core.utils.fileio import atomic_write_bytes

CHUNK = 8   # images per forward pass


def source_images(cfg):
    """(paths, root) to translate: --src (all of it), else the first --num_test A images of --phase."""
    if cfg.src:
        paths = list_images(cfg.src) if os.path.isdir(cfg.src) else [cfg.src]
        root = cfg.src
    else:
        root = domain_folders(cfg, cfg.phase)[0]
        paths = list_images(root)[:cfg.num_test]
    paths = check_images(paths, cfg.skip_bad_images)
    if not paths:
        raise DataError(f'no usable images in {root}')
    return paths, root


def truncated_png(x):
    """(3, H, W) in [-1, 1] -> PNG bytes of floor((x + 1) / 2 * 255), the release's conversion."""
    pixels = ((x.float().clamp(-1, 1) + 1) / 2 * 255).to(torch.uint8)   # float -> uint8 truncates
    buffer = io.BytesIO()
    Image.fromarray(pixels.permute(1, 2, 0).cpu().numpy()).save(buffer, format='PNG')
    return buffer.getvalue()


def translate(cfg):
    """Translate every source image A -> B; returns the output folder (results_dir/name/<phase>_<epoch>/images)."""
    # keep_size: the inputs arrive at the test transform's size (a multiple of 4), and run at it
    model = OneSidedTranslator.from_config(cfg, keep_size=True)
    cfg = model.cfg
    paths, root = source_images(cfg)
    stems = output_stems(paths, root)
    out_dir = os.path.join(cfg.result_dir, f'{cfg.phase}_{cfg.epoch}', 'images')
    for start in tqdm(range(0, len(paths), CHUNK), desc='translate', unit='batch', disable=None, leave=False):
        chunk = paths[start:start + CHUNK]
        x = [eval_transform(read_image(p), cfg.crop_size, cfg.preprocess) for p in chunk]   # (3, H, W) each
        for path, real, fake in zip(chunk, x, model.translate(x, as_tensor=True)):
            for label, image in (('real_A', real), ('fake_B', fake)):
                atomic_write_bytes(os.path.join(out_dir, label, stems[path] + '.png'), truncated_png(image))
    print(f'translate: {len(paths)} images from {root} -> {os.path.join(out_dir, "fake_B")}')
    return out_dir
