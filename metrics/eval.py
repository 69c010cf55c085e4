"""--mode eval and --eval_every: FID and LPIPS of latent- and reference-guided translations.

The protocol of StarGAN v2 (and of the SRC paper's Table 2), per mode m in
{latent, reference} and task <src>2<trg> (every ordered pair of domains):
  * every val image of src is translated num_outs_per_domain (10) times into
    trg, with random styles F(z, trg) (latent) or the styles E(x_ref, trg) of
    val images of trg (reference; each output of each source its own reference);
  * LPIPS: the mean distance over all pairs of a source's outputs, averaged
    over sources, then over tasks;
  * FID: the outputs against all *training* images of trg, then the mean over tasks.
Files in --eval_dir, with upstream's names and keys:
  LPIPS_{step:05d}_{m}.json       LPIPS_{m}/<src>2<trg>, LPIPS_{m}/mean
  FID_{step:05d}_{m}.json         FID_{m}/<src>2<trg>, FID_{m}/mean  (--fid_protocol stargan-v2)
  FID_standard_{step:05d}_{m}.json  the same keys                   (--fid_protocol standard)
Each FID file also holds "protocol" and "feature_network", each LPIPS file "network".

Fixes of the upstream loop: fakes stay in memory (PNG files only with
--save_eval_images, one folder per mode, eval_dir/<m>/<src>2<trg>/, so the
reference pass no longer wipes the latent one); sources are read in file
order and every z and reference choice comes from --seed, so equal seeds give
equal numbers; a target with fewer val images than --val_batch_size works;
the feature networks are built once; real statistics are cached
(metrics.stats_cache); it runs on the CPU. Differences in the numbers: LPIPS
averages over sources (upstream averages per batch, so a smaller last batch
weighs more; equal when the val count is a multiple of --val_batch_size), and
the Frechet distance uses an eigen-decomposition instead of scipy's sqrtm
(equal up to rounding, see metrics.fid.frechet_distance). Images are read as
for training (core.data_loader.load_rgb: EXIF orientation applied, transparency
composited onto white, every image extension), where upstream only converts
.png/.jpg/.jpeg/.JPG files to RGB; ordinary RGB photos are read identically.
"""
import json
import os
import re
import shutil
import time

import numpy as np
import torch
from munch import Munch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from core.data_loader import EvalDataset
from core.device import resolve_device
from core.fileio import atomic_write_text
from core.images import DataError, check_images, domain_tree, list_images
from core.inference import load_model, style_codes, translate_styles
from core.manifest import verify_manifest
from core.seeding import STREAM_EVAL, step_generator
from metrics.fid import build_fid_extractors, feature_stats, frechet_distance, quantize
from metrics.lpips import LPIPS_NAME, build_lpips, lpips_diversity
from metrics.stats_cache import real_statistics

EVAL_MODES = ('latent', 'reference')
STYLE_CHUNK = 256   # reference images per style-encoder batch


def fid_file_name(protocol, step, mode):
    """Upstream's FID_{step:05d}_{mode}.json for the stargan-v2 protocol; FID_standard_... otherwise."""
    prefix = 'FID' if protocol == 'stargan-v2' else 'FID_standard'
    return f'{prefix}_{step:05d}_{mode}.json'


def lpips_file_name(step, mode):
    """Upstream's LPIPS_{step:05d}_{mode}.json."""
    return f'LPIPS_{step:05d}_{mode}.json'


def write_json(path, values):
    """Upstream's layout (indent 4, insertion order), written atomically."""
    atomic_write_text(path, json.dumps(values, indent=4) + '\n')


# ----------------------------------------------------------------------------------------------
# Set-up shared by both modes
# ----------------------------------------------------------------------------------------------

def build_eval_tools(cfg, device, pretrained=True):
    """The feature networks of one evaluation: LPIPS and one Inception per FID protocol.

    pretrained=False gives randomly initialised networks (tests, benchmarks).
    """
    return Munch(lpips=build_lpips(device, pretrained),
                 fid=build_fid_extractors(cfg.fid_protocol, device, pretrained))


def eval_domains(cfg):
    """Domain names of --val_img_dir, checked against the model and --train_img_dir."""
    names = domain_tree(cfg.val_img_dir, 'val_img_dir', cfg.num_domains, cfg.domain_names, 'the model').names
    domain_tree(cfg.train_img_dir, 'train_img_dir', cfg.num_domains, names, 'the model')
    return names


def _val_paths(cfg, domain):
    folder = os.path.join(cfg.val_img_dir, domain)
    paths = check_images(list_images(folder), cfg.skip_bad_images)
    if not paths:
        raise DataError(f'{folder} has no usable images; every domain needs validation images')
    return paths


