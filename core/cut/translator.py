"""The Python API of the CUT family: a one-sided A -> B generator as one object.

    from core.translator import Translator
    model = Translator.load('checkpoints/h2z_cut')        # a run folder, a *_net_G.pth file, a released file
    zebra = model.translate('horse.jpg')                  # A -> B; a list or an (N, 3, H, W) tensor for a batch

Translator.load returns a OneSidedTranslator when the file is CUT's. Images in and out follow
core.translator's rules (its module docstring); without keep_size an image is brought to the
training size by CUT's test transform (core.cut.data.eval_transform, the run's --preprocess), as
--mode translate does. The model has no styles: the StarGAN v2 methods (latent, reference, ...)
raise NoStyleError.
"""
import json
import os
import re

from core.config import parse_config
from core.cut.data import eval_transform
from core.cut.inference import FLAGS_HINT, load_generator
from core.cut.options import generator_path, with_run_flags
from core.inference import check_generated
from core.runconfig import RunFacts
from core.image_model import DomainError, ImageModel
from core.utils.device import resolve_device
from core.utils.errors import UserError
from core.utils.fileio import ModelFileError

# Keywords of Translator.load for a CUT model: CUT's flags of the same names. A run's config.json gives
# the ones not passed; a released file, which stores none, takes the release's defaults.
LOAD_KEYWORDS = ('netG', 'ngf', 'normG', 'no_dropout', 'no_antialias', 'no_antialias_up', 'crop_size',
                 'preprocess')
DEFAULT_DOMAINS = ('A', 'B')   # names of a model whose run recorded none
GENERATOR_FILE = re.compile(r'(.+)_net_G\.pth')
# What a generator file that does not fit the keywords asks for (the command line names its flags instead).
KEYWORDS_HINT = ('Give the keywords it was trained with (Translator.load(path, netG=..., ngf=..., normG=..., '
                 'no_antialias=..., no_antialias_up=..., no_dropout=...)).')
# The StarGAN v2 methods: a one-sided model has none of them.
STYLE_METHODS = ('latent', 'reference', 'style', 'styles', 'style_of', 'apply', 'frames', 'interpolate',
                 'write_video')


class NoStyleError(UserError):
    """A style method called on a one-sided model."""


