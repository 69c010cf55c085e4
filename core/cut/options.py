"""The CUT family's flags: CUT's and Hneg_SRC Single-modal's command lines, read with their meaning.

core/families/cut.py (the family plug-in) hands these to the command line:
  add_arguments(parser)  CUT's flag groups;
  defaults(argv)         the CUT family's defaults of shared flags and --CUT_mode's;
  derive(cfg)            the shared fields the plug-ins and the shared code read,
                         computed from CUT's flags (--num_patches -> n_patch, ...);
  errors(cfg)            the problems of CUT's own flags, each naming its flag.
How a command line picks this family is core.families.select (docs/cut.md).

Losses, as the releases define them (reference: CUT cut_model.py, Hneg_SRC
Single-modal cut_model.py): PatchNCE at --lambda_NCE unless a Hneg_SRC flag
is given (--lambda_HDCE, --lambda_SRC, --dce_idt, --HDCE_gamma, ...), which
selects hDCE + SRC as Single-modal trains them (--lambda_NCE then defaults to
0); PatchGCL's flags (--lambda_GNN, --gnn_idt, --num_hop, ...) select its
graph loss on VGG16 features in the same way; --choose_patch N (PUT) turns
PatchNCE into PUT with N negatives; --patch_loss NAME=W adds any registered
loss. Which terms also run on the identity path: see core/cut/trainer.py.
"""
import argparse
import json
import os

from core.cut.networks import DISCRIMINATORS, GENERATOR_BLOCKS, INIT_TYPES, NORMS, num_layers
from core.families.base import flag_value, option_strings

CUT_MODES = {'cut': 'CUT', 'fastcut': 'FastCUT'}
PREPROCESS = ('resize_and_crop', 'resize', 'crop', 'scale_width', 'scale_width_and_crop', 'none')
GAN_MODES = ('lsgan', 'vanilla', 'nonsaturating')
# Presets of this family (--preset; --mode demo with CUT flags or --model cut means demo-cut): defaults only, flags win.
PRESETS = {
    # Summer -> winter on the synthetic seasons at 32 px in about 5 minutes on 2 CPU cores: small
    # networks, Single-modal's SRC + hDCE with the identity term, 64 patches (32 px maps have few
    # positions), 15 + 10 epochs of the 60 summer images (1500 steps). Weights 1 and 0.1: with
    # horse2zebra's 0.1 and 0.05 (or PatchNCE at 1) the adversarial term wins in so few steps and
    # the structure stays below the input-unchanged baseline (docs/cut.md).
    'demo-cut': dict(dataroot='data/synthetic-seasons-cut', domains='summer,winter', name='demo',
                     checkpoints_dir='expr/cut', results_dir='expr/cut/results', crop_size=32, load_size=36,
                     ngf=16, ndf=16, num_patches=64, n_epochs=15, n_epochs_decay=10, num_workers=0,
                     print_freq=300, display_freq=300, save_epoch_freq=5, save_latest_freq=600, num_test=32,
                     lambda_NCE=0.0, nce_idt=False, lambda_HDCE=1.0, lambda_SRC=0.1, dce_idt=True,
                     use_curriculum=True, HDCE_gamma=50.0, HDCE_gamma_min=10.0, flip_equivariance=False),
}

# Shared flags whose defaults differ in the CUT family (CUT's base_options / train_options values).
SHARED_DEFAULTS = dict(batch_size=1, lr=2e-4, beta1=0.5, beta2=0.999, weight_decay=0.0, nce_layers=(0, 4, 8, 12, 16),
                       hdce_mode='release', src_reduction='sum', num_workers=4)

