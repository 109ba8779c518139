"""serve: the JSON API answers what predict --json prints, refuses bad uploads with one line, batches concurrent
requests without mixing them up; the page; the command line. All on the width-1/8 Keras fixture."""

import asyncio
import contextlib
import importlib.util
import io
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from helpers import KERAS_MODEL, ROOT, json_lines, signs_test_files
from signs_jax import predict, serve

pytest.importorskip("starlette", reason="the serve extra is not installed")
from starlette.testclient import TestClient  # noqa: E402

from signs_jax.batching import BatchQueue  # noqa: E402
from signs_jax.serve_app import Predictor, create_app  # noqa: E402

LIMIT = 2**20  # the test app's upload limit


@pytest.fixture(scope="module")
def jpegs(data_dir, tmp_path_factory):
    """16 different SIGNS test images as JPEG files."""
    return signs_test_files(data_dir, tmp_path_factory.mktemp("jpegs"), 16, "sign{i:02d}.jpg", quality=95)


@pytest.fixture(scope="module")
def expected(jpegs):
    """predict --json's record of each JPEG, by file name, from the predict tool itself (its batch of 8 being
    the server's: a forward pass of another batch shape may differ in the last bits). The path an upload
    answers is the uploaded file's name."""
    import contextlib

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict.main([*map(str, jpegs), "--weights", KERAS_MODEL, "--json", "--batch-size", "8"]) == 0
    records = json_lines(out.getvalue())
    assert len(records) == len(jpegs)
    return {os.path.basename(r["path"]): {**r, "path": os.path.basename(r["path"])} for r in records}


@pytest.fixture(scope="module")
def predictor():
    from signs_jax.weights import load_weights

    predictor = Predictor(load_weights(KERAS_MODEL), predict.DEFAULT_THRESHOLD)
    yield predictor
    predictor.close()


@pytest.fixture(scope="module")
def client(predictor):
    return TestClient(create_app(predictor, LIMIT), raise_server_exceptions=False)


def post_file(client, path, url="/api/predict"):
    return client.post(url, files={"image": (path.name, path.read_bytes(), "image/jpeg")})


def assert_refused(response, status, *words):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert "\n" not in error and all(w in error for w in words), error


def test_an_upload_answers_what_predict_json_prints(client, jpegs, expected):
    answer = post_file(client, jpegs[3])
    assert answer.status_code == 200
    assert answer.json() == expected[jpegs[3].name]
    assert answer.text == json.dumps(expected[jpegs[3].name])  # the line predict --json prints
    raw = client.post(
        "/api/predict?filename=mine.jpg", content=jpegs[3].read_bytes(), headers={"content-type": "image/jpeg"}
    )
    assert raw.json() == {**expected[jpegs[3].name], "path": "mine.jpg"}


