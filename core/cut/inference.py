"""--mode translate for the CUT family (CUT test.py): A -> B for the test A images or the --src images.

The model is checkpoints_dir/name/<epoch>_net_G.pth (--epoch latest, best, 5,
...), a plain state_dict as the release saves it and as this family's
training writes it beside its checkpoints; it loads strictly. Network flags
come from the command line; for a run of ours, those not given come from the
run's config.json, so a small run translates without repeating --ngf. Loading
and translating are the Python API's (core.cut.translator.OneSidedTranslator),
as for every other consumer of a model; this module adds the file layout.
Output, in CUT's layout: results_dir/name/<phase>_<epoch>/images/real_A and
fake_B/<name>.png, with 8-bit values truncated as the release writes them
(util.tensor2im), the files FID is computed on. Test images are resized to
--crop_size (CUT test.py: load_size = crop_size, no flip).
"""
import io
import os
import re

import torch
from PIL import Image
from tqdm import tqdm

from core.checkpoint import DamagedCheckpoint, first_bad_tensor, load_modules
from core.cut.data import domain_folders, eval_transform
from core.cut.networks import GENERATOR_BLOCKS
from core.cut.options import generator_path
from core.cut.trainer import build_generator
from core.data.images import DataError, check_images, list_images
from core.data.loader import read_image
from core.sampling import output_stems
from core.utils.fileio import ModelFileError, atomic_write_bytes, safe_load

CHUNK = 8   # images per forward pass


def stored_netG(state, default):
    """The --netG whose residual-block count the state_dict has (its model.<i>.conv_block keys), else default.

    The default --netG follows --crop_size; a released resnet_9blocks model translated at another
    size keeps its 9 blocks.
    """
    blocks = {m.group(1) for k in state for m in [re.match(r'(?:module\.)?model\.(\d+)\.conv_block\.', k)] if m}
    return next((name for name, n in GENERATOR_BLOCKS.items() if n == len(blocks)), default)


FLAGS_HINT = ('Pass the flags the model was trained with (--netG, --ngf, --normG, --no_antialias, '
              '--no_antialias_up, --no_dropout).')


def stored_ngf(state):
    """The generator width (--ngf) of a state_dict: the output channels of its first convolution, or None."""
    weight = state.get('model.1.weight', state.get('module.model.1.weight'))
    return int(weight.shape[0]) if torch.is_tensor(weight) and weight.dim() == 4 else None


def load_generator(cfg, device, hint=FLAGS_HINT):
    """(the generator of generator_path(cfg), strictly loaded, in eval mode on `device`; cfg with the --netG
    it was built with). hint: what to do when the file does not fit the flags."""
    path = generator_path(cfg)
    state = safe_load(path)
    if not isinstance(state, dict):
        raise DamagedCheckpoint(f'{path} does not hold a state_dict')
    bad = first_bad_tensor(state)
    if bad is not None:
        raise DamagedCheckpoint(f'{path} holds {bad[1]} ({bad[0]}); it cannot be used')
    if 'netG' not in cfg.facts.explicit_flags:
        cfg = cfg.replace(netG=stored_netG(state, cfg.netG))
    mismatch = f'{path} does not match the networks built from the current flags'
    width = stored_ngf(state)
    if width is not None and width != cfg.ngf:   # the usual mistake, said plainly
        raise ModelFileError(f'{mismatch}: its generator has width {width} (ngf), not {cfg.ngf}. {hint}')
    G = build_generator(cfg)
    try:
        load_modules({'G': G}, {'G': state}, path, hint)
    except ModelFileError as err:   # one line: the first keys that differ, then the hint
        raise ModelFileError(' '.join(line.strip() for line in str(err).splitlines())) from None
    return G.to(device).eval(), cfg


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
    from core.cut.translator import OneSidedTranslator   # it builds on this module
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
