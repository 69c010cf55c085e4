"""Plug-ins in real training runs: combined losses, checkpointed plug-in state, presets, the registry,
and the contract itself, through a plug-in that exists only in this file."""
import json
import math
import os
import pkgutil
import re
import shutil
import sys

import pytest
import torch
from torch import nn

import core.contrastive as contrastive
from conftest import tiny_flags
from core.checkpoint import ckpt_path, safe_load
from core.config import ConfigError, parse_config
from core.families.stargan_v2 import PRESETS
from core.contrastive import base
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


def test_every_module_of_the_package_is_imported_and_plugins_are_what_registers():
    modules = [info.name for info in pkgutil.iter_modules(contrastive.__path__)]
    assert all(f'core.contrastive.{name}' in sys.modules for name in modules)
    assert all(contrastive.get(name).__module__.startswith('core.contrastive.') for name in contrastive.registered())


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
    cfg = parse_config(['--mode', 'train', '--preset', 'seasons-combined'])
    assert cfg.patch_losses == (('src', 0.1), ('hdce', 1.0), ('patchgcl', 0.5))
    assert cfg.checkpoint_dir == 'expr/checkpoints_seasons-combined' and cfg.num_domains == 4
    more = parse_config(['--mode', 'train', '--preset', 'seasons-combined', '--patch_loss', 'put=2'])
    assert more.patch_losses == (('src', 0.1), ('hdce', 1.0), ('patchgcl', 0.5), ('put', 2.0))
    assert PRESETS['seasons-combined']['patch_loss'] == [('patchgcl', 0.5)]   # the preset was not mutated
    demo = parse_config(['--mode', 'demo', '--preset', 'demo-combined'])
    assert demo.img_size == 32 and ('patchgcl', 0.5) in demo.patch_losses   # the demo preset's size
    by_flags = parse_config(['--mode', 'train', '--lambda_src', '0.1', '--lambda_dce', '1', '--use_hard',
                             '--patch_loss', 'patchgcl=0.5'])
    assert by_flags.patch_losses == cfg.patch_losses


# ----------------------------------------------------------------------------------------------
# A plug-in written the way a contributor would, registered only for the tests that ask for it
# ----------------------------------------------------------------------------------------------

class ToyLoss(base.PatchLoss):
    """Feature matching on the deepest tapped layer, ramped in over --toy_ramp steps.

    Owns one parameter, `scale`, trained by the weighted loss and by an
    auxiliary pull toward --toy_target; reports the ramp as a schedule stat.
    """

    uses_patches = False

    def __init__(self, target=0.5, ramp=4):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.target, self.ramp = target, ramp

    @classmethod
    def add_arguments(cls, parser):
        g = parser.add_argument_group('test-only toy loss')
        g.add_argument('--toy_target', type=float, default=0.5, help='value the auxiliary loss pulls scale toward')
        g.add_argument('--toy_ramp', type=int, default=4, help='steps over which the loss is ramped in')

    @classmethod
    def validate(cls, cfg):
        return [] if cfg.toy_target > 0 else ['--toy_target must be > 0']

    @classmethod
    def from_config(cls, cfg, feat_channels):
        return cls(target=cfg.toy_target, ramp=cfg.toy_ramp)

    def ramp_at(self, step):
        return min(step / self.ramp, 1.0)

    def forward(self, inp):
        ramp = self.ramp_at(inp.step)
        loss = ramp * self.scale * (inp.feat_q[-1] - inp.feat_k[-1]).pow(2).mean()
        aux = (self.scale - self.target).pow(2)
        return loss, {'ramp': torch.tensor(ramp, dtype=torch.float64)}, aux


@pytest.fixture
def toy_plugin():
    """ToyLoss registered as 'toy' for one test; the registry is restored afterwards, and that is checked."""
    with contrastive.PATCH_LOSSES.restored():
        yield contrastive.register('toy')(ToyLoss)
    assert 'toy' not in contrastive.registered()


TOY_FLAGS = ('--lambda_src', '0', '--lambda_dce', '0', '--patch_loss', 'toy=0.5', '--toy_target', '0.25',
             '--total_iters', '6', '--save_every', '3', '--sample_every', '0')


def _tensors(obj, prefix=''):
    """Every tensor of a checkpoint payload as {dotted name: tensor}."""
    if isinstance(obj, torch.Tensor):
        return {prefix: obj}
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, (list, tuple)) else ()
    return {name: t for key, value in items
            for name, t in _tensors(value, f'{prefix}.{key}' if prefix else str(key)).items()}


def _checkpoint(run_dir, step):
    return _tensors({kind: safe_load(ckpt_path(str(run_dir / 'checkpoints'), step, kind))
                     for kind in ('nets', 'nets_ema', 'optims')})


def test_a_plugin_defined_in_a_test_trains_saves_resumes_and_logs(toy_plugin, seasons32, tmp_path):
    straight, split = tmp_path / 'straight', tmp_path / 'split'
    assert main(tiny_flags(seasons32, straight, *TOY_FLAGS)) == 0

    # Its flag reached the config, its parameter was saved and optimised, and it moved.
    assert json.loads((straight / 'checkpoints' / 'config.json').read_text())['toy_target'] == 0.25
    nets = safe_load(ckpt_path(str(straight / 'checkpoints'), 6, 'nets'))
    assert 'toy' in nets and 'patch_sample' not in nets   # uses_patches = False: no shared heads
    assert 'toy' in safe_load(ckpt_path(str(straight / 'checkpoints'), 6, 'optims'))
    assert float(nets['toy']['scale']) < 1.0

    # Its schedule stat is logged under its name, on logging steps 2, 4, 6 (0-based steps 1, 3, 5).
    lines = _lines(straight)
    assert [line['step'] for line in lines] == [2, 4, 6]
    assert [line['G/latent/toy/ramp'] for line in lines] == [0.25, 0.75, 1.0]
    assert all(math.isfinite(line['G/latent/toy']) and 'G/ref/toy/ramp' in line for line in lines)

    # Stopped after step 3 and resumed: the same 6-step state, bit for bit.
    os.makedirs(split / 'checkpoints')
    for kind in ('nets', 'nets_ema', 'optims'):
        shutil.copy(ckpt_path(str(straight / 'checkpoints'), 3, kind), split / 'checkpoints')
    assert main(tiny_flags(seasons32, split, *TOY_FLAGS, '--resume_iter', 'latest')) == 0
    a, b = _checkpoint(straight, 6), _checkpoint(split, 6)
    assert a.keys() == b.keys() and any('toy' in key for key in a)
    assert [key for key in a if not torch.equal(a[key], b[key])] == []
    assert not torch.equal(_checkpoint(straight, 3)['nets.toy.scale'], a['nets.toy.scale'])
    assert _lines(split)[-1]['G/latent/toy/ramp'] == 1.0


def test_a_plugin_defined_in_a_test_validates_its_own_flag_once(toy_plugin):
    with pytest.raises(ConfigError) as err:
        parse_config(['--mode', 'train', '--patch_loss', 'toy=1', '--toy_target', '0'])
    assert str(err.value).count('--toy_target must be > 0') == 1
