"""Flags: upstream names and defaults, published command lines, presets, validation, immutability."""
import importlib
import json
import os
import shlex

import pytest

from core.config import Config, ConfigError, build_parser, parse_config
from core.modes import MODES
from main import main

# reference-stargan-v2.md §1.1: official flags and defaults (w_hpf differs on purpose: 0, FAN not shipped)
OFFICIAL_DEFAULTS = dict(
    img_size=256, num_domains=2, latent_dim=16, hidden_dim=512, style_dim=64, lambda_reg=1, lambda_cyc=1,
    lambda_sty=1, lambda_ds=1, ds_iter=100000, randcrop_prob=0.5, total_iters=100000, resume_iter=0,
    batch_size=8, val_batch_size=32, lr=1e-4, f_lr=1e-6, beta1=0.0, beta2=0.99, weight_decay=1e-4,
    num_outs_per_domain=10, num_workers=4, seed=777, train_img_dir='data/celeba_hq/train',
    val_img_dir='data/celeba_hq/val', sample_dir='expr/samples', checkpoint_dir='expr/checkpoints',
    eval_dir='expr/eval', result_dir='expr/results', src_dir='assets/representative/celeba_hq/src',
    ref_dir='assets/representative/celeba_hq/ref', inp_dir='assets/representative/custom/female',
    out_dir='assets/representative/celeba_hq/src/female', wing_path='expr/checkpoints/wing.ckpt',
    lm_path='expr/checkpoints/celeba_lm_mean.npz', print_every=10, sample_every=5000, save_every=10000,
    eval_every=50000)
# main_hSRC.py additions (lambda_src/lambda_dce default to 0 here so that official command lines
# train plain StarGAN v2; HSRC's scripts pass them explicitly)
HSRC_DEFAULTS = dict(lambda_nce=0.0, gamma_start=50.0, gamma_end=1.0, n_patch=128, use_curriculum=False,
                     use_hard=False)

HSRC_RUN_TRAIN = """--mode train --num_domains 4 --w_hpf 0 --lambda_reg 1 --lambda_sty 1 --lambda_ds 2 --lambda_cyc 1
 --lambda_src 0.1 --lambda_nce 0.0 --lambda_dce 1.0 --checkpoint_dir ./expr/checkpoints_seasons
 --eval_dir ./expr/eval_seasons --sample_dir ./expr/samples_seasons --train_img_dir ./data/seasons/train
 --val_img_dir ./data/seasons/val --result_dir ./expr/results_seasons --use_curriculum --n_patch 128 --use_hard"""
OFFICIAL_AFHQ_TRAIN = """--mode train --num_domains 3 --w_hpf 0 --lambda_reg 1 --lambda_sty 1 --lambda_ds 2
 --lambda_cyc 1 --train_img_dir data/afhq/train --val_img_dir data/afhq/val"""


def _cfg(*argv):
    return parse_config(['--mode', 'train', *argv])


def test_official_and_hsrc_flags_keep_their_defaults():
    cfg = _cfg()
    assert {k: cfg[k] for k in OFFICIAL_DEFAULTS} == OFFICIAL_DEFAULTS
    assert {k: cfg[k] for k in HSRC_DEFAULTS} == HSRC_DEFAULTS
    assert cfg.w_hpf == 0 and cfg.patch_losses == ()


def test_published_command_lines_run_unchanged():
    cfg = parse_config(shlex.split(HSRC_RUN_TRAIN))
    assert cfg.patch_losses == (('src', 0.1), ('hdce', 1.0))
    assert cfg.num_domains == 4 and cfg.lambda_ds == 2 and cfg.use_curriculum and cfg.n_patch == 128
    afhq = parse_config(shlex.split(OFFICIAL_AFHQ_TRAIN))
    assert afhq.patch_losses == () and afhq.num_domains == 3 and afhq.arch == 'stargan-v2'


def test_lambda_nce_replaces_dce_as_in_hsrc():
    assert _cfg('--lambda_dce', '1', '--lambda_nce', '0.5').patch_losses == (('patchnce', 0.5),)
    assert _cfg('--lambda_dce', '1').patch_losses == (('dce', 1.0),)
    assert _cfg('--lambda_src', '0.1', '--patch_loss', 'patchnce=2').patch_losses == (('src', 0.1), ('patchnce', 2.0))


