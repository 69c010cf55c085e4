"""--mode eval and --eval_every: the metrics selected by --metrics (metrics.registry) over every task.

The protocol of StarGAN v2 (and of the SRC paper's Table 2), per mode m in
{latent, reference} and task <src>2<trg> (every ordered pair of domains):
every val image of src is translated num_outs_per_domain (10) times into trg,
with random styles F(z, trg) (latent) or the styles E(x_ref, trg) of val images
of trg (reference; each output of each source its own reference). The outputs
of a task are generated once, in batches, and every selected metric sees each
batch; each metric then writes one file per result series and mode
(e.g. FID_{step:05d}_{m}.json, LPIPS_{step:05d}_{m}.json, as upstream) and the
means are returned. The README's evaluation section lists the metrics, the
files and the differences from upstream's loop.
"""
import json
import os
import shutil
import time

import numpy as np
import torch
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
from metrics.fid import quantize
from metrics.registry import Batch, Task, build_metrics

EVAL_MODES = ('latent', 'reference')
STYLE_CHUNK = 256   # reference images per style-encoder batch


def write_json(path, values):
    """Upstream's layout (indent 4, insertion order), written atomically."""
    atomic_write_text(path, json.dumps(values, indent=4) + '\n')


# ----------------------------------------------------------------------------------------------
# Set-up shared by both modes
# ----------------------------------------------------------------------------------------------

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
    """What both modes share: the checked domains and the val image paths of each."""

    def __init__(self, cfg):
        verify_manifest(cfg.val_img_dir)
        verify_manifest(cfg.train_img_dir)
        self.domains = eval_domains(cfg)
        self.val = {d: _val_paths(cfg, d) for d in self.domains}


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
def run_task(nets, cfg, metrics, task, styles, device, writer=None):
    """Generate K outputs per source of `task`, once, and give every batch to each metric."""
    for metric in metrics:
        metric.begin_task(task)
    first = 0
    for x_src, _, _ in tqdm(_loader(task.paths, task.y_src, cfg), desc='generating', unit='batch', leave=False):
        x_src = x_src.to(device, non_blocking=True)
        last = first + x_src.size(0)
        style_list = [styles(first, last, j) for j in range(cfg.num_outs_per_domain)]
        x_fake = list(translate_styles(nets.generator, x_src, style_list))   # K x (N, 3, S, S)
        images = [quantize(x) for x in x_fake]                               # the uint8 images upstream writes to PNG
        if writer is not None:
            for j, img in enumerate(images):
                writer.write(img, first, j)
        batch = Batch(x_src, x_fake, images, first)
        for metric in metrics:
            metric.update(task, batch)
        first = last
    return {name: value for metric in metrics for name, value in metric.end_task(task).items()}


# ----------------------------------------------------------------------------------------------
# One mode, all tasks
# ----------------------------------------------------------------------------------------------

def result_files(metrics, step, mode, values):
    """{file name: body} of one mode; values: {series name: {task: value}}.

    Body: the per-task keys, the mean over tasks, then the metric's fields.
    """
    files = {}
    for metric in metrics:
        for series in metric.series:
            per_task = {series.task_key(mode, task): v for task, v in values[series.name].items()}
            mean = series.task_key(mode, 'mean')
            files[series.file_name(step, mode)] = {**per_task, mean: float(np.mean(list(per_task.values()))),
                                                   **metric.fields(series)}
    return files


def mode_means(metrics, step, mode, files):
    """{'<series name>_<mode>/mean': value} from the files of one mode, e.g. 'FID_standard_latent/mean'."""
    return {f'{s.name}_{mode}/mean': files[s.file_name(step, mode)][s.task_key(mode, 'mean')]
            for metric in metrics for s in metric.series}


@torch.no_grad()
def calculate_metrics(nets, cfg, step, mode, device, metrics, data=None):
    """Evaluate one mode over every task and write each metric's files; returns {file name: values}."""
    data = data or EvalData(cfg)
    values = {s.name: {} for metric in metrics for s in metric.series}
    formats = {s.name: s.fmt for metric in metrics for s in metric.series}
    num_domains = len(data.domains)
    bar = tqdm(total=num_domains * (num_domains - 1), desc=f'eval {mode}', unit='task')
    for y_trg, trg in enumerate(data.domains):
        s_ref = reference_styles(nets, data.val[trg], y_trg, cfg, device) if mode == 'reference' else None
        for y_src, src in enumerate(data.domains):
            if src == trg:
                continue
            task = Task(mode, src, trg, y_src, y_trg, data.val[src])
            styles = task_styles(nets, mode, cfg, y_trg * num_domains + y_src, len(task.paths), s_ref,
                                 y_trg, device)
            writer = ImageWriter(os.path.join(cfg.eval_dir, mode, f'{src}2{trg}')) if cfg.save_eval_images else None
            result = run_task(nets, cfg, metrics, task, styles, device, writer)
            if writer is not None:
                writer.close()
            for name, value in result.items():
                values[name][f'{src}2{trg}'] = value
            bar.write(f'{mode} {src}2{trg}: ' + ', '.join(f'{n} {v:{formats[n]}}' for n, v in result.items()))
            bar.update(1)
    bar.close()
    os.makedirs(cfg.eval_dir, exist_ok=True)
    files = result_files(metrics, step, mode, values)
    for name, body in files.items():
        write_json(os.path.join(cfg.eval_dir, name), body)
    return files


def evaluate_nets(nets, cfg, step, device, metrics=None, modes=EVAL_MODES):
    """The --metrics of EMA networks `nets` at `step`, in both modes; returns the means.

    metrics: built Metric objects (default: build_metrics(cfg, device), feature networks loaded once).
    """
    start = time.perf_counter()
    metrics = metrics or build_metrics(cfg, device)
    data = EvalData(cfg)
    means = {}
    for mode in modes:
        files = calculate_metrics(nets, cfg, step, mode, device, metrics, data)
        means.update(mode_means(metrics, step, mode, files))
    print(f'evaluation of step {step} ({time.perf_counter() - start:.0f} s): '
          + ', '.join(f'{k} {v:.4f}' for k, v in means.items()) + f'; files in {cfg.eval_dir}')
    return means


def evaluate(cfg):
    """--mode eval: load the EMA networks of the checkpoint and evaluate both modes."""
    device = resolve_device(cfg.device)
    model = load_model(cfg, device)   # resolves --resume_iter latest once: files are named after these weights
    return evaluate_nets(model.nets, model.cfg, model.step or 0, device)
