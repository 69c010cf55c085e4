"""--mode app: a local web app over core.translator.Translator (gradio).

    python main.py --mode app                         # the demo model (python main.py --mode demo first)
    python main.py --mode app --checkpoint FILE       # or --checkpoint_dir DIR [--resume_iter N]
    python main.py --mode app --model cut --checkpoints_dir DIR --name RUN [--epoch E]   # a CUT model

Three tabs for a StarGAN v2 model, each a thin layer over one Translator call:
  Latent       source, target domain, seed, psi, number of styles -> a gallery (Translator.latent)
  Reference    source, reference, target domain -> one image (Translator.reference)
  Interpolate  source and 2-MAX_PATH_STYLES styles (each a seed or a reference): a position slider
               shows the blend at that position (Translator.apply), a button renders the MP4
               (Translator.write_video)
A one-sided (CUT family) model has no styles: its page has one tab, Translate (source -> one image,
OneSidedTranslator.translate). The page shows the model's file, step, family, architecture and domains.

Rules the app keeps:
  * offline: no analytics, no share link, fonts from gradio's own package; it serves on
    127.0.0.1 unless --host says otherwise;
  * one model, loaded before serving; requests queue (one at a time) instead of running in parallel;
  * every input is bounded (upload bytes and pixels, styles, frames), and a bad upload or value is
    one message in the page (gr.Error) while the server keeps serving.
"""
import os

# Set before gradio is imported: gradio reads it when it builds an app, and without it
# contacts its servers (analytics, a version check).
os.environ['GRADIO_ANALYTICS_ENABLED'] = 'False'
os.environ['HF_HUB_DISABLE_TELEMETRY'] = '1'

import functools  # noqa: E402
import secrets  # noqa: E402
import shutil  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import gradio as gr  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from core.config import SEED_RANGE  # noqa: E402
from core.families import family_of  # noqa: E402
from core.families.stargan_v2 import PRESETS  # noqa: E402
from core.cut.translator import OneSidedTranslator, is_cut_model  # noqa: E402
from core.data.images import BadImageError, list_images, load_rgb  # noqa: E402
from core.inference import ema_steps  # noqa: E402
from core.sampling import first_per_domain  # noqa: E402
from core.translator import LOAD_FLAGS, VIDEO_FPS, Translator  # noqa: E402
from core.utils.errors import UserError  # noqa: E402

MAX_PIXELS = 4096 * 4096         # largest upload decoded (a 16-megapixel photo); larger ones are refused unread
MAX_UPLOAD_BYTES = 32 * 2 ** 20  # largest upload the server accepts at all
MAX_STYLES = 8                   # Latent: styles per request
MAX_PATH_STYLES = 4              # Interpolate: styles of one path
MAX_TRANSITION_FRAMES = 60       # Interpolate: frames per style transition of the video
QUEUE_SIZE = 32                  # requests waiting; more are turned away with a message
CACHE_LIFETIME = 3600            # seconds gradio keeps uploads and outputs (checked as often)
VIDEO_NAME = 'interpolation.mp4'
EXAMPLES_PER_TAB = 8
GALLERY_HEIGHT = 220             # pixels: one row of up to MAX_STYLES translations
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class AppError(UserError):
    """The app cannot start (no model to open)."""


def page_error(message):
    """The gr.Error that shows a user's mistake in the page (one message; no traceback on the console)."""
    return gr.Error(message, print_exception=False)


# ----------------------------------------------------------------------------------------------
# Uploads: decoded here, not by gradio, so that every bad file is one clear message
# ----------------------------------------------------------------------------------------------

def _too_large(what):
    return page_error(f'The image has {what}; the app takes images of up to {MAX_PIXELS // 10 ** 6} megapixels. '
                    f'Upload a smaller image.')


