"""Command-line flags, presets and validation; the resolved config is immutable.

Every flag of the official StarGAN v2 main.py and of Hneg_SRC's main_hSRC.py
keeps its name and meaning, so their published command lines run unchanged.
Where the two disagree on a default we follow the official code, except
w_hpf (0 here: the FAN high-pass path of the CelebA-HQ model is removed, see --w_hpf).

A config is built once (parse_config: one pass over argv), validated once,
never mutated, saved as config.json with every run and stored inside every
checkpoint; the record itself, and the run facts kept beside it, are
core.runconfig. This module is the command line: the model family comes
first (core.families.select), --mode's choices and help come from the
families' tables of modes, and every registered plug-in (model families of
core/families/, patch losses of core/contrastive/, metrics of metrics/) adds
and checks its own flags: no family or metric is named here, and patch losses
only where the Hneg_SRC flags select them.
"""
import argparse
import difflib
import math
import sys

from core import contrastive, families
from core.model import ARCHS, default_base_dim, default_taps
from core.runconfig import Config, ConfigError, evaluates

# ----------------------------------------------------------------------------------------------
# Flags
# ----------------------------------------------------------------------------------------------

def _resume(value):
    if value == 'latest':
        return value
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError("expected a step number or 'latest'") from None


def _int_list(value):
    if value in ('', 'auto'):
        return None
    try:
        return tuple(int(v) for v in value.split(','))
    except ValueError:
        raise argparse.ArgumentTypeError("expected comma-separated block indices, e.g. 1,2,3") from None


def _loss_weight(value):
    name, sep, weight = value.partition('=')
    try:
        return name.strip(), float(weight) if sep else 1.0
    except ValueError:
        raise argparse.ArgumentTypeError('expected NAME=WEIGHT, e.g. src=0.1') from None


def _add_model_flags(p):
    g = p.add_argument_group('model architecture')
    g.add_argument('--arch', choices=list(ARCHS), default='stargan-v2',
                   help='generator: official StarGAN v2, or the lighter Hneg_SRC release generator')
    g.add_argument('--img_size', type=int, default=256, help='image resolution (power of two, 32-512)')
    g.add_argument('--num_domains', type=int, default=2, help='number of domains (sub-folders)')
    g.add_argument('--latent_dim', type=int, default=16, help='latent vector dimension')
    g.add_argument('--hidden_dim', type=int, default=512, help='hidden dimension of the mapping network')
    g.add_argument('--style_dim', type=int, default=64, help='style code dimension')
    g.add_argument('--base_dim', type=int, default=None,
                   help='channels of the first conv of G, E and D (default 2**14 // img_size as upstream)')
    g.add_argument('--max_conv_dim', type=int, default=512, help='channel cap of G, E and D')
    g.add_argument('--w_hpf', type=float, default=0.0,
                   help='weight of the FAN high-pass skip of upstream\'s CelebA-HQ model; that path is removed here, so only 0 is accepted')


