"""How long a user waits: the Python API, the web app and the ONNX export of a trained model, timed.

    python bench/use_latency.py                              # the demo model (python main.py --mode demo first)
    python bench/use_latency.py --checkpoint_dir DIR [--repeats N] [--out DIR]

Prints one line per figure (median and range over --repeats calls, after one warm-up call):
  * Translator.load of the model, and latent(..., num=4), reference(...), one interpolation
    frame and a 2-style write_video through the API;
  * the app: seconds from `python main.py --mode app` to the page answering (a separate
    process, as a user starts it), then each tab's action through gradio_client
    (/latent with 4 styles, /reference, /frame, /video);
  * the export: each ONNX file's size and max |onnxruntime - PyTorch| at the training size
    (core.export, the same numbers --mode export prints).
Wall-clock on whatever else the machine is doing: compare figures within one run.
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from core.utils.errors import UserError, run_cli  # noqa: E402

EXAMPLES = os.path.join(REPO, 'assets', 'representative', 'synthetic-seasons')
SRC = os.path.join(EXAMPLES, 'src', 'summer', '00.png')
REF = os.path.join(EXAMPLES, 'ref', 'winter', '01.png')
TARGET = 'winter'
START_TIMEOUT = 300   # seconds for the app process to serve, on a busy CPU


def timed(action, repeats):
    """(median, min, max) seconds of `repeats` calls of action() after one warm-up call."""
    action()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        action()
        times.append(time.perf_counter() - start)
    return statistics.median(times), min(times), max(times)


def report(name, times):
    median, low, high = times
    print(f'{name:38s} {median:8.3f} s   (min {low:.3f}, max {high:.3f})', flush=True)


def api_figures(path, repeats, out_dir):
    from core.translator import Translator
    report('Translator.load', timed(lambda: Translator.load(path, device='cpu'), repeats))
    translator = Translator.load(path, device='cpu')
    styles = [translator.style(TARGET, seed=1), translator.style_of(REF, TARGET)]
    report('latent(num=4)', timed(lambda: translator.latent(SRC, TARGET, seed=0, num=4), repeats))
    report('reference', timed(lambda: translator.reference(SRC, REF, TARGET), repeats))
    report('apply (one interpolation frame)', timed(lambda: translator.apply(SRC, styles[0]), repeats))
    video = os.path.join(out_dir, 'bench.mp4')
    report('write_video (2 styles)', timed(lambda: translator.write_video(video, SRC, styles), repeats))
    return translator


def _serving(url):
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status == 200
    except OSError:
        return False


def start_app(path, port):
    """(process, seconds until the page answered) of `python main.py --mode app` on 127.0.0.1:port."""
    env = {**os.environ, 'GRADIO_ANALYTICS_ENABLED': 'False'}
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, os.path.join(REPO, 'main.py'), '--mode', 'app', '--checkpoint_dir', path,
                             '--host', '127.0.0.1', '--port', str(port)], env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f'http://127.0.0.1:{port}/'
    while not _serving(url):
        if proc.poll() is not None:
            raise UserError(f'the app stopped before serving: {proc.stderr.read().decode().strip()[-500:]}')
        if time.perf_counter() - start > START_TIMEOUT:
            proc.kill()
            raise UserError(f'the app did not serve within {START_TIMEOUT} s')
        time.sleep(0.2)
    return proc, time.perf_counter() - start


def app_figures(path, translator, repeats):
    from gradio_client import Client, handle_file

    from core.app import MAX_PATH_STYLES, free_port
    proc, seconds = start_app(path, free_port('127.0.0.1'))
    try:
        print(f'{"app: --mode app to serving":38s} {seconds:8.3f} s', flush=True)
        client = Client(f'http://127.0.0.1:{proc.args[proc.args.index("--port") + 1]}/', verbose=False)
        first = translator.domains[0]
        path_slots = (['seed', TARGET, 1, None, 'reference', TARGET, 0, handle_file(REF)]
                      + ['seed', first, 0, None] * (MAX_PATH_STYLES - 2))
        calls = {'/latent (4 styles)': (handle_file(SRC), TARGET, 0, 1.0, 4, '/latent'),
                 '/reference': (handle_file(SRC), handle_file(REF), TARGET, '/reference'),
                 '/frame': (handle_file(SRC), 2, 0.5, *path_slots, '/frame'),
                 '/video (2 styles)': (handle_file(SRC), 2, 10, *path_slots, '/video')}
        for name, (*args, api) in calls.items():
            report(f'app: {name}', timed(lambda: client.predict(*args, api_name=api), repeats))
    finally:
        proc.terminate()
        proc.wait(timeout=60)


def export_figures(path, out_dir):
    from core.config import parse_config
    from core.export import export
    written = export(parse_config(['--mode', 'export', '--checkpoint_dir', path, '--resume_iter', 'latest',
                                  '--out', out_dir]))
    for name, (file, diff) in written.items():
        print(f'{"export: " + name:38s} {os.path.getsize(file) / 2 ** 20:8.2f} MiB   max |ort - torch| {diff:.2g}')


def main(argv=None):
    from core.families.stargan_v2 import PRESETS
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--checkpoint_dir', default=PRESETS['demo']['checkpoint_dir'], help='the run folder to time')
    p.add_argument('--repeats', type=int, default=5, help='timed calls per figure (after one warm-up call)')
    p.add_argument('--out', default=None, help='where the video and the export go (default: a temporary folder)')
    p.add_argument('--skip', default='', help='comma-separated parts to leave out: api, app, export')
    args = p.parse_args(argv)
    if not os.path.isdir(args.checkpoint_dir):
        raise UserError(f'--checkpoint_dir {args.checkpoint_dir} does not exist: run `python main.py --mode demo` '
                        f'first, or give a run folder')
    skip = set(filter(None, args.skip.split(',')))
    out_dir = args.out or tempfile.mkdtemp(prefix='use-latency-')
    os.makedirs(out_dir, exist_ok=True)
    print(f'model: {args.checkpoint_dir}; {args.repeats} timed calls per figure after one warm-up', flush=True)
    from core.translator import Translator
    translator = (api_figures(args.checkpoint_dir, args.repeats, out_dir) if 'api' not in skip
                  else Translator.load(args.checkpoint_dir, device='cpu'))
    if 'app' not in skip:
        app_figures(args.checkpoint_dir, translator, args.repeats)
    if 'export' not in skip:
        export_figures(args.checkpoint_dir, os.path.join(out_dir, 'onnx'))


if __name__ == '__main__':
    sys.exit(run_cli(lambda: main()))