# --CUT_mode presets (CUT cut_model.py): they change defaults only, so explicit flags win.
CUT_MODE_DEFAULTS = {
    'CUT': dict(nce_idt=True, lambda_NCE=1.0, flip_equivariance=False, n_epochs=200, n_epochs_decay=200),
    'FastCUT': dict(nce_idt=False, lambda_NCE=10.0, flip_equivariance=True, n_epochs=150, n_epochs_decay=50),
}
# Hneg_SRC Single-modal removed the presets: hDCE + SRC at weight 1, identity only with --dce_idt,
# 200 + 200 epochs whatever --CUT_mode says, and no PatchNCE.
HSRC_DEFAULTS = dict(nce_idt=False, lambda_NCE=0.0, lambda_HDCE=1.0, lambda_SRC=1.0, flip_equivariance=False,
                     n_epochs=200, n_epochs_decay=200)
HSRC_FLAGS = ('--lambda_HDCE', '--lambda_SRC', '--dce_idt', '--HDCE_gamma', '--HDCE_gamma_min', '--step_gamma',
              '--step_gamma_epoch', '--no_Hneg')
# PatchGCL (also a CUT fork without the presets): its graph loss on VGG16 features, identity only with --gnn_idt.
GCL_DEFAULTS = dict(nce_idt=False, lambda_NCE=0.0, lambda_GNN=1.0, flip_equivariance=False, n_epochs=200,
                    n_epochs_decay=200)
GCL_FLAGS = ('--lambda_GNN', '--gnn_idt', '--num_hop', '--pooling_num', '--pooling_ratio', '--down_scale',
             '--nonzero_th', '--attn_layers')
# Released flags accepted and ignored (they never enter the config).
IGNORED_VALUE_FLAGS = ('--gpu_ids', '--gpu_id', '--display_id', '--display_server', '--display_env', '--display_port',
                       '--display_winsize', '--display_ncols', '--update_html_freq', '--evaluation_freq', '--suffix',
                       '--alpha', '--aspect_ratio')
IGNORED_SWITCHES = ('--no_html', '--verbose', '--save_by_iter', '--eval')
IGNORED = tuple(flag[2:] for flag in IGNORED_VALUE_FLAGS + IGNORED_SWITCHES)
X_PATH_ONLY = ('src',)   # terms computed on the translation path only (Hneg_SRC); the others average both paths

# Fields of StarGAN v2's own flags that a CUT config keeps: derive() computes them from CUT's flags for the
# shared code (plug-ins, checks, logging); compile stays False. The number of steps is set by training,
# from the number of images and epochs.
DERIVED = ('n_patch', 'patch_dim', 'gamma_start', 'gamma_end', 'query_side', 'checkpoint_dir', 'result_dir',
           'sample_dir', 'print_every', 'sample_every', 'eval_every', 'metrics', 'fid_protocol', 'compile')


def str2bool(value):
    """CUT's str2bool: yes/true/t/y/1 and no/false/f/n/0, any case."""
    text = str(value).lower()
    if text in ('yes', 'true', 't', 'y', '1'):
        return True
    if text in ('no', 'false', 'f', 'n', '0'):
        return False
    raise argparse.ArgumentTypeError(f'expected a boolean (true/false), got {value!r}')


def _cut_mode(value):
    """--CUT_mode CUT|cut|FastCUT|fastcut, stored as CUT or FastCUT."""
    try:
        return CUT_MODES[value.lower()]
    except KeyError:
        raise argparse.ArgumentTypeError('expected CUT or FastCUT') from None


def _size_or_inf(value):
    """--max_dataset_size: a count, or inf (CUT's default) stored as None."""
    if value.lower() in ('inf', 'infinity'):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a number of images or 'inf'") from None


def _bool_flag(group, flag, default, text):
    group.add_argument(flag, type=str2bool, nargs='?', const=True, default=default, help=text)


# ----------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------

def add_arguments(parser):
    """Add CUT's and Hneg_SRC Single-modal's flags (four groups) to the parser."""
    _add_data_flags(parser)
    _add_network_flags(parser)
    _add_objective_flags(parser)
    _add_schedule_flags(parser)
    _add_ignored_flags(parser)


