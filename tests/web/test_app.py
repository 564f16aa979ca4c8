"""serve: the JSON API with good and bad uploads, concurrency, and a real browser."""

import io
import shutil
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests
import soundfile as sf

from dancegenre.web.app import create_app
from tests.conftest import tone

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def wav_bytes(seconds: float = 7.0, seed: int = 0) -> bytes:
    buf = io.BytesIO()
    sf.write(buf, tone(seconds, 44100, seed=seed), 44100, format="WAV")
    return buf.getvalue()


@pytest.fixture(scope="module")
def app(trained_run):
    return create_app(trained_run, max_upload_mb=1)


@pytest.fixture(scope="module")
def server(trained_run):
    from dancegenre.web.app import host_names, make_server

    app = create_app(trained_run, max_upload_mb=1, allowed_hosts=host_names("127.0.0.1"))
    srv = make_server(app, host="127.0.0.1", port=0, max_upload_mb=1, request_timeout=2)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{srv.effective_port}"
    srv.close()


def post(client, name: str, data: bytes):
    return client.post("/api/predict", data={"file": (io.BytesIO(data), name)}, content_type="multipart/form-data")


def test_good_upload(app):
    client = app.test_client()
    r = post(client, "my track.wav", wav_bytes())
    assert r.status_code == 200, r.json
    body = r.json
    assert body["genre"] in body["probabilities"] and body["filename"] == "my track.wav"
    assert len(body["timeline"]) == 2 and body["spectrogram"].startswith("data:image/png;base64,")
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-3


@pytest.mark.parametrize("name,data,status,needle", [
    ("notes.txt", b"hello", 415, "not an audio file type"),
    ("empty.mp3", b"", 400, "empty"),
    ("corrupt.mp3", b"\x00\x01" * 3000, 422, "corrupt.mp3"),
    ("short.wav", None, 422, "too short"),
    ("big.wav", b"\x00" * (2 * 1024 * 1024), 413, "too large"),
])
def test_bad_uploads(app, name, data, status, needle):
    if data is None:
        data = wav_bytes(1.0)
    r = post(app.test_client(), name, data)
    assert r.status_code == status and needle in r.json["error"]
    assert "/tmp" not in r.json["error"]  # the temporary name is never shown


def test_missing_field_model_and_openapi(app):
    client = app.test_client()
    assert client.post("/api/predict", data={}).status_code == 400
    spec = client.get("/openapi.json").json
    assert "/api/predict" in spec["paths"] and spec["openapi"].startswith("3.")
    model = client.get("/api/model").json
    assert model["genres"] == ["edm", "techno"] and "test" in model
    assert "techno" in client.get("/model").get_data(as_text=True)


def test_concurrent_requests(server):
    payloads = [wav_bytes(6.5, seed=k) for k in range(6)] + [b"junk" * 100]

    def send(k):
        name = "x.wav" if k < 6 else "bad.mp3"
        return requests.post(f"{server}/api/predict", files={"file": (name, payloads[k])}, timeout=60).status_code

    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(send, range(7)))
    assert codes == [200] * 6 + [422]
    assert requests.get(server, timeout=10).status_code == 200  # still serving


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_browser_end_to_end(server, tmp_path):
    playwright = pytest.importorskip("playwright.sync_api")
    audio = tmp_path / "upload me.wav"
    audio.write_bytes(wav_bytes(9.0, seed=3))
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync"])
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        page.goto(server)
        page.set_input_files("#files", str(audio))
        page.wait_for_selector(".verdict", timeout=60_000)
        verdict = page.inner_text(".verdict")
        assert verdict.split()[0] in ("edm", "techno")
        assert page.locator(".bar").count() == 2
        assert page.locator("svg.timeline polyline").count() == 2
        assert page.locator("img.spectrogram").evaluate("img => img.naturalWidth") > 100
        page.screenshot(path=str(tmp_path / "page.png"), full_page=True)
        bad = tmp_path / "broken.mp3"
        bad.write_bytes(b"junk" * 200)
        page.set_input_files("#files", str(bad))
        page.wait_for_selector(".error", timeout=30_000)
        assert "broken.mp3" in page.inner_text(".error")
        browser.close()
    assert Path(tmp_path / "page.png").stat().st_size > 10_000