def check_pixels(path):
    """gr.Error if the file's header declares more than MAX_PIXELS pixels; nothing is decoded."""
    try:
        with Image.open(path) as img:
            width, height = img.size
    except Image.DecompressionBombError:   # Pillow's own refusal, far above MAX_PIXELS
        raise _too_large('more pixels than Pillow decodes safely') from None
    except Exception:  # not an image, or a damaged header: load_rgb names the problem
        return
    if width * height > MAX_PIXELS:
        raise _too_large(f'{width}x{height} pixels')


def read_upload(path):
    """The uploaded file at `path` as an RGB PIL image; gr.Error naming the problem otherwise."""
    if os.path.getsize(path) > MAX_UPLOAD_BYTES:
        raise page_error(f'The file is larger than {MAX_UPLOAD_BYTES // 2 ** 20} MB; upload a smaller image.')
    check_pixels(path)
    try:
        return load_rgb(path)
    except BadImageError as err:
        raise page_error(f'This file cannot be used as an image: {err.reason}.') from None


def upload(payload, what):
    """The PIL image of an image input's raw value (gradio's FileData as a dict, the file already
    copied into gradio's upload cache), or gr.Error. Events run with preprocess=False so that
    gradio never decodes an upload itself: its messages would name internal paths, not the problem."""
    if payload is None:
        raise page_error(f'Upload a {what} image (or click an example) first.')
    path = payload.get('path') if isinstance(payload, dict) else None
    if not path:
        raise page_error(f'The {what} image did not arrive; upload it again.')
    return read_upload(path)


def upload_image(label, height, elem_id=None, visible=True):
    """An image input for upload() (uploaded or pasted; the events read its file path)."""
    return gr.Image(label=label, height=height, type='filepath', image_mode=None, sources=['upload', 'clipboard'],
                    elem_id=elem_id, visible=visible)


# ----------------------------------------------------------------------------------------------
# Values from the page: checked here, whatever a client sends
# ----------------------------------------------------------------------------------------------

