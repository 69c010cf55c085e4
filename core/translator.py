"""The Python API: a trained model as one object, used by --mode sample, --mode translate and the app.

    from core.translator import Translator
    model = Translator.load('expr/checkpoints_demo')            # a checkpoint folder or a _nets_ema.ckpt file
    outs = model.latent('photo.jpg', 'winter', seed=1, num=4)   # 4 PIL images in random winter styles
    out = model.reference('photo.jpg', 'ref/summer/a.jpg')      # in the style of a summer image
    model.write_video('walk.mp4', 'photo.jpg', [model.style('winter'), model.style('summer')])

Rules every method follows:
  images in   a path, a PIL image, an HxWx3 uint8 array, a (3, H, W) tensor in [-1, 1] (one image),
              or a (N, 3, H, W) tensor or a list of the former (a batch). Images are resized to the
              training size (ignoring the aspect ratio, as training did), or with keep_size=True
              run at their own size rounded to what the generator's down-sampling allows
              (quality away from the training scale is not guaranteed).
  images out  PIL images (a list for a batch); as_tensor=True gives the generator's raw output
              instead, on the model's device: (3, H, W) or (N, 3, H, W) (a list when sizes differ).
  domains     a name (the training folder names the checkpoint stores) or a 0-based id.
  styles      tensors (style_dim,) for one style, (K, style_dim) for K styles.
  seeds       style k of a seed is F(z_k, y) with z_k the k-th code drawn on the CPU from the seed
              (core.inference.draw_latents): equal seeds give equal styles whatever `num` and the
              device; psi < 1 pulls them toward the domain's average style (truncation trick).
Batches of one size are translated in one forward pass; nothing builds a gradient; the networks
are loaded once, and a lock makes the object safe to share between threads.

ImageModel (core/image_model.py) holds these rules for every model family; Translator is StarGAN
v2's, and a CUT-family model (one-sided, no styles: translate(image)) is core.cut.translator.OneSidedTranslator, which
Translator.load returns for CUT's files.
"""
import os
import warnings

import torch
from tqdm import tqdm

from core.checkpoint import DamagedCheckpoint, ckpt_path
from core.config import parse_config
from core.data.images import DataError
from core.data.loader import pil_to_tensor, squash
from core.image_model import DomainError, FamilyError, ImageModel, StyleError
from core.inference import (check_generated, domain_averages, draw_latents, ema_steps, load_model, translate_styles,
                            truncate)
from core.runconfig import NET_FIELDS
from core.utils.device import resolve_device
from core.utils.fileio import ModelFileError
from core.video import (MAX_VIDEO_FRAMES, max_video_styles, num_video_frames, path_fakes, strip_frames,
                        write_video)

VIDEO_FRAMES = 31   # frames per style transition, as upstream's videos (--video_frames)
VIDEO_FPS = 12.5    # distinct frames per second (--fps)
LOAD_FLAGS = NET_FIELDS   # architecture keywords Translator.load passes on as flags (official checkpoints)


class _LockedGenerator:
    """The generator's encoder and decoder, each call made under the translator's lock; every decoded
    batch is checked (core.inference.check_generated) so a blown-up model stops with one line naming
    `source` instead of handing out black or NaN images."""

    def __init__(self, generator, lock, source):
        self.generator, self.lock, self.source = generator, lock, source

    def run_encoder(self, x):
        with self.lock:
            return self.generator.run_encoder(x)

    def run_decoder(self, enc, s):
        with self.lock:
            x_fake = self.generator.run_decoder(enc, s)
        check_generated(x_fake, self.source)
        return x_fake