def _add_data_flags(p):
    g = p.add_argument_group('CUT family (--model cut): experiment and data')
    g.add_argument('--dataroot', default=None,
                   help='dataroot/trainA, trainB (testA, testB for translate) as in CUT; or a folder of ours '
                        'whose train/ (val/) holds one sub-folder per domain, see --domains')
    g.add_argument('--domains', default=None,
                   help='with a folder of ours: the sub-folders used as A and B, e.g. summer,winter '
                        '(default: its two sub-folders, sorted)')
    g.add_argument('--name', default='experiment_name', help='experiment name: checkpoints_dir/name holds the run')
    g.add_argument('--checkpoints_dir', default='./checkpoints', help='where runs are saved')
    g.add_argument('--results_dir', default='./results/', help='translate: results_dir/name/<phase>_<epoch>/images')
    g.add_argument('--phase', default='train',
                   help='the folders <phase>A and <phase>B (or <phase>/<domain>) used: train; translate and eval: test')
    g.add_argument('--direction', choices=['AtoB', 'BtoA'], default='AtoB', help='BtoA swaps the two domains')
    g.add_argument('--dataset_mode', choices=['unaligned'], default='unaligned',
                   help='unpaired A and B images (the one dataset CUT trains on)')
    g.add_argument('--max_dataset_size', type=_size_or_inf, default=None,
                   help='use at most this many images of each domain (inf: all)')
    g.add_argument('--serial_batches', action='store_true',
                   help='take A images in order and B image i with A image i, instead of shuffled and random')
    g.add_argument('--num_threads', dest='num_workers', type=int, default=argparse.SUPPRESS,
                   help='data-loading workers (CUT\'s name for --num_workers)')
    g.add_argument('--load_size', type=int, default=286, help='resize images to this size (square, bicubic)')
    g.add_argument('--crop_size', type=int, default=256, help='then crop to this size (the training resolution)')
    g.add_argument('--preprocess', choices=list(PREPROCESS), default='resize_and_crop',
                   help='how images are brought to --crop_size; in the --n_epochs_decay epochs, load_size = '
                        'crop_size (no scale jitter), as released')
    g.add_argument('--no_flip', action='store_true', help='no random horizontal flips')
    g.add_argument('--input_nc', type=int, choices=[3], default=3, help='input channels (RGB)')
    g.add_argument('--output_nc', type=int, choices=[3], default=3, help='output channels (RGB)')


def _add_network_flags(p):
    g = p.add_argument_group('CUT family: networks (state_dict keys as released)')
    g.add_argument('--netG', choices=list(GENERATOR_BLOCKS), default=None,
                   help='generator: resnet_9blocks (default at --crop_size 256 and above) or resnet_6blocks '
                        '(default below)')
    g.add_argument('--netD', choices=list(DISCRIMINATORS), default='basic',
                   help='basic: the 3-layer (70x70) PatchGAN; n_layers: --n_layers_D layers')
    g.add_argument('--n_layers_D', type=int, default=3, help='layers of the n_layers discriminator')
    g.add_argument('--ngf', type=int, default=64, help='generator width (first conv)')
    g.add_argument('--ndf', type=int, default=64, help='discriminator width (first conv)')
    g.add_argument('--normG', choices=list(NORMS), default='instance', help='generator normalisation')
    g.add_argument('--normD', choices=list(NORMS), default='instance', help='discriminator normalisation')
    g.add_argument('--init_type', choices=list(INIT_TYPES), default='xavier', help='weight initialisation')
    g.add_argument('--init_gain', type=float, default=0.02, help='gain of the initialisation')
    _bool_flag(g, '--no_dropout', True, 'no dropout in the residual blocks (CUT: true)')
    g.add_argument('--no_antialias', action='store_true', help='stride-2 convs instead of blur-pool down-sampling')
    g.add_argument('--no_antialias_up', action='store_true', help='transposed convs instead of blur up-sampling')
    g.add_argument('--netF', choices=['mlp_sample'], default='mlp_sample',
                   help='patch heads: a 2-layer MLP per tapped layer on sampled positions')
    g.add_argument('--netF_nc', type=int, default=256, help='width of the patch heads')


