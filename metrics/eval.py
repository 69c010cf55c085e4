"""--mode eval and --eval_every: the metrics selected by --metrics (metrics.registry) over every task.

The protocol of StarGAN v2 (and of the SRC paper's Table 2), per mode m in
{latent, reference} and task <src>2<trg> (every ordered pair of domains):
every val image of src is translated num_outs_per_domain (10) times into trg,
with random styles F(z, trg) (latent) or the styles E(x_ref, trg) of val images
of trg (reference; each output of each source its own reference). The outputs
of a task are generated once, in batches, and every selected metric sees each
batch; each metric then writes one file per result series and mode
(e.g. FID_{step:05d}_{m}.json, LPIPS_{step:05d}_{m}.json, as upstream) and the
means are returned. docs/evaluation.md lists the metrics, the files and the
differences from upstream's loop.

Under torchrun (--mode eval, or --eval_every in a training run) every process
generates whole batches of each task's sources (metrics.sharding) with the
styles drawn for the whole task, and the metrics' rows of all processes are
gathered before they compute their values, which therefore equal a single
process's; rank 0 alone prints and writes the files and images.
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

from core.utils import distributed
from core.data.loader import EvalDataset
from core.utils.fileio import atomic_write_text
from core.data.images import DataError, check_images, domain_tree, list_images
from core.inference import check_generated, load_model, style_codes, translate_styles
from core.data.manifest import verify_manifest
from core.utils.seeding import STREAM_EVAL, step_generator
from core.visualize import to_uint8
from metrics.registry import Batch, Task, build_metrics
from metrics.sharding import gather_row_dict, num_rounds

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
    names = domain_tree(cfg.val_img_dir, 'val_img_dir', cfg.num_domains, cfg.facts.domain_names, 'the model').names
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
    dataset = EvalDataset(paths, [y] * len(paths), cfg.img_size, cfg.skip_bad_images)
    return DataLoader(dataset, batch_size=cfg.val_batch_size, shuffle=False, num_workers=cfg.num_workers)


def domain_reference_styles(nets, paths, y, cfg, device):
    """Style codes E(x_ref, y) of every val image of domain y (paths), the references of the tasks into y:
    (n_ref, style_dim)."""
    dataset = EvalDataset(paths, [y] * len(paths), cfg.img_size, cfg.skip_bad_images)
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
    """--save_eval_images: PNGs of one task, named as upstream (%.4i_%.2i.png), renamed into place when done.

    Every process calls write() once per round of batches; rank 0 writes the images of all.
    """

    def __init__(self, folder, img_size, device):
        self.folder, self.shape, self.device = folder, (3, img_size, img_size), device
        self.tmp = os.path.join(os.path.dirname(folder), f'.{os.path.basename(folder)}.partial')
        self.main = distributed.is_main()
        if self.main:
            shutil.rmtree(self.tmp, ignore_errors=True)
            os.makedirs(self.tmp)

    def write(self, batch, num_outs):
        """The images of a Batch, or None (no batch left in this process)."""
        first, n = (0, 0) if batch is None else (batch.first, batch.x_src.size(0))
        index = distributed.gather_rows(torch.arange(first, first + n, device=self.device))   # (N_all,)
        for j in range(num_outs):   # one output at a time: rank 0 holds one output of one batch per process
            empty = torch.empty((0,) + self.shape, dtype=torch.uint8, device=self.device)
            gathered = distributed.gather_rows(empty if batch is None else batch.images[j])   # (N_all, 3, S, S)
            if self.main:
                for k, img in zip(index.tolist(), gathered.permute(0, 2, 3, 1).cpu().numpy()):
                    Image.fromarray(img).save(os.path.join(self.tmp, f'{k + 1:04d}_{j + 1:02d}.png'))

    def close(self):
        if self.main:
            shutil.rmtree(self.folder, ignore_errors=True)
            os.replace(self.tmp, self.folder)


def generate(nets, x_src, first, styles, num_outs):
    """The Batch of the K outputs of sources x_src (N, 3, S, S), which are the task's first..first+N-1."""
    style_list = [styles(first, first + x_src.size(0), j) for j in range(num_outs)]
    x_fake = list(translate_styles(nets.generator, x_src, style_list))   # K x (N, 3, S, S)
    images = [to_uint8(x) for x in x_fake]                               # the uint8 images upstream writes to PNG
    return Batch(x_src, x_fake, images, first)


def _rounds(loader, rounds):
    """The loader's batches, then None up to `rounds` items: every process takes part in every round."""
    batches = iter(loader)
    for _ in range(rounds):
        yield next(batches, None)