class Translator(ImageModel):
    """A trained model's EMA networks with the three ways of using them: latent-guided
    (latent, style, styles), reference-guided (reference, style_of) and interpolation
    (interpolate, frames, write_video). See the module docstring for the argument rules."""

    family = 'stargan-v2'

    def __init__(self, model, device, keep_size=False, average_seed=None):
        """model: a core.inference.LoadedModel on `device` (torch.device).

        average_seed: seed of the z averaged into the truncation centres (default: the
        config's --seed); they are computed once, when psi < 1 first needs them.
        """
        super().__init__(model.path, model.step, device, keep_size)
        self.model = model
        self.nets, self.cfg = model.nets, model.cfg
        self._average_seed = model.cfg.seed if average_seed is None else average_seed
        self._averages = None
        self._generator = _LockedGenerator(self.nets.generator, self._lock, model.path)

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------

    @classmethod
    def load(cls, path, device='auto', step=None, arch=None, img_size=None, num_domains=None,
             domain_names=None, keep_size=False, average_seed=None, **net_flags):
        """A Translator of a `_nets_ema.ckpt` file or of a run's checkpoint folder.

        A folder gives its newest step whose EMA file reads cleanly (a damaged newer one is
        skipped with a warning); step= picks another. A checkpoint written here carries its
        architecture and domain names, which win over any keyword; an official StarGAN v2 or
        Hneg_SRC file is described by arch=, img_size=, num_domains=, domain_names= and, when
        they differ from the defaults, style_dim=, latent_dim=, hidden_dim=, base_dim=,
        max_conv_dim= (the command line's flags; mistakes get the command line's messages).
        device: 'auto' (CUDA when available), 'cpu' or 'cuda'. average_seed: see __init__.

        A CUT-family model (a *_net_G.pth file, or a folder of them) gives a
        core.cut.translator.OneSidedTranslator instead, which takes epoch=, domain_names= and
        CUT's network keywords (netG=, ngf=, crop_size=, ...); see that module.
        """
        from core.cut.translator import OneSidedTranslator, is_cut_model   # it builds on this module
        if is_cut_model(path):
            stargan_only = [k for k, v in dict(step=step, arch=arch, img_size=img_size, num_domains=num_domains,
                                               average_seed=average_seed).items() if v is not None]
            if stargan_only:
                raise FamilyError(f'{", ".join(stargan_only)}: keyword(s) of a StarGAN v2 model; {path} is a CUT '
                                f'model (its keywords: epoch=, domain_names=, netG=, ngf=, crop_size=, ...)')
            return OneSidedTranslator.load(path, device, keep_size, domain_names=domain_names, **net_flags)
        unknown = sorted(set(net_flags) - set(LOAD_FLAGS))
        if unknown:
            raise TypeError(f'Translator.load() got unexpected keyword(s) {", ".join(unknown)}; '
                            f'architecture keywords are {", ".join(LOAD_FLAGS)}')
        flags = dict(net_flags, arch=arch, img_size=img_size,
                     num_domains=len(domain_names) if num_domains is None and domain_names else num_domains)
        argv = ['--mode', 'sample'] + [f'--{k}={v}' for k, v in flags.items() if v is not None]
        cfg = parse_config(argv)
        if domain_names is not None:
            if len(domain_names) != cfg.num_domains:
                raise DomainError(f'domain_names has {len(domain_names)} names for {cfg.num_domains} domains')
            cfg = cfg.with_facts(domain_names=tuple(domain_names))
        dev = resolve_device(device)
        return cls(_load_file_or_folder(cfg, os.fspath(path), step, dev), dev, keep_size, average_seed)

    @classmethod
    def from_config(cls, cfg, keep_size=False, verbose=True):
        """The Translator of the command line: --checkpoint, or --checkpoint_dir at --resume_iter,
        on --device; the truncation centres drawn from --seed."""
        device = resolve_device(cfg.device)
        return cls(load_model(cfg, device, verbose), device, keep_size, cfg.seed)

    # ------------------------------------------------------------------------------------------
    # What was loaded
    # ------------------------------------------------------------------------------------------

    @property
    def domains(self):
        """Domain names by id ('domain<id>' for checkpoints that store none)."""
        names = self.cfg.facts.domain_names
        return list(names) if names else [f'domain{y}' for y in range(self.cfg.num_domains)]

    @property
    def img_size(self):
        """The training size: references, and sources without keep_size, are resized to it."""
        return self.cfg.img_size

    @property
    def size_multiple(self):
        return 2 ** self.nets.generator.plan.num_down

    def _fit(self, img):
        return pil_to_tensor(squash(img, self.img_size))   # squashed, bilinear, as training

    def __repr__(self):
        return (f'Translator({self.path!r}, step={self.step}, {self.cfg.arch}, {self.img_size} px, '
                f'domains={self.domains}, device={self.device}, keep_size={self.keep_size})')

    def domain_id(self, domain, what='domain'):
        """The id of a domain given by name or id; DomainError naming `what` otherwise."""
        names = self.cfg.facts.domain_names or ()
        if isinstance(domain, str) and domain in names:
            return list(names).index(domain)
        if not names and isinstance(domain, str) and domain in self.domains:
            return self.domains.index(domain)
        try:
            y = int(domain)
        except (TypeError, ValueError):
            if names:
                raise DomainError(f'{what} {domain!r} is not a domain of this model; its domains are '
                                  + ', '.join(f'{n} ({i})' for i, n in enumerate(names))) from None
            raise DomainError(f'{what} {domain!r}: this checkpoint stores no domain names (official layout); '
                              f'give the domain id, 0 to {self.cfg.num_domains - 1} (sorted folder order)') from None
        if not 0 <= y < self.cfg.num_domains or isinstance(domain, float) and domain != y:
            raise DomainError(f'{what} {domain} is out of range: the model has domains 0 to {self.cfg.num_domains - 1}')
        return y

    def domain_of(self, path, what='reference', hint='give its domain'):
        """The domain id named by the nearest folder above `path` (itself, if a folder) that is a domain."""
        folder = os.path.abspath(os.fspath(path))
        folder = folder if os.path.isdir(folder) else os.path.dirname(folder)
        names = self.cfg.facts.domain_names or ()
        while os.path.basename(folder) not in names and os.path.dirname(folder) != folder:
            folder = os.path.dirname(folder)
        if os.path.basename(folder) in names:
            return names.index(os.path.basename(folder))
        known = f'the model\'s domains are {", ".join(names)}' if names else 'this checkpoint stores no domain names'
        raise DomainError(f'{what} {path}: no folder above it is named after a domain ({known}); {hint}')

    # ------------------------------------------------------------------------------------------
    # Styles
    # ------------------------------------------------------------------------------------------

    @torch.no_grad()
    def styles(self, domain, seed=0, psi=1.0, num=1):
        """The first `num` random styles of `seed` for a domain: (num, style_dim).

        Style k is F(z_k, y) for the k-th code of the seed, pulled toward the domain's
        average style by 1 - psi; it does not depend on `num`.
        """
        y = self.domain_id(domain)
        if not 0 <= psi <= 1:
            raise StyleError(f'psi must be between 0 and 1 (got {psi})')
        z = draw_latents(seed, num, self.cfg.latent_dim).to(self.device)   # (num, 1, latent_dim)
        y_trg = torch.tensor([y], device=self.device)
        with self._lock:
            s = [self.nets.mapping_network(z_k, y_trg) for z_k in z]       # num x (1, style_dim)
            if psi != 1:
                s_avg = self._domain_averages()[y:y + 1]
                s = [truncate(s_k, s_avg, psi) for s_k in s]
        return torch.cat(s)

    def style(self, domain, seed=0, psi=1.0):
        """The first random style of `seed` for a domain: (style_dim,)."""
        return self.styles(domain, seed, psi, 1)[0]

    @torch.no_grad()
    def style_of(self, ref, domain=None):
        """The style E(x_ref, y) of a reference image, (style_dim,), or of a batch, (R, style_dim).

        The reference is encoded at the training size. domain: a name or id, or for a
        batch one per reference; None reads it from the folders above a path (domain_of).
        """
        groups, count, single = self._prepare(ref, keep_size=False)
        x_ref = groups[0][1]   # (R, 3, S, S): one size
        y_ref = torch.tensor(self._ref_domains(ref, domain, count, single), device=self.device)
        with self._lock:
            s = self.nets.style_encoder(x_ref, y_ref)   # (R, style_dim)
        return s[0] if single else s

    def _domain_averages(self):
        with self._lock:
            if self._averages is None:
                self._averages = domain_averages(self.nets.mapping_network, self.cfg.latent_dim,
                                                 self._average_seed, self.device)
            return self._averages

    def _ref_domains(self, ref, domain, count, single):
        """A domain id per reference image."""
        if domain is None:
            paths = [ref] if single else list(ref) if isinstance(ref, (list, tuple)) else []
            if len(paths) != count or not all(isinstance(p, (str, os.PathLike)) for p in paths):
                raise DomainError('give the reference\'s domain (domain=NAME_OR_ID): only a path under a domain '
                                  'folder tells it')
            return [self.domain_of(p) for p in paths]
        if isinstance(domain, (list, tuple)) or torch.is_tensor(domain) and domain.dim() == 1:
            ids = [self.domain_id(d) for d in (domain.tolist() if torch.is_tensor(domain) else domain)]
            if len(ids) != count:
                raise DomainError(f'{len(ids)} domains for {count} reference images')
            return ids
        return [self.domain_id(domain)] * count

    def _style_batch(self, styles):
        """(K, style_dim) from one style (style_dim,), a (K, style_dim) tensor or a list of styles."""
        if isinstance(styles, (list, tuple)):
            styles = torch.cat([self._style_batch(s) for s in styles]) if styles else torch.zeros(0)
        s = torch.as_tensor(styles).to(self.device, torch.float32)
        if s.dim() == 1:
            s = s.unsqueeze(0)   # (1, style_dim)
        if s.dim() != 2 or s.size(1) != self.cfg.style_dim or s.size(0) == 0:
            raise StyleError(f'a style is a tensor of {self.cfg.style_dim} values (or K x {self.cfg.style_dim} '
                             f'for K styles); got shape {tuple(s.shape)}')
        return s

    # ------------------------------------------------------------------------------------------
    # Translation
    # ------------------------------------------------------------------------------------------

    def apply(self, image, style, as_tensor=False):
        """The image(s) translated with a style (style_dim,), or a list with one output per
        row of a (K, style_dim) tensor (sources encoded once)."""
        s = self._style_batch(style)
        outs = self._translate(image, [s[k:k + 1] for k in range(s.size(0))], as_tensor)
        return outs[0] if torch.is_tensor(style) and style.dim() == 1 else outs

    def latent(self, image, domain, seed=0, psi=1.0, num=1, as_tensor=False):
        """A list of `num` translations of the image(s) to `domain`, with styles(domain, seed, psi, num)."""
        return self.apply(image, self.styles(domain, seed, psi, num), as_tensor)

    def reference(self, image, ref, domain=None, as_tensor=False):
        """The image(s) in the style of one reference image (domain: see style_of)."""
        return self.apply(image, self.style_of(ref, domain), as_tensor)

    def _translate(self, image, styles, as_tensor):
        """One output per style (each (1, style_dim)), every input size group in one forward pass."""
        return self._translate_groups(image, as_tensor, lambda x: list(translate_styles(self._generator, x, styles)))

    # ------------------------------------------------------------------------------------------
    # Interpolation and video
    # ------------------------------------------------------------------------------------------

    def frames(self, image, styles, num_frames=VIDEO_FRAMES, as_tensor=False):
        """Yield the frames of a walk through `styles` (K, style_dim, or a list), one output per
        frame of the video: the transition of core.video (upstream's ease-in-out, each
        `num_frames` long, then a hold). The image(s) must share one size."""
        s = self._video_styles(styles, num_frames)
        groups, _, single = self._prepare(image, self.keep_size)
        if len(groups) > 1:
            raise DataError('the images of an interpolation must share one size (or use keep_size=False)')
        return self._frame_iter(groups[0][1], s, num_frames, single, as_tensor)

    @torch.no_grad()
    def _frame_iter(self, x_src, s, num_frames, single, as_tensor):
        for x_fake in path_fakes(self._generator, x_src, s, num_frames):
            yield self._output(x_fake, single, as_tensor)

    def interpolate(self, image, styles, num_frames=VIDEO_FRAMES, as_tensor=False):
        """The list of frames of frames(image, styles, num_frames): frame i of it is frame i of write_video's MP4."""
        frames = self.frames(image, styles, num_frames, as_tensor)
        total = self.num_frames(self._style_batch(styles).size(0), num_frames)
        return list(tqdm(frames, total=total, desc='interpolate', unit='frame', disable=None, leave=False))

    def num_frames(self, num_styles, num_frames=VIDEO_FRAMES):
        """Length of the walk through `num_styles` styles (holds included)."""
        return num_video_frames(num_styles, num_frames)

    def write_video(self, path, image, styles, num_frames=VIDEO_FRAMES, fps=VIDEO_FPS, with_source=True):
        """Write the walk through `styles` as an H.264 MP4 (atomically); returns `path`.

        Each frame shows the source(s) above their translation (with_source=False: only
        the translation); a batch is shown side by side.
        """
        groups, _, _ = self._prepare(image, self.keep_size)
        if len(groups) > 1:
            raise DataError('the images of a video must share one size (or use keep_size=False)')
        x_src = groups[0][1]
        fakes = self.frames(x_src, styles, num_frames, as_tensor=True)
        num_styles = self._style_batch(styles).size(0)
        if with_source:
            frames = strip_frames(x_src, fakes, num_styles, num_frames)
        else:
            frames = (x_fake.permute(1, 2, 0, 3).flatten(2) for x_fake in fakes)   # (3, H, N * W)
        write_video(os.fspath(path), frames, self.num_frames(num_styles, num_frames), fps)
        return path

    def _video_styles(self, styles, num_frames):
        s = self._style_batch(styles)
        if num_frames < 2:
            raise StyleError(f'num_frames must be at least 2 (got {num_frames})')
        if s.size(0) > max_video_styles(num_frames):
            raise StyleError(f'{s.size(0)} styles at {num_frames} frames each make a video longer than '
                             f'{MAX_VIDEO_FRAMES} frames; give at most {max_video_styles(num_frames)} styles '
                             f'or fewer frames per transition')
        return s

