"""Regenerate assets/app.png: the web app (--mode app) in headless Chromium after one Latent translation.

    python bench/app_screenshot.py                           # the demo model (python main.py --mode demo first)
    python bench/app_screenshot.py --checkpoint FILE         # or --checkpoint_dir DIR [--resume_iter N]

Serves the app on a free port of 127.0.0.1, opens it in Debian's Chromium (apt-get install chromium
chromium-driver; selenium from requirements.txt), uploads an example source, picks a target domain,
presses Translate, waits for the gallery and saves the page as a 256-colour PNG. It fails if the page
requested anything from a host other than this computer. tests/test_app_browser.py drives the page
with the same functions.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from urllib.parse import urlparse

from PIL import Image

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if REPO not in sys.path:
    sys.path.insert(0, REPO)

from core.utils.errors import UserError, run_cli  # noqa: E402

# Headless, and nothing that talks to Google's servers or leaves state behind (a fresh profile per run).
CHROMIUM_FLAGS = ('--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
                  '--disable-background-networking', '--disable-component-update', '--disable-sync')
WINDOW_WIDTH = 1280
MIN_WINDOW_HEIGHT = 700
RESIZE_ROUNDS = 5
LOOPBACK = ('127.0.0.1', 'localhost', '::1', '[::1]')
WAIT_SECONDS = 180            # for the page and a translation, on a busy CPU
EXAMPLE = os.path.join(REPO, 'assets', 'representative', 'synthetic-seasons', 'src', 'summer', '00.png')
SCREENSHOT_DOMAIN = 'winter'
SCREENSHOT_COLOURS = 256      # palette of the PNG (keeps it small; the page has few colours)


class BrowserError(UserError):
    """Chromium is missing, or the page did not behave."""


# ----------------------------------------------------------------------------------------------
# Chromium
# ----------------------------------------------------------------------------------------------

def chromium_paths():
    """(browser, chromedriver) executables, or None when either is missing."""
    browser = shutil.which('chromium') or shutil.which('chromium-browser')
    driver = shutil.which('chromedriver')
    return (browser, driver) if browser and driver else None


def start_chromium(profile_dir):
    """A selenium driver of a fresh headless Chromium (profile in profile_dir) that logs its network requests."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    paths = chromium_paths()
    if paths is None:
        raise BrowserError('Chromium is not installed; as root: apt-get install chromium chromium-driver')
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    window = f'--window-size={WINDOW_WIDTH},{MIN_WINDOW_HEIGHT}'
    for flag in CHROMIUM_FLAGS + (f'--user-data-dir={profile_dir}', window):
        options.add_argument(flag)
    options.set_capability('goog:loggingPrefs', {'performance': 'ALL'})
    return webdriver.Chrome(service=Service(paths[1]), options=options)


def requested_urls(driver):
    """Every URL the page requested since the last call (HTTP and WebSocket), from Chromium's performance log."""
    urls = []
    for entry in driver.get_log('performance'):
        message = json.loads(entry['message'])['message']
        if message['method'] == 'Network.requestWillBeSent':
            urls.append(message['params']['request']['url'])
        elif message['method'] == 'Network.webSocketCreated':
            urls.append(message['params']['url'])
    return urls


def foreign_urls(urls):
    """The URLs that reach another computer: network schemes whose host is not a loopback name."""
    return [u for u in urls if urlparse(u).scheme in ('http', 'https', 'ws', 'wss')
            and urlparse(u).hostname not in LOOPBACK]


# ----------------------------------------------------------------------------------------------
# The page
# ----------------------------------------------------------------------------------------------

def wait_for(driver, condition, what):
    """condition(driver) once it is truthy (polled); BrowserError naming `what` after WAIT_SECONDS."""
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait
    try:
        return WebDriverWait(driver, WAIT_SECONDS).until(lambda d: condition(d) or None)
    except TimeoutException:
        raise BrowserError(f'the page did not show {what} within {WAIT_SECONDS} s') from None


def loaded_images(driver, selector):
    """(width, height) of the decoded <img> elements under the CSS selector."""
    from selenium.webdriver.common.by import By
    sizes = [driver.execute_script('return arguments[0].complete ? [arguments[0].naturalWidth, '
                                   'arguments[0].naturalHeight] : [0, 0]', img)
             for img in driver.find_elements(By.CSS_SELECTOR, selector + ' img')]
    return [tuple(size) for size in sizes if size[0] > 0]


