"""The authors' command lines (CUT README, Hneg_SRC Single-modal train.sh, PUT and PatchGCL READMEs) parse to
the intended CUT config under --dry_run; how a command line that names no family is read."""
import json
import shlex

import pytest

from core.config import ConfigError, parse_config
from main import main

# Hneg_SRC Single-modal/script/train.sh (verbatim, without `python train.py`)
HSRC_H2Z = """--name exp_h2z --dataroot ./datasets/horse2zebra --CUT_mode CUT --dce_idt --lambda_HDCE 0.1
 --lambda_SRC 0.05 --use_curriculum --HDCE_gamma 50 --HDCE_gamma_min 10 --gpu_ids 0"""
HSRC_CITY = """--name exp_city --dataroot ./datasets/cityscapes_cut --CUT_mode CUT --dce_idt --lambda_HDCE 0.1
 --lambda_SRC 0.1 --direction BtoA --use_curriculum --HDCE_gamma 50 --HDCE_gamma_min 10 --step_gamma
 --step_gamma_epoch 200 --gpu_ids 0"""
HSRC_MONET = """--name exp_monet --dataroot ./datasets/single_image_monet_etretat --CUT_mode CUT --dce_idt
 --model sincut --lambda_HDCE 4.0 --lambda_SRC 10.0 --use_curriculum --HDCE_gamma 200 --HDCE_gamma_min 40 --gpu_ids 0"""
# CUT README
CUT_GRUMPY = '--dataroot ./datasets/grumpifycat --name grumpycat_CUT --CUT_mode CUT'
FASTCUT_GRUMPY = '--dataroot ./datasets/grumpifycat --name grumpycat_FastCUT --CUT_mode FastCUT'
# PUT README (--gpu_id: an argparse abbreviation of --gpu_ids in the release)
PUT_H2Z = '--dataroot ./datasets/horse2zebra --name h2z_PUT5 --choose_patch 5 --batch_size 1 --gpu_id 0'
PUT_CITY = '--name citys_PUT5 --choose_patch 5 --batch_size 1 --dataroot ./datasets/cityscapes/ --direction BtoA --gpu_id 0'
# PatchGCL README
GCL = """--name gcl_h2z --dataroot ./datasets/horse2zebra --lambda_GNN 0.1 --num_hop 2 --gnn_idt --nonzero_th 0.1
 --pooling_num 1 --pooling_ratio '1,0.5' --down_scale 4 --gpu_ids 0"""


def dry_run(command, capsys):
    """The config JSON that `python main.py --mode train <command> --dry_run` prints."""
    assert main(['--mode', 'train', *shlex.split(command), '--dry_run']) == 0
    return json.loads(capsys.readouterr().out)


def test_hsrc_horse2zebra_trains_hdce_and_src_as_single_modal(capsys):
    cfg = dry_run(HSRC_H2Z, capsys)
    assert cfg['model'] == 'cut' and cfg['patch_losses'] == [['src', 0.05], ['hdce', 0.1]]
    assert cfg['identity'] and cfg['hdce_mode'] == 'release' and cfg['src_reduction'] == 'sum'
    assert (cfg['use_curriculum'], cfg['gamma_start'], cfg['gamma_end'], cfg['step_gamma']) == (True, 50, 10, False)
    assert (cfg['n_epochs'], cfg['n_epochs_decay'], cfg['lr'], cfg['beta1'], cfg['beta2'], cfg['batch_size']) == \
        (200, 200, 2e-4, 0.5, 0.999, 1)
    assert cfg['nce_layers'] == [0, 4, 8, 12, 16] and cfg['n_patch'] == 256 and cfg['patch_dim'] == 256
    assert (cfg['netG'], cfg['netD'], cfg['gan_mode'], cfg['crop_size'], cfg['load_size']) == \
        ('resnet_9blocks', 'basic', 'lsgan', 256, 286)
    assert cfg['checkpoint_dir'] == './checkpoints/exp_h2z' and cfg['direction'] == 'AtoB'
    assert 'gpu_ids' not in cfg and 'num_domains' not in cfg and 'lambda_src' not in cfg   # nothing dead


def test_hsrc_cityscapes_is_btoa_with_the_gamma_step(capsys):
    cfg = dry_run(HSRC_CITY, capsys)
    assert cfg['direction'] == 'BtoA' and cfg['patch_losses'] == [['src', 0.1], ['hdce', 0.1]]
    assert cfg['step_gamma'] and cfg['step_gamma_epoch'] == 200 and not cfg['flip_equivariance']


def test_single_image_models_are_refused_with_a_message():
    with pytest.raises(ConfigError, match='--model sincut'):
        parse_config(['--mode', 'train', *shlex.split(HSRC_MONET)])