def _add_loss_flags(p):
    g = p.add_argument_group('StarGAN v2 loss weights')
    g.add_argument('--lambda_reg', type=float, default=1.0, help='weight for the R1 regularization')
    g.add_argument('--lambda_cyc', type=float, default=1.0, help='weight for the cycle consistency loss')
    g.add_argument('--lambda_sty', type=float, default=1.0, help='weight for the style reconstruction loss')
    g.add_argument('--lambda_ds', type=float, default=1.0, help='initial weight for the diversity sensitive loss')
    g.add_argument('--ds_iter', type=int, default=100000, help='iterations over which lambda_ds decays to 0')
    g.add_argument('--cyc_mode', choices=['cycle', 'identity'], default='cycle',
                   help="cycle: |G(G(x,s_trg),s_org) - x| (StarGAN v2); identity: |G(x,s_org) - x| "
                        "(what the Hneg_SRC release computes under the name 'cyc')")

    g = p.add_argument_group('semantic relation losses (Jung et al. 2022)')
    g.add_argument('--lambda_src', type=float, default=0.0, help='weight of SRC (semantic relation consistency)')
    g.add_argument('--lambda_dce', type=float, default=0.0,
                   help='weight of the decoupled InfoNCE (hard-negative hDCE with --use_hard)')
    g.add_argument('--lambda_nce', type=float, default=0.0,
                   help='weight of PatchNCE; if > 0 it replaces DCE, as in Hneg_SRC')
    g.add_argument('--use_hard', action=argparse.BooleanOptionalAction, default=False,
                   help='weight the DCE negatives by their semantic relation (hDCE)')
    g.add_argument('--use_curriculum', action=argparse.BooleanOptionalAction, default=False,
                   help='anneal the hard-negative temperature from gamma_start to gamma_end over total_iters')
    g.add_argument('--gamma_start', type=float, default=50.0, help='hard-negative temperature at iteration 0')
    g.add_argument('--gamma_end', type=float, default=1.0, help='hard-negative temperature at the last iteration')
    g.add_argument('--hdce_mode', choices=['paper', 'release'], default='paper',
                   help="paper: self-normalised importance weights exp(sim/gamma) on the exponentials; "
                        "release: the released code's max-normalised weights multiplying the similarities")
    g.add_argument('--src_reduction', choices=['sum', 'mean'], default='sum',
                   help='sum SRC over images and anchors (released scale of lambda_src) or average it')
    g.add_argument('--n_patch', type=int, default=128, help='patches sampled per feature map per image')
    g.add_argument('--nce_layers', type=_int_list, default=None,
                   help='generator encoder blocks whose outputs feed the patch losses, e.g. 1,2,3 '
                        '(default: per --arch, see README)')
    g.add_argument('--nce_T', type=float, default=0.07, help='temperature of the contrastive losses')
    g.add_argument('--patch_dim', type=int, default=256, help='output width of the patch projection heads')
    g.add_argument('--query_side', choices=['fake', 'real'], default='fake',
                   help="whose features carry the gradient: fake (paper, CUT) or real (Hneg_SRC release)")
    g.add_argument('--patch_head_update', choices=['both', 'latent'], default='both',
                   help='step the projection heads after both G steps, or only the latent one (release)')
    g.add_argument('--patch_loss', type=_loss_weight, action='append', default=[], metavar='NAME=WEIGHT',
                   help='add a registered patch loss with its weight (repeatable); available: '
                        + contrastive.PATCH_LOSSES.available())


def _add_training_flags(p):
    g = p.add_argument_group('training')
    g.add_argument('--randcrop_prob', type=float, default=0.5, help='probability of a random-resized crop')
    g.add_argument('--total_iters', type=int, default=100000, help='number of total iterations')
    g.add_argument('--resume_iter', type=_resume, default=0,
                   help="iteration to resume training/testing from, or 'latest'")
    g.add_argument('--checkpoint', default=None,
                   help='one _nets_ema.ckpt file for sample/eval/translate (instead of checkpoint_dir + resume_iter)')
    g.add_argument('--batch_size', type=int, default=8, help='batch size for training')
    g.add_argument('--val_batch_size', type=int, default=32, help='batch size for validation')
    g.add_argument('--lr', type=float, default=1e-4, help='learning rate for D, E, G and the patch heads')
    g.add_argument('--f_lr', type=float, default=1e-6, help='learning rate for the mapping network')
    g.add_argument('--beta1', type=float, default=0.0, help='Adam beta1')
    g.add_argument('--beta2', type=float, default=0.99, help='Adam beta2')
    g.add_argument('--weight_decay', type=float, default=1e-4, help='Adam weight decay')
    g.add_argument('--ema_beta', type=float, default=0.999, help='decay of the exponential moving average')
    g.add_argument('--num_outs_per_domain', type=int, default=10, help='number of generated images per domain')
    g.add_argument('--seed', type=int, default=777, help='seed for every random draw')
    g.add_argument('--device', choices=['auto', 'cpu', 'cuda'], default='auto',
                   help='auto uses CUDA when available')
    g.add_argument('--num_workers', type=int, default=4, help='number of data-loading workers')
    g.add_argument('--skip_bad_images', action='store_true',
                   help='skip unreadable images with a warning instead of stopping')