def open_page(driver, url, tab=None):
    """Load the app and wait for its tabs; click the tab named `tab` if given."""
    from selenium.webdriver.common.by import By
    driver.get(url)
    tabs = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, 'button[role=tab]'), 'the tabs')
    if tab:
        next(t for t in tabs if t.text == tab).click()


def upload(driver, elem_id, image):
    """Upload `image` into the image input #elem_id (returns once the page shows it)."""
    from selenium.webdriver.common.by import By
    field = wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#{elem_id} input[type=file]'),
                     f'the upload of #{elem_id}')
    field[0].send_keys(os.path.abspath(image))
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'#{elem_id} img'), f'the image in #{elem_id}')


def translate_latent(driver, url, image, domain):
    """On the Latent tab: upload `image`, pick `domain`, press Translate; returns the gallery's image sizes."""
    from selenium.webdriver.common.by import By
    open_page(driver, url)
    upload(driver, 'latent-source', image)
    driver.find_element(By.CSS_SELECTOR, '#latent-domain input').click()
    wait_for(driver, lambda d: d.find_elements(By.CSS_SELECTOR, f'li[role=option][aria-label="{domain}"]'),
             f'the domain {domain!r} in the list')[0].click()
    driver.find_element(By.CSS_SELECTOR, '#latent-run').click()
    return wait_for(driver, lambda d: loaded_images(d, '#latent-gallery'), 'the translations')


def page_message(driver, words):
    """The text of the page's error message containing `words` (waits for it)."""
    from selenium.webdriver.common.by import By
    found = wait_for(driver, lambda d: [e.text for e in d.find_elements(By.CSS_SELECTOR, '[data-testid="toast-body"]')
                                     if words in e.text], f'a message with {words!r}')
    return found[0]


def save_page(driver, path):
    """Screenshot of the whole page (the viewport made as tall as the page) as a palette PNG."""
    height = 0
    for _ in range(RESIZE_ROUNDS):   # a taller viewport can re-flow the page: resize until it fits
        needed = max(MIN_WINDOW_HEIGHT, driver.execute_script('return document.documentElement.scrollHeight'))
        if needed == height:
            break
        height = needed
        driver.execute_cdp_cmd('Emulation.setDeviceMetricsOverride',
                               {'width': WINDOW_WIDTH, 'height': height, 'deviceScaleFactor': 1, 'mobile': False})
        time.sleep(0.5)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, 'page.png')
        driver.save_screenshot(raw)
        with Image.open(raw) as shot:
            small = shot.convert('RGB').quantize(SCREENSHOT_COLOURS)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    small.save(path, optimize=True)
    return small.size


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------

def screenshot(translator, out):
    """Serve the app of `translator`, translate EXAMPLE in Chromium and save the page to `out`."""
    from core.app import build_app, examples_folder, free_port, launch
    examples = examples_folder(translator.domains)
    app = build_app(translator, examples)
    url = launch(app, '127.0.0.1', free_port('127.0.0.1'), examples)
    try:
        with tempfile.TemporaryDirectory(prefix='chromium-') as profile:
            driver = start_chromium(profile)
            try:
                sizes = translate_latent(driver, url, EXAMPLE, SCREENSHOT_DOMAIN)
                size = save_page(driver, out)
                foreign = foreign_urls(requested_urls(driver))
            finally:
                driver.quit()
    finally:
        app.close()
    if foreign:
        raise BrowserError(f'the page requested {len(foreign)} URL(s) from other hosts: {", ".join(foreign[:3])}')
    print(f'app_screenshot: {len(sizes)} translations of {sizes[0][0]}x{sizes[0][1]} px; '
          f'{out} ({size[0]}x{size[1]}, {os.path.getsize(out) // 1024} KB)')


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--out', default=os.path.join(REPO, 'assets', 'app.png'), help='PNG to write')
    args, flags = parser.parse_known_args(argv)

    def run():
        from core.app import load_translator
        from core.config import parse_config
        screenshot(load_translator(parse_config(['--mode', 'app', '--device', 'cpu'] + flags)), args.out)
    return run_cli(run)


if __name__ == '__main__':
    sys.exit(main())