class EvalData:
    """What both modes share: the checked domains, val image paths and real statistics (computed on demand)."""

    def __init__(self, cfg, tools, device):
        verify_manifest(cfg.val_img_dir)
        verify_manifest(cfg.train_img_dir)
        self.cfg, self.tools, self.device = cfg, tools, device
        self.domains = eval_domains(cfg)
        self.val = {d: _val_paths(cfg, d) for d in self.domains}
        self._real = {}

    def real(self, domain):
        """{protocol: FeatureStats} of the training images of `domain`."""
        if domain not in self._real:
            cfg = self.cfg
            stats, hits = real_statistics(os.path.join(cfg.train_img_dir, domain), cfg.img_size, self.tools.fid,
                                          cfg.fid_stats_dir, self.device, cfg.val_batch_size, cfg.num_workers,
                                          cfg.skip_bad_images)
            if hits:
                tqdm.write(f'real statistics of {domain}: cached ({", ".join(hits)})')
            self._real[domain] = stats
        return self._real[domain]


def _loader(paths, y, cfg):
    dataset = EvalDataset(paths, [y] * len(paths), cfg.img_size)
    return DataLoader(dataset, batch_size=cfg.val_batch_size, shuffle=False, num_workers=cfg.num_workers)


def reference_styles(nets, paths, y, cfg, device):
    """Style codes E(x_ref, y) of every image in paths: (n_ref, style_dim)."""
    dataset = EvalDataset(paths, [y] * len(paths), cfg.img_size)
    return style_codes(nets.style_encoder, dataset, y, STYLE_CHUNK, device, cfg.num_workers)


# ----------------------------------------------------------------------------------------------
# One task
# ----------------------------------------------------------------------------------------------

def task_styles(nets, mode, cfg, task_id, num_src, s_ref, y_trg, device):
    """A function (first, last, j) -> style codes (N, style_dim) of output j of sources first..last-1.

    latent: z ~ N(0, I) drawn once per task for every (source, output);
    reference: output j of source k takes reference perm[(k * K + j) % n_ref].
    """
    num_outs = cfg.num_outs_per_domain
    if mode == 'latent':
        gen = step_generator(cfg.seed, 2 * task_id, STREAM_EVAL)
        z = torch.randn(num_src, num_outs, cfg.latent_dim, generator=gen)   # (n_src, K, latent_dim)

        def styles(first, last, j):
            y = torch.full((last - first,), y_trg, device=device)
            return nets.mapping_network(z[first:last, j].to(device), y)
        return styles
    gen = step_generator(cfg.seed, 2 * task_id + 1, STREAM_EVAL)
    perm = torch.randperm(s_ref.size(0), generator=gen).to(device)                    # (n_ref,)
    slot = torch.arange(num_src * num_outs, device=device).view(num_src, num_outs)     # (n_src, K)
    choice = perm[slot % s_ref.size(0)]                                                # (n_src, K)
    return lambda first, last, j: s_ref[choice[first:last, j]]


class ImageWriter:
    """--save_eval_images: PNGs of one task, named as upstream (%.4i_%.2i.png), renamed into place when done."""

    def __init__(self, folder):
        self.folder = folder
        self.tmp = os.path.join(os.path.dirname(folder), f'.{os.path.basename(folder)}.partial')
        shutil.rmtree(self.tmp, ignore_errors=True)
        os.makedirs(self.tmp)

    def write(self, images, first, j):
        """images: uint8 (N, 3, H, W) of sources first..first+N-1, output j."""
        for k, img in enumerate(images.permute(0, 2, 3, 1).cpu().numpy()):
            Image.fromarray(img).save(os.path.join(self.tmp, f'{first + k + 1:04d}_{j + 1:02d}.png'))

    def close(self):
        shutil.rmtree(self.folder, ignore_errors=True)
        os.replace(self.tmp, self.folder)


@torch.no_grad()
def run_task(nets, cfg, tools, src_paths, styles, y_src, device, writer=None):
    """Generate K outputs per source; returns (LPIPS per source (n_src,), {protocol: features (n*K, 2048)})."""
    feats = {p: [] for p in tools.fid}
    lpips_values = []
    first = 0
    for x_src, _, _ in tqdm(_loader(src_paths, y_src, cfg), desc='generating', unit='batch', leave=False):
        x_src = x_src.to(device, non_blocking=True)
        last = first + x_src.size(0)
        style_list = [styles(first, last, j) for j in range(cfg.num_outs_per_domain)]
        fakes = list(translate_styles(nets.generator, x_src, style_list))   # K x (N, 3, S, S)
        lpips_values.append(lpips_diversity(tools.lpips, fakes))
        for j, x_fake in enumerate(fakes):
            images = quantize(x_fake)   # the uint8 images upstream writes to PNG
            for p, extractor in tools.fid.items():
                feats[p].append(extractor(images))
            if writer is not None:
                writer.write(images, first, j)
        first = last
    return torch.cat(lpips_values).cpu(), {p: torch.cat(f).cpu().numpy() for p, f in feats.items()}