def _add_path_flags(p):
    g = p.add_argument_group('directories')
    g.add_argument('--train_img_dir', default='data/celeba_hq/train', help='training images, one folder per domain')
    g.add_argument('--val_img_dir', default='data/celeba_hq/val', help='validation images, one folder per domain')
    g.add_argument('--sample_dir', default='expr/samples', help='debug images written during training')
    g.add_argument('--checkpoint_dir', default='expr/checkpoints',
                   help='checkpoints; also holds config.json, stats.jsonl and TensorBoard logs of the run')
    g.add_argument('--eval_dir', default='expr/eval', help='generated images and metric files')
    g.add_argument('--result_dir', default='expr/results', help='outputs of sample mode')
    g.add_argument('--src_dir', default='assets/representative/celeba_hq/src', help='source images for sample mode')
    g.add_argument('--ref_dir', default='assets/representative/celeba_hq/ref', help='reference images for sample mode')

    g = p.add_argument_group('accepted, ignored', 'flags of the official face alignment (--mode align) and FAN '
                             'weights: accepted so that upstream command lines parse, never read')
    g.add_argument('--inp_dir', default='assets/representative/custom/female', help='input folder of align mode')
    g.add_argument('--out_dir', default='assets/representative/celeba_hq/src/female', help='output folder of align mode')
    g.add_argument('--wing_path', default='expr/checkpoints/wing.ckpt', help='FAN weights (faces only)')
    g.add_argument('--lm_path', default='expr/checkpoints/celeba_lm_mean.npz', help='mean face landmarks (faces only)')

    g = p.add_argument_group('step sizes')
    g.add_argument('--print_every', type=int, default=10, help='log period in iterations (0: never)')
    g.add_argument('--sample_every', type=int, default=5000, help='debug image period (0: never)')
    g.add_argument('--save_every', type=int, default=10000, help='checkpoint period (0: only at the end)')
    g.add_argument('--eval_every', type=int, default=50000, help='--metrics period during training (0: never)')


def _add_speed_flags(p):
    g = p.add_argument_group('speed and precision (training; under torchrun, --batch_size is the global batch)')
    g.add_argument('--amp', choices=['off', 'bf16', 'fp16'], default='off',
                   help='mixed precision of the networks\' forward passes (fp16 needs CUDA and uses gradient '
                        'scaling); the R1 penalty, the patch losses and the loss sums stay fp32')
    g.add_argument('--channels_last', action='store_true', help='channels-last memory format for networks and images')
    g.add_argument('--compile', action='store_true',
                   help='torch.compile the generator (encoder and decoder), mapping network and style encoder')
    g.add_argument('--tf32', action='store_true', help='allow TF32 matmuls and convolutions (CUDA, Ampere or newer)')
    g.add_argument('--r1_every', type=int, default=1,
                   help='lazy R1 (StyleGAN2): the penalty on every K-th discriminator step, scaled by K '
                        '(1: every step, the upstream mathematics)')


def _add_sampling_flags(p):
    g = p.add_argument_group('sample and translate')
    g.add_argument('--src', default=None,
                   help='translate: one image, or a folder of images (searched recursively), to translate')
    g.add_argument('--trg_domain', default=None,
                   help='translate: target domain, by name (the training folder names stored in the '
                        'checkpoint) or by id (0-based position of the sorted folder names)')
    g.add_argument('--ref', default=None,
                   help='translate: a reference image, or a folder of them, whose style is applied '
                        '(one output per reference); they belong to --trg_domain, which defaults to '
                        'the name of the folder holding them')
    g.add_argument('--num_styles', type=int, default=1,
                   help='translate: random latent styles per input (without --ref)')
    g.add_argument('--keep_size', action='store_true',
                   help='translate: run the generator at each input\'s own size (rounded to its down-sampling '
                        'factor) instead of --img_size; quality away from the training scale is not guaranteed')
    g.add_argument('--video', action='store_true',
                   help='translate: one MP4 per input instead of PNGs, its style walking through the styles '
                        '(--num_styles 2+ random styles of --trg_domain, or the --ref images)')
    g.add_argument('--psi', type=float, default=1.0,
                   help='truncation: pull random styles toward the domain average (1: none, 0: the '
                        'average); used by translate and video_latent.mp4')
    g.add_argument('--fps', type=float, default=12.5,
                   help='frames per second of the videos (12.5 plays at the pace of upstream)')
    g.add_argument('--video_frames', type=int, default=31,
                   help='frames per style transition in the videos (31 as upstream; fewer = shorter video)')
    g.add_argument('--out', default=None, help='export: folder for the ONNX files and model.json (docs/export.md)')
    g.add_argument('--labels', action=argparse.BooleanOptionalAction, default=True,
                   help='label the grids (domain names of rows and columns, psi) in margins around the images; '
                        '--no-labels writes upstream\'s unlabelled images')
    g.add_argument('--host', default='127.0.0.1', help='app: address to serve on (127.0.0.1: this computer only)')
    g.add_argument('--port', type=int, default=7860, help='app: port to serve on (0: any free port)')


