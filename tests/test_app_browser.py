"""The app in a real browser: headless Chromium (Debian's chromium + chromium-driver) driven by selenium.

Outside CI (CI unset) the test skips when no Chromium is installed, saying so; in CI it must run
(.ci/run installs Chromium).
"""
import io
import os

import httpx
import pytest
from PIL import Image

from bench.app_screenshot import (EXAMPLE, chromium_paths, foreign_urls, open_page, page_message, requested_urls,
                                  save_page, start_chromium, translate_latent, upload, wait_for)
from core.translator import Translator
from core.video import num_video_frames
from test_app import S, png_claiming, same_image, serve_in_thread, tiny_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:.*(future.no_silent_downcasting|copy keyword is deprecated)")


@pytest.fixture(scope='module')
def browser(tmp_path_factory):
    if chromium_paths() is None:
        if os.environ.get('CI'):
            pytest.fail('CI runs the browser test: install chromium and chromium-driver (.ci/run does, as root)')
        pytest.skip('no Chromium installed (apt-get install chromium chromium-driver): browser test skipped')
    driver = start_chromium(tmp_path_factory.mktemp('chromium-profile'))
    yield driver
    driver.quit()


@pytest.fixture(scope='module')
def translator(tmp_path_factory):
    return Translator.load(tiny_checkpoint(tmp_path_factory.mktemp('run')), device='cpu')


@pytest.fixture(scope='module')
def url(translator):
    app, url = serve_in_thread(translator)
    yield url
    app.close()


def test_upload_pick_domain_translate_in_chromium(browser, url, translator, tmp_path):
    sizes = translate_latent(browser, url, EXAMPLE, 'winter')
    assert sizes == [(S, S)] * 4   # the default number of styles, at the model's size
    shown = [Image.open(io.BytesIO(httpx.get(src, timeout=30).content)) for src in gallery_urls(browser)]
    assert len(shown) == 4 and all(same_image(a, b) for a, b in zip(shown, translator.latent(EXAMPLE, 'winter', num=4)))
    shot = tmp_path / 'app.png'
    width, height = save_page(browser, str(shot))
    with Image.open(shot) as img:
        assert img.size == (width, height) and width >= 1000 and height >= 700
    assert not foreign_urls(requested_urls(browser))


def test_a_bad_upload_is_one_message_in_the_page(browser, url, tmp_path):
    bomb = png_claiming(tmp_path / 'bomb.png', 40000, 40000)
    text = page_message_after(browser, url, bomb, 'megapixels')
    assert 'Upload a smaller image' in text and 'Traceback' not in text
    assert translate_latent(browser, url, EXAMPLE, 'summer') == [(S, S)] * 4   # and the server still serves
    assert not foreign_urls(requested_urls(browser))


def gallery_urls(browser):
    from selenium.webdriver.common.by import By
    return [img.get_attribute('src') for img in browser.find_elements(By.CSS_SELECTOR, '#latent-gallery img')]


def page_message_after(browser, url, image, words):
    """Upload `image` on the Latent tab, press Translate, return the message the page shows."""
    from selenium.webdriver.common.by import By
    open_page(browser, url)
    upload(browser, 'latent-source', image)
    browser.find_element(By.CSS_SELECTOR, '#latent-run').click()
    return page_message(browser, words)


def test_the_interpolation_video_plays_in_the_page_and_downloads(browser, url):
    from selenium.webdriver.common.by import By
    open_page(browser, url, 'Interpolate')
    upload(browser, 'interp-source', EXAMPLE)
    browser.find_element(By.CSS_SELECTOR, '#interp-render').click()
    video = wait_for(browser, lambda d: d.execute_script(
        'var v = document.querySelector("#interp-video video");'
        'return v && v.readyState >= 2 ? {src: v.currentSrc, size: [v.videoWidth, v.videoHeight], '
        'seconds: v.duration} : null;'), 'a playable video')
    frames = num_video_frames(2, 31)   # two styles (the default), 31 frames per transition
    assert video['size'] == [S, 2 * S] and video['seconds'] == pytest.approx(frames / 12.5, abs=0.1)
    assert not foreign_urls([video['src']])
    assert httpx.get(video['src'], timeout=30).content[4:8] == b'ftyp'   # the MP4 the download button saves
    assert browser.find_elements(By.CSS_SELECTOR, '#interp-video [aria-label="Download"], #interp-video a[download]')
