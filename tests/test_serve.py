"""The web demo end to end in a real headless Chromium: pick a class, click Generate, see the image grid, play
the video, or the audio clip with its spectrograms; paint a mask in the image editor and inpaint; make a video
longer than the model's window (tiny untrained models for video and audio: the page is tested, not the samples)."""

import io
import shutil
import socket
import time
import urllib.request

import numpy as np
import pytest
import torch

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


def serving(pipe):
    from djepa.cli.serve import launch

    port = free_port()
    app = launch(pipe, port, block=False)
    yield f"http://127.0.0.1:{port}/"
    app.close()
    app.djepa_outputs.close()
    assert not app.djepa_outputs.root.exists()


@pytest.fixture(scope="module")
def server(image_run):
    from djepa.pipeline import Pipeline

    yield from serving(Pipeline.from_pretrained(image_run[1], device="cpu"))


@pytest.fixture(scope="module")
def video_server(video_pipe):
    yield from serving(video_pipe)


@pytest.fixture(scope="module")
def audio_server(audio_pipe):
    yield from serving(audio_pipe)


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


def pick_class_and_generate(browser, name: str) -> None:
    from selenium.webdriver.common.by import By

    box = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#class input"))[0]
    box.click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, f'li[role="option"][aria-label="{name}"]'))[0].click()
    assert wait_for(lambda: box.get_attribute("value") == name, timeout=10)
    browser.find_element(By.ID, "generate").click()


def loaded_grid(browser) -> list[int] | None:
    """The natural size of the loaded preview image (#grid), once the browser has decoded it."""
    size = browser.execute_script(
        "const img = document.querySelector('#grid img'); return img && [img.naturalWidth, img.naturalHeight]"
    )
    return size if size and size[0] else None


