"""The web app (core.app) as its users reach it: served on 127.0.0.1 in this process and called
through gradio_client, endpoint by endpoint, against Translator called directly."""
import io
import os
import re
import socket
import _thread
import struct
import threading
import time
import zlib

import httpx
import numpy as np
import pytest
import torch
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError as ClientAppError
from PIL import Image

import core.app as app_module
from core.app import MAX_PATH_STYLES, MAX_STYLES, MAX_TRANSITION_FRAMES, build_app, free_port, launch, model_card
from core.checkpoint import training_payloads, write_training_state
from core.config import parse_config
from core.model import build_nets
from core.translator import Translator
from main import main
from test_video import read_video

# gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(future.no_silent_downcasting|copy keyword is deprecated)")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXAMPLES = os.path.join(ROOT, 'assets', 'representative', 'synthetic-seasons')
SRC = os.path.join(EXAMPLES, 'src', 'summer', '00.png')
REF = os.path.join(EXAMPLES, 'ref', 'winter', '01.png')
DOMAINS = ('autumn', 'spring', 'summer', 'winter')
S = 32
STEP = 7


def tiny_checkpoint(folder):
    """A random-initialised 32 px model saved as step STEP of a run in `folder`; returns its EMA file."""
    cfg = parse_config(['--mode', 'train', '--img_size', str(S), '--num_domains', '4', '--base_dim', '8',
                        '--max_conv_dim', '16', '--hidden_dim', '32', '--style_dim', '16', '--latent_dim', '8',
                        '--seed', '5']).with_facts(domain_names=DOMAINS)
    torch.manual_seed(0)
    nets, nets_ema = build_nets(cfg)
    write_training_state(str(folder), STEP, training_payloads(STEP, nets, nets_ema, {}, cfg))
    return os.path.join(str(folder), f'{STEP:06d}_nets_ema.ckpt')


def serve_in_thread(translator):
    """(app, url) of the app of `translator` on a free port of 127.0.0.1."""
    app = build_app(translator, EXAMPLES)
    return app, launch(app, '127.0.0.1', free_port('127.0.0.1'), EXAMPLES)


@pytest.fixture(scope='module')
def ckpt(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp('run'))


@pytest.fixture(scope='module')
def translator(ckpt):
    return Translator.load(os.path.dirname(ckpt), device='cpu')


@pytest.fixture(scope='module')
def served(translator):
    app, url = serve_in_thread(translator)
    yield app, url, Client(url, verbose=False)
    app.close()


def pixels(path_or_image):
    img = path_or_image if isinstance(path_or_image, Image.Image) else Image.open(path_or_image)
    return np.asarray(img.convert('RGB'), dtype=np.int16)


def same_image(a, b):
    """Equal sizes and pixels within one grey level (the server and the test run the same kernels)."""
    a, b = pixels(a), pixels(b)
    return a.shape == b.shape and int(np.abs(a - b).max()) <= 1


def slots(*styles):
    """The Interpolate tab's flat slot values for (kind, domain, seed, ref) styles, padded with unused slots."""
    filled = [v for kind, domain, seed, ref in styles
              for v in (kind, domain, seed, handle_file(ref) if ref else None)]
    return filled + ['seed', DOMAINS[0], 0, None] * (MAX_PATH_STYLES - len(styles))


# ----------------------------------------------------------------------------------------------
# The endpoints
# ----------------------------------------------------------------------------------------------

def test_latent_gives_styles_at_the_model_size_equal_per_seed_as_translator(served, translator):
    _, _, client = served
    outs = client.predict(handle_file(SRC), 'winter', 5, 1.0, 3, api_name='/latent')
    assert len(outs) == 3 and [o['caption'] for o in outs] == [f'style {k}' for k in range(3)]
    assert all(Image.open(o['image']).size == (S, S) for o in outs)
    direct = translator.latent(SRC, 'winter', seed=5, num=3)
    assert all(same_image(o['image'], d) for o, d in zip(outs, direct))
    again = client.predict(handle_file(SRC), 'winter', 5, 1.0, 3, api_name='/latent')
    assert all(np.array_equal(pixels(a['image']), pixels(b['image'])) for a, b in zip(outs, again))
    other = client.predict(handle_file(SRC), 'winter', 6, 1.0, 1, api_name='/latent')
    assert not same_image(other[0]['image'], outs[0]['image'])
    truncated = client.predict(handle_file(SRC), 'winter', 5, 0.5, 1, api_name='/latent')
    assert same_image(truncated[0]['image'], translator.latent(SRC, 'winter', seed=5, psi=0.5)[0])


