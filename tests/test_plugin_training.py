"""Plug-ins in real training runs: combined losses, checkpointed plug-in state, presets, the registry."""
import json
import math
import os
import re
import shutil

import torch

import core.contrastive as contrastive
from conftest import tiny_flags
from core.checkpoint import ckpt_path, safe_load
from core.config import PRESETS, parse_config
from main import main

NEW_PLUGINS = ('fsesim', 'lsesim', 'patchgcl', 'put')
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMBINED = ('--patch_loss', 'patchgcl=0.5', '--patch_loss', 'lsesim=1', '--patch_loss', 'put=1',
            '--sample_every', '0', '--save_every', '2')


# The training loop, the G objective and the plug-in boundary: none may name a plug-in.
GENERIC_CODE = ('core/trainer.py', 'core/losses.py', 'core/contrastive/objective.py', 'core/contrastive/base.py',
                'core/contrastive/sampler.py', 'core/contrastive/__init__.py')


def test_registry_lists_the_plugins_and_the_training_loop_never_names_them():
    assert set(NEW_PLUGINS) <= set(contrastive.registered())
    # Every registered name as a whole word, in code, strings and comments alike (hdce too).
    pattern = re.compile(r'(?<![\w.])(%s)(?!\w)' % '|'.join(map(re.escape, contrastive.registered())),
                         re.IGNORECASE)
    for path in GENERIC_CODE:
        with open(os.path.join(ROOT, path)) as f:
            found = pattern.search(f.read())
        assert found is None, f'{path} names the plug-in {found and found.group(0)!r}'


def _lines(run_dir):
    return [json.loads(line) for line in (run_dir / 'checkpoints' / 'stats.jsonl').read_text().splitlines()]


def test_combined_plugins_train_and_resume_exactly(seasons32, tmp_path):
    """SRC + hDCE + PatchGCL + LSeSim + PUT: finite losses, their state saved, a resumed run bit-exact."""
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert main(tiny_flags(seasons32, straight, *COMBINED)) == 0
    for line in _lines(straight):
        for key in ('G/latent/src', 'G/latent/hdce', 'G/latent/patchgcl', 'G/latent/patchgcl/degree',
                    'G/latent/lsesim', 'G/latent/lsesim/head_nce', 'G/latent/put', 'G/ref/patchgcl'):
            assert math.isfinite(line[key]), key
    nets = safe_load(ckpt_path(str(straight / 'checkpoints'), 4, 'nets'))
    optims = safe_load(ckpt_path(str(straight / 'checkpoints'), 4, 'optims'))
    for name in ('patch_sample', 'patchgcl', 'lsesim'):
        assert name in nets and name in optims, name
        assert all(torch.isfinite(v).all() for v in nets[name].values())
    assert 'put' not in nets   # PUT on encoder patches owns no parameters

    # A second run that stopped after step 2 and resumes from its checkpoint.
    os.makedirs(split / 'checkpoints')
    for kind in ('nets', 'nets_ema', 'optims'):
        shutil.copy(ckpt_path(str(straight / 'checkpoints'), 2, kind), split / 'checkpoints')
    assert main(tiny_flags(seasons32, split, *COMBINED, '--resume_iter', 'latest')) == 0
    resumed = safe_load(ckpt_path(str(split / 'checkpoints'), 4, 'nets'))
    before = safe_load(ckpt_path(str(straight / 'checkpoints'), 2, 'nets'))
    for name in ('patchgcl', 'lsesim', 'generator'):
        assert all(torch.equal(nets[name][k], resumed[name][k]) for k in nets[name]), name
    assert any(not torch.equal(nets['patchgcl'][k], before['patchgcl'][k]) for k in nets['patchgcl'])
    resumed_optims = safe_load(ckpt_path(str(split / 'checkpoints'), 4, 'optims'))
    assert torch.equal(optims['patchgcl']['state'][0]['exp_avg'], resumed_optims['patchgcl']['state'][0]['exp_avg'])


def test_plugin_state_that_does_not_match_is_refused(seasons32, tmp_path, capsys):
    flags = tiny_flags(seasons32, tmp_path, '--patch_loss', 'patchgcl=0.5', '--total_iters', '2',
                       '--sample_every', '0')
    assert main(flags) == 0
    resumed = flags[:flags.index('--total_iters')] + ['--total_iters', '4'] + flags[flags.index('--total_iters') + 2:]
    assert main(resumed + ['--resume_iter', '2', '--gcl_pooling_num', '0']) == 1
    err = capsys.readouterr().err
    assert 'patchgcl: unexpected keys' in err and 'pools.0' in err and 'Traceback' not in err


def test_combined_presets_and_command_line_weights():
    cfg = parse_config(['--mode', 'train', '--preset', 'seasons-combined'], check_paths=False)
    assert cfg.patch_losses == (('src', 0.1), ('hdce', 1.0), ('patchgcl', 0.5))
    assert cfg.checkpoint_dir == 'expr/checkpoints_seasons-combined' and cfg.num_domains == 4
    more = parse_config(['--mode', 'train', '--preset', 'seasons-combined', '--patch_loss', 'put=2'],
                        check_paths=False)
    assert more.patch_losses == (('src', 0.1), ('hdce', 1.0), ('patchgcl', 0.5), ('put', 2.0))
    assert PRESETS['seasons-combined']['patch_loss'] == [('patchgcl', 0.5)]   # the preset was not mutated
    demo = parse_config(['--mode', 'demo', '--preset', 'demo-combined'], check_paths=False)
    assert demo.img_size == 64 and ('patchgcl', 0.5) in demo.patch_losses
    by_flags = parse_config(['--mode', 'train', '--lambda_src', '0.1', '--lambda_dce', '1', '--use_hard',
                             '--patch_loss', 'patchgcl=0.5'], check_paths=False)
    assert by_flags.patch_losses == cfg.patch_losses
