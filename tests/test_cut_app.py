"""The web app with a one-sided (CUT family) model: one Translate tab over OneSidedTranslator.translate,
served on 127.0.0.1 in this process and called through gradio_client."""
import os

import httpx
import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError as ClientAppError
from PIL import Image

from core.app import build_app, example_pairs, free_port, launch, model_card, model_examples
from core.translator import Translator
from main import main
from test_app import bad_uploads, serve_visit_and_interrupt
from test_cut_api import CROP, DOMAINS, SRC, tiny_cut_run

# gradio's queue calls pandas APIs that pandas 3 deprecates; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:.*(future.no_silent_downcasting|copy keyword is deprecated)")


@pytest.fixture(scope='module')
def run_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp('cut') / 'run'
    tiny_cut_run(str(folder))
    return folder


@pytest.fixture(scope='module')
def translator(run_dir):
    return Translator.load(run_dir, device='cpu')


@pytest.fixture(scope='module')
def served(translator):
    examples = model_examples(translator)
    app = build_app(translator, examples)
    url = launch(app, '127.0.0.1', free_port('127.0.0.1'), examples)
    yield url, Client(url, verbose=False)
    app.close()


def test_translate_gives_the_translation_of_the_api(served, translator):
    out = served[1].predict(handle_file(SRC), api_name='/translate')
    got = np.asarray(Image.open(out).convert('RGB'), np.float32)
    want = np.asarray(translator.translate(SRC), np.float32)
    assert got.shape == (CROP, CROP, 3)
    assert np.abs(got - want).max() <= 0.005 * 255   # one grey level: the same kernels run on both sides


def test_only_the_endpoints_of_a_one_sided_model_exist(served):
    endpoints = set(served[1].view_api(print_info=False, return_format='dict')['named_endpoints'])
    assert endpoints == {'/translate'}


def test_bad_uploads_are_one_message_and_the_server_keeps_serving(served, tmp_path):
    client = served[1]
    for case, (path, words) in bad_uploads(tmp_path).items():
        with pytest.raises(ClientAppError) as err:
            client.predict(handle_file(path), api_name='/translate')
        message = str(err.value)
        assert words in message and '\n' not in message and 'Traceback' not in message, case
    with pytest.raises(ClientAppError, match='Upload a source image'):
        client.predict(None, api_name='/translate')
    assert Image.open(client.predict(handle_file(SRC), api_name='/translate')).size == (CROP, CROP)


def test_page_shows_the_model_card_and_source_examples(served, translator, run_dir):
    card = model_card(translator)
    assert str(run_dir / 'latest_net_G.pth') in card and 'family** cut' in card and 'epoch latest' in card
    assert 'resnet_6blocks' in card and f'{CROP} px' in card and ' -> '.join(DOMAINS) in card
    config = httpx.get(served[0] + 'config', timeout=30).json()
    assert card in [c.get('props', {}).get('value') for c in config['components']]
    examples = [c['props'] for c in config['components'] if c.get('type') == 'dataset']
    summer = example_pairs(model_examples(translator), 'src', ['summer'])   # the source domain's images only
    assert summer and {domain for _, domain in summer} == {'summer'}
    assert len(examples) == 1 and [row[0]['orig_name'] for row in examples[0]['samples']] == \
        [os.path.basename(path) for path, _ in summer]


def test_mode_app_serves_a_cut_run_then_ctrl_c_stops(run_dir, capsys, monkeypatch):
    port = free_port('127.0.0.1')
    argv = ['--mode', 'app', '--model', 'cut', '--checkpoints_dir', str(run_dir.parent), '--name', 'run',
            '--device', 'cpu']
    status, answered = serve_visit_and_interrupt(argv, port, monkeypatch)
    out = capsys.readouterr().out
    assert answered == [200] and status == 130
    assert out.startswith(f'app: serving {run_dir / "latest_net_G.pth"} (step None) at http://127.0.0.1:{port}/')


def test_mode_app_without_the_generator_is_one_line(tmp_path, capsys):
    assert main(['--mode', 'app', '--model', 'cut', '--checkpoints_dir', str(tmp_path), '--name', 'none']) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and 'none/latest_net_G.pth does not exist' in err


def test_a_stargan_command_line_given_a_cut_file_says_how_to_serve_it(run_dir, capsys):
    assert main(['--mode', 'app', '--checkpoint', str(run_dir / 'latest_net_G.pth')]) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and f'--model cut --checkpoints_dir {run_dir.parent} --name run' in err