def test_cut_and_fastcut_presets(capsys):
    cut = dry_run(CUT_GRUMPY, capsys)
    assert cut['patch_losses'] == [['patchnce', 1.0]] and cut['identity'] and not cut['flip_equivariance']
    assert (cut['n_epochs'], cut['n_epochs_decay']) == (200, 200)
    fast = dry_run(FASTCUT_GRUMPY, capsys)
    assert fast['patch_losses'] == [['patchnce', 10.0]] and not fast['identity'] and fast['flip_equivariance']
    assert (fast['n_epochs'], fast['n_epochs_decay'], fast['CUT_mode']) == (150, 50, 'FastCUT')
    # presets change defaults only; lower-case spelling accepted as released
    explicit = dry_run(FASTCUT_GRUMPY.replace('FastCUT', 'fastcut') + ' --nce_idt --lambda_NCE 2', capsys)
    assert explicit['identity'] and explicit['patch_losses'] == [['patchnce', 2.0]]


def test_put_lines_turn_patchnce_into_put(capsys):
    cfg = dry_run(PUT_H2Z, capsys)
    assert cfg['patch_losses'] == [['put', 1.0]] and cfg['put_negatives'] == 5 and cfg['identity']
    assert dry_run(PUT_CITY, capsys)['direction'] == 'BtoA'


def test_patchgcl_line_sets_the_graph_loss_on_vgg16(capsys):
    cfg = dry_run(GCL, capsys)
    assert cfg['patch_losses'] == [['patchgcl', 0.1]] and cfg['identity'] and cfg['gcl_features'] == 'vgg16'
    assert (cfg['gcl_threshold'], cfg['gcl_num_hop'], cfg['gcl_pooling_num'], cfg['gcl_pooling_ratio'],
            cfg['gcl_down_scale']) == (0.1, 2, 1, [0.5], 4)


def test_plugins_and_our_flags_combine_with_the_released_ones(capsys):
    cfg = dry_run('--model cut --dataroot d --lambda_NCE 0 --patch_loss put=2 --put_negatives 3 --num_threads 0 '
                  '--continue_train --amp bf16', capsys)
    assert cfg['patch_losses'] == [['put', 2.0]] and cfg['put_negatives'] == 3
    assert cfg['num_workers'] == 0 and cfg['resume_iter'] == 'latest' and cfg['amp'] == 'bf16'


@pytest.mark.parametrize('argv, message', [
    (['--dataroot', 'd', '--num_domains', '3'], 'ambiguous command line: --dataroot belong to --model cut and '
                                                '--num_domains belong to --model stargan-v2'),
    (['--model', 'cut', '--dataroot', 'd', '--lambda_src', '0.1'], '--lambda_src: flag(s) of --model stargan-v2, '
                                                                   'not used by --model cut'),
    (['--model', 'stargan-v2', '--CUT_mode', 'CUT'], '--CUT_mode: flag(s) of --model cut, not used by '
                                                     '--model stargan-v2'),
    (['--preset', 'demo-cut', '--img_size', '64'], 'ambiguous command line: --preset demo-cut belong to --model cut'),
    (['--model', 'cut', '--dataroot', 'd', '--num_patches', '1'], '--num_patches must be at least 2'),
    (['--model', 'cut', '--dataroot', 'd', '--crop_size', '30'], '--crop_size must be a multiple of 4'),
    (['--model', 'cut', '--dataroot', 'd', '--nce_layers', '4,0'], '--nce_layers must list increasing'),
    (['--model', 'cut', '--dataroot', 'd', '--epoch_count', '5'], '--epoch_count must be 1'),
    (['--model', 'cut'], '--dataroot is needed'),
    (['--model', 'cut', '--dataroot', 'd', '--mode', 'sample'], '--mode sample is not available for --model cut'),
])
def test_ambiguous_or_foreign_flags_are_refused_naming_them(argv, message):
    with pytest.raises(ConfigError) as err:
        parse_config(['--mode', 'train', *argv])
    assert message in str(err.value)


def test_a_command_line_without_family_flags_is_stargan_v2_as_before():
    cfg = parse_config(['--mode', 'train', '--batch_size', '2'])
    assert 'model' not in cfg and 'dataroot' not in cfg and cfg.num_domains == 2
    assert parse_config(['--mode', 'train', '--model', 'stargan-v2']).arch == 'stargan-v2'


def test_main_prints_one_line_for_a_refused_command_line(capsys):
    assert main(['--mode', 'train', '--dataroot', 'd', '--num_domains', '3']) != 0
    err = capsys.readouterr().err
    assert 'ambiguous command line' in err and 'Traceback' not in err