def _whole_number(value, name, low, high):
    """int(value) if it is a whole number in [low, high], else gr.Error naming the control."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise page_error(f'{name} must be a number (got {value!r}).') from None
    if not (number.is_integer() and low <= number <= high):
        raise page_error(f'{name} must be a whole number from {low} to {high} (got {value}).')
    return int(number)


def _fraction(value, name):
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise page_error(f'{name} must be a number (got {value!r}).') from None
    if not 0 <= number <= 1:
        raise page_error(f'{name} must be between 0 and 1 (got {value}).')
    return number


def _seed(value):
    return _whole_number(value, 'The seed', *SEED_RANGE)


def shown_as_errors(action):
    """Run action; a UserError (a bad domain, an image the model rejects, ...) becomes gr.Error."""
    @functools.wraps(action)
    def wrapped(*args):
        try:
            return action(*args)
        except UserError as err:
            raise page_error(str(err)) from None
    return wrapped


# ----------------------------------------------------------------------------------------------
# The actions of the tabs
# ----------------------------------------------------------------------------------------------

class Actions:
    """What each button does, as functions of the page's raw values (events run with
    preprocess=False: images arrive as FileData dicts, numbers unchecked); results are PIL
    images or a file path."""

    def __init__(self, translator, video_dir, fps):
        self.translator = translator
        self.video_dir = video_dir
        self.fps = fps

    def _domain(self, name):
        if name not in self.translator.domains:
            raise page_error(f'Pick a target domain: one of {", ".join(self.translator.domains)}.')
        return name

    def translate(self, image):
        """The source translated A -> B (a one-sided model)."""
        return self.translator.translate(upload(image, 'source'))

    def latent(self, image, domain, seed, psi, num):
        """[(image, caption)] of `num` random styles of `domain` drawn from `seed`, pulled toward
        the domain's average by psi."""
        image, domain, seed = upload(image, 'source'), self._domain(domain), _seed(seed)
        psi, num = _fraction(psi, 'psi'), _whole_number(num, 'The number of styles', 1, MAX_STYLES)
        outs = self.translator.latent(image, domain, seed=seed, psi=psi, num=num)
        return [(out, f'style {k}') for k, out in enumerate(outs)]

    def reference(self, image, ref, domain):
        """The source in the style of the reference, taken as an image of `domain`."""
        image, ref = upload(image, 'source'), upload(ref, 'reference')
        return self.translator.reference(image, ref, self._domain(domain))

    def path_styles(self, num_styles, slots):
        """The style codes of the first `num_styles` slots; slots: (kind, domain, seed, ref) per slot."""
        num = _whole_number(num_styles, 'The number of styles', 2, MAX_PATH_STYLES)
        styles = []
        for k, (kind, domain, seed, ref) in enumerate(slots[:num], start=1):
            domain = self._domain(domain)
            if kind == 'reference':
                styles.append(self.translator.style_of(upload(ref, f'style {k} reference'), domain))
            elif kind == 'seed':
                styles.append(self.translator.style(domain, seed=_seed(seed)))
            else:
                raise page_error(f'Style {k} must be made from a seed or a reference (got {kind!r}).')
        return styles

    def frame(self, image, num_styles, position, *slot_values):
        """The source translated with the style at `position` of the path (0: the first style, 1: the last)."""
        image, position = upload(image, 'source'), _fraction(position, 'The position')
        styles = self.path_styles(num_styles, _slots(slot_values))
        where = position * (len(styles) - 1)
        k = min(int(where), len(styles) - 2)
        return self.translator.apply(image, torch.lerp(styles[k], styles[k + 1], where - k))

    def video(self, image, num_styles, num_frames, *slot_values):
        """Path of an MP4 whose style walks through the path, `num_frames` frames per transition."""
        image = upload(image, 'source')
        num_frames = _whole_number(num_frames, 'Frames per transition', 2, MAX_TRANSITION_FRAMES)
        styles = self.path_styles(num_styles, _slots(slot_values))
        folder = tempfile.mkdtemp(dir=self.video_dir)
        path = os.path.join(folder, VIDEO_NAME)
        self.translator.write_video(path, image, styles, num_frames=num_frames, fps=self.fps)
        _remove_older_videos(self.video_dir, keep=folder)
        return path


def _slots(values):
    """Flat page values (kind, domain, seed, ref, kind, ...) -> one tuple per slot."""
    return [tuple(values[i:i + 4]) for i in range(0, len(values), 4)]


def _remove_older_videos(video_dir, keep):
    """Delete every rendered video but `keep`'s (gradio has copied each into its cache when it was sent)."""
    for name in os.listdir(video_dir):
        folder = os.path.join(video_dir, name)
        if folder != keep:
            shutil.rmtree(folder, ignore_errors=True)


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------

def example_pairs(examples_dir, part, domains):
    """Up to EXAMPLES_PER_TAB (path, domain) of examples_dir/<part>/<domain>/, every domain of the
    model's shown (first images in turn); [] without such folders."""
    root = os.path.join(examples_dir, part) if examples_dir else ''
    found = [d for d in _domain_folders(root) if d in domains]
    picked = first_per_domain([list_images(os.path.join(root, d)) for d in found], EXAMPLES_PER_TAB)
    return [(path, found[y]) for path, y in picked]


def model_card(translator):
    """One Markdown line: file, step, family, architecture, size and domains of the model."""
    step = 'unknown' if translator.step is None else translator.step
    if translator.family == 'cut':   # its files are named by epoch; its domains are a direction
        step, arch = f'{step} (epoch {translator.epoch})', f'{translator.cfg.netG}, ngf {translator.cfg.ngf}'
        domains = ' -> '.join(translator.domains)
    else:
        arch, domains = translator.cfg.arch, ', '.join(translator.domains)
    return (f'**Model** `{translator.path}` &nbsp; **step** {step} &nbsp; **family** {translator.family} &nbsp; '
            f'**architecture** {arch}, {translator.img_size} px &nbsp; **domains** {domains}')