# ----------------------------------------------------------------------------------------------
# One mode, all tasks
# ----------------------------------------------------------------------------------------------

def _with_mean(values, prefix):
    values[f'{prefix}/mean'] = float(np.mean(list(values.values())))
    return values


@torch.no_grad()
def calculate_metrics(nets, cfg, step, mode, device, tools, data=None):
    """Evaluate one mode over every task and write its LPIPS and FID files; returns {file name: values}."""
    data = data or EvalData(cfg, tools, device)
    lpips_values = {}
    fid_values = {p: {} for p in tools.fid}
    num_domains = len(data.domains)
    bar = tqdm(total=num_domains * (num_domains - 1), desc=f'eval {mode}', unit='task')
    for y_trg, trg in enumerate(data.domains):
        s_ref = reference_styles(nets, data.val[trg], y_trg, cfg, device) if mode == 'reference' else None
        real = data.real(trg)
        for y_src, src in enumerate(data.domains):
            if src == trg:
                continue
            task = f'{src}2{trg}'
            styles = task_styles(nets, mode, cfg, y_trg * num_domains + y_src, len(data.val[src]), s_ref,
                                 y_trg, device)
            writer = ImageWriter(os.path.join(cfg.eval_dir, mode, task)) if cfg.save_eval_images else None
            lpips_src, feats = run_task(nets, cfg, tools, data.val[src], styles, y_src, device, writer)
            if writer is not None:
                writer.close()
            lpips_values[f'LPIPS_{mode}/{task}'] = float(lpips_src.mean())
            for p, f in feats.items():
                fid_values[p][f'FID_{mode}/{task}'] = frechet_distance(real[p], feature_stats(f))
            bar.write(f'{mode} {task}: LPIPS {lpips_values[f"LPIPS_{mode}/{task}"]:.4f}, '
                      + ', '.join(f'FID ({p}) {v[f"FID_{mode}/{task}"]:.2f}' for p, v in fid_values.items()))
            bar.update(1)
    bar.close()
    os.makedirs(cfg.eval_dir, exist_ok=True)
    files = {lpips_file_name(step, mode): {**_with_mean(lpips_values, f'LPIPS_{mode}'), 'network': LPIPS_NAME}}
    for p, values in fid_values.items():
        files[fid_file_name(p, step, mode)] = {**_with_mean(values, f'FID_{mode}'), 'protocol': p,
                                               'feature_network': tools.fid[p].identity}
    for name, values in files.items():
        write_json(os.path.join(cfg.eval_dir, name), values)
    return files


def summarize(files):
    """The mean of every file as one flat dict, e.g. {'FID_latent/mean': ..., 'FID_standard_latent/mean': ...}."""
    means = {}
    for name, values in files.items():
        prefix = re.sub(r'_\d+_(latent|reference)\.json$', '', name)   # FID, FID_standard or LPIPS
        for key, value in values.items():
            if key.endswith('/mean'):
                means[key if prefix in ('FID', 'LPIPS') else f'{prefix}_{key[4:]}'] = value
    return means


def evaluate_nets(nets, cfg, step, device, tools=None, modes=EVAL_MODES):
    """Both modes for EMA networks `nets` at `step` (feature networks built once); returns the means."""
    start = time.perf_counter()
    tools = tools or build_eval_tools(cfg, device)
    data = EvalData(cfg, tools, device)
    files = {}
    for mode in modes:
        files.update(calculate_metrics(nets, cfg, step, mode, device, tools, data))
    means = summarize(files)
    print(f'evaluation of step {step} ({time.perf_counter() - start:.0f} s): '
          + ', '.join(f'{k} {v:.4f}' for k, v in means.items()) + f'; files in {cfg.eval_dir}')
    return means


def evaluate(cfg):
    """--mode eval: load the EMA networks of the checkpoint and evaluate both modes."""
    device = resolve_device(cfg.device)
    model = load_model(cfg, device)   # resolves --resume_iter latest once: files are named after these weights
    return evaluate_nets(model.nets, model.cfg, model.step or 0, device)
