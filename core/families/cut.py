"""The CUT family (Park et al., ECCV 2020): one-sided A -> B translation, with the forks' losses.

Its flags, defaults and presets are core/cut/options.py, its networks, data,
training loop, translation, evaluation and demo the other modules of core/cut/;
this file plugs them into the command line and names its modes and their input
checks. Data listing, checkpoints, logging, processes, precision and the
patch-loss registry are shared with StarGAN v2. See docs/cut.md.
"""
import os

from core import checks
from core.cut import options
from core.cut.data import domain_folders
from core.data.images import DataError
from core.families.base import Family, register
from core.modes import Mode
from core.utils.errors import UserError
from core.utils.weights import require_weight

SEG_WEIGHTS = 'drn_d_22_cityscapes'   # metrics.cityscapes_seg's weight file (core.utils.weights name)


def _data_errors(cfg, phase):
    """The A and B folders of --dataroot for `phase` (core.cut.data.domain_folders explains what is missing)."""
    try:
        domain_folders(cfg, phase)
    except DataError as err:
        return [str(err)]
    return []


def train_errors(cfg):
    """--mode train: --dataroot's A and B folders, and what any training run needs."""
    return _data_errors(cfg, 'train') + checks.training_errors(cfg)


def model_errors(cfg):
    """The run's generator file (--checkpoints_dir/--name/--epoch): what every mode using a model needs."""
    path = options.generator_path(cfg)
    return [] if os.path.isfile(path) else [
        f'--name/--epoch: {path} does not exist (train first, or give the --checkpoints_dir, '
        f'--name and --epoch of a saved model)']


def seg_weight_errors(cfg):
    """eval --seg_scores: the DRN-D-22 weight file (given, or in the weight cache) must be there before any work."""
    if cfg.mode != 'eval' or not cfg.seg_scores:
        return []
    if cfg.seg_weights:
        return checks.exists_errors(cfg, 'seg_weights')
    try:
        require_weight(SEG_WEIGHTS)
    except UserError as err:
        return [f'--seg_scores: {err}']
    return []


def translate_errors(cfg):
    """--mode translate and eval: the run's generator file, and the --src image(s) or the --dataroot test images."""
    cfg = options.with_run_flags(cfg)
    errs = model_errors(cfg) + seg_weight_errors(cfg)
    if cfg.src:
        return errs + checks.exists_errors(cfg, 'src')
    return errs + _data_errors(cfg, cfg.phase)


@register('cut')
class CUT(Family):
    help = 'one-sided A -> B translation (CUT, FastCUT and the Hneg_SRC, PatchGCL and PUT losses)'
    demo_preset = 'demo-cut'

    @classmethod
    def add_arguments(cls, parser):
        options.add_arguments(parser)

    @classmethod
    def presets(cls):
        return options.PRESETS

    @classmethod
    def own_flags(cls):
        return options.own_option_strings()

    @classmethod
    def own_dests(cls):
        return options.cut_dests()

    @classmethod
    def defaults(cls, argv):
        return options.defaults(argv)

    @classmethod
    def derive(cls, cfg):
        return cfg.replace(**options.derive(cfg)).without(options.IGNORED)   # accepted, never used

    @classmethod
    def computed(cls):
        return set(options.DERIVED)

    @classmethod
    def errors(cls, cfg):
        return options.errors(cfg)

    @classmethod
    def shared_message(cls, message):
        return options.rename_flags(message)

    @classmethod
    def modes(cls):
        return MODES


MODES = {mode.name: mode for mode in (
    Mode('train', 'core.cut.trainer:train', train_errors, lambda cfg: checks.folders(cfg, 'checkpoint_dir', 'sample_dir'),
         'train a one-sided model on --dataroot (trainA, trainB), or resume it (--continue_train)'),
    Mode('translate', 'core.cut.translate:translate', translate_errors, lambda cfg: checks.folders(cfg, 'result_dir'),
         'translate --src (or the --dataroot test A images) A -> B with the --name/--epoch generator'),
    Mode('eval', 'core.cut.evaluate:evaluate', translate_errors, lambda cfg: checks.folders(cfg, 'result_dir'),
         'FID of the test A -> B translations against test B, as CUT and Hneg_SRC report it'),
    Mode('demo', 'core.cut.demo:run_demo', checks.training_errors,
         lambda cfg: checks.folders(cfg, 'checkpoint_dir', 'sample_dir', 'result_dir'),
         'summer -> winter on the synthetic seasons in minutes on a CPU, with its quality figures'),
    # The shared runners: they open the model through the Python API, which knows the family.
    Mode('app', 'core.app:serve', model_errors, lambda cfg: {},
         'a local web app on --host/--port translating A -> B with the --name/--epoch generator'),
    Mode('export', 'core.export:export', lambda cfg: checks.export_errors(cfg) + model_errors(cfg),
         lambda cfg: checks.folders(cfg, 'out') if cfg.out else {},
         'the --name/--epoch generator as an ONNX file (image -> image) and model.json in --out'),
)}