def _names(value):
    """A comma-separated list of names: a tuple without blanks."""
    return tuple(n.strip() for n in value.split(',') if n.strip())


def _add_eval_flags(p, metrics):
    """The general evaluation flags; each metric adds its own (metrics: the metric registry)."""
    g = p.add_argument_group('evaluation (--mode eval, --eval_every) and dataset preparation (--mode prepare)')
    g.add_argument('--metrics', default=','.join(metrics.default_selection()), type=_names,
                   help='comma-separated metrics to compute (metrics.registry); available: '
                        + metrics.METRICS.available())
    g.add_argument('--save_eval_images', action='store_true',
                   help='also write the generated images to eval_dir/<latent|reference>/<src>2<trg>/ as PNG')
    g.add_argument('--raw_dir', default=None,
                   help='--mode prepare: folder of images, one sub-folder per domain, to split into '
                        '--train_img_dir and --val_img_dir')
    g.add_argument('--val_per_domain', type=int, default=None,
                   help='--mode prepare: validation images per domain (default with --preset seasons/weather: '
                        'the SRC paper\'s 100/400)')


class UnsetFlag:
    """The value of a flag the command line does not give, while it is parsed (see FlagParser.given)."""

    def __repr__(self):
        return 'UNSET'


UNSET = UnsetFlag()


class AppendFlag(argparse.Action):
    """action='append' of a FlagParser: each occurrence adds its value to a copy of the list so far."""

    def __call__(self, parser, namespace, values, option_string=None):
        items = getattr(namespace, self.dest, None)
        setattr(namespace, self.dest, (list(items) if isinstance(items, list) else []) + [values])


class FlagParser(argparse.ArgumentParser):
    """argparse without abbreviations, whose usage errors are one line (exit status 2, as argparse).

    An unknown flag is named with the closest known one. given(argv) parses
    once and tells the flags argv gives from the defaults.
    """

    def __init__(self, **kwargs):
        super().__init__(allow_abbrev=False, **kwargs)
        self.register('action', 'append', AppendFlag)   # repeatable flags that start from UNSET (given)
        self.argv = []   # the arguments being parsed, for error() and --help

    def error(self, message):
        # A missing required flag is often a mistyped one (--mod for --mode): name the unknown flag too.
        unknown = [arg for arg in self.argv if arg.startswith('--') and not self._known(arg.split('=', 1)[0])]
        if unknown and message.startswith('the following arguments are required'):
            message += f'; {self.unknown_message(unknown)}'
        self.exit(2, f'error: {message}\n')

    def _known(self, flag):
        return any(flag in action.option_strings for action in self._actions)

    def parse_args(self, args=None, namespace=None):
        self.argv = list(args) if args is not None else sys.argv[1:]
        ns, extra = self.parse_known_args(args, namespace)
        if extra:
            self.error(self.unknown_message(extra))
        return ns

    def flag_actions(self):
        """The actions that store a value (every flag but --help)."""
        return [a for a in self._actions if argparse.SUPPRESS not in (a.dest, a.default)]

    def given(self, argv):
        """{dest: value} of the flags argv gives, from one pass over argv: argparse fills no default
        into a namespace whose every flag is already UNSET, so what is not UNSET afterwards was given."""
        ns = self.parse_args(argv, argparse.Namespace(**{a.dest: UNSET for a in self.flag_actions()}))
        return {dest: value for dest, value in vars(ns).items() if value is not UNSET}

    def defaults(self):
        """{dest: default} of every flag, string defaults converted by the flag's type as argparse does."""
        return {a.dest: a.type(a.default) if isinstance(a.default, str) and callable(a.type) else a.default
                for a in self.flag_actions()}

    def repeatable(self):
        """Dests of the flags that collect every occurrence (action='append')."""
        return {a.dest for a in self.flag_actions() if isinstance(a, AppendFlag)}

    def unknown_message(self, extra):
        """'unknown flag --x; did you mean --y?' for the first unknown flag of `extra` (else the stray value)."""
        flags = [arg.split('=', 1)[0] for arg in extra if arg.startswith('-')]
        if not flags:
            return f'unexpected value {extra[0]!r} (every value follows its flag, e.g. --total_iters 100)'
        known = [opt for action in self._actions for opt in action.option_strings]
        # An abbreviation suggests the flag it starts; anything else the most similar one.
        close = sorted((k for k in known if k.startswith(flags[0])), key=len) or \
            difflib.get_close_matches(flags[0], known, n=1)
        hint = f'; did you mean {close[0]}?' if close else '; run with --help to list the flags'
        return f'unknown flag {flags[0]}{hint}'