def test_presets_set_defaults_and_explicit_flags_win():
    cfg = _cfg('--preset', 'weather-reproduce', '--lambda_dce', '0.3')
    assert (cfg.arch, cfg.num_domains, cfg.cyc_mode, cfg.query_side, cfg.hdce_mode) == (
        'hsrc', 5, 'identity', 'real', 'release')
    assert cfg.patch_losses == (('src', 0.1), ('hdce', 0.3))
    paper = _cfg('--preset', 'seasons')
    assert (paper.arch, paper.cyc_mode, paper.query_side, paper.num_domains) == ('stargan-v2', 'cycle', 'fake', 4)
    assert _cfg('--preset', 'seasons', '--no-use_hard').patch_losses == (('src', 0.1), ('dce', 1.0))
    combined = _cfg('--preset', 'seasons-combined', '--patch_loss', 'patchgcl=0.2')
    assert combined.patch_losses == (('src', 0.1), ('hdce', 1.0), ('patchgcl', 0.2))
    demo = parse_config(['--mode', 'demo'])
    assert demo.preset == 'demo' and demo.img_size == 32 and demo.total_iters == 1200


@pytest.mark.parametrize('argv,flag', [
    (['--img_size', '100'], '--img_size'), (['--w_hpf', '1'], '--w_hpf'), (['--num_domains', '1'], '--num_domains'),
    (['--lambda_src', '-1'], '--lambda_src'), (['--resume_iter', '5', '--total_iters', '4'], '--resume_iter'),
    (['--lambda_src', '0.1', '--nce_layers', '7'], '--nce_layers'), (['--patch_loss', 'foo=1'], '--patch_loss'),
    (['--lambda_dce', '1', '--n_patch', '1'], '--n_patch'), (['--randcrop_prob', '2'], '--randcrop_prob'),
    (['--lambda_src', '0.1', '--patch_loss', 'src=1'], '--patch_loss')])
def test_bad_combinations_name_the_flag(argv, flag):
    with pytest.raises(ConfigError) as err:
        _cfg(*argv)
    assert flag in str(err.value)


def test_unknown_flag_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(['--mode', 'train', '--no_such_flag'])
    assert exit_info.value.code == 2
    assert 'no_such_flag' in capsys.readouterr().err


def test_config_is_immutable_and_round_trips():
    cfg = _cfg('--preset', 'seasons')
    with pytest.raises(AttributeError):
        cfg.lr = 1.0
    with pytest.raises(TypeError):
        cfg['lr'] = 1.0
    changed = cfg.replace(lr=1.0)
    assert changed.lr == 1.0 and cfg.lr == 1e-4
    again = Config.from_json(cfg.to_json())
    assert again == cfg and isinstance(again.nce_layers, tuple) and isinstance(again.patch_losses[0], tuple)


def test_dry_run_prints_the_resolved_config(capsys):
    assert main(['--mode', 'train', '--preset', 'weather', '--dry_run']) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed['num_domains'] == 5 and printed['lambda_dce'] == 0.1 and printed['base_dim'] == 64


def test_cli_wrapper_turns_user_errors_and_ctrl_c_into_exit_codes(capsys):
    from core.utils.errors import UserError, run_cli

    def fail():
        raise UserError('the flag --x is wrong')

    def interrupt():
        raise KeyboardInterrupt

    assert run_cli(fail) == 1
    assert capsys.readouterr().err == 'error: the flag --x is wrong\n'
    assert run_cli(interrupt) == 130
    assert run_cli(lambda: None) == 0
    assert run_cli(lambda: 2) == 2
    with pytest.raises(ZeroDivisionError):   # a bug keeps its traceback
        run_cli(lambda: 1 / 0)