def test_random_seed_is_a_valid_seed(served):
    seeds = {served[2].predict(api_name='/random_seed') for _ in range(3)}
    assert all(isinstance(s, (int, float)) and float(s).is_integer() and 0 <= s < 2 ** 32 for s in seeds)
    assert len(seeds) > 1


def test_reference_matches_translator(served, translator):
    out = served[2].predict(handle_file(SRC), handle_file(REF), 'winter', api_name='/reference')
    assert Image.open(out).size == (S, S)
    assert same_image(out, translator.reference(SRC, REF, 'winter'))
    other = served[2].predict(handle_file(SRC), handle_file(REF), 'autumn', api_name='/reference')
    assert not same_image(out, other)


def test_interpolate_frame_is_the_blend_at_the_position(served, translator):
    client = served[2]
    path = slots(('seed', 'spring', 3, None), ('reference', 'winter', 0, REF), ('seed', 'autumn', 9, None))
    s_first, s_ref, s_last = (translator.style('spring', seed=3), translator.style_of(REF, 'winter'),
                              translator.style('autumn', seed=9))
    first = client.predict(handle_file(SRC), 3, 0, *path, api_name='/frame')
    assert Image.open(first).size == (S, S) and same_image(first, translator.apply(SRC, s_first))
    last = client.predict(handle_file(SRC), 3, 1, *path, api_name='/frame')
    assert same_image(last, translator.apply(SRC, s_last))
    quarter = client.predict(handle_file(SRC), 3, 0.25, *path, api_name='/frame')   # halfway from style 1 to 2
    assert same_image(quarter, translator.apply(SRC, torch.lerp(s_first, s_ref, 0.5)))
    two = client.predict(handle_file(SRC), 2, 1, *path, api_name='/frame')   # only the first two slots count
    assert same_image(two, translator.apply(SRC, s_ref))


def test_interpolate_video_plays_the_path_as_write_video(served, translator, tmp_path):
    path = slots(('seed', 'spring', 3, None), ('seed', 'winter', 4, None))
    out = served[2].predict(handle_file(SRC), 2, 4, *path, api_name='/video')
    out = out['video'] if isinstance(out, dict) else out
    frames, meta = read_video(out)
    assert out.endswith('.mp4') and meta['size'] == (S, 2 * S)   # the source above its translation
    assert len(frames) == translator.num_frames(2, 4)
    direct = translator.write_video(tmp_path / 'direct.mp4', SRC,
                                    [translator.style('spring', seed=3), translator.style('winter', seed=4)],
                                    num_frames=4)
    assert np.array_equal(frames, read_video(direct)[0])


# ----------------------------------------------------------------------------------------------
# Bad input: one message in the page, and the server keeps serving
# ----------------------------------------------------------------------------------------------

def png_claiming(path, width, height):
    """A small PNG whose header claims width x height pixels (a decompression bomb's header)."""
    buf = io.BytesIO()
    Image.new('L', (1, 1)).save(buf, 'PNG')
    data = bytearray(buf.getvalue())
    chunk = data[12:29]                    # b'IHDR' + its 13 bytes: width, height (big-endian), ...
    chunk[4:12] = struct.pack('>II', width, height)
    data[12:29] = chunk
    data[29:33] = struct.pack('>I', zlib.crc32(bytes(chunk)))
    path.write_bytes(bytes(data))
    return str(path)