def _add_objective_flags(p):
    g = p.add_argument_group('CUT family: objective (patch losses from the shared registry, see --patch_loss)')
    g.add_argument('--CUT_mode', type=_cut_mode, default='CUT',
                   help='CUT, or FastCUT: lambda_NCE 10, no identity term, flip equivariance, 150 + 50 epochs '
                        '(defaults only; explicit flags win; no effect with Hneg_SRC flags, as released)')
    g.add_argument('--gan_mode', choices=list(GAN_MODES), default='lsgan', help='adversarial objective')
    g.add_argument('--lambda_GAN', type=float, default=1.0, help='weight of the adversarial loss')
    g.add_argument('--lambda_NCE', type=float, default=1.0, help='weight of PatchNCE (FastCUT: 10)')
    _bool_flag(g, '--nce_idt', None, 'identity term: the patch losses also on (real_B, G(real_B)), averaged '
                                     'with the translation path (CUT: true, FastCUT: false)')
    _bool_flag(g, '--nce_includes_all_negatives_from_minibatch', False,
               'negatives from every image of the batch (not supported: the registered losses take '
               'negatives within each image)')
    g.add_argument('--num_patches', type=int, default=256, help='patches sampled per tapped layer and image')
    _bool_flag(g, '--flip_equivariance', None, 'FastCUT\'s flip equivariance (one coin per iteration)')
    g.add_argument('--pool_size', type=int, choices=[0], default=0, help='image pool (CUT has none)')
    g = p.add_argument_group('CUT family: Hneg_SRC Single-modal and PUT flags')
    g.add_argument('--lambda_HDCE', type=float, default=0.0, help='weight of hDCE (Hneg_SRC default 1)')
    g.add_argument('--lambda_SRC', type=float, default=0.0, help='weight of SRC (Hneg_SRC default 1)')
    g.add_argument('--dce_idt', action='store_true', help='Hneg_SRC\'s identity term (hDCE on real_B, G(real_B))')
    g.add_argument('--HDCE_gamma', type=float, default=1.0,
                   help='hard-negative temperature at the first epoch (with --use_curriculum)')
    g.add_argument('--HDCE_gamma_min', type=float, default=1.0, help='hard-negative temperature at the last epoch')
    g.add_argument('--step_gamma', action='store_true', help='temperature 1 after --step_gamma_epoch')
    g.add_argument('--step_gamma_epoch', type=int, default=200, help='see --step_gamma')
    g.add_argument('--no_Hneg', action='store_true', help='plain DCE instead of hDCE (no hard-negative weights)')
    g.add_argument('--choose_patch', type=int, default=None,
                   help='PUT: PatchNCE keeps the N most similar negatives of each query (the put loss)')
    g = p.add_argument_group('CUT family: PatchGCL flags (the patchgcl loss on VGG16 relu3_1, relu4_1, relu4_3; '
                             'they set its --gcl_* values)')
    g.add_argument('--lambda_GNN', type=float, default=0.0, help='weight of the graph loss (PatchGCL default 1)')
    g.add_argument('--gnn_idt', action='store_true', help='PatchGCL\'s identity term')
    g.add_argument('--num_hop', type=int, default=2, help='hops of the graph convolution (--gcl_num_hop)')
    g.add_argument('--pooling_num', type=int, default=1, help='pooling levels (--gcl_pooling_num)')
    g.add_argument('--pooling_ratio', default='1, 1, 1',
                   help='comma-separated level weights, the first (level 0) unused as released (--gcl_pooling_ratio)')
    g.add_argument('--down_scale', type=int, default=8, help='pooling down-scale (--gcl_down_scale)')
    g.add_argument('--nonzero_th', type=float, default=0.6, help='adjacency threshold (--gcl_threshold)')
    g.add_argument('--attn_layers', default='4,7,9', choices=['4,7,9'],
                   help='VGG16 slices (relu3_1, relu4_1, relu4_3; the only ones released)')