def _load_file_or_folder(cfg, path, step, device):
    """LoadedModel of a _nets_ema.ckpt file, or of a checkpoint folder at `step` (None: its newest intact step)."""
    if os.path.isfile(path):
        if step is not None:
            raise ModelFileError(f'step={step} picks a step of a checkpoint folder; {path} is a file')
        return load_model(cfg.replace(checkpoint=path), device, verbose=False)
    if not os.path.isdir(path):
        raise ModelFileError(f'{path} does not exist; give a _nets_ema.ckpt file or a checkpoint folder')
    steps = ema_steps(path)
    if step is not None:
        if step not in steps:
            raise ModelFileError(f'{path} has no step {step}; its steps are {", ".join(map(str, steps)) or "none"}')
        return load_model(cfg.replace(checkpoint=ckpt_path(path, step, 'nets_ema')), device, verbose=False)
    if not steps:
        raise ModelFileError(f'{path} holds no _nets_ema.ckpt file; train first or give a checkpoint file')
    for newest in reversed(steps):
        try:
            return load_model(cfg.replace(checkpoint=ckpt_path(path, newest, 'nets_ema')), device, verbose=False)
        except DamagedCheckpoint as err:
            if newest == steps[0]:
                raise DamagedCheckpoint(f'{err}; {path} holds no intact earlier step') from None
            warnings.warn(f'{err}; trying the step before it', stacklevel=3)