def bad_uploads(tmp_path):
    """{case: (file, words of its message)}."""
    text = tmp_path / 'notes.png'
    text.write_text('not an image')
    truncated = tmp_path / 'truncated.png'
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)).save(truncated)
    truncated.write_bytes(truncated.read_bytes()[:2000])
    return {'not an image': (str(text), 'not a recognised image format'),
            'truncated': (str(truncated), 'truncated'),
            'bomb': (png_claiming(tmp_path / 'bomb.png', 40000, 40000), 'more pixels than Pillow decodes'),
            'huge': (png_claiming(tmp_path / 'huge.png', 6000, 4000), '6000x4000 pixels')}


def test_bad_uploads_are_one_message_and_the_server_keeps_serving(served, tmp_path):
    client = served[2]
    for case, (path, words) in bad_uploads(tmp_path).items():
        for call in (lambda f: client.predict(f, 'winter', 0, 1.0, 1, api_name='/latent'),
                     lambda f: client.predict(handle_file(SRC), f, 'winter', api_name='/reference')):
            with pytest.raises(ClientAppError) as err:
                call(handle_file(path))
            message = str(err.value)
            assert words in message and '\n' not in message and 'Traceback' not in message, case
    assert len(client.predict(handle_file(SRC), 'winter', 0, 1.0, 2, api_name='/latent')) == 2


@pytest.mark.parametrize('args, words', [
    ((None, 'winter', 0, 1.0, 1), 'Upload a source image'),
    ((SRC, 'nowhere', 0, 1.0, 1), 'Pick a target domain: one of autumn, spring, summer, winter'),
    ((SRC, 'winter', -1, 1.0, 1), 'seed must be a whole number from 0 to 4294967295'),
    ((SRC, 'winter', 0.5, 1.0, 1), 'seed must be a whole number'),
    ((SRC, 'winter', 0, 1.5, 1), 'psi must be between 0 and 1'),
    ((SRC, 'winter', 0, 1.0, MAX_STYLES + 1), f'number of styles must be a whole number from 1 to {MAX_STYLES}'),
])
def test_latent_inputs_are_bounded(served, args, words):
    args = (handle_file(args[0]) if args[0] else None,) + args[1:]
    with pytest.raises(ClientAppError, match=re.escape(words)):
        served[2].predict(*args, api_name='/latent')


def test_interpolate_inputs_are_bounded(served):
    client, src = served[2], handle_file(SRC)
    path = slots(('seed', 'spring', 3, None), ('seed', 'winter', 4, None))
    with pytest.raises(ClientAppError, match=f'from 2 to {MAX_PATH_STYLES}'):
        client.predict(src, MAX_PATH_STYLES + 1, 0.5, *path, api_name='/frame')
    with pytest.raises(ClientAppError, match=f'Frames per transition must be a whole number from 2 to '
                                             f'{MAX_TRANSITION_FRAMES}'):
        client.predict(src, 2, MAX_TRANSITION_FRAMES + 1, *path, api_name='/video')
    with pytest.raises(ClientAppError, match='Upload a style 2 reference image'):
        client.predict(src, 2, 0.5, *slots(('seed', 'spring', 3, None), ('reference', 'winter', 0, None)),
                       api_name='/frame')


def test_requests_queue_one_at_a_time(served, translator, monkeypatch):
    active, most = [0], [0]
    lock, real_latent = threading.Lock(), translator.latent

    def slow_latent(*args, **kwargs):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.3)
        with lock:
            active[0] -= 1
        return real_latent(*args, **kwargs)
    monkeypatch.setattr(translator, 'latent', slow_latent)
    jobs = [served[2].submit(handle_file(SRC), 'winter', k, 1.0, 1, api_name='/latent') for k in range(3)]
    assert all(len(job.result(timeout=60)) == 1 for job in jobs)
    assert most[0] == 1


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------

def test_page_shows_the_model_and_the_examples(served, translator, ckpt):
    _, url, _ = served
    card = model_card(translator)
    assert ckpt in card and f'step** {STEP}' in card and 'stargan-v2' in card and '32 px' in card
    assert ', '.join(DOMAINS) in card
    config = httpx.get(url + 'config', timeout=30).json()
    values = [c.get('props', {}).get('value') for c in config['components']]
    assert card in values
    examples = [c['props'] for c in config['components'] if c.get('type') == 'dataset']
    assert len(examples) == 4   # sources of the three tabs and the Reference tab's references
    refs = [ex for ex in examples if len(ex['samples'][0]) == 2]
    assert len(refs) == 1 and {row[1] for row in refs[0]['samples']} == set(DOMAINS)