def test_a_reader_that_leaves_early_gets_no_traceback():
    """`python main.py ... --dry_run | head -1`: the pipe closes before the config is printed."""
    import subprocess
    import sys
    proc = subprocess.Popen([sys.executable, 'main.py', '--mode', 'train', '--dry_run'], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    proc.stdout.close()   # before the child has imported anything: its print meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141 and err == ''


def test_every_mode_is_one_entry_that_main_checks_and_help_read_and_align_is_not_a_choice(capsys):
    action = next(a for a in build_parser()._actions if a.dest == 'mode')
    assert action.choices == list(MODES) == ['train', 'sample', 'eval', 'translate', 'prepare', 'demo', 'export', 'app']
    for name, mode in MODES.items():
        assert mode.name == name and callable(mode.run) and callable(mode.checks) and callable(mode.outputs)
        module, function = mode.runner.split(':')   # the runner names a function that exists
        assert callable(getattr(importlib.import_module(module), function)), mode.runner
        assert f'{name}: {mode.help}' in action.help
    with pytest.raises(SystemExit) as info:   # argparse's own rejection: usage line and exit status 2
        parse_config(['--mode', 'align'])
    assert info.value.code == 2
    assert "invalid choice: 'align'" in capsys.readouterr().err


def test_ignored_upstream_flags_are_accepted_and_labelled():
    cfg = parse_config(['--mode', 'train', '--wing_path', 'w.ckpt', '--lm_path', 'lm.npz',
                        '--inp_dir', 'in', '--out_dir', 'out'])
    assert cfg.wing_path == 'w.ckpt'
    groups = {g.title: [a.dest for a in g._group_actions] for g in build_parser()._action_groups}
    assert sorted(groups['accepted, ignored']) == ['inp_dir', 'lm_path', 'out_dir', 'wing_path']


@pytest.mark.parametrize('argv, flag', [
    (['--lr', 'nan'], '--lr'), (['--f_lr', 'inf'], '--f_lr'), (['--lambda_cyc=-inf'], '--lambda_cyc'),
    (['--lambda_sty', '-1'], '--lambda_sty'), (['--randcrop_prob', 'nan'], '--randcrop_prob'),
    (['--beta2', 'nan'], '--beta2'), (['--fps', 'inf'], '--fps'), (['--nce_T', 'nan'], '--nce_T'),
    (['--patch_loss', 'patchgcl=nan'], '--patch_loss'), (['--gcl_threshold', 'inf'], '--gcl_threshold'),
    (['--seed', '-1'], '--seed'), (['--seed', str(2 ** 32)], '--seed')])
def test_values_that_cannot_work_are_refused_once_naming_the_flag(argv, flag):
    """NaN passes every `< 0` check, so non-finite values have their own check; one message per flag."""
    with pytest.raises(ConfigError) as err:
        _cfg(*argv)
    lines = str(err.value).splitlines()
    assert len(lines) == 1 and lines[0].startswith(flag + ' '), lines


def test_seed_range_covers_the_32_bits_that_seeding_keeps():
    assert _cfg('--seed', '0').seed == 0 and _cfg('--seed', str(2 ** 32 - 1)).seed == 2 ** 32 - 1


@pytest.mark.parametrize('argv, line', [
    (['--total_iter', '5'], 'error: unknown flag --total_iter; did you mean --total_iters?\n'),
    (['--total_iter=5'], 'error: unknown flag --total_iter; did you mean --total_iters?\n'),
    (['--pre', 'seasons'], 'error: unknown flag --pre; did you mean --preset?\n'),
    (['--lamda_cyc', '2'], 'error: unknown flag --lamda_cyc; did you mean --lambda_cyc?\n')])
def test_abbreviated_or_misspelt_flags_exit_2_with_one_did_you_mean_line(argv, line, capsys):
    with pytest.raises(SystemExit) as info:
        main(['--mode', 'train', *argv])
    assert info.value.code == 2
    assert capsys.readouterr().err == line   # no usage dump before it


def test_help_still_prints_the_usage(capsys):
    with pytest.raises(SystemExit) as info:
        main(['--help'])
    assert info.value.code == 0 and '--total_iters' in capsys.readouterr().out


# ----------------------------------------------------------------------------------------------
# One pass over argv; the facts of a run are kept beside its flags
# ----------------------------------------------------------------------------------------------

def test_argv_is_parsed_once_and_the_flags_it_gives_are_run_facts(monkeypatch):
    import core.config
    calls = []
    real = core.config.FlagParser.parse_known_args
    monkeypatch.setattr(core.config.FlagParser, 'parse_known_args',
                        lambda self, *args, **kwargs: calls.append(args) or real(self, *args, **kwargs))
    cfg = parse_config(['--mode', 'sample', '--preset', 'demo', '--val_batch_size', '8', '--patch_loss', 'put=2'])
    assert len(calls) == 1
    # given on the command line, even when equal to the preset's value; neither a flag nor in the JSON
    assert cfg.facts.explicit_flags == ('mode', 'patch_loss', 'preset', 'val_batch_size')
    assert 'explicit_flags' not in cfg and 'domain_names' not in cfg and 'explicit_flags' not in cfg.to_json()
    assert cfg.img_size == 32 and cfg.patch_losses == (('src', 0.01), ('hdce', 0.1), ('put', 2.0))
    assert parse_config(['--mode', 'train']).facts.explicit_flags == ('mode',)
    assert Config.from_json(cfg.to_json()) == cfg   # flags only: the facts do not take part


def test_help_shows_the_defaults_of_a_preset_given_before_it(capsys):
    for argv, default in ((['--help'], '(default: 256)'), (['--preset', 'demo', '--help'], '(default: 32)'),
                          (['--mode', 'demo', '-h'], '(default: 32)')):
        with pytest.raises(SystemExit) as info:
            main(argv)
        out = capsys.readouterr().out
        assert info.value.code == 0
        assert default in out[out.index('--img_size IMG_SIZE   '):].splitlines()[0], argv


def _payload_of_the_earlier_layout(payload):
    """A checkpoint payload as files of the earlier layout hold it: the run facts inside the config."""
    from core.checkpoint import DIGEST_KEY, payload_digest
    config = {**json.loads(payload['config']), **json.loads(payload.pop('run'))}
    old = {**{k: v for k, v in payload.items() if k != DIGEST_KEY}, 'config': json.dumps(config, indent=2)}
    return {**old, DIGEST_KEY: payload_digest(old)}


def test_a_resume_reports_no_change_and_the_facts_live_beside_the_config(seasons32, tmp_path, capsys, monkeypatch):
    from conftest import interrupt_training, tiny_flags
    from core.checkpoint import ckpt_path, read_checkpoint
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0')
    restore = interrupt_training(monkeypatch, 3)
    assert main(flags) == 130   # stopped in step 4, after the checkpoint of step 2
    restore()
    capsys.readouterr()
    assert main(flags + ['--resume_iter', 'latest']) == 0
    assert 'differs' not in capsys.readouterr().out
    ckpt_dir = tmp_path / 'checkpoints'
    config = json.loads((ckpt_dir / 'config.json').read_text())
    run = json.loads((ckpt_dir / 'run.json').read_text())
    assert 'domain_names' not in config and 'explicit_flags' not in config and config['resume_iter'] == 'latest'
    assert run['domain_names'] == ['autumn', 'spring', 'summer', 'winter'] and 'resume_iter' in run['explicit_flags']
    payload = read_checkpoint(ckpt_path(str(ckpt_dir), 4, 'nets_ema'))
    assert json.loads(payload['run'])['domain_names'] == run['domain_names']
    assert 'domain_names' not in json.loads(payload['config'])


def test_checkpoints_and_configs_of_the_earlier_layout_still_load(seasons32, tmp_path, capsys):
    from conftest import tiny_flags
    from core.checkpoint import ckpt_path, read_checkpoint, stored_config
    from core.inference import load_model
    from core.utils.fileio import atomic_save
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0', '--total_iters', '2')
    assert main(flags) == 0
    ckpt_dir = tmp_path / 'checkpoints'
    for kind in ('nets', 'nets_ema', 'optims'):
        path = ckpt_path(str(ckpt_dir), 2, kind)
        atomic_save(_payload_of_the_earlier_layout(read_checkpoint(path)), path)
    old = {**json.loads((ckpt_dir / 'config.json').read_text()),
           'domain_names': ['autumn', 'spring', 'summer', 'winter'], 'explicit_flags': ['mode', 'seed']}
    (ckpt_dir / 'config.json').write_text(json.dumps(old, indent=2) + '\n')
    os.remove(ckpt_dir / 'run.json')

    stored = stored_config(read_checkpoint(ckpt_path(str(ckpt_dir), 2, 'nets_ema')))
    assert 'domain_names' not in stored and stored.facts.domain_names == ('autumn', 'spring', 'summer', 'winter')
    model = load_model(parse_config(flags[2:] + ['--mode', 'sample', '--resume_iter', '2']), 'cpu', verbose=False)
    assert model.cfg.facts.domain_names == ('autumn', 'spring', 'summer', 'winter')
    capsys.readouterr()
    # resuming it from the old files: only the flag that changed is reported
    assert main(flags[:-2] + ['--total_iters', '4', '--resume_iter', 'latest']) == 0
    changed = [line for line in capsys.readouterr().out.splitlines() if 'differs' in line]
    assert len(changed) == 1 and changed[0].endswith(': --total_iters 2 -> 4; writing the new one'), changed