def preset_of(values, family):
    """The name of the preset that values (the flags given so far) select: --preset, or the family's demo preset
    for --mode demo."""
    preset, mode = values.get('preset', UNSET), values.get('mode', UNSET)
    return preset if preset not in (UNSET, None) else (family.demo_preset if mode == 'demo' else None)


def family_defaults(family, preset, argv):
    """{dest: value} that a command line's family and preset give, over the flags' own defaults."""
    return {**family.defaults(argv), **families.presets().get(preset, {}), 'preset': preset}


class PresetHelp(argparse.Action):
    """--help: the usage, with the defaults of the --preset (or --mode demo) given before it."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        family = families.select(parser.argv)[0]
        parser.set_defaults(**family_defaults(family, preset_of(vars(namespace), family), parser.argv))
        parser.print_help()
        parser.exit()


def _metric_registry():
    """metrics.registry, imported when a parser is built or a config validated, not with this module: importing
    core.config loads no metric (layers below the command line read configs), and the metric modules load
    their networks' code only when they build one, so --help stays fast."""
    from metrics import registry
    return registry


def build_parser():
    """The full argument parser: every mode shares one flag set, as upstream, and every registered plug-in
    (patch loss, metric) adds its own flags."""
    metrics = _metric_registry()
    p = FlagParser(
        description='StarGAN v2 with plug-in patch-wise semantic relation losses (SRC, hDCE, ...)',
        formatter_class=argparse.ArgumentDefaultsHelpFormatter, add_help=False)
    p.add_argument('-h', '--help', action=PresetHelp,
                   help='show this message (with the defaults of a --preset given before it) and exit')
    modes = {name: mode for family in reversed(families.in_order()) for name, mode in family.modes().items()}
    p.add_argument('--mode', required=True, choices=families.mode_names(),
                   help='what to run: ' + '; '.join(f'{name}: {modes[name].help}' for name in families.mode_names()))
    p.add_argument('--model', default=None,
                   help='model family: ' + '; '.join(f'{f.name}: {f.help}' for f in families.in_order()) +
                        ' (without it, the family whose own flags the command line uses; docs/cut.md)')
    presets = sorted(families.presets())
    p.add_argument('--preset', choices=presets, default=None,
                   help='named set of defaults (explicit flags still win): ' + ', '.join(presets))
    p.add_argument('--dry_run', action='store_true', help='print the resolved config and exit')
    _add_model_flags(p)
    _add_loss_flags(p)
    _add_training_flags(p)
    _add_speed_flags(p)
    _add_path_flags(p)
    _add_sampling_flags(p)
    _add_eval_flags(p, metrics)
    for registry in (families.FAMILIES, contrastive.PATCH_LOSSES, metrics.METRICS):
        registry.add_arguments(p)
    return p


# ----------------------------------------------------------------------------------------------
# Resolution and validation
# ----------------------------------------------------------------------------------------------