def _add_schedule_flags(p):
    g = p.add_argument_group('CUT family: schedule, saving and testing')
    g.add_argument('--n_epochs', type=int, default=200, help='epochs at the initial learning rate (FastCUT: 150)')
    g.add_argument('--n_epochs_decay', type=int, default=200,
                   help='epochs of linear decay to 0 that follow (FastCUT: 50)')
    g.add_argument('--epoch_count', type=int, default=1,
                   help='first epoch; only 1: a resumed run (--continue_train) takes its step from the checkpoint')
    g.add_argument('--lr_policy', choices=['linear'], default='linear', help='learning-rate schedule')
    g.add_argument('--continue_train', dest='resume_iter', action='store_const', const='latest',
                   default=argparse.SUPPRESS, help='resume the run from its latest checkpoint (exactly)')
    g.add_argument('--save_epoch_freq', type=int, default=5,
                   help='save every this many epochs (also as <epoch>_net_G.pth, the released layout)')
    g.add_argument('--save_latest_freq', type=int, default=5000, help='also save every this many images')
    g.add_argument('--print_freq', type=int, default=100, help='log every this many images')
    g.add_argument('--display_freq', type=int, default=400, help='sample grid every this many images')
    g.add_argument('--epoch', default='latest', help='translate: which saved epoch to load (latest or a number)')
    g.add_argument('--num_test', type=int, default=50, help='translate: at most this many test images')
    g.add_argument('--seg_scores', action='store_true',
                   help='eval: also the Cityscapes label -> photo scores (mIoU, pixAcc, classAcc) of the translations '
                        'against their label-map inputs, with DRN-D-22 (bash download.sh drn; docs/evaluation.md)')
    g.add_argument('--seg_weights', default=None, help='eval --seg_scores: a DRN-D-22 weight file instead of the cached one')
    g.add_argument('--seg_release_quirks', action='store_true',
                   help='eval --seg_scores: the released get_mAP.py / get_Acc.py arithmetic (BGR colours, fixed '
                        'denominators), for comparison with published tables')