@torch.no_grad()
def run_task(nets, cfg, metrics, task, styles, device, writer=None, source='the model'):
    """Generate K outputs per source of `task`, once, and give every batch to each metric.

    Each process generates its process_slice of the sources; the rows the metrics
    return are gathered (in source order) before each metric's end_task.
    """
    for metric in metrics:
        metric.begin_task(task)
    part = distributed.process_slice(len(task.paths), cfg.val_batch_size)
    loader = _loader(task.paths[part], task.y_src, cfg)
    rows = [{} for _ in metrics]   # per metric: {name: [rows of each batch]}
    first = part.start
    for item in tqdm(_rounds(loader, num_rounds(len(task.paths), cfg.val_batch_size)), desc='generating',
                     unit='batch', leave=False, disable=None if distributed.is_main() else True):
        batch = None if item is None else generate(nets, item[0].to(device, non_blocking=True), first, styles,
                                                   cfg.num_outs_per_domain)
        if batch is not None:
            check_generated(torch.stack(batch.x_fake), source)   # (K, N, 3, S, S): one check per batch
            for metric, kept in zip(metrics, rows):
                for name, value in metric.update(task, batch).items():
                    kept.setdefault(name, []).append(value)
            first += batch.x_src.size(0)
        if writer is not None:
            writer.write(batch, cfg.num_outs_per_domain)
    values = {}
    for metric, kept in zip(metrics, rows):
        task_rows = gather_row_dict({name: torch.cat(parts) for name, parts in kept.items()}, device)
        values.update(metric.end_task(task, task_rows))
    return values


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
    """Evaluate one mode over every task and write each metric's files; returns {file name: values}.

    Under torchrun every process calls this and gets the values; rank 0 writes the files.
    """
    data = data or EvalData(cfg)
    values = {s.name: {} for metric in metrics for s in metric.series}
    formats = {s.name: s.fmt for metric in metrics for s in metric.series}
    num_domains = len(data.domains)
    main = distributed.is_main()   # the one process that prints and writes
    bar = tqdm(total=num_domains * (num_domains - 1), desc=f'eval {mode}', unit='task',
               disable=None if main else True)   # None: no bar (nor its escape codes) in a piped log
    for y_trg, trg in enumerate(data.domains):
        s_ref = domain_reference_styles(nets, data.val[trg], y_trg, cfg, device) if mode == 'reference' else None
        for y_src, src in enumerate(data.domains):
            if src == trg:
                continue
            task = Task(mode, src, trg, y_src, y_trg, data.val[src])
            styles = task_styles(nets, mode, cfg, y_trg * num_domains + y_src, len(task.paths), s_ref,
                                 y_trg, device)
            images = (ImageWriter(os.path.join(cfg.eval_dir, mode, f'{src}2{trg}'), cfg.img_size, device)
                      if cfg.save_eval_images else None)
            result = run_task(nets, cfg, metrics, task, styles, device, images,
                              source=cfg.checkpoint or f'step {step} of {cfg.checkpoint_dir}')
            if images is not None:
                images.close()
            for name, value in result.items():
                values[name][f'{src}2{trg}'] = value
            if main:
                bar.write(f'{mode} {src}2{trg}: ' + ', '.join(f'{n} {v:{formats[n]}}' for n, v in result.items()))
            bar.update(1)
    bar.close()
    files = result_files(metrics, step, mode, values)
    if main:
        os.makedirs(cfg.eval_dir, exist_ok=True)
        for name, body in files.items():
            write_json(os.path.join(cfg.eval_dir, name), body)
    return files


def evaluate_nets(nets, cfg, step, device, metrics=None, modes=EVAL_MODES):
    """The --metrics of EMA networks `nets` at `step`, in both modes; returns the means.

    metrics: built Metric objects (default: build_metrics(cfg, device), feature networks loaded once).
    Under torchrun every process calls this, with the same networks, and gets the means.
    """
    start = time.perf_counter()
    metrics = metrics or build_metrics(cfg, device)
    data = EvalData(cfg)
    means = {}
    for mode in modes:
        files = calculate_metrics(nets, cfg, step, mode, device, metrics, data)
        means.update(mode_means(metrics, step, mode, files))
    if distributed.is_main():
        print(f'evaluation of step {step} ({time.perf_counter() - start:.0f} s): '
              + ', '.join(f'{k} {v:.4f}' for k, v in means.items()) + f'; files in {cfg.eval_dir}')
    return means


def evaluate(cfg):
    """--mode eval: load the EMA networks of the checkpoint and evaluate both modes (under torchrun: every process)."""
    rt = distributed.setup(cfg)
    try:
        # --resume_iter latest is resolved once: the files are named after these weights
        model = load_model(cfg, rt.device, verbose=distributed.is_main())
        return evaluate_nets(model.nets, model.cfg, model.step or 0, rt.device)
    finally:
        distributed.shutdown()