def _source_examples(source, examples_dir, domains):
    pairs = example_pairs(examples_dir, 'src', domains)
    if pairs:
        gr.Examples([[path] for path, _ in pairs], [source], label='Example sources')


def _latent_tab(actions, domains, examples_dir):
    with gr.Row():
        with gr.Column():
            source = upload_image('Source', 256, elem_id='latent-source')
            _source_examples(source, examples_dir, domains)
        with gr.Column():
            domain = gr.Dropdown(domains, value=domains[0], label='Target domain', elem_id='latent-domain')
            with gr.Row():
                seed = gr.Number(0, label='Seed', precision=0, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1],
                                 scale=3)
                shuffle = gr.Button('Random seed', scale=1)
            psi = gr.Slider(0, 1, value=1, step=0.05, label='psi',
                            info='pulls the styles toward the domain average: 1 none, 0 the average')
            num = gr.Slider(1, MAX_STYLES, value=4, step=1, label='Number of styles')
            run = gr.Button('Translate', variant='primary', elem_id='latent-run')
    gallery = gr.Gallery(label='Translations', columns=MAX_STYLES, fit_columns=False, format='png',
                         height=GALLERY_HEIGHT, elem_id='latent-gallery')
    shuffle.click(lambda: secrets.randbelow(SEED_RANGE[1] + 1), None, seed, api_name='random_seed')
    run.click(shown_as_errors(actions.latent), [source, domain, seed, psi, num], gallery, api_name='latent',
              preprocess=False)


def _translate_tab(actions, domains, examples_dir):
    """A one-sided model's tab: a source of domain A in, its translation to B out."""
    with gr.Row():
        with gr.Column():
            source = upload_image(f'Source ({domains[0]})', 256, elem_id='translate-source')
            _source_examples(source, examples_dir, domains[:1])
        with gr.Column():
            out = gr.Image(label=f'Translation ({domains[1]})', format='png', interactive=False, height=256,
                           elem_id='translate-output')
            run = gr.Button('Translate', variant='primary', elem_id='translate-run')
    run.click(shown_as_errors(actions.translate), [source], out, api_name='translate', preprocess=False)


def _reference_tab(actions, domains, examples_dir):
    with gr.Row():
        with gr.Column():
            source = upload_image('Source', 256)
            _source_examples(source, examples_dir, domains)
        with gr.Column():
            ref = upload_image('Reference', 256)
            domain = gr.Dropdown(domains, value=domains[0], label='Domain of the reference (the target domain)')
            pairs = example_pairs(examples_dir, 'ref', domains)
            if pairs:
                gr.Examples([list(pair) for pair in pairs], [ref, domain], label='Example references',
                            examples_per_page=4)
        with gr.Column():
            out = gr.Image(label='Translation', format='png', interactive=False, height=256)
            run = gr.Button('Translate', variant='primary')
    run.click(shown_as_errors(actions.reference), [source, ref, domain], out, api_name='reference',
              preprocess=False)


def _style_slot(k, domains):
    """The controls of style k (0-based): [kind, domain, seed, reference] and their group."""
    with gr.Group(visible=k < 2) as group:
        gr.Markdown(f'**Style {k + 1}**')
        with gr.Row():
            kind = gr.Radio(['seed', 'reference'], value='seed', label='From', scale=1)
            domain = gr.Dropdown(domains, value=domains[k % len(domains)], label='Domain', scale=1)
            seed = gr.Number(k, label='Seed', precision=0, minimum=SEED_RANGE[0], maximum=SEED_RANGE[1], scale=1)
        ref = upload_image('Reference', 120, visible=False)
    kind.change(lambda chosen: [gr.update(visible=chosen == 'seed'), gr.update(visible=chosen == 'reference')],
                kind, [seed, ref], api_visibility='private')
    return group, [kind, domain, seed, ref]


