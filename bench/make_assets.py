"""Regenerate assets/: representative images and the README's figures, in one command.

    python bench/make_assets.py                 # from the demo run (python main.py --mode demo first)
    python bench/make_assets.py --images_only   # only the representative images (no model needed)
    python bench/make_assets.py [main.py flags] # from another run, e.g. --preset demo --checkpoint FILE

Writes
  assets/representative/synthetic-{seasons,weather}/{src,ref}/<domain>/NN.png
      a few images per domain, rendered by core.data.synthetic from layouts that are
      in no generated train or val folder (val indices from REPRESENTATIVE_START);
      the demo's sample step reads its seasons images (--src_dir/--ref_dir), as
      upstream's sample mode reads assets/representative/<dataset>/.
  assets/demo_reference.jpg   the reference grid of sample mode (labelled)
  assets/demo_latent.jpg      the latent grid at psi 1.0 (labelled)
  assets/demo_video.gif       a preview of video_latent.mp4: a few sources whose
                              style walks through random styles of every domain
                              (enlarged to GIF_MIN_WIDTH pixels wide)
The figures come from the model's EMA networks with --seed, so the same
checkpoint gives the same files. The folder stays well under 2 MB.
"""
import argparse
import os
import shutil
import sys
import tempfile

import numpy as np
from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from core.utils.errors import run_cli  # noqa: E402
from core.data.synthetic import DATASETS, layout_seed, render_scene  # noqa: E402

ASSETS = os.path.join(REPO, 'assets')
REPRESENTATIVE_START = 10000   # val indices of the representative layouts (generated folders use 0, 1, ...)
PER_DOMAIN = 2                 # images per domain in src/ and in ref/
IMG_SIZE = 64                  # of the representative images (sample mode resizes them to the model's img_size)
GIF_MIN_WIDTH = 256            # the GIF is enlarged (whole pixels, no smoothing) to at least this width
GIF_SOURCES = 4                # sources shown in the GIF
GIF_FRAMES = 6                 # frames per style transition in the GIF
GIF_STYLES_PER_DOMAIN = 2


def write_representative(root):
    """Render the representative images under root/representative; returns the number written."""
    count, size = 0, IMG_SIZE
    for dataset, domains in DATASETS.items():
        for part, offset in (('src', 0), ('ref', PER_DOMAIN)):
            for domain in domains:
                folder = os.path.join(root, 'representative', f'synthetic-{dataset}', part, domain)
                shutil.rmtree(folder, ignore_errors=True)
                os.makedirs(folder)
                for k in range(PER_DOMAIN):
                    seed = layout_seed(dataset, domain, 'val', REPRESENTATIVE_START + offset + k)
                    Image.fromarray(render_scene(seed, dataset, domain, size)).save(
                        os.path.join(folder, f'{k:02d}.png'), optimize=True)
                    count += 1
    return count


def gif_frames(translator, cfg):
    """uint8 frames (H, W, 3) of the latent style walk for the first GIF_SOURCES sources."""
    import torch
    from core.sampling import latent_walk_styles, load_domain_batch, walk_frames
    from core.visualize import to_uint8
    src = load_domain_batch(cfg, 'src_dir', translator.device)
    picks = torch.arange(0, src.x.size(0), max(1, src.x.size(0) // GIF_SOURCES))[:GIF_SOURCES]
    styles = latent_walk_styles(translator, cfg.seed, 1.0, GIF_STYLES_PER_DOMAIN)
    return [to_uint8(f).permute(1, 2, 0).cpu().numpy()
            for f in walk_frames(translator, src.x[picks], styles, GIF_FRAMES)]


def write_figures(cfg, root):
    """Sample from the model into a temporary folder, keep two grids in root, and write the GIF there."""
    from core.sampling import follow_run, sample
    from core.translator import Translator
    with tempfile.TemporaryDirectory() as tmp:
        sample(cfg.replace(result_dir=tmp, video_frames=2, labels=True))
        shutil.copy(os.path.join(tmp, 'reference.jpg'), os.path.join(root, 'demo_reference.jpg'))
        shutil.copy(os.path.join(tmp, 'latent_psi_1.0.jpg'), os.path.join(root, 'demo_latent.jpg'))
    translator = Translator.from_config(cfg, verbose=False)
    frames = gif_frames(translator, follow_run(translator.cfg, translator.model.stored, 'gif'))
    scale = max(1, -(-GIF_MIN_WIDTH // frames[0].shape[1]))   # the demo's 32 px frames would be thumbnails
    images = [Image.fromarray(np.ascontiguousarray(f)).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST)
              for f in frames]
    images[0].save(os.path.join(root, 'demo_video.gif'), save_all=True, append_images=images[1:],
                   duration=100, loop=0, optimize=True)


def folder_size(root):
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, files in os.walk(root) for f in files)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--images_only', action='store_true', help='only the representative images')
    parser.add_argument('--out', default=ASSETS, help='the folder to write (default: the repository\'s assets/)')
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)

    def run():
        print(f'{write_representative(args.out)} representative images in {os.path.join(args.out, "representative")}')
        if not args.images_only:
            from core.config import parse_config
            from core.demo import demo_model_flags
            from core.utils.device import host_settings
            write_figures(host_settings(parse_config(['--mode', 'sample'] + demo_model_flags(rest))), args.out)
            print(f'figures: {", ".join(n for n in sorted(os.listdir(args.out)) if n.startswith("demo_"))}')
        print(f'{args.out}: {folder_size(args.out) / 1e6:.2f} MB')
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
