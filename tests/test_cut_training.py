"""The CUT family trains with every registered patch loss, resumes exactly, saves the released layout, and
follows the released schedules."""
import json
import math
import os
import shutil

import pytest
import torch

import core.contrastive as contrastive
from core.checkpoint import KINDS, ckpt_path, named_tensors
from core.cut.data import UnalignedSampler
from core.cut.networks import ResnetGenerator
from core.schedules import epoch_gamma_at, linear_decay_factor
from core.utils.fileio import safe_load
from main import main


@pytest.fixture(scope='module')
def cut_layout(seasons32, tmp_path_factory):
    """CUT's layout (trainA, trainB, testA, testB) made from two domains of the synthetic seasons."""
    root = tmp_path_factory.mktemp('cut') / 'summer2winter'
    for phase, split in (('train', 'train'), ('test', 'val')):
        for side, domain in (('A', 'summer'), ('B', 'winter')):
            shutil.copytree(seasons32 / split / domain, root / f'{phase}{side}')
    return root


def cut_flags(dataroot, run_dir, *extra):
    """A tiny CUT run: 32 px, 4-channel networks, one image per domain and epoch, 1 + 1 epochs = 2 steps."""
    return ['--mode', 'train', '--model', 'cut', '--dataroot', str(dataroot), '--name', 'run',
            '--checkpoints_dir', str(run_dir), '--crop_size', '32', '--load_size', '36', '--ngf', '4', '--ndf', '4',
            '--netF_nc', '16', '--num_patches', '16', '--n_epochs', '1', '--n_epochs_decay', '1',
            '--max_dataset_size', '1', '--num_threads', '0', '--print_freq', '1', '--display_freq', '1',
            '--seed', '3', *extra]


def stats(run_dir):
    return [json.loads(line) for line in (run_dir / 'run' / 'stats.jsonl').read_text().splitlines()]


def checkpoint(run_dir, step, kind='nets'):
    return safe_load(ckpt_path(str(run_dir / 'run'), step, kind))


@pytest.mark.parametrize('name', contrastive.registered())
def test_every_registered_loss_trains_the_family_for_two_steps(name, seasons32, tmp_path):
    """Our two-domain layout (--domains), CUT's identity term: each loss on both paths (SRC on one)."""
    argv = cut_flags(seasons32, tmp_path, '--domains', 'summer,winter', '--lambda_NCE', '0',
                     '--patch_loss', f'{name}=1')
    assert main(argv) == 0
    lines = stats(tmp_path)
    assert [line['step'] for line in lines] == [1, 2]
    for line in lines:
        keys = [f'G/{name}', 'G/GAN', 'D/real', 'D/fake'] + ([] if name == 'src' else [f'G/idt/{name}'])
        assert all(math.isfinite(line[k]) for k in keys), line
        assert ('G/idt/src' in line) is False
    nets = checkpoint(tmp_path, 2)
    assert {'G', 'D'} <= set(nets)
    owned = {k for k in nets if k not in ('G', 'D', 'config', 'run', 'digest')}
    assert owned <= {'F', name}   # the shared heads F and/or the loss's own parameters (fsesim has none)
    assert ('F' in owned) == contrastive.get(name).uses_patches
    assert (tmp_path / 'run' / 'samples' / '000002.jpg').is_file()


def test_cut_defaults_train_patchnce_with_identity_and_save_the_released_files(cut_layout, tmp_path):
    assert main(cut_flags(cut_layout, tmp_path)) == 0
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['patch_losses'] == [['patchnce', 1.0]] and cfg['identity'] and cfg['total_iters'] == 2
    assert 'num_domains' not in cfg and 'domain_names' not in cfg   # a fact of the run, in run.json
    assert json.loads((tmp_path / 'run' / 'run.json').read_text())['domain_names'] == ['trainA', 'trainB']
    line = stats(tmp_path)[-1]
    assert {'G/patchnce', 'G/idt/patchnce', 'G/GAN', 'lr'} <= set(line)
    # latest_net_<X>.pth: plain state_dicts with the released keys, equal to the checkpoint's nets
    nets = checkpoint(tmp_path, 2)
    released_G = torch.load(tmp_path / 'run' / 'latest_net_G.pth', weights_only=True)
    G = ResnetGenerator(ngf=4, n_blocks=6)
    G.load_state_dict(released_G, strict=True)
    assert all(torch.equal(released_G[k], nets['G'][k]) for k in released_G)
    released_F = torch.load(tmp_path / 'run' / 'latest_net_F.pth', weights_only=True)
    assert sorted(released_F) == sorted(f'mlp_{l}.{i}.{p}' for l in range(5) for i in (0, 2) for p in ('weight', 'bias'))
    assert set(checkpoint(tmp_path, 2, 'nets_ema')) == {'G', 'config', 'run', 'digest'}