def _interpolate_tab(actions, domains, examples_dir):
    with gr.Row():
        with gr.Column():
            source = upload_image('Source', 256, elem_id='interp-source')
            _source_examples(source, examples_dir, domains)
        with gr.Column():
            num_styles = gr.Slider(2, MAX_PATH_STYLES, value=2, step=1, label='Number of styles')
            groups, slot_values = [], []
            for k in range(MAX_PATH_STYLES):
                group, values = _style_slot(k, domains)
                groups.append(group)
                slot_values += values
    with gr.Row():
        with gr.Column():
            position = gr.Slider(0, 1, value=0.5, step=0.01, label='Position',
                                 info='0: the first style, 1: the last; release to show the frame')
            frame = gr.Image(label='Frame at this position', format='png', interactive=False, height=256)
        with gr.Column():
            num_frames = gr.Slider(2, MAX_TRANSITION_FRAMES, value=31, step=1, label='Frames per transition')
            render = gr.Button('Render video', variant='primary', elem_id='interp-render')
            video = gr.Video(label='Interpolation video', interactive=False, buttons=['download'], height=256,
                             elem_id='interp-video')
    num_styles.change(lambda n: [gr.update(visible=k < int(n)) for k in range(MAX_PATH_STYLES)],
                      num_styles, groups, api_visibility='private')
    position.release(shown_as_errors(actions.frame), [source, num_styles, position, *slot_values], frame,
                     api_name='frame', trigger_mode='always_last', preprocess=False)
    render.click(shown_as_errors(actions.video), [source, num_styles, num_frames, *slot_values], video,
                 api_name='video', preprocess=False)


# The tabs of each family's page: a one-sided model has no styles, so only Translate applies.
TABS = {'stargan-v2': (('Latent', _latent_tab), ('Reference', _reference_tab), ('Interpolate', _interpolate_tab)),
        'cut': (('Translate', _translate_tab),)}


def build_app(translator, examples_dir, video_dir=None, fps=VIDEO_FPS):
    """The gradio Blocks of the app for `translator` (its family's TABS); examples from
    examples_dir/{src,ref}/<domain>/.

    examples_dir may be None (no examples). Rendered videos go to video_dir (a new temporary
    folder when None); fps is their frame rate.
    """
    actions = Actions(translator, video_dir or tempfile.mkdtemp(prefix='app-videos-'), fps)
    domains = list(translator.domains)
    with gr.Blocks(title='StarGAN v2 + SRC', analytics_enabled=False,
                   delete_cache=(CACHE_LIFETIME, CACHE_LIFETIME)) as app:
        gr.Markdown(model_card(translator), elem_id='model-card')
        for name, tab in TABS[translator.family]:
            with gr.Tab(name):
                tab(actions, domains, examples_dir)
    app.queue(default_concurrency_limit=1, max_size=QUEUE_SIZE)
    return app


def launch(app, host, port, examples_dir=None, quiet=True):
    """Serve `app` on host:port in a background thread; returns the local URL.

    No share link, the default theme (its fonts ship with gradio), uploads capped at MAX_UPLOAD_BYTES.
    """
    allowed = [os.path.abspath(examples_dir)] if examples_dir and os.path.isdir(examples_dir) else None
    _, url, _ = app.launch(server_name=host, server_port=port, share=False, inbrowser=False, quiet=quiet,
                           prevent_thread_lock=True, show_error=False, max_file_size=MAX_UPLOAD_BYTES,
                           allowed_paths=allowed, footer_links=[], ssr_mode=False, mcp_server=False,
                           pwa=False, theme=gr.themes.Default())
    return url


# ----------------------------------------------------------------------------------------------
# --mode app
# ----------------------------------------------------------------------------------------------