def is_cut_model(path):
    """True for a *_net_G.pth file, and for a folder of one (a released CUT folder, or a run of ours whose
    config.json says "model": "cut"); StarGAN v2 files and folders have neither."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return GENERATOR_FILE.fullmatch(os.path.basename(path)) is not None or _in_cut_run(os.path.dirname(path))
    return os.path.isdir(path) and (_in_cut_run(path) or bool(generator_epochs(path)))


def _in_cut_run(folder):
    return _stored_json(os.path.join(folder or '.', 'config.json')).get('model') == 'cut'


def generator_epochs(folder):
    """The <epoch> of every <epoch>_net_G.pth in folder, sorted."""
    return sorted(m.group(1) for m in map(GENERATOR_FILE.fullmatch, os.listdir(folder)) if m)


def _stored_json(path):
    """The JSON object in `path`, or {} when it is missing or not a JSON object."""
    try:
        with open(path, encoding='utf-8') as f:
            value = json.load(f)
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def run_domain_names(run_dir):
    """The (A, B) names the run in run_dir trained on (its run.json), or None."""
    return RunFacts.from_fields(_stored_json(os.path.join(run_dir, 'run.json'))).domain_names


def load_config(path, epoch=None, device='auto', **keywords):
    """The CUT config that --mode translate would use for `path` (a *_net_G.pth file or a run folder at
    `epoch`, default latest), with `keywords` as its flags."""
    unknown = sorted(set(keywords) - set(LOAD_KEYWORDS))
    if unknown:
        raise TypeError(f'Translator.load() got unexpected keyword(s) {", ".join(unknown)} for a CUT model; '
                        f'its keywords are epoch, domain_names, {", ".join(LOAD_KEYWORDS)}')
    if os.path.isfile(path):
        if not GENERATOR_FILE.fullmatch(os.path.basename(path)):
            raise ModelFileError(f'{path} is a training checkpoint of a CUT run; give the run folder or one of its '
                                 f'<epoch>_net_G.pth files')
        if epoch is not None:
            raise ModelFileError(f'epoch={epoch} picks a file of a run folder; {path} is a file')
        run_dir, epoch = os.path.dirname(path), GENERATOR_FILE.fullmatch(os.path.basename(path)).group(1)
    else:
        run_dir, epoch = path, 'latest' if epoch is None else epoch
    run_dir = os.path.abspath(run_dir)
    given = {k: v for k, v in keywords.items() if v is not None}
    # Values are read as the command line reads them (and get its messages); the switches are set directly,
    # since --no_antialias has no spelling for False.
    switches = {k: v for k, v in given.items() if isinstance(v, bool)}
    flags = [f'--{k}={v}' for k, v in given.items() if k not in switches]
    cfg = parse_config(['--mode', 'translate', '--model', 'cut', '--checkpoints_dir', os.path.dirname(run_dir),
                        '--name', os.path.basename(run_dir), '--epoch', str(epoch), '--device', str(device)] + flags)
    return cfg.replace(**switches).with_facts(explicit_flags=tuple(sorted({*cfg.facts.explicit_flags, *switches})))


def _no_styles(name):
    def method(self, *args, **kwargs):
        raise NoStyleError(f'{name}(): a one-sided CUT model has no styles: use translate(image)')
    method.__name__ = name
    method.__doc__ = 'Not available: a one-sided model has no styles (NoStyleError); use translate(image).'
    return method


class OneSidedTranslator(ImageModel):
    """A CUT-family generator (A -> B, no styles) with core.translator's image rules: translate(image)."""

    family = 'cut'

    def __init__(self, generator, cfg, path, device, keep_size=False):
        """generator: the loaded ResnetGenerator on `device`, in eval mode; cfg: its CUT config (the
        domain names in cfg.facts)."""
        super().__init__(path, None, device, keep_size)
        self.generator, self.cfg = generator.requires_grad_(False), cfg

    @classmethod
    def load(cls, path, device='auto', keep_size=False, epoch=None, domain_names=None, **keywords):
        """The model of a CUT run folder (its `epoch`_net_G.pth, latest by default), of one *_net_G.pth
        file, or of a released CUT / Hneg_SRC file; keywords: LOAD_KEYWORDS (see the module docstring)."""
        path = os.fspath(path)
        if not os.path.exists(path):
            raise ModelFileError(f'{path} does not exist; give a *_net_G.pth file or a CUT run folder')
        cfg = load_config(path, epoch, device, **keywords)
        if domain_names is not None:
            if len(domain_names) != 2:
                raise DomainError(f'domain_names has {len(domain_names)} names; a one-sided model has two (A, B)')
            cfg = cfg.with_facts(domain_names=tuple(domain_names))
        return cls.from_config(cfg, keep_size, KEYWORDS_HINT)

    @classmethod
    def from_config(cls, cfg, keep_size=False, hint=FLAGS_HINT):
        """The model of a CUT command line: checkpoints_dir/name/<epoch>_net_G.pth, the run's config.json
        filling the network flags not given, on --device. hint: what to do when the file does not fit."""
        cfg = with_run_flags(cfg)
        if not cfg.facts.domain_names:
            cfg = cfg.with_facts(domain_names=run_domain_names(cfg.checkpoint_dir) or DEFAULT_DOMAINS)
        path = generator_path(cfg)
        if not os.path.isfile(path):
            epochs = generator_epochs(cfg.checkpoint_dir) if os.path.isdir(cfg.checkpoint_dir) else []
            raise ModelFileError(f'{path} does not exist; the folder\'s generators are epochs '
                                 f'{", ".join(epochs) or "none"} (<epoch>_net_G.pth)')
        device = resolve_device(cfg.device)
        generator, cfg = load_generator(cfg, device, hint)
        return cls(generator, cfg, path, device, keep_size)

    # ------------------------------------------------------------------------------------------
    # What was loaded
    # ------------------------------------------------------------------------------------------

    @property
    def domains(self):
        """[A, B]: the domain translated from and the one translated into."""
        return list(self.cfg.facts.domain_names)

    @property
    def img_size(self):
        """The training crop size (--crop_size)."""
        return self.cfg.crop_size

    @property
    def size_multiple(self):
        return 4   # two 2x down-sampling blocks

    @property
    def epoch(self):
        """The <epoch> of the file's name (latest, best, 5, ...)."""
        return self.cfg.epoch

    def __repr__(self):
        return (f'OneSidedTranslator({self.path!r}, epoch={self.epoch}, {self.cfg.netG}, ngf {self.cfg.ngf}, '
                f'{self.img_size} px, {" -> ".join(self.domains)}, device={self.device}, keep_size={self.keep_size})')

    # ------------------------------------------------------------------------------------------
    # Translation
    # ------------------------------------------------------------------------------------------

    def translate(self, image, as_tensor=False):
        """The image(s) translated A -> B (see core.translator for what images may be)."""
        return self._translate_groups(image, as_tensor, lambda x: [self._forward(x)])[0]

    def _forward(self, x):
        with self._lock:
            x_fake = self.generator(x)
        check_generated(x_fake, self.path)
        return x_fake

    def _fit(self, img):
        return eval_transform(img, self.img_size, self.cfg.preprocess)   # CUT's test transform


for _name in STYLE_METHODS:
    setattr(OneSidedTranslator, _name, _no_styles(_name))