def test_bad_uploads_are_refused_with_one_line(client, jpegs):
    image = jpegs[0].read_bytes()
    assert_refused(client.post("/api/predict", content=b"hello", headers={"content-type": "text/plain"}), 415)
    not_image = {"image": ("notes.jpg", b"just some text, no pixels", "image/jpeg")}
    assert_refused(client.post("/api/predict", files=not_image), 400, "notes.jpg", "not an image")
    assert_refused(client.post("/api/predict", content=b"", headers={"content-type": "image/png"}), 400, "empty")
    assert_refused(client.post("/api/predict", files={"image": ("e.jpg", b"", "image/jpeg")}), 400, "e.jpg", "empty")
    cut = {"image": ("cut.jpg", image[: len(image) // 2], "image/jpeg")}
    assert_refused(client.post("/api/predict", files=cut), 400, "cut.jpg", "truncated")
    closed = {"image": ("closed.jpg", image[: len(image) // 2] + b"\xff\xd9", "image/jpeg")}  # cut, then an end
    assert_refused(client.post("/api/predict", files=closed), 400, "closed.jpg", "cut short or damaged")
    assert_refused(client.post("/api/predict", files={"photo": ("a.jpg", image, "image/jpeg")}), 400, "'image'")
    form = {"content-type": "multipart/form-data; boundary=xyz"}
    assert_refused(client.post("/api/predict", content=b"--xyz\r\ngarbage", headers=form), 400)
    assert client.get("/api/health").json()["status"] == "ok"


def test_an_upload_over_the_limit_is_413(client):
    big = bytes(LIMIT + 1)
    assert_refused(client.post("/api/predict", content=big, headers={"content-type": "image/jpeg"}), 413)
    assert_refused(client.post("/api/predict", files={"image": ("big.jpg", big, "image/jpeg")}), 413)
    assert_refused(client.post("/api/explain", files={"image": ("big.jpg", big, "image/jpeg")}), 413)


def asgi_post(app, headers, chunks):
    """POST /api/predict straight to the ASGI app; the body comes as the given chunks (then more_body ends).
    Returns (status, body, how many chunks the app read)."""
    sent, read = [], [0]
    chunks = iter(chunks)

    async def receive():
        chunk = next(chunks, None)
        if chunk is None:
            return {"type": "http.request", "body": b"", "more_body": False}
        read[0] += 1
        return {"type": "http.request", "body": chunk, "more_body": True}

    async def send(message):
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/api/predict",
        "raw_path": b"/api/predict",
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    asyncio.run(app(scope, receive, send))
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return sent[0]["status"], body, read[0]


def endless(size=64 * 1024):
    while True:
        yield bytes(size)


def test_the_limit_is_checked_while_the_body_is_read(predictor):
    app = create_app(predictor, LIMIT)
    # A chunked upload without end: refused once it passes the limit, not read to its end first.
    status, body, read = asgi_post(app, {"content-type": "image/jpeg"}, endless())
    assert status == 413 and "limit" in json.loads(body)["error"]
    assert read == LIMIT // (64 * 1024) + 1
    # A declared length over the limit: refused before any of it is read.
    status, _, read = asgi_post(app, {"content-type": "image/jpeg", "content-length": str(2 * 2**30)}, endless())
    assert (status, read) == (413, 0)


def test_concurrent_requests_each_get_their_own_answer(client, jpegs, expected, predictor):
    answers = {}

    def ask(path):
        answers[path.name] = post_file(client, path).json()

    threads = [threading.Thread(target=ask, args=(path,)) for path in jpegs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert answers == expected
    assert len(set(r["class"] + str(r["confidence"]) for r in answers.values())) > 1  # the images differ
    assert max(predictor.queue.batch_sizes) <= 8
    assert post_file(client, jpegs[5]).json() == expected[jpegs[5].name]  # still answering


def test_batch_queue_batches_what_waits_and_maps_rows_back():
    release, batches = threading.Event(), []

    def run_batch(x):
        release.wait(timeout=30)
        batches.append(x.copy())
        return x.sum(axis=1) * 10

    queue = BatchQueue(run_batch, 4, (3,))
    try:
        first = queue.submit([1, 0, 0])
        time.sleep(0.2)  # the thread now holds the first batch, blocked
        rest = [queue.submit([i, i, i]) for i in range(2, 8)]
        release.set()
        assert first.result(timeout=30) == 10
        assert [f.result(timeout=30) for f in rest] == [30 * i for i in range(2, 8)]
        assert queue.batch_sizes == [1, 4, 2]
        assert all(b.shape == (4, 3) for b in batches) and not batches[2][2:].any()  # padded with zeros
    finally:
        release.set()
        queue.close()


def test_batch_queue_failure_reaches_every_waiting_request_and_the_thread_goes_on():
    calls = []

    def run_batch(x):
        calls.append(len(calls))
        if len(calls) == 1:
            raise RuntimeError("device lost")
        return x

    queue = BatchQueue(run_batch, 2, (1,))
    try:
        with pytest.raises(RuntimeError, match="device lost"):
            queue.submit([1]).result(timeout=30)
        assert queue.submit([2]).result(timeout=30) == 2
    finally:
        queue.close()


def test_the_page_is_served_self_contained(client):
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<form id="upload-form"' in page.text and 'name="image"' in page.text
    assert "getUserMedia" in page.text and "/api/predict" in page.text and "/api/explain" in page.text
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page.text)  # nothing from elsewhere


@pytest.mark.slow
def test_explain_answers_the_overlay_png(client, jpegs):
    answer = post_file(client, jpegs[2], "/api/explain")
    assert answer.status_code == 200 and answer.headers["content-type"] == "image/png"
    picture = np.asarray(Image.open(io.BytesIO(answer.content)))
    photo = np.asarray(Image.open(jpegs[2]).convert("RGB"))
    assert picture.shape == photo.shape  # a 64x64 photo is drawn as it is
    assert np.abs(picture.astype(int) - photo).mean() > 10  # with the heatmap over it
    bad = client.post("/api/explain", files={"image": ("x.png", b"not a png", "image/png")})
    assert_refused(bad, 400, "x.png")


def test_help_and_bad_flags(capsys, tmp_path):
    with pytest.raises(SystemExit) as done:
        serve.main(["--help"])
    assert done.value.code == 0 and "/api/predict" in capsys.readouterr().out
    for args, words in [
        (["--port", "70000"], "--port 70000"),
        (["--max-upload-mb", "0"], "--max-upload-mb"),
        (["--threshold", "2"], "--threshold"),
        (["--weights", str(tmp_path / "missing.h5")], "missing.h5: no such file"),
    ]:
        assert serve.main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and words in err[0], err


def test_missing_serve_extra_is_one_line(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "uvicorn", None)  # import uvicorn now raises ImportError
    assert serve.main(["--weights", KERAS_MODEL]) == 2
    assert capsys.readouterr().err == 'error: serve needs the serve extra: pip install -e ".[serve]"\n'


@pytest.mark.slow
def test_the_server_process_answers_http(jpegs, expected):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "signs_jax.serve", "--weights", KERAS_MODEL, "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        assert url, line + process.stderr.read() if process.poll() is not None else line
        base = url.group(0)
        with urllib.request.urlopen(base + "api/health", timeout=60) as answer:
            assert json.load(answer)["status"] == "ok"
        upload = urllib.request.Request(
            base + "api/predict?filename=" + jpegs[7].name,
            data=jpegs[7].read_bytes(),
            headers={"Content-Type": "image/jpeg"},
        )
        with urllib.request.urlopen(upload, timeout=60) as answer:
            assert json.load(answer) == expected[jpegs[7].name]
        # A client announcing 2 GiB is refused at once, without sending them.
        with socket.create_connection(("127.0.0.1", int(url.group(1))), timeout=30) as conn:
            conn.sendall(
                b"POST /api/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/jpeg\r\n"
                b"Content-Length: 2147483648\r\n\r\n" + bytes(1000)
            )
            assert conn.recv(100).startswith(b"HTTP/1.1 413")
        # uvicorn shuts down, then ends by the signal it was sent (as a process without a handler would).
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) in (0, -signal.SIGTERM)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _browser():
    """Headless Chromium through its WebDriver (Debian's `chromium` and `chromium-driver`, which .ci/run
    installs); skipped where they are missing, unless SIGNS_JAX_REQUIRE_BROWSER is set (CI sets it)."""
    import shutil

    browser, driver = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")
    if not (browser and driver and importlib.util.find_spec("selenium")):
        if os.environ.get("SIGNS_JAX_REQUIRE_BROWSER"):
            pytest.fail(f"no headless browser: chromium {browser}, chromedriver {driver}, selenium installed?")
        pytest.skip("needs chromium, chromedriver and selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = browser
    for flag in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1000,900"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(executable_path=driver), options=options)


@contextlib.contextmanager
def server_process(weights):
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    command = [sys.executable, "-m", "signs_jax.serve", "--weights", str(weights), "--port", "0"]
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"http://127\.0\.0\.1:\d+/", line)
        assert url, line + process.stderr.read() if process.poll() is not None else line
        yield url.group(0)
    finally:
        process.kill()
        process.wait()


@pytest.mark.slow
def test_the_page_in_a_real_browser_shows_the_class_predict_gives(jpegs, tmp_path):
    """Upload a SIGNS test JPEG through the page's file input in headless Chromium: the class shown is the one
    `predict --json` gives for the file, the explanation overlay arrives, and a screenshot is saved
    (SIGNS_JAX_SCREENSHOT=PATH copies it there, SIGNS_JAX_PAGE_WEIGHTS serves other weights: docs/serve.md)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    weights = os.environ.get("SIGNS_JAX_PAGE_WEIGHTS", KERAS_MODEL)
    photo = jpegs[3]
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert predict.main([str(photo), "--weights", str(weights), "--json", "--batch-size", "8"]) == 0
    cli = json_lines(out.getvalue())[0]

    browser = _browser()
    try:
        with server_process(weights) as url:
            browser.get(url)
            assert browser.find_element(By.ID, "result").is_displayed() is False
            browser.find_element(By.ID, "file").send_keys(str(photo))
            wait = WebDriverWait(browser, 120)
            wait.until(lambda b: b.find_element(By.ID, "class").text)
            assert browser.find_element(By.ID, "class").text == cli["class"]
            assert browser.find_element(By.ID, "uncertain").is_displayed() == cli["uncertain"]
            assert len(browser.find_elements(By.CSS_SELECTOR, "#bars > *")) == len(cli["probabilities"])
            wait.until(
                lambda b: b.execute_script(
                    "const i = document.getElementById('overlay'); return i.complete && i.naturalWidth > 0"
                )
            )
            assert "computing" not in browser.find_element(By.ID, "overlay-caption").text
            shot = tmp_path / "page.png"
            assert browser.save_screenshot(str(shot))
    finally:
        browser.quit()
    with Image.open(shot) as picture:
        shades = len(np.unique(np.asarray(picture.convert("L"))))
    assert picture.size[0] >= 800 and shades > 50  # a drawn page, not a blank one
    if os.environ.get("SIGNS_JAX_SCREENSHOT"):
        import shutil

        shutil.copyfile(shot, os.environ["SIGNS_JAX_SCREENSHOT"])