def _model_source(cfg):
    """(path, step) to load: --checkpoint, else --checkpoint_dir (the demo preset's by default)."""
    if cfg.checkpoint:
        return cfg.checkpoint, None
    step = cfg.resume_iter if isinstance(cfg.resume_iter, int) and cfg.resume_iter > 0 else None
    named = {'checkpoint_dir', 'preset'} & set(cfg.facts.explicit_flags)
    folder = cfg.checkpoint_dir if named else PRESETS['demo']['checkpoint_dir']
    if not named and not (os.path.isdir(folder) and ema_steps(folder)):
        raise AppError(f'no demo model in {folder}: run `python main.py --mode demo` first, or pass '
                       f'--checkpoint FILE or --checkpoint_dir DIR')
    return folder, step


def _official_arch(cfg):
    """Architecture keywords for a file that stores none (official StarGAN v2 / Hneg_SRC): the flags given."""
    given = set(cfg.facts.explicit_flags)
    return {k: cfg[k] for k in LOAD_FLAGS if k in given}


def _domain_folders(root):
    return sorted(d for d in os.listdir(root) if os.path.isdir(os.path.join(root, d))) if os.path.isdir(root) else []


def examples_folder(domains, exact=True):
    """The first assets/representative/<dataset>/ whose src/ folders are named after the model's
    domains (it holds the example trees src/<domain>/ and ref/<domain>/), or None. exact=False:
    the first that has a folder for each of `domains` (a one-sided model's source domain)."""
    root = os.path.join(REPO, 'assets', 'representative')
    for name in _domain_folders(root):
        found = _domain_folders(os.path.join(root, name, 'src'))
        if found == sorted(domains) or not exact and set(domains) <= set(found):
            return os.path.join(root, name)
    return None


def free_port(host):
    """A port of `host` that no server listens on now."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def load_translator(cfg):
    """The model of the app's flags: StarGAN v2's --checkpoint, --checkpoint_dir [--resume_iter], else the
    demo's; the CUT family's --checkpoints_dir/--name/--epoch generator (with its network flags)."""
    if family_of(cfg).name == 'cut':
        return OneSidedTranslator.from_config(cfg)
    path, step = _model_source(cfg)
    if is_cut_model(path):   # a StarGAN v2 command line; CUT's flags describe its generator
        run = os.path.dirname(os.path.abspath(path)) if os.path.isfile(path) else os.path.abspath(path)
        raise AppError(f'{path} is a CUT-family model: serve it with --model cut --checkpoints_dir '
                       f'{os.path.dirname(run)} --name {os.path.basename(run)} (and --epoch, --ngf, ... as needed)')
    return Translator.load(path, device=cfg.device, step=step, **_official_arch(cfg))


def model_examples(translator):
    """The examples folder of the model: its domains' (StarGAN v2), or its source domain's (one-sided)."""
    if translator.family == 'cut':
        return examples_folder(translator.domains[:1], exact=False)
    return examples_folder(translator.domains)


def wait_for_ctrl_c():
    """Block the main thread until Ctrl-C (KeyboardInterrupt) while the server runs in its threads."""
    while True:
        time.sleep(0.5)


def serve(cfg):
    """--mode app: load the model once, then serve the app on --host:--port until Ctrl-C."""
    start = time.perf_counter()
    translator = load_translator(cfg)
    examples = model_examples(translator)
    with tempfile.TemporaryDirectory(prefix='app-videos-') as video_dir:
        app = build_app(translator, examples, video_dir, cfg.get('fps', VIDEO_FPS))
        port = cfg.port
        try:
            port = port or free_port(cfg.host)
            url = launch(app, cfg.host, port, examples)
        except OSError:   # gradio's words name its own launch() arguments, not our flags
            raise AppError(f'cannot serve on {cfg.host}:{port}: the port is in use or the address is not one of '
                           f'this computer\'s; pass another --port (0: any free port) or --host') from None
        if cfg.host not in ('127.0.0.1', 'localhost', '::1'):
            print(f'app: note: --host {cfg.host} lets other computers open the app (there is no login)')
        print(f'app: serving {translator.path} (step {translator.step}) at {url}, '
              f'{time.perf_counter() - start:.1f} s after start; Ctrl-C stops it', flush=True)
        try:
            wait_for_ctrl_c()
        finally:
            app.close()