@pytest.mark.slow
@needs_browser
def test_pick_a_class_generate_and_see_the_image_grid(server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(server)
    pick_class_and_generate(browser, "7")

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


@pytest.mark.slow
@needs_browser
def test_video_page_plays_the_first_clip_and_shows_the_frame_strips(video_server, browser, tmp_path):
    browser.get(video_server)
    pick_class_and_generate(browser, "3")

    def playable():  # the browser fetched and parsed the MP4 (H.264): metadata and frames are there
        state = browser.execute_script(
            "const v = document.querySelector('#result video');"
            "return v && v.src && [v.src, v.readyState, v.duration, v.videoWidth, v.error && v.error.code]"
        )
        return state if state and state[1] >= 2 else None

    src, _, duration, width, error = wait_for(playable)
    assert src.endswith(".mp4") and error is None
    assert abs(duration - 8 / 6) < 0.1 and width == 64  # 8 frames at 6 fps, 16 px upscaled to 64
    assert wait_for(lambda: loaded_grid(browser))[0] > 0
    assert "None" not in browser.find_element("tag name", "h2").text  # a model built in code has no step to show
    browser.save_screenshot(str(tmp_path / "video.png"))


@pytest.mark.slow
@needs_browser
def test_audio_page_loads_the_first_clip_and_shows_the_spectrograms(audio_server, browser, tmp_path):
    from selenium.webdriver.common.by import By

    browser.get(audio_server)
    pick_class_and_generate(browser, "two")

    def decoded():  # Gradio's player has drawn the waveform and shows the clip's length once it decoded the WAV
        links = [a.get_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#result a[download]")]
        length = browser.find_elements(By.CSS_SELECTOR, "#result #duration")
        return links if links and length and length[0].text not in ("", "0:00") else None

    assert wait_for(decoded)[0].endswith("two_000.wav")
    assert wait_for(lambda: loaded_grid(browser))[0] > 0
    browser.save_screenshot(str(tmp_path / "audio.png"))


def fetched_image(src: str) -> np.ndarray:
    """The image the page shows, fetched from the server as the browser did."""
    from PIL import Image

    with urllib.request.urlopen(src, timeout=30) as response:
        return np.asarray(Image.open(io.BytesIO(response.read())).convert("L"))


def page_text(browser) -> str:
    return browser.execute_script("return document.body.innerText") or ""


def notes_text(browser, wanted: str) -> str | None:
    text = browser.execute_script("const t = document.querySelector('#notes textarea'); return t && t.value")
    return text if text and wanted in text else None


@pytest.mark.slow
@needs_browser
def test_paint_a_mask_in_the_editor_and_inpaint_keeping_the_rest_token_by_token(server, browser, tmp_path, monkeypatch):
    from PIL import Image
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    from djepa.modalities.image import mnist_images
    from djepa.pipeline import Pipeline

    made = []  # what the server's pipeline returned, to check the tokens behind the page's images
    call = Pipeline.__call__
    monkeypatch.setattr(Pipeline, "__call__", lambda self, *a, **k: made.append(call(self, *a, **k)) or made[-1])
    digit = ((mnist_images(32)[0][0, 0] + 1) * 127.5).round().byte().numpy()
    Image.fromarray(digit).save(tmp_path / "digit.png")

    browser.get(server)
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#editor input[type=file]"))[0].send_keys(
        str(tmp_path / "digit.png")
    )

    def zoom() -> float:
        """The editor's zoom once it has settled (it shows the 32 px image zoomed to fit, centred on its canvas)."""
        read = (
            "return [...document.querySelectorAll('#editor *')].map(e => e.textContent.trim())"
            ".find(t => /^[0-9]+%$/.test(t))"
        )
        settled: list[str] = []

        def stable() -> str | None:
            settled.append(browser.execute_script(read) or "")
            return settled[-1] if len(settled) > 2 and settled[-1] == settled[-2] == settled[-3] != "" else None

        return int(wait_for(stable).rstrip("%")) / 100

    def paint_and_inpaint() -> str | None:
        scale = zoom()
        canvas = browser.find_elements(By.CSS_SELECTOR, "#editor canvas")[-1]
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'})", canvas)
        strokes = ActionChains(browser, duration=50)
        for x in (21, 25, 29):  # the brush (4 px) paints x >= ~17: token columns 2 and 3, none of column 1
            dx = round((x + 0.5 - 16) * scale)
            top, bottom = round(-15.5 * scale), round(15.5 * scale)
            strokes.move_to_element_with_offset(canvas, dx, top).click_and_hold()
            strokes.move_to_element_with_offset(canvas, dx, bottom).release()
        strokes.perform()
        browser.find_element(By.ID, "inpaint").click()
        # A loaded machine can drop pointer events, leaving a stroke too thin for a whole token: the page then
        # says so in one line, and the strokes are painted again (painting twice covers the same tokens).
        thin = "covers no whole token"
        found = wait_for(lambda: notes_text(browser, "regenerating") or (thin in page_text(browser) and thin), 60)
        if found == thin:
            wait_for(lambda: thin not in page_text(browser), 30)  # the message closes itself (10 s)
            return None
        return found

    note = next((n for n in (paint_and_inpaint() for _ in range(3)) if n), None)
    assert note is not None, "three paintings of the right half never covered a whole token"
    assert note.startswith("mask: regenerating 8 of 16 tokens (4x4 grid, 8x8 px each)")

    def loaded(elem_id):
        src = browser.execute_script(
            f"const i = document.querySelector('#{elem_id} img'); return i && i.naturalWidth && i.src"
        )
        return src or None

    strip = fetched_image(wait_for(lambda: loaded("strip")))
    assert strip.shape == (34 * 2, 6 * 34 * 2)  # image, mask and the 4 results of class 0, 1 px frames, twice the size
    mask_panel = strip[2:66:2, 70:134:2] > 127  # the painted mask as it was rounded: whole tokens
    assert mask_panel[:, 16:].all() and not mask_panel[:, :16].any()
    assert fetched_image(wait_for(lambda: loaded("result"))).shape == (34 * 2, 4 * 34 * 2)
    # Behind the images: the left half's tokens are the image's own, kept exactly; the right half drawn anew.
    result = made[-1]
    known = result.prime.known
    assert int(known.sum()) == 8 and known.view(4, 4)[:, :2].all() and result.names == ["0"] * 4
    assert torch.equal(result.tokens[:, known], result.prime.tokens[known].expand(4, -1, -1))
    assert not torch.equal(result.tokens[0, ~known], result.prime.tokens[~known])


@pytest.mark.slow
@needs_browser
def test_video_page_makes_a_clip_longer_than_the_window_then_regenerates_a_range_of_it(video_server, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    browser.get(video_server)
    length = wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#length input"))[0]
    assert length.get_attribute("value") == "8"  # one window, as trained
    length.clear()
    length.send_keys("20", Keys.TAB)
    pick_class_and_generate(browser, "3")

    def playable():
        state = browser.execute_script(
            "const v = document.querySelector('#result video'); return v && v.src && v.readyState >= 1 && v.duration"
        )
        return state or None

    assert abs(wait_for(playable) - 20 / 6) < 0.1  # 20 frames at 6 fps, 2.5 windows of 8
    note = wait_for(lambda: notes_text(browser, "windows"), timeout=10)
    assert "frames=20: 4 windows of 8 frames" in note and "last 4 frames (2 token rows, prime_frames)" in note

    # That clip as the prime, frames 3:6 of it regenerated: refused with the long length, said as rounded with one.
    browser.find_element(By.ID, "use-first").click()
    wait_for(lambda: browser.find_elements(By.CSS_SELECTOR, "#prime a[download]"), timeout=10)
    browser.find_element(By.CSS_SELECTOR, "#region input, #region textarea").send_keys("3:6", Keys.TAB)
    browser.find_element(By.ID, "generate").click()
    refused = "frames=20 and a mask range: regenerate a range of one window, or make a longer one"
    wait_for(lambda: refused in browser.find_element(By.TAG_NAME, "body").text, timeout=30)
    length.clear()
    length.send_keys("8", Keys.TAB)
    browser.find_element(By.ID, "generate").click()
    note = wait_for(lambda: notes_text(browser, "mask_frames"), timeout=30)
    assert note.startswith("mask_frames=3:6: regenerating frames 2..5 (token rows 1..2;")


@pytest.mark.slow
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
    from djepa.cli.config import compose_config

    with pytest.raises(UsageError, match="run_dir= is required"):
        compose_config(["port=1"], "serve")
    with pytest.raises(UsageError, match="port: Value 'http'"):
        compose_config(["run_dir=x", "port=http"], "serve")
    assert compose_config(["run_dir=x"], "serve").port == 7860


def test_serve_help_exits_zero(capsys):
    from djepa.cli.scripts import serve

    with pytest.raises(SystemExit) as exit_info:
        serve(["--help"])
    text = capsys.readouterr().out
    assert exit_info.value.code == 0 and text.startswith("usage: serve") and "run_dir=REQUIRED" in text