def _add_ignored_flags(p):
    g = p.add_argument_group('CUT family: accepted, ignored',
                             'GPU selection (use CUDA_VISIBLE_DEVICES or --device), visdom and HTML display, and '
                             'the release\'s unused flags, accepted so that published command lines parse: '
                             + ' '.join(IGNORED_VALUE_FLAGS + IGNORED_SWITCHES))
    for flag in IGNORED_VALUE_FLAGS:
        g.add_argument(flag, default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    for flag in IGNORED_SWITCHES:
        g.add_argument(flag, action='store_true', default=argparse.SUPPRESS, help=argparse.SUPPRESS)


def _own_parser():
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    return parser


def cut_dests():
    """Destinations of the CUT groups' own flags (not the shared ones that --num_threads and
    --continue_train also set)."""
    return {a.dest for a in _own_parser()._actions} - {'num_workers', 'resume_iter'}


def own_option_strings():
    """The option strings of CUT's flags (--num_threads and --continue_train too: their spelling is CUT's)."""
    return {opt for action in _own_parser()._actions for opt in action.option_strings}


def defaults(argv):
    """Defaults of the CUT family: the shared flags' CUT values, then --CUT_mode's (or Hneg_SRC's)."""
    given = option_strings(argv)
    mode = flag_value(argv, '--CUT_mode')
    try:
        mode = _cut_mode(mode) if mode else 'CUT'
    except argparse.ArgumentTypeError:
        mode = 'CUT'   # the full parse reports it
    phase = {'phase': 'test'} if flag_value(argv, '--mode') in ('translate', 'eval') else {}   # CUT test.py's
    fork = {**(HSRC_DEFAULTS if any(f in HSRC_FLAGS for f in given) else {}),
            **(GCL_DEFAULTS if any(f in GCL_FLAGS for f in given) else {})}
    return {**SHARED_DEFAULTS, **(fork or CUT_MODE_DEFAULTS[mode]), **phase}


# ----------------------------------------------------------------------------------------------
# Resolution and validation
# ----------------------------------------------------------------------------------------------

def patch_terms(fields):
    """(name, weight) of the active patch losses, from CUT's, Hneg_SRC's and PUT's flags, then --patch_loss
    entries (fields['patch_losses'] holds those; a later entry replaces an earlier one of the same name)."""
    terms = {}
    if fields['lambda_NCE'] > 0:
        terms['put' if fields['choose_patch'] is not None else 'patchnce'] = fields['lambda_NCE']
    if fields['lambda_SRC'] > 0:
        terms['src'] = fields['lambda_SRC']
    if fields['lambda_HDCE'] > 0:
        terms['dce' if fields['no_Hneg'] else 'hdce'] = fields['lambda_HDCE']
    if fields['lambda_GNN'] > 0:
        terms['patchgcl'] = fields['lambda_GNN']
    terms.update(dict(fields['patch_losses']))
    return tuple((name, float(weight)) for name, weight in terms.items())


def derive(fields):
    """The CUT config's shared fields, computed from CUT's flags (before validation), as a dict."""
    fields = dict(fields)
    if fields['netG'] is None:
        fields['netG'] = 'resnet_9blocks' if fields['crop_size'] >= 256 else 'resnet_6blocks'
    fields['identity'] = bool(fields['nce_idt'] or fields['dce_idt'] or fields['gnn_idt'])
    fields['patch_losses'] = patch_terms(fields)
    if fields['choose_patch'] is not None:
        fields['put_negatives'] = fields['choose_patch']
    if fields['lambda_GNN'] > 0:
        fields.update(_gcl_fields(fields))
    run_dir = os.path.join(fields['checkpoints_dir'], fields['name'])
    batch = max(fields['batch_size'], 1)
    fields.update(
        n_patch=fields['num_patches'], patch_dim=fields['netF_nc'], gamma_start=fields['HDCE_gamma'],
        gamma_end=fields['HDCE_gamma_min'], query_side='fake', checkpoint_dir=run_dir,
        sample_dir=os.path.join(run_dir, 'samples'), result_dir=os.path.join(fields['results_dir'], fields['name']),
        print_every=max(1, fields['print_freq'] // batch), sample_every=max(1, fields['display_freq'] // batch),
        eval_every=0, metrics=('fid',), fid_protocol='standard')   # --mode eval: core/cut/evaluate.py
    return fields


def _gcl_fields(fields):
    """The patchgcl plug-in's values from PatchGCL's flags; level i weighs pooling_ratio[i], level 0 has none."""
    try:
        ratios = tuple(float(r) for r in fields['pooling_ratio'].split(','))[1:1 + fields['pooling_num']]
    except ValueError:
        ratios = (-1.0,)   # reported by the plug-in's check as a bad --gcl_pooling_ratio
    return dict(gcl_features='vgg16', gcl_num_hop=fields['num_hop'], gcl_pooling_num=fields['pooling_num'],
                gcl_pooling_ratio=ratios or (1.0,), gcl_down_scale=fields['down_scale'],
                gcl_threshold=fields['nonzero_th'])


def errors(cfg):
    """Problems of the CUT family's own flags (the shared ones are checked by core/config.py)."""
    errs = []
    if cfg.mode == 'train' and not cfg.dataroot:
        errs.append('--dataroot is needed: the folder holding trainA and trainB (or train/<domain>)')
    if cfg.n_epochs < 0 or cfg.n_epochs_decay < 0 or cfg.n_epochs + cfg.n_epochs_decay < 1:
        errs.append('--n_epochs and --n_epochs_decay must not be negative and must add up to at least 1')
    if cfg.epoch_count != 1:
        errs.append('--epoch_count must be 1: --continue_train resumes at the exact step stored in the checkpoint')
    for flag in ('ngf', 'ndf', 'n_layers_D', 'netF_nc', 'save_epoch_freq', 'save_latest_freq', 'print_freq',
                 'display_freq', 'num_test'):
        if getattr(cfg, flag) < 1:
            errs.append(f'--{flag} must be at least 1')
    for flag in ('lambda_GAN', 'lambda_NCE', 'lambda_HDCE', 'lambda_SRC', 'lambda_GNN', 'init_gain'):
        if getattr(cfg, flag) < 0:
            errs.append(f'--{flag} must not be negative')
    if cfg.max_dataset_size is not None and cfg.max_dataset_size < 1:
        errs.append('--max_dataset_size must be at least 1 (or inf)')
    errs += _size_errors(cfg) + _loss_errors(cfg)
    return errs


def _size_errors(cfg):
    errs = []
    if cfg.crop_size < 32 or cfg.crop_size % 4:
        errs.append(f'--crop_size must be a multiple of 4 and at least 32 (got {cfg.crop_size}): the generator '
                    f'down-samples twice and the discriminator needs room for its 4x4 convolutions')
    if 'resize' in cfg.preprocess and 'crop' in cfg.preprocess and cfg.load_size < cfg.crop_size:
        errs.append(f'--load_size ({cfg.load_size}) must be at least --crop_size ({cfg.crop_size}) with '
                    f'--preprocess {cfg.preprocess}')
    return errs


def _loss_errors(cfg):
    errs = []
    last = num_layers(GENERATOR_BLOCKS[cfg.netG], not cfg.no_antialias, not cfg.no_antialias_up) - 1
    layers = cfg.nce_layers or ()
    if cfg.patch_losses and (not layers or list(layers) != sorted(set(layers)) or not 0 <= layers[0] <= layers[-1] <= last):
        errs.append(f'--nce_layers must list increasing layer indices of the generator between 0 and {last} '
                    f'(CUT: 0,4,8,12,16)')
    if cfg.nce_includes_all_negatives_from_minibatch:
        errs.append('--nce_includes_all_negatives_from_minibatch is not supported: the registered losses take '
                    'negatives within each image (CUT\'s default, and the same thing at --batch_size 1)')
    if cfg.choose_patch is not None and 'put_negatives' in cfg.facts.explicit_flags:
        errs.append('--choose_patch and --put_negatives both set PUT\'s negatives; keep one')
    if cfg.HDCE_gamma <= 0 or cfg.HDCE_gamma_min <= 0:
        errs.append('--HDCE_gamma and --HDCE_gamma_min must be > 0 (they are temperatures)')
    return errs


def rename_flags(message):
    """A message of the shared checks with the CUT names of derived fields (--n_patch -> --num_patches)."""
    for shared, own in (('--n_patch', '--num_patches'), ('--patch_dim', '--netF_nc'),
                        ('--gamma_start', '--HDCE_gamma'), ('--gamma_end', '--HDCE_gamma_min')):
        message = message.replace(shared + ' ', own + ' ')
    return message


# Flags that define the generator and its input size: translate takes them from the run's config.json.
RUN_FLAGS = ('netG', 'ngf', 'normG', 'no_dropout', 'no_antialias', 'no_antialias_up', 'input_nc', 'output_nc',
             'crop_size', 'preprocess', 'direction', 'domains')


def generator_path(cfg):
    """checkpoints_dir/name/<epoch>_net_G.pth, the generator --mode translate loads."""
    return os.path.join(cfg.checkpoint_dir, f'{cfg.epoch}_net_G.pth')


def with_run_flags(cfg):
    """cfg with the RUN_FLAGS of the run in checkpoint_dir (its config.json) where the command line gives none."""
    path = os.path.join(cfg.checkpoint_dir, 'config.json')
    try:
        with open(path, encoding='utf-8') as f:
            stored = json.load(f)
    except (OSError, ValueError):
        return cfg
    if not isinstance(stored, dict) or stored.get('model') != 'cut':
        return cfg
    return cfg.replace(**{k: stored[k] for k in RUN_FLAGS if k in stored and k not in cfg.facts.explicit_flags})
