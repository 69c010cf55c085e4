"""Time --mode eval against the official StarGAN v2 evaluation loop on the same synthetic images.

    python bench/eval_speed.py [--official PATH] [--img_size 64] [--num_train 20] [--num_val 4]
                               [--num_outs 3] [--val_batch_size N] [--workdir DIR]

Both sides get the same generator (StarGAN v2 architecture, random weights)
and the same random-weight Inception v3 and AlexNet (saved as weight files, so
our side runs its real loading path; no download). Ours runs twice: with an
empty real-statistics cache and with the cache filled by the first run.

--official PATH: a checkout of clovaai/stargan-v2 (or its git directory). It is
copied to the work folder and run there in a separate process by a small
runner that, at run time only, makes .cuda() a no-op, stubs cv2 (used by the
unused face-landmark net) and hands torchvision the random Inception/AlexNet
instead of downloading pretrained ones. Nothing of it enters this repository.
Afterwards the official FIDs of its last (reference) pass are recomputed by
metrics.fid from the PNGs it wrote, to show that both give the same numbers on
the same images. Timings on a shared machine are noisy.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402
import torchvision  # noqa: E402

from core.utils import weights as W  # noqa: E402
from core.config import parse_config  # noqa: E402
from core.model import EMA_NETS, build_nets  # noqa: E402
from core.data.synthetic import make_dataset  # noqa: E402
from metrics.eval import evaluate_nets  # noqa: E402
from metrics.fid import FID, fid_given_paths  # noqa: E402
from metrics.inception import random_init  # noqa: E402
from metrics.lpips import LPIPSDiversity  # noqa: E402
from metrics.registry import build_metrics  # noqa: E402

STEP = 100000

RUNNER = '''"""Runs the official calculate_metrics on the CPU with given feature weights (written by bench/eval_speed.py)."""
import json, os, sys, time, types
import torch, torchvision
from munch import Munch
sys.path.insert(0, os.getcwd())
sys.modules['cv2'] = types.ModuleType('cv2')          # only the face-landmark net imports it
torch.Tensor.cuda = lambda self, *a, **k: self          # the official LPIPS calls .cuda() unconditionally
torch.nn.Module.cuda = lambda self, *a, **k: self
spec = json.load(open(sys.argv[1]))
features = torch.load(spec['features'])
tv_inception, tv_alexnet = torchvision.models.inception_v3, torchvision.models.alexnet

def inception_v3(pretrained=False, **kwargs):
    net = tv_inception(weights=None, aux_logits=True, init_weights=False)
    net.load_state_dict(features['inception'])
    return net

def alexnet(pretrained=False, **kwargs):
    net = tv_alexnet(weights=None)
    net.load_state_dict(features['alexnet'])
    return net

torchvision.models.inception_v3, torchvision.models.alexnet = inception_v3, alexnet
from core.model import build_model
from metrics.eval import calculate_metrics
args = Munch(spec['args'])
_, nets_ema = build_model(args)
ckpt = torch.load(spec['checkpoint'])
for name in ('generator', 'mapping_network', 'style_encoder'):
    nets_ema[name].module.load_state_dict(ckpt[name], strict=False)
    nets_ema[name].eval()
torch.manual_seed(0)
start = time.perf_counter()
for mode in ('latent', 'reference'):
    calculate_metrics(nets_ema, args, %d, mode)
print(json.dumps({'seconds': time.perf_counter() - start}))
''' % STEP


def parse(argv):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--official', default=None, help='checkout (or git directory) of clovaai/stargan-v2')
    p.add_argument('--img_size', type=int, default=64)
    p.add_argument('--num_train', type=int, default=20, help='training images per domain (the FID reals)')
    p.add_argument('--num_val', type=int, default=4, help='val images per domain (the sources)')
    p.add_argument('--num_outs', type=int, default=3, help='outputs per source (10 in the papers)')
    p.add_argument('--val_batch_size', type=int, default=None,
                   help='default: --num_val (the official loop crashes when a domain has fewer val images '
                        'than a batch, its issue #134)')
    p.add_argument('--workdir', default=None, help='work folder (default: a new temporary folder)')
    return p.parse_args(argv)


def random_feature_weights(folder):
    """Random Inception v3 and AlexNet saved under the cache names, their hashes registered (this process)."""
    torch.manual_seed(1)
    nets = {'inception_v3_torchvision': random_init(torchvision.models.inception_v3(
                weights=None, aux_logits=True, init_weights=False)),
            'alexnet': random_init(torchvision.models.alexnet(weights=None))}
    os.makedirs(folder, exist_ok=True)
    os.environ[W.ENV_VAR] = folder
    for name, net in nets.items():
        path = os.path.join(folder, W.WEIGHTS[name].filename)
        torch.save(net.state_dict(), path)
        W.WEIGHTS[name] = W.WEIGHTS[name]._replace(sha256=W.sha256_file(path))
    return {'inception': nets['inception_v3_torchvision'].state_dict(), 'alexnet': nets['alexnet'].state_dict()}


def timed(label, fn):
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    print(f'{label}: {seconds:.1f} s')
    return seconds, result


def export_official(source, dest):
    """Copy the official code (core/ and metrics/ of a checkout, or of HEAD of a git directory) to dest."""
    if os.path.isfile(os.path.join(source, 'metrics', 'eval.py')):
        for folder in ('core', 'metrics'):
            shutil.copytree(os.path.join(source, folder), os.path.join(dest, folder))
        return
    archive = subprocess.run(['git', '--git-dir', source, 'archive', 'HEAD', 'core', 'metrics'],
                             check=True, capture_output=True).stdout
    os.makedirs(dest)
    with tempfile.TemporaryFile() as f:
        f.write(archive)
        f.seek(0)
        tarfile.open(fileobj=f).extractall(dest, filter='data')


def run_official(args, work, cfg, features, ckpt):
    official = os.path.join(work, 'official')
    export_official(os.path.abspath(args.official), official)
    torch.save(features, os.path.join(work, 'features.pt'))
    spec = {'features': os.path.join(work, 'features.pt'), 'checkpoint': ckpt,
            'args': dict(img_size=cfg.img_size, style_dim=cfg.style_dim, latent_dim=cfg.latent_dim,
                         num_domains=cfg.num_domains, w_hpf=0, val_img_dir=cfg.val_img_dir,
                         train_img_dir=cfg.train_img_dir, eval_dir=os.path.join(work, 'official_eval'),
                         val_batch_size=cfg.val_batch_size, num_outs_per_domain=cfg.num_outs_per_domain)}
    with open(os.path.join(work, 'spec.json'), 'w') as f:
        json.dump(spec, f)
    with open(os.path.join(official, 'run_eval_speed.py'), 'w') as f:
        f.write(RUNNER)
    result = subprocess.run([sys.executable, 'run_eval_speed.py', os.path.join(work, 'spec.json')], cwd=official,
                            capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f'the official loop failed:\n{result.stderr[-3000:]}')
    return json.loads(result.stdout.strip().splitlines()[-1])['seconds'], spec['args']['eval_dir']


def compare_fids(eval_dir, cfg, extractor):
    """Official FIDs of the reference pass vs metrics.fid on the same PNGs: the largest relative difference."""
    with open(os.path.join(eval_dir, f'FID_{STEP:05d}_reference.json')) as f:
        official = json.load(f)
    worst = 0.0
    for key, value in official.items():
        task = key.split('/')[1]
        if task == 'mean':
            continue
        trg = task.split('2')[1]
        ours = fid_given_paths([os.path.join(cfg.train_img_dir, trg), os.path.join(eval_dir, task)], cfg.img_size,
                               cfg.val_batch_size, extractor=extractor)
        worst = max(worst, abs(ours - value) / abs(value))
    return worst


def main(argv=None):
    args = parse(sys.argv[1:] if argv is None else argv)
    work = args.workdir or tempfile.mkdtemp(prefix='eval-speed-')
    data = make_dataset('seasons', os.path.join(work, 'data'), args.num_train, args.num_val, args.img_size, seed=0)
    cfg = parse_config(['--mode', 'eval', '--img_size', str(args.img_size), '--num_domains', '4',
                        '--train_img_dir', str(data / 'train'), '--val_img_dir', str(data / 'val'),
                        '--eval_dir', os.path.join(work, 'eval'), '--fid_stats_dir', os.path.join(work, 'stats'),
                        '--num_outs_per_domain', str(args.num_outs), '--num_workers', '0', '--device', 'cpu',
                        '--val_batch_size', str(args.val_batch_size or args.num_val)])
    cfg = cfg.with_facts(domain_names=('autumn', 'spring', 'summer', 'winter'))
    torch.manual_seed(0)
    nets = build_nets(cfg)[1]
    ckpt = os.path.join(work, f'{STEP:06d}_nets_ema.ckpt')
    torch.save({name: nets[name].state_dict() for name in EMA_NETS}, ckpt)
    features = random_feature_weights(os.path.join(work, 'weights'))
    fid, lpips = build_metrics(cfg, 'cpu')   # the default --metrics fid,lpips, networks loaded once

    def ours():   # fresh metric objects (no real statistics held in memory) on the loaded networks
        return evaluate_nets(nets, cfg, STEP, 'cpu', [FID(cfg, 'cpu', fid.extractors), LPIPSDiversity(lpips.model)])
    print(f'{args.num_train} train / {args.num_val} val images per domain, 4 domains, {args.img_size} px, '
          f'{args.num_outs} outputs per source, random-weight networks, CPU, {torch.get_num_threads()} thread(s)')
    cold, _ = timed('ours, empty statistics cache', ours)
    warm, _ = timed('ours, cached real statistics', ours)
    line = f'ours_cold_s={cold:.1f} ours_warm_s={warm:.1f}'
    if args.official:
        official, eval_dir = run_official(args, work, cfg, features, ckpt)
        print(f'official loop: {official:.1f} s')
        worst = compare_fids(eval_dir, cfg, fid.extractors['stargan-v2'])
        print(f'official FIDs recomputed by metrics.fid from its PNGs: largest relative difference {worst:.2e}')
        line += f' official_s={official:.1f} speedup_cold={official / cold:.1f} speedup_warm={official / warm:.1f}'
    print(line)
    return 0


if __name__ == '__main__':
    sys.exit(main())
