"""End-to-end training on synthetic data: checkpoints, logs, bit-exact resume, bad input."""
import json
import math

import pytest
import torch

from conftest import interrupt_training, tiny_flags
from core.checkpoint import ckpt_path, named_tensors, safe_load, stored_config
from core.config import Config, parse_config
from core.trainer import with_domain_names
from main import main


def _train(argv):
    assert main(argv) == 0


def _state(run_dir, step):
    """Every tensor of the three checkpoint files of `step`, flattened to {name: tensor}."""
    out = {}
    for kind in ('nets', 'nets_ema', 'optims'):
        payload = safe_load(ckpt_path(str(run_dir / 'checkpoints'), step, kind))
        for net, sd in payload.items():
            if isinstance(sd, dict):
                for key, value in named_tensors(sd):
                    out[f'{kind}/{net}/{key}'] = value
    return out


def test_training_writes_checkpoints_samples_and_logs(seasons32, tmp_path):
    _train(tiny_flags(seasons32, tmp_path))
    ckpt = tmp_path / 'checkpoints'
    for step in (2, 4):
        for kind in ('nets', 'nets_ema', 'optims'):
            assert (ckpt / f'{step:06d}_{kind}.ckpt').is_file()
        for name in ('cycle_consistency', 'latent_psi_0.5', 'latent_psi_0.7', 'latent_psi_1.0', 'reference'):
            assert (tmp_path / 'samples' / f'{step:06d}_{name}.jpg').is_file()
    nets = safe_load(str(ckpt / '000004_nets.ckpt'))
    assert {'generator', 'mapping_network', 'style_encoder', 'discriminator', 'patch_sample'} <= set(nets)
    assert set(safe_load(str(ckpt / '000004_nets_ema.ckpt'))) == {
        'generator', 'mapping_network', 'style_encoder', 'config', 'run', 'digest'}
    for net in ('generator', 'discriminator', 'patch_sample'):
        assert all(torch.isfinite(v).all() for v in nets[net].values())
    lines = [json.loads(line) for line in (ckpt / 'stats.jsonl').read_text().splitlines()]
    assert [line['step'] for line in lines] == [2, 4]
    for key in ('D/latent/real', 'D/latent/reg', 'D/ref/fake', 'G/latent/adv', 'G/latent/sty', 'G/latent/ds',
                'G/latent/cyc', 'G/latent/src', 'G/latent/hdce', 'G/ref/src', 'G/ref/hdce', 'lambda_ds',
                'G/latent/hdce/gamma'):
        assert all(math.isfinite(line[key]) for line in lines), key
    # lambda_ds decays linearly from 1 to 0 over ds_iter = 4: logged at steps 2 and 4 (0-based 1 and 3).
    assert [line['lambda_ds'] for line in lines] == pytest.approx([0.75, 0.25])
    assert any((ckpt / 'tensorboard').iterdir())


def test_resume_is_bit_exact(seasons32, tmp_path, monkeypatch):
    """A run killed after step 3 and resumed equals 6 uninterrupted steps, bit for bit."""
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    flags = ('--total_iters', '6', '--save_every', '3', '--sample_every', '0')
    _train(tiny_flags(seasons32, straight, *flags))

    restore = interrupt_training(monkeypatch, 3)
    assert main(tiny_flags(seasons32, split, *flags)) == 130
    restore()
    assert not (split / 'checkpoints' / '000006_nets.ckpt').exists()
    _train(tiny_flags(seasons32, split, *flags, '--resume_iter', 'latest'))

    a, b = _state(straight, 6), _state(split, 6)
    assert a.keys() == b.keys() and len(a) > 100
    different = [k for k in a if not torch.equal(a[k], b[k])]
    assert not different, different[:5]
    # and training actually changed the weights between step 3 and 6
    mid = _state(split, 3)
    assert not torch.equal(mid['nets/generator/from_rgb.weight'], a['nets/generator/from_rgb.weight'])


def test_resume_latest_and_refusal_to_overwrite(seasons32, tmp_path, capsys):
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0')
    _train(flags)
    assert main(flags) == 1   # would silently overwrite the finished run
    assert '--resume_iter latest' in capsys.readouterr().err
    _train(flags[:flags.index('--total_iters')] + ['--total_iters', '6'] + flags[flags.index('--total_iters') + 2:]
           + ['--resume_iter', 'latest'])
    assert (tmp_path / 'checkpoints' / '000006_nets.ckpt').is_file()


def test_checkpoint_stores_the_preset_config(seasons32, tmp_path):
    flags = tiny_flags(seasons32, tmp_path, '--preset', 'seasons-reproduce', '--total_iters', '2',
                       '--sample_every', '0')
    _train(flags)
    cfg = with_domain_names(parse_config(flags))
    assert cfg.arch == 'hsrc' and cfg.cyc_mode == 'identity' and cfg.query_side == 'real'
    for kind in ('nets', 'nets_ema', 'optims'):
        stored = stored_config(safe_load(ckpt_path(cfg.checkpoint_dir, 2, kind)))
        assert stored == cfg
    on_disk = Config.from_json((tmp_path / 'checkpoints' / 'config.json').read_text())
    assert on_disk == cfg


def test_mismatched_checkpoint_names_keys_and_flags(seasons32, tmp_path, capsys):
    _train(tiny_flags(seasons32, tmp_path, '--total_iters', '2', '--sample_every', '0'))
    flags = tiny_flags(seasons32, tmp_path, '--total_iters', '4', '--sample_every', '0', '--resume_iter', '2',
                       '--arch', 'hsrc')
    assert main(flags) == 1
    err = capsys.readouterr().err
    assert 'generator: missing keys' in err or 'generator: unexpected keys' in err
    assert '--arch stargan-v2 (now hsrc)' in err
    assert 'Traceback' not in err


def test_corrupt_image_stops_before_training(seasons32, tmp_path, capsys):
    import shutil
    data = tmp_path / 'data'
    shutil.copytree(seasons32, data)
    (data / 'train' / 'winter' / 'broken.jpg').write_bytes(b'not an image at all')
    assert main(tiny_flags(data, tmp_path)) == 1
    err = capsys.readouterr().err
    assert 'broken.jpg' in err and '--skip_bad_images' in err
    assert not (tmp_path / 'checkpoints').exists() or not list((tmp_path / 'checkpoints').glob('*.ckpt'))
    with pytest.warns(UserWarning, match='broken.jpg'):
        assert main(tiny_flags(data, tmp_path, '--skip_bad_images', '--total_iters', '2', '--sample_every', '0')) == 0


def test_bad_flags_are_rejected_before_any_work(seasons32, tmp_path, capsys):
    for extra, flag in ((['--img_size', '48'], '--img_size'), (['--w_hpf', '1'], '--w_hpf'),
                        (['--nce_layers', '9'], '--nce_layers'), (['--patch_loss', 'nope=1'], '--patch_loss'),
                        (['--n_patch', '1'], '--n_patch'), (['--gamma_end', '0'], '--gamma_end')):
        assert main(tiny_flags(seasons32, tmp_path, *extra)) == 1
        assert flag in capsys.readouterr().err
    assert not (tmp_path / 'checkpoints').exists()
    assert main(tiny_flags(tmp_path / 'missing', tmp_path)) == 1
    assert '--train_img_dir' in capsys.readouterr().err