def resolve_patch_losses(flags):
    """(name, weight) pairs of the active patch losses, from the Hneg_SRC flags and --patch_loss ({dest: value}).

    As in Hneg_SRC, lambda_nce > 0 selects PatchNCE instead of (h)DCE. Among
    --patch_loss entries a later one replaces an earlier one of the same name, so
    a command line can change the weight a preset gives.
    """
    terms = []
    if flags['lambda_src'] > 0:
        terms.append(('src', flags['lambda_src']))
    if flags['lambda_nce'] > 0:
        terms.append(('patchnce', flags['lambda_nce']))
    elif flags['lambda_dce'] > 0:
        terms.append(('hdce' if flags['use_hard'] else 'dce', flags['lambda_dce']))
    terms.extend(dict(flags['patch_loss']).items())
    return tuple((name, float(w)) for name, w in terms)


def _power_of_two(n):
    return n > 0 and n & (n - 1) == 0


SEED_RANGE = (0, 2 ** 32 - 1)   # core.utils.seeding keeps 32 bits of the seed: larger seeds would repeat smaller ones


def _floats(value):
    """The floats inside a flag's value (a float, or the tuples of --patch_loss and list flags)."""
    if isinstance(value, float):
        return [value]
    if isinstance(value, tuple):
        return [x for v in value for x in _floats(v)]
    return []


def _nonfinite_flags(cfg):
    """Flags holding NaN or an infinity ('patch_losses' is reported as --patch_loss)."""
    return [name for name, value in cfg.items() if not all(math.isfinite(x) for x in _floats(value))]


def _errors(cfg):
    """Every problem of a resolved config, each naming its flag, one message per flag.

    NaN passes every comparison, so non-finite values are found first and the
    range checks of those flags are left out.
    """
    bad = ['patch_loss' if name == 'patch_losses' else name for name in _nonfinite_flags(cfg)]
    errs = [f'--{name} must be a finite number (got {_nonfinite_text(cfg, name)})' for name in bad]
    if bad:
        cfg = cfg.replace(**{name: _finite_stand_in(cfg, name) for name in _nonfinite_flags(cfg)})
    return errs + [e for e in _range_errors(cfg) if not any(e.startswith(f'--{name} ') for name in bad)]


def _nonfinite_text(cfg, name):
    values = _floats(cfg.get('patch_losses' if name == 'patch_loss' else name))
    return ', '.join(str(x) for x in values if not math.isfinite(x))


def _finite_stand_in(cfg, name):
    """A finite value of the same shape, so that the other checks can run (its errors are dropped)."""
    def fix(v):
        if isinstance(v, float):
            return v if math.isfinite(v) else 0.0
        return tuple(fix(x) for x in v) if isinstance(v, tuple) else v
    return fix(cfg.get(name))


# Upper bounds of the integer flags, far above any useful value, so that no size overflows or allocates
# without end (the lower bounds are checked in _range_errors). Other integer flags (plug-ins') get INT_LIMIT.
INT_LIMITS = {**dict.fromkeys(('latent_dim', 'hidden_dim', 'style_dim', 'base_dim', 'max_conv_dim', 'patch_dim'), 4096),
              **dict.fromkeys(('batch_size', 'val_batch_size', 'num_domains'), 4096),
              **dict.fromkeys(('num_outs_per_domain', 'num_styles', 'video_frames'), 1000),
              'n_patch': 65536, 'num_workers': 256}
INT_LIMIT = 10 ** 9   # steps, periods and every other integer flag
UNBOUNDED_INTS = ('seed', 'img_size', 'resume_iter')   # checked with their own ranges
PATH_FLAGS = ('train_img_dir', 'val_img_dir', 'sample_dir', 'checkpoint_dir', 'eval_dir', 'result_dir', 'src_dir',
              'ref_dir', 'fid_stats_dir', 'checkpoint', 'raw_dir', 'src', 'ref')


def _int_limit_errors(cfg):
    """'--flag must be at most N' for every integer flag above its bound (INT_LIMITS, INT_LIMIT)."""
    return [f'--{name} must be at most {INT_LIMITS.get(name, INT_LIMIT)} (got {value})'
            for name, value in cfg.items()
            if type(value) is int and name not in UNBOUNDED_INTS and value > INT_LIMITS.get(name, INT_LIMIT)]