def test_fastcut_flips_and_has_no_identity_path(cut_layout, tmp_path):
    assert main(cut_flags(cut_layout, tmp_path, '--CUT_mode', 'FastCUT')) == 0
    cfg = json.loads((tmp_path / 'run' / 'config.json').read_text())
    assert cfg['patch_losses'] == [['patchnce', 10.0]] and not cfg['identity'] and cfg['flip_equivariance']
    assert not any(k.startswith('G/idt/') for k in stats(tmp_path)[-1])


def test_resume_continues_exactly(cut_layout, tmp_path):
    """Hneg_SRC losses, curriculum, flips and shuffled data: a run stopped after step 2 and resumed with
    --continue_train writes a step 4 bitwise equal to the uninterrupted run's."""
    flags = ('--dce_idt', '--lambda_HDCE', '0.1', '--lambda_SRC', '0.05', '--use_curriculum', '--HDCE_gamma', '50',
             '--HDCE_gamma_min', '10', '--flip_equivariance', '--max_dataset_size', '2', '--save_latest_freq', '2')
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert main(cut_flags(cut_layout, straight, *flags)) == 0
    os.makedirs(split / 'run')
    for kind in KINDS:
        shutil.copy(ckpt_path(str(straight / 'run'), 2, kind), split / 'run')
    assert main(cut_flags(cut_layout, split, *flags, '--continue_train')) == 0
    for kind in KINDS:
        a = dict(named_tensors(checkpoint(straight, 4, kind)))
        b = dict(named_tensors(checkpoint(split, 4, kind)))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), kind
    assert [line['G/hdce/gamma'] for line in stats(straight)] == [30.0, 30.0, 10.0, 10.0]   # per epoch
    resumed = stats(split)   # the logs of the resumed steps equal the uninterrupted run's
    assert [line['step'] for line in resumed] == [3, 4]
    assert all(a[k] == b[k] for a, b in zip(stats(straight)[2:], resumed) for k in a if k.startswith(('G/', 'D/')))


def test_released_learning_rate_and_temperature_schedules():
    lr = [2e-4 * linear_decay_factor(t, 200, 200) for t in (1, 200, 201, 300, 400)]
    assert lr == pytest.approx([2e-4, 2e-4, 1.990e-4, 1.005e-4, 9.95e-7], rel=1e-3)
    h2z = [epoch_gamma_at(e, 50, 10, 400, True) for e in (1, 200, 400)]
    assert h2z == pytest.approx([49.9, 30.0, 10.0])
    city = [epoch_gamma_at(e, 50, 10, 400, True, step_epoch=200) for e in (200, 201, 400)]
    assert city == pytest.approx([30.0, 1.0, 1.0])
    assert epoch_gamma_at(7, 50, 10, 400, False, step_epoch=2) == 50.0   # no curriculum, no step (released)


def test_each_epoch_visits_every_a_image_once_and_batches_depend_only_on_the_step():
    sampler = UnalignedSampler(num_a=5, num_b=3, batch_size=2, seed=1, serial=False)
    assert sampler.steps_per_epoch == 2   # max(5, 3) // 2, the last image dropped as released
    epoch = [item for step in range(2) for item in sampler.batch(step)]
    assert len({a for a, *_ in epoch}) == 4 and all(0 <= b < 3 for _, b, *_ in epoch)
    assert [item[-1] for item in epoch] == [1, 1, 1, 1] and sampler.batch(2)[0][-1] == 2
    fresh = UnalignedSampler(num_a=5, num_b=3, batch_size=2, seed=1, serial=False, start_step=3)
    assert next(iter(fresh)) == sampler.batch(3)
    serial = UnalignedSampler(num_a=5, num_b=3, batch_size=1, seed=1, serial=True)
    assert [serial.batch(s)[0][:2] for s in range(5)] == [(0, 0), (1, 1), (2, 2), (3, 0), (4, 1)]


def test_bf16_autocast_trains_with_fp32_losses(cut_layout, tmp_path):
    assert main(cut_flags(cut_layout, tmp_path, '--amp', 'bf16')) == 0
    line = stats(tmp_path)[-1]
    assert all(math.isfinite(line[k]) for k in ('G/patchnce', 'G/idt/patchnce', 'G/GAN', 'D/real'))
    assert all(v.dtype == torch.float32 for v in checkpoint(tmp_path, 2)['G'].values())
