"""The portal in a real browser: Debian's headless chromium against `streamlit run ui/app.py` on 127.0.0.1.

Sign in, ask about the samples, see the streamed answer and its source, and keep a screenshot. `make test` installs
chromium and chromium-driver where it can (apt); where it could not, this test skips and says why.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="chromium and chromium-driver are not installed (`make test` installs them with apt where it may)",
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(port: int, process: subprocess.Popen, seconds: float = 90) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the portal exited with {process.returncode}: {process.stdout.read()[-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.5)
    raise TimeoutError(f"the portal did not listen on 127.0.0.1:{port} within {seconds} s")


@contextmanager
def _serve(data_dir: Path):
    """`streamlit run ui/app.py` over `data_dir` on a free loopback port; yields its URL."""
    port = _free_port()
    env = {**os.environ, "ASSISTANT_DATA_DIR": str(data_dir)}
    command = [sys.executable, "-m", "streamlit", "run", str(ROOT / "ui" / "app.py")]
    command += ["--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(port, process)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()


class _Listener:
    """An HTTP server on a free loopback port that records every request it gets: the beacon's target."""

    def __init__(self):
        requests = self.requests = []

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):  # the name http.server calls
                requests.append(self.path)
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def listener():
    listening = _Listener()
    yield listening
    listening.close()