def _path_errors(cfg):
    """An empty path flag would mean the current folder (outputs) or nothing at all (inputs): refuse it."""
    return [f'--{name} is empty; give a path (or leave the flag out for its default)'
            for name in PATH_FLAGS if cfg.get(name) is not None and not str(cfg.get(name)).strip()]


def _range_errors(cfg):
    errs = _path_errors(cfg)
    if not SEED_RANGE[0] <= cfg.seed <= SEED_RANGE[1]:
        errs.append(f'--seed must be between {SEED_RANGE[0]} and {SEED_RANGE[1]} (got {cfg.seed})')
    if not (_power_of_two(cfg.img_size) and 32 <= cfg.img_size <= 512):
        errs.append(f'--img_size must be a power of two from 32 to 512 (got {cfg.img_size})')
    if cfg.w_hpf != 0:
        errs.append(f'--w_hpf must be 0 (got {cfg.w_hpf:g}): other values need the FAN face-landmark network, '
                    'which this release does not ship')
    if cfg.num_domains < 2:
        errs.append('--num_domains must be at least 2')
    for flag in ('latent_dim', 'hidden_dim', 'style_dim', 'base_dim', 'max_conv_dim', 'batch_size',
                 'val_batch_size', 'total_iters', 'num_outs_per_domain', 'patch_dim'):
        if getattr(cfg, flag) < 1:
            errs.append(f'--{flag} must be at least 1')
    for flag in ('lambda_reg', 'lambda_cyc', 'lambda_sty', 'lambda_ds', 'lambda_src', 'lambda_dce',
                 'lambda_nce', 'lr', 'f_lr', 'weight_decay', 'ds_iter', 'num_workers',
                 'print_every', 'sample_every', 'save_every', 'eval_every'):
        if getattr(cfg, flag) < 0:
            errs.append(f'--{flag} must not be negative')
    if not 0 <= cfg.randcrop_prob <= 1:
        errs.append('--randcrop_prob must be between 0 and 1')
    if not (0 <= cfg.beta1 < 1 and 0 <= cfg.beta2 < 1):
        errs.append('--beta1 and --beta2 must be in [0, 1)')
    if not 0 <= cfg.ema_beta <= 1:
        errs.append('--ema_beta must be in [0, 1]')
    if cfg.gamma_start <= 0 or cfg.gamma_end <= 0:
        errs.append('--gamma_start and --gamma_end must be > 0 (they are temperatures)')
    if cfg.nce_T <= 0:
        errs.append('--nce_T must be > 0')
    if isinstance(cfg.resume_iter, int) and not 0 <= cfg.resume_iter <= cfg.total_iters:
        errs.append(f'--resume_iter must be between 0 and --total_iters ({cfg.total_iters})')
    errs += _patch_loss_errors(cfg)
    errs += _sampling_errors(cfg)
    if cfg.r1_every < 1:
        errs.append('--r1_every must be at least 1')
    errs += _eval_errors(cfg)
    flagged = {e.split(' ', 1)[0] for e in errs}   # a flag with its own message keeps that one only
    return errs + [e for e in _int_limit_errors(cfg) if e.split(' ', 1)[0] not in flagged]


def _eval_errors(cfg):
    """--metrics names, then the selected metrics' own checks (Metric.validate) when the run evaluates."""
    metrics = _metric_registry()
    errs = metrics.selection_errors(list(cfg.metrics))
    if not errs and evaluates(cfg):
        errs += metrics.METRICS.validation_errors(cfg.metrics, cfg)
    if cfg.val_per_domain is not None and cfg.val_per_domain < 1:
        errs.append('--val_per_domain must be at least 1')
    return errs