def test_page_and_theme_load_nothing_from_other_hosts(served):
    _, url, _ = served
    html = httpx.get(url, timeout=30).text
    css = httpx.get(url + 'theme.css', timeout=30).text
    loaded = re.findall(r'<(?:script|link)[^>]*(?:src|href)="([^"]+)"', html) + re.findall(r'url\(([^)]+)\)', css)
    assert loaded and not [u for u in loaded if re.match(r'["\']?(https?:)?//', u)]
    assert 'fonts.googleapis' not in html + css


# ----------------------------------------------------------------------------------------------
# --mode app
# ----------------------------------------------------------------------------------------------

def serve_visit_and_interrupt(argv, port, monkeypatch):
    """(exit status, [HTTP status of the page]) of main(argv) (--mode app on `port`) in this process,
    interrupted by Ctrl-C (an interrupt of the main thread) once it serves and its page was fetched."""
    serving, answered = threading.Event(), []
    wait = app_module.wait_for_ctrl_c
    monkeypatch.setattr(app_module, 'wait_for_ctrl_c', lambda: (serving.set(), wait()))

    def visit_then_interrupt():
        if serving.wait(120):
            answered.append(httpx.get(f'http://127.0.0.1:{port}/', timeout=30).status_code)
        _thread.interrupt_main()
    visitor = threading.Thread(target=visit_then_interrupt, daemon=True)
    visitor.start()
    status = main(argv + ['--port', str(port)])
    visitor.join()
    return status, answered


def test_mode_app_serves_then_ctrl_c_stops_cleanly(ckpt, capsys, monkeypatch):
    """main.py --mode app in this process; Ctrl-C once it serves."""
    port = free_port('127.0.0.1')
    status, answered = serve_visit_and_interrupt(['--mode', 'app', '--checkpoint', ckpt, '--device', 'cpu'], port,
                                                 monkeypatch)
    out, err = capsys.readouterr()
    assert answered == [200] and status == 130 and err == 'interrupted\n'
    assert out.startswith(f'app: serving {ckpt} (step {STEP}) at http://127.0.0.1:{port}/')
    with pytest.raises(httpx.HTTPError):   # stopped: the port no longer answers
        httpx.get(f'http://127.0.0.1:{port}/', timeout=5)


def test_mode_app_without_a_model_says_what_to_do(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for _ in range(2):   # no demo folder, then an empty one (a demo stopped before its first checkpoint)
        assert main(['--mode', 'app']) == 1
        err = capsys.readouterr().err
        assert err.count('\n') == 1 and 'run `python main.py --mode demo` first' in err
        os.makedirs(tmp_path / 'expr' / 'checkpoints_demo', exist_ok=True)
    assert main(['--mode', 'app', '--checkpoint', 'missing.ckpt']) == 1
    assert "--checkpoint 'missing.ckpt' does not exist" in capsys.readouterr().err
    assert main(['--mode', 'app', '--port', '70000']) == 1
    assert '--port must be between 0 and 65535' in capsys.readouterr().err


def test_mode_app_on_a_busy_port_says_so(ckpt, capsys):
    with socket.socket() as busy:
        busy.bind(('127.0.0.1', 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(['--mode', 'app', '--checkpoint', ckpt, '--port', str(port), '--device', 'cpu']) == 1
    err = capsys.readouterr().err
    assert err == (f'error: cannot serve on 127.0.0.1:{port}: the port is in use or the address is not one of this '
                   f"computer's; pass another --port (0: any free port) or --host\n")


def test_the_app_sets_itself_offline():
    assert os.environ['GRADIO_ANALYTICS_ENABLED'] == 'False'
    assert app_module.gr.Blocks().analytics_enabled is False
