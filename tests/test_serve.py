"""The web demo end to end in a real headless Chromium: pick a class, click Generate, see an image."""

import shutil
import socket
import time

import pytest

from djepa.errors import UsageError

gr = pytest.importorskip("gradio")
webdriver = pytest.importorskip("selenium.webdriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
DRIVER = shutil.which("chromedriver")
needs_browser = pytest.mark.skipif(not (CHROMIUM and DRIVER), reason="apt-get install chromium chromium-driver")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(image_run):
    from djepa.cli.serve import launch
    from djepa.pipeline import Pipeline

    pipe = Pipeline.from_pretrained(image_run[1], device="cpu")
    port = free_port()
    app = launch(pipe, port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()


@pytest.fixture
def browser():
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1280,1000"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def wait_for(condition, timeout=60.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = condition()
        if found:
            return found
        time.sleep(0.25)
    raise TimeoutError("condition not met")


@needs_browser
def test_pick_a_class_generate_and_see_the_image_grid(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    box = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#class input"))[0]
    box.click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, 'li[role="option"][aria-label="7"]'))[0].click()
    assert wait_for(lambda: box.get_attribute("value") == "7", timeout=10)
    browser.find_element(By.ID, "generate").click()

    def loaded_images():
        return [i for i in browser.find_elements(By.CSS_SELECTOR, "#result img") if i.get_attribute("src")]

    def natural_size(img):
        size = browser.execute_script("return [arguments[0].naturalWidth, arguments[0].naturalHeight]", img)
        return size if size[0] else None

    image = wait_for(loaded_images)[0]
    src = image.get_attribute("src")
    assert "/file=" in src or src.startswith("data:image")
    # The image really loaded: the grid of 4 samples of one class at 2x (4 x 34 px wide, 34 px high).
    assert wait_for(lambda: natural_size(image)) == [4 * 34 * 2, 34 * 2]
    browser.save_screenshot(str(tmp_path / "serve.png"))
    assert (tmp_path / "serve.png").stat().st_size > 0


@needs_browser
def test_a_mistake_shows_one_message_in_the_page_not_a_traceback(server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(server)
    seed = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#seed input"))[0]
    seed.clear()
    seed.send_keys("-1", Keys.TAB)
    browser.find_element(By.ID, "generate").click()

    def page_text():
        text = browser.find_element(By.TAG_NAME, "body").text
        return text if "seed must be a whole number >= 0, got -1" in text else None

    text = wait_for(page_text, timeout=30)
    assert "Traceback" not in text and 'File "' not in text


def test_serve_arguments_are_checked():
    from djepa.cli.serve import parse_args

    with pytest.raises(UsageError, match="run_dir= is required"):
        parse_args(["port=1"])
    with pytest.raises(UsageError, match="port must be a number"):
        parse_args(["run_dir=x", "port=http"])
    assert parse_args(["run_dir=x"]) == {"run_dir": "x"}


def test_serve_help_exits_zero(capsys):
    from djepa.cli.serve import main

    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.startswith("usage: serve run_dir=")