def _sampling_errors(cfg):
    errs = []
    if cfg.mode == 'translate' and cfg.ref is not None:
        if cfg.num_styles != 1:
            errs.append('--num_styles sets the number of random styles; with --ref every reference image is one style')
        if cfg.psi != 1:
            errs.append('--psi truncates random styles; it does not apply to reference styles (--ref)')
    if cfg.num_styles < 1:
        errs.append('--num_styles must be at least 1')
    if not 0 <= cfg.psi <= 1:
        errs.append(f'--psi must be between 0 and 1 (got {cfg.psi})')
    if not 0 <= cfg.port <= 65535:
        errs.append(f'--port must be between 0 and 65535 (got {cfg.port})')
    if not cfg.fps > 0:
        errs.append('--fps must be > 0')
    if cfg.video_frames < 2:
        errs.append('--video_frames must be at least 2 (a transition needs a first and a last frame)')
    return errs


def _patch_loss_errors(cfg):
    errs = []
    names = [name for name, _ in cfg.patch_losses]
    errs += contrastive.PATCH_LOSSES.unknown_errors(names, '--patch_loss')
    for name, weight in cfg.patch_losses:
        if name in contrastive.PATCH_LOSSES and weight < 0:
            errs.append(f'--patch_loss: weight of {name!r} must not be negative')
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        errs.append(f'--patch_loss: {", ".join(dup)} given twice (check --lambda_src/--lambda_dce/--lambda_nce)')
    if errs or not names:
        return errs
    if cfg.n_patch < 2:
        errs.append('--n_patch must be at least 2 (a patch needs at least one negative)')
    # --nce_layers names layers of a family's network: the family checks it (Family.errors)
    errs += contrastive.config_errors(cfg)
    return errs


def resolve(fields):
    """Fill the derived defaults of the parsed flags (a dict) and freeze them into a Config."""
    fields = dict(fields)
    if fields['base_dim'] is None:
        fields['base_dim'] = default_base_dim(fields['img_size']) if fields['img_size'] > 0 else 0
    fields['patch_losses'] = resolve_patch_losses(fields)
    if fields['nce_layers'] is None and _power_of_two(fields['img_size']) and fields['img_size'] >= 32:
        fields['nce_layers'] = tuple(default_taps(fields['arch'], fields['img_size'], fields['w_hpf']))
    del fields['patch_loss']
    return Config.from_fields(fields)


def parse_flags(parser, family, argv):
    """(flags, explicit): every flag's value after one pass over argv, and the dests argv gives, sorted.

    A flag takes its value from argv, else from the preset (--preset, or the
    family's demo preset for --mode demo), else the default the family gives it,
    else its own; a repeatable flag (--patch_loss) adds argv's entries to the preset's.
    """
    given = parser.given(argv)
    values = {**parser.defaults(), **family_defaults(family, preset_of(given, family), argv)}
    repeatable = parser.repeatable()
    for dest, value in given.items():
        values[dest] = list(values[dest]) + value if dest in repeatable else value
    return values, tuple(sorted(given))


def _foreign_fields(family):
    """The fields a config of `family` leaves out: the other families' own flags, but those it computes, and
    --model for the default family (whose configs, as before the families existed, do not name it)."""
    others = set().union(*(f.own_dests() for f in families.in_order() if f is not family))
    return (others - family.computed()) | ({'model'} if family.default else set())


def parse_config(argv=None):
    """Parse (once), apply the family's defaults and the preset, resolve and validate the values.
    Raises ConfigError naming the flag(s).

    The family comes first (core.families.select: it changes defaults). The
    flags the command line gave are kept as cfg.facts.explicit_flags: modes
    that adopt a run's stored settings (sample, translate) keep those. Nothing
    here reads the file system: the inputs a mode needs are checked by
    core.checks before that mode runs.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    family, errs = families.select(argv)
    if errs:
        raise ConfigError('\n'.join(errs))
    flags, explicit = parse_flags(build_parser(), family, argv)
    if flags['mode'] not in family.modes():
        raise ConfigError(f'--mode {flags["mode"]} is not available for --model {family.name} '
                          f'(it runs {", ".join(family.modes())})')
    cfg = family.derive(resolve({**flags, 'model': family.name}).with_facts(explicit_flags=explicit))
    errs = [family.shared_message(e) for e in _errors(cfg)] + family.errors(cfg)
    if errs:
        raise ConfigError('\n'.join(dict.fromkeys(errs)))
    return cfg.without(_foreign_fields(family))