@pytest.fixture(scope="module")
def portal(tmp_path_factory, embedder, listener):
    """A portal over the samples (staff and hr documents) and one staff document holding a Markdown image and an HTML
    image pointing at the listener, with one staff user, served on a free loopback port. One server for the module:
    starting one takes half a minute."""
    from assistant import Settings, User, build_assistant
    from assistant.users import UserStore

    root = tmp_path_factory.mktemp("portal")
    docs = root / "docs"
    docs.mkdir()
    (docs / "parking.md").write_text(
        "# Parking\n\n"
        f"Parking permits are issued at the front desk ![x](http://127.0.0.1:{listener.port}/beacon) every Monday.\n\n"
        f"Parking permits are free for cyclists <img src=http://127.0.0.1:{listener.port}/img> and car pools.\n"
    )
    data_dir = root / "data"
    with build_assistant(Settings(data_dir=data_dir), embedder=embedder) as assistant:
        assert assistant.ingest([ROOT / "samples" / "public", docs], groups=["staff"]).ok
        assert assistant.ingest([ROOT / "samples" / "hr"], groups=["hr"]).ok
        # Two kept evaluation runs, whose passages (the beacons among them) the Evaluation page shows an admin.
        parking = {"question": "How are parking permits issued?", "expected": ["parking.md"], "groups": ["staff"]}
        for k in (5, 3):
            assistant.evaluate(json.dumps(parking), "parking.jsonl", User("root", ("admin",)), k=k)
    UserStore(data_dir / "users.yaml").add("ana", PASSWORD, ["staff"])
    UserStore(data_dir / "users.yaml").add("root", PASSWORD, ["admin"])
    with _serve(data_dir) as url:
        yield url


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        f"--user-data-dir={tmp_path / 'profile'}",  # a fresh profile: nothing carried over, nothing synced
        "--window-size=1280,1600",
    ):
        options.add_argument(flag)
    # The driver is Debian's, named by path, so Selenium Manager never looks for (or downloads) one.
    os.environ["SE_OFFLINE"] = "true"
    driver = webdriver.Chrome(service=Service(executable_path=DRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def _sign_in(browser, portal: str, user: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    browser.get(portal)
    name = WebDriverWait(browser, 60).until(
        ready.element_to_be_clickable((By.CSS_SELECTOR, "input[autocomplete='username']"))
    )
    name.send_keys(user)
    browser.find_element(By.CSS_SELECTOR, "input[type='password']").send_keys(PASSWORD)
    browser.find_element(By.XPATH, "//button[.//p[text()='Sign in']]").click()


def _sign_in_and_ask(browser, portal: str, question: str) -> list:
    """Signs ana in, asks, and waits for the answer's sources; returns them."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    _sign_in(browser, portal, "ana")
    box = wait.until(ready.element_to_be_clickable((By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")))
    box.send_keys(question, Keys.ENTER)
    return wait.until(ready.presence_of_all_elements_located((By.CSS_SELECTOR, "[data-testid='stExpander']")))


def test_sign_in_ask_and_see_the_answer_with_its_source(portal, browser, tmp_path):
    from selenium.webdriver.common.by import By

    sources = _sign_in_and_ask(browser, portal, "How many days of annual leave do employees get?")
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "employee-handbook" in page, page[-2000:]
    assert "salary" not in page.lower(), "a staff member is never shown the hr document"
    assert sources
    shot = tmp_path / "answer.png"
    assert browser.save_screenshot(str(shot)) and shot.stat().st_size > 10_000
    print(f"screenshot: {shot}")


def test_an_image_in_a_document_is_never_fetched_by_the_readers_browser(portal, browser, listener):
    from selenium.webdriver.common.by import By

    sources = _sign_in_and_ask(browser, portal, "How are parking permits issued?")
    for source in sources:  # open every passage too: each shows the document's text
        # Through the page's own click on the expander's summary: a pointer click can land on whatever the page is
        # still laying out over it (seen once as ElementClickInterceptedException), which says nothing of images.
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'center'}); arguments[0].querySelector('summary').click();", source
        )
    time.sleep(3)  # an image starts loading as soon as it is in the page; give a fetch time to arrive
    page = browser.find_element(By.TAG_NAME, "body").text
    assert listener.requests == []
    assert f"127.0.0.1:{listener.port}/beacon" in page, page[-2000:]  # the payload is shown, as text
    assert not browser.find_elements(By.CSS_SELECTOR, f"img[src*='{listener.port}'], a[href*='{listener.port}']")


def test_a_source_opens_at_its_marked_page_and_downloads_as_the_original_file(portal, browser, tmp_path):
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    downloads = tmp_path / "downloads"
    downloads.mkdir()
    browser.execute_cdp_cmd("Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)})
    sources = _sign_in_and_ask(browser, portal, "What is the domestic per diem for business travel?")
    wait = WebDriverWait(browser, 60, ignored_exceptions=(StaleElementReferenceException, StopIteration))

    def expense():  # found again each time: the page redraws its elements when it runs again
        expanders = browser.find_elements(By.CSS_SELECTOR, "[data-testid='stExpander']")
        return next(e for e in expanders if "expense-policy.pdf" in e.text)

    def click(label: str) -> bool:
        button = expense().find_element(By.XPATH, f".//button[.//p[text()='{label}']]")
        browser.execute_script("arguments[0].scrollIntoView({block: 'center'}); arguments[0].click();", button)
        return True

    browser.execute_script("arguments[0].querySelector('summary').click();", expense())
    wait.until(lambda _: click("Show the page"))
    width = "const i = arguments[0].querySelector(\"[data-testid='stImage'] img\"); return i ? i.naturalWidth : 0;"
    wait.until(lambda _: browser.execute_script(width, expense()) > 800)
    source = browser.execute_script(
        "return arguments[0].querySelector(\"[data-testid='stImage'] img\").src;", expense()
    )
    assert source.startswith(portal.rstrip("/")), source  # an image the portal drew, not the PDF

    wait.until(lambda _: click("Download the original"))
    wait.until(lambda _: (downloads / "expense-policy.pdf").is_file())
    original = ROOT / "samples" / "public" / "expense-policy.pdf"
    assert (downloads / "expense-policy.pdf").read_bytes() == original.read_bytes()
    assert sources


def test_a_reload_keeps_the_session_and_the_conversation_until_sign_out(portal, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    question = "How many days of annual leave do employees get?"
    _sign_in_and_ask(browser, portal, question)
    sidebar = (By.CSS_SELECTOR, "[data-testid='stSidebar']")
    wait.until(lambda _: question in browser.find_element(*sidebar).text)  # kept, and listed

    browser.refresh()
    chat = (By.CSS_SELECTOR, "[data-testid='stChatInputTextArea']")
    wait.until(ready.element_to_be_clickable(chat))  # no sign-in form: the session resumed
    wait.until(lambda _: question in browser.find_element(*sidebar).text)
    assert "Signed in as" in browser.find_element(*sidebar).text

    sign_out = browser.find_element(By.XPATH, "//button[.//p[text()='Sign out']]")
    browser.execute_script("arguments[0].click();", sign_out)
    password = (By.CSS_SELECTOR, "input[type='password']")
    wait.until(ready.presence_of_element_located(password))
    browser.refresh()
    wait.until(ready.presence_of_element_located(password))  # signed out stays signed out
    assert not browser.find_elements(*chat)


def test_the_evaluation_page_draws_its_chart_and_passages_without_fetching_anything(portal, browser, listener):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ready
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 60)
    _sign_in(browser, portal, "root")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stSidebar']")))
    browser.get(portal.rstrip("/") + "/evaluation")
    wait.until(ready.presence_of_element_located((By.CSS_SELECTOR, "[data-testid='stVegaLiteChart']")))
    passages = wait.until(
        lambda _: [
            e for e in browser.find_elements(By.CSS_SELECTOR, "[data-testid='stExpander']") if "parking" in e.text
        ]
    )
    for passage in passages:
        browser.execute_script(
            "arguments[0].scrollIntoView({block: 'center'}); arguments[0].querySelector('summary').click();", passage
        )
    time.sleep(3)  # as above: time for a fetch to arrive, were one made
    page = browser.find_element(By.TAG_NAME, "body").text
    assert f"127.0.0.1:{listener.port}/beacon" in page, page[-2000:]  # the passage is shown, as text
    assert listener.requests == []
