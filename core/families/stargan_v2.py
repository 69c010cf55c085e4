"""The StarGAN v2 family (the toolkit's first and default family): its presets, its own flags, its modes.

Its flags are the shared command line of core/config.py (every flag of the
official StarGAN v2 main.py and of Hneg_SRC's main_hSRC.py); this file says
which of them only StarGAN v2 reads, so that a command line using them picks
this family and another family's config leaves them out. Its networks are
core/model.py, its training loop core/trainer.py, its modes core/modes.py.
"""
from core.families.base import Family, register
from core.model import num_encoder_blocks
from core.modes import MODES


# ----------------------------------------------------------------------------------------------
# Presets: defaults a preset changes; explicit flags still win.
# ----------------------------------------------------------------------------------------------

def _paper(dataset, num_domains, lambda_dce):
    """The SRC paper's StarGAN v2 settings (Hneg_SRC run_train.sh) for one dataset."""
    return dict(num_domains=num_domains, w_hpf=0, lambda_reg=1.0, lambda_sty=1.0, lambda_ds=2.0,
                lambda_cyc=1.0, lambda_src=0.1, lambda_nce=0.0, lambda_dce=lambda_dce,
                use_curriculum=True, use_hard=True, n_patch=128,
                train_img_dir=f'data/{dataset}/train', val_img_dir=f'data/{dataset}/val',
                src_dir=f'data/{dataset}/val', ref_dir=f'data/{dataset}/val')


def _dirs(run):
    return dict(checkpoint_dir=f'expr/checkpoints_{run}', sample_dir=f'expr/samples_{run}',
                eval_dir=f'expr/eval_{run}', result_dir=f'expr/results_{run}')


# Exactly the released Hneg_SRC behaviour: its generator, its identity "cycle"
# term, its gradient side (query = real), its hard-negative weighting and its
# head update (latent step only).
_REPRODUCE = dict(arch='hsrc', cyc_mode='identity', query_side='real', hdce_mode='release',
                  patch_head_update='latent')

PRESETS = {
    'seasons': {**_paper('seasons', 4, 1.0), **_dirs('seasons')},
    'weather': {**_paper('weather', 5, 0.1), **_dirs('weather')},
    'seasons-reproduce': {**_paper('seasons', 4, 1.0), **_dirs('seasons-reproduce'), **_REPRODUCE},
    'weather-reproduce': {**_paper('weather', 5, 0.1), **_dirs('weather-reproduce'), **_REPRODUCE},
    # Small networks on the synthetic seasons set, sized to finish in minutes on a 2-core CPU. The
    # resolution is the smallest that shows the method, so that the run reaches the iterations after
    # which the kept edges (metrics/benchmark.py) pass the input-unchanged baseline. Learning rates 20x
    # upstream's (F's 200x: it must learn several styles per domain), a faster EMA and a cycle weight
    # of 2 keep both the edges and the diversity. The
    # patch-wise losses weigh a tenth of the paper's (hDCE 0.1, SRC 0.01): they compare each output
    # patch with the source's, so at full weight every colour change a style makes costs loss, and the
    # styles of one season came out 5 grey levels apart against the renderer's 23 (bench/style_spread.py);
    # a longer or larger lambda_ds alone did not spread them before it drowned the seasons. With the
    # lighter patch losses lambda_ds decays over twice the run (to 1 at its end, not 0), since the
    # styles drew together again as it reached 0. The edges still pass the input-unchanged baseline.
    # The measurements behind each choice are in docs/benchmarks.md ("The demo").
    'demo': dict(num_domains=4, img_size=32, base_dim=16, max_conv_dim=64, hidden_dim=128,
                 latent_dim=16, style_dim=32, batch_size=4, val_batch_size=8, total_iters=1200,
                 lambda_ds=2.0, ds_iter=2400, lambda_cyc=2.0, lambda_src=0.01, lambda_dce=0.1, use_hard=True,
                 use_curriculum=True, n_patch=64, randcrop_prob=0.0, num_outs_per_domain=3,
                 lr=2e-3, f_lr=2e-4, ema_beta=0.99, num_workers=0, print_every=100, sample_every=300,
                 save_every=300, eval_every=0,
                 train_img_dir='data/synthetic-seasons/train', val_img_dir='data/synthetic-seasons/val',
                 src_dir='assets/representative/synthetic-seasons/src',
                 ref_dir='assets/representative/synthetic-seasons/ref',
                 **_dirs('demo')),
}
# Several plug-ins with their own weights in one run: the paper's SRC + hDCE plus PatchGCL
# (its weight 0.5 is our choice: PatchGCL has no published StarGAN v2 setting).
PRESETS['seasons-combined'] = {**PRESETS['seasons'], **_dirs('seasons-combined'), 'patch_loss': [('patchgcl', 0.5)]}
PRESETS['demo-combined'] = {**PRESETS['demo'], **_dirs('demo-combined'), 'patch_loss': [('patchgcl', 0.5)]}


# The flags that only this family reads (every other one is shared with the other families).
OWN_DESTS = ('arch', 'img_size', 'num_domains', 'latent_dim', 'hidden_dim', 'style_dim', 'base_dim',
             'max_conv_dim', 'w_hpf', 'lambda_reg', 'lambda_cyc', 'lambda_sty', 'lambda_ds', 'ds_iter',
             'cyc_mode', 'lambda_src', 'lambda_dce', 'lambda_nce', 'use_hard', 'gamma_start', 'gamma_end',
             'n_patch', 'patch_dim', 'query_side', 'patch_head_update', 'randcrop_prob', 'total_iters',
             'val_batch_size', 'f_lr', 'ema_beta', 'num_outs_per_domain', 'r1_every', 'compile',
             'train_img_dir', 'val_img_dir', 'sample_dir', 'checkpoint_dir', 'eval_dir', 'result_dir',
             'src_dir', 'ref_dir', 'inp_dir', 'out_dir', 'wing_path', 'lm_path', 'print_every',
             'sample_every', 'save_every', 'eval_every', 'trg_domain', 'ref', 'num_styles', 'psi', 'fps',
             'video_frames', 'raw_dir', 'val_per_domain', 'checkpoint', 'fid_protocol', 'metrics',
             'save_eval_images', 'fid_stats_dir', 'labels')


@register('stargan-v2')
class StarGANv2(Family):
    default = True   # command lines written before the families existed are StarGAN v2's
    help = 'multi-domain translation with styles (StarGAN v2: generator, mapping network, style encoder)'
    demo_preset = 'demo'

    @classmethod
    def presets(cls):
        return PRESETS

    @classmethod
    def own_dests(cls):
        return set(OWN_DESTS)

    @classmethod
    def modes(cls):
        return MODES

    @classmethod
    def errors(cls, cfg):
        """--nce_layers must name blocks of the generator's encoder (core.model)."""
        if not cfg.patch_losses or (cfg.nce_layers is None and cfg.img_size not in (32, 64, 128, 256, 512)):
            return []   # no taps are read, or the --img_size error already explains it
        num_blocks = num_encoder_blocks(cfg.arch, cfg.img_size, cfg.w_hpf)
        if not cfg.nce_layers or any(not 0 <= i < num_blocks for i in cfg.nce_layers):
            return [f'--nce_layers must list encoder blocks between 0 and {num_blocks - 1} '
                    f'for --arch {cfg.arch} at --img_size {cfg.img_size}']
        return []
