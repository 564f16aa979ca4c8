"""serve: the JSON API with good and bad uploads, concurrency, and a real browser."""

import io
import shutil
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
    from dancegenre.web.app import host_names, make_server, serving

    app = create_app(trained_run, max_upload_mb=1, allowed_hosts=host_names("127.0.0.1"))
    with serving(make_server(app, host="127.0.0.1", port=0, max_upload_mb=1, request_timeout=2)) as url:
        yield url


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


def test_a_stopped_server_leaves_no_thread_and_no_descriptor(trained_run):
    """Waitress's close() alone left its request threads running; one that finished
    later wrote its wake-up byte into whatever file had reused the pipe's descriptor."""
    import threading

    from dancegenre.web.app import host_names, make_server, serving

    before = set(threading.enumerate())
    app = create_app(trained_run, allowed_hosts=host_names("127.0.0.1"))
    srv = make_server(app, host="127.0.0.1", port=0, request_timeout=2)
    with serving(srv) as url, requests.Session() as session:  # a kept-alive connection stays open
        assert session.post(f"{url}/api/predict", files={"file": ("a.wav", wav_bytes())}, timeout=60).ok
    assert set(threading.enumerate()) <= before
    assert not srv._map and srv.trigger._closed


@pytest.fixture(scope="module")
def browser_server(trained_run):
    """A server whose upload limit takes a 90-second mix."""
    from dancegenre.web.app import host_names, make_server, serving

    app = create_app(trained_run, max_upload_mb=8, allowed_hosts=host_names("127.0.0.1"))
    with serving(make_server(app, host="127.0.0.1", port=0, max_upload_mb=8, request_timeout=5)) as url:
        yield url


def _disjoint(a: dict, b: dict) -> bool:
    return (a["x"] + a["width"] <= b["x"] or b["x"] + b["width"] <= a["x"]
            or a["y"] + a["height"] <= b["y"] or b["y"] + b["height"] <= a["y"])


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_browser_end_to_end(browser_server, tmp_path):
    """Drop a 90-second mix and a clip: verdicts, a readable timeline (axes, a legend
    beside the plot, a hover read-out, section bands), a player on the browser's own copy
    that the timeline seeks, the session's table as CSV and JSON; then /model."""
    import csv
    import json
    import os
    import re

    import numpy as np

    playwright = pytest.importorskip("playwright.sync_api")
    server = browser_server
    mix = tmp_path / "my mix.wav"
    sr = 22050
    parts = [tone(15.0, sr, seed=k, freq=(220.0, 880.0)[k % 2]) for k in range(6)]
    sf.write(str(mix), np.concatenate(parts), sr)  # 90 s
    clip = tmp_path / "=clip, \"one\".wav"  # a name a spreadsheet or a CSV writer could misread
    clip.write_bytes(wav_bytes(9.0, seed=3))
    shots = Path(os.environ.get("DANCEGENRE_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    with playwright.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--autoplay-policy=no-user-gesture-required"])
        page = browser.new_page(viewport={"width": 1100, "height": 900}, accept_downloads=True)
        page.goto(server)
        page.set_input_files("#files", [str(mix), str(clip)])
        page.wait_for_function("document.querySelectorAll('#session-table tbody tr.done').length === 2",
                               timeout=90_000)
        assert page.locator(".verdict").count() == 2
        card = page.locator(".card", has=page.locator("h3", has_text="my mix.wav"))
        assert card.locator(".verdict").inner_text().split()[0] in ("edm", "techno")
        assert card.locator(".bar").count() == 2 and card.locator("svg.timeline polyline").count() == 2

        # the timeline: axis titles, m:ss ticks, a 0-1 axis, bands, a legend off the plot
        texts = card.locator("svg.timeline text").all_text_contents()
        assert "probability" in texts and any(t.startswith("time (m:ss)") for t in texts)
        assert "1:00" in texts and "0.00" in texts and "1.00" in texts
        assert card.locator("svg.timeline rect.section").count() >= 1
        plot = card.locator("rect.plot-area").bounding_box()
        legend = card.locator(".legend").bounding_box()
        assert legend and legend["height"] > 0 and _disjoint(plot, legend)
        assert card.locator(".legend .legend-item").all_inner_texts() == ["edm", "techno"]
        card.locator("svg.timeline").scroll_into_view_if_needed()
        hit = card.locator("rect.hit").bounding_box()
        page.mouse.move(hit["x"] + hit["width"] * 0.25, hit["y"] + 20)
        readout = card.locator(".readout").inner_text()
        assert re.match(r"0:2\d", readout) and "%" in readout and "techno" in readout

        # listen along: the browser's own copy, and a click on the timeline seeks
        audio = card.locator("audio")
        assert audio.evaluate("a => a.src").startswith("blob:")
        page.wait_for_function("[...document.querySelectorAll('audio')].every(a => a.readyState >= 1)", timeout=30_000)
        assert audio.evaluate("a => a.duration") == pytest.approx(90.0, abs=0.5)
        page.mouse.click(hit["x"] + hit["width"] * 0.5, hit["y"] + 20)
        page.wait_for_function("document.querySelectorAll('audio')[1].currentTime > 0", timeout=10_000)
        # the cards are newest first: the mix is the second audio element on the page
        assert audio.evaluate("a => a.currentTime") == pytest.approx(45.0, abs=2.0)
        page.wait_for_function("Number(document.querySelectorAll('line.cursor')[1].getAttribute('x1')) > 100",
                               timeout=10_000)  # the cursor follows on the seek
        cursor_x = float(card.locator("line.cursor").get_attribute("x1"))
        assert cursor_x == pytest.approx(float(card.locator("rect.plot-area").get_attribute("x"))
                                         + float(card.locator("rect.plot-area").get_attribute("width")) / 2, abs=15)
        assert card.locator("img.spectrogram").evaluate("img => img.naturalWidth") > 100
        page.screenshot(path=str(shots / "page.png"), full_page=True)

        # a bad file is a row too; the table goes away as CSV and JSON
        bad = tmp_path / "broken.mp3"
        bad.write_bytes(b"junk" * 200)
        page.set_input_files("#files", str(bad))
        page.wait_for_selector(".card .error", timeout=30_000)
        page.wait_for_function("document.querySelectorAll('#session-table tbody tr.done').length === 3")
        assert "broken.mp3" in page.inner_text(".card .error")
        with page.expect_download() as download:
            page.click("#download-csv")
        rows = list(csv.DictReader(open(download.value.path(), newline="")))
        assert [r["file"] for r in rows] == ["my mix.wav", "'=clip, \"one\".wav", "broken.mp3"]
        assert rows[0]["genre"] in ("edm", "techno") and re.fullmatch(r"\d\.\d{4}", rows[0]["confidence"])
        assert rows[2]["genre"] == "" and rows[2]["error"]
        with page.expect_download() as download:
            page.click("#download-json")
        entries = json.loads(Path(download.value.path()).read_text())
        assert [e["file"] for e in entries] == ["my mix.wav", "=clip, \"one\".wav", "broken.mp3"]

        # /model, for people
        page.goto(f"{server}/model")
        body = page.inner_text("body")
        assert "{" not in body and "}" not in body
        cells = page.locator("table.metrics td.accuracy").all_inner_texts()
        assert cells and all(re.fullmatch(r"\d\.\d{3}", c) for c in cells)
        assert page.locator("table.genres tbody tr").count() == 2 and "parameters" in body
        assert page.locator("img.confusion").evaluate("img => img.naturalWidth") > 100
        page.screenshot(path=str(shots / "model.png"), full_page=True)

        # on a phone: the pages take the screen's width, and nothing but a table (which
        # scrolls on its own) is wider than it, a long file name included
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)
        small = phone.new_page()
        long_name = tmp_path / ("a-promo-track-name-without-any-spaces-" * 3 + ".wav")
        long_name.write_bytes(wav_bytes(9.0, seed=4))
        small.goto(server)
        small.set_input_files("#files", str(long_name))
        small.wait_for_function("document.querySelectorAll('#session-table tbody tr.done').length === 1",
                                timeout=60_000)
        widths = "[innerWidth, document.scrollingElement.scrollWidth]"
        assert small.evaluate(widths) == [390, 390]
        small.goto(f"{server}/model")
        assert small.evaluate(widths) == [390, 390]
        browser.close()
    assert (shots / "page.png").stat().st_size > 10_000 and (shots / "model.png").stat().st_size > 10_000


def test_model_page_and_api(app, trained_run, tmp_path):
    """/model in words and tables; /api/model in JSON; a checkpoint alone (no run folder
    around it) still gets a page that says what is unknown."""
    import re

    client = app.test_client()
    model = client.get("/api/model").json
    assert model["colors"] == {"edm": "#1f77b4", "techno": "#ff7f0e"}
    assert set(model["items_per_genre"]["edm"]) == {"train", "val", "test"}
    assert model["model"]["parameters"] > 1000 and "22,050 Hz" in model["frontend"]
    assert {"item", "segment"} <= set(model["validation"]) and {"item", "segment"} <= set(model["test"])
    html = client.get("/model").get_data(as_text=True)
    assert re.search(r'<td class="accuracy">\d\.\d{3}</td>', html) and "{" not in html.split("</style>")[1]
    assert "Per genre, test items" in html and 'class="confusion"' in html
    shutil.copy(trained_run / "best.pt", tmp_path / "alone.pt")
    alone = create_app(tmp_path / "alone.pt").test_client().get("/model")
    assert alone.status_code == 200 and "No results.json beside this checkpoint" in alone.get_data(as_text=True)


def test_only_gives_verdicts_among_some_genres(three_genre_run, tmp_path):
    """serve --only: the answers' probabilities over the kept genres only, the same as
    predict --only; /api/model and /model name them and give the held-out figures among
    them from the run's test items; a genre the model lacks is refused before serving."""
    import numpy as np
    import pandas as pd

    from dancegenre.errors import ConfigError
    from dancegenre.inference.classifier import Classifier
    from dancegenre.training.runs import restricted_verdicts
    from dancegenre.training.scoring import verdict_metrics

    full = create_app(three_genre_run).test_client()
    client = create_app(three_genre_run, only=["techno", "acid"]).test_client()
    data = wav_bytes(seed=5)
    body = post(client, "clip.wav", data).json
    assert set(body["probabilities"]) == {"acid", "techno"} and body["genre"] in ("acid", "techno")
    assert abs(sum(body["probabilities"].values()) - 1) < 1e-3
    assert all(set(row) >= {"acid", "techno"} and "edm" not in row for row in body["timeline"])
    (tmp_path / "clip.wav").write_bytes(data)
    clf = Classifier.load(three_genre_run)
    clf.restrict(["acid", "techno"])
    direct = clf.predict(tmp_path / "clip.wav")
    assert body["probabilities"] == pytest.approx(direct.probabilities, abs=1e-4)
    plain = post(full, "clip.wav", data).json["probabilities"]
    scale = plain["acid"] + plain["techno"]
    assert body["probabilities"]["acid"] == pytest.approx(plain["acid"] / scale, abs=1e-4)

    model, before = client.get("/api/model").json, full.get("/api/model").json
    assert model["genres"] == ["acid", "techno"] and model["model_genres"] == ["acid", "edm", "techno"]
    assert before["only"] is None and before["model_genres"] == before["genres"] == model["model_genres"]
    assert model["colors"] == before["colors"] and model["test"] == before["test"]  # the model's own figures
    among = verdict_metrics(restricted_verdicts(pd.read_csv(three_genre_run / "test-items.csv"), ["acid", "techno"]))
    got = model["only"]["held_out"]
    assert got["n"] == among["n"] == 3 and got["accuracy"] == pytest.approx(among["accuracy"])
    assert got["confusion"] == among["confusion"] and model["only"]["items_of"] == "test items of its run"
    assert np.asarray(got["confusion"]).shape == (2, 2)
    html = client.get("/model").get_data(as_text=True)
    assert "verdicts among 2 of its 3 genres" in html and "Among acid, techno only" in html
    assert 'class="confusion only"' in html and "<td>no</td>" in html
    assert "const GENRES = [\"acid\", \"techno\"]" in client.get("/").get_data(as_text=True)
    assert "Among" not in full.get("/model").get_data(as_text=True)

    alone = tmp_path / "alone.pt"  # no held-out verdicts beside it
    alone.write_bytes((three_genre_run / "best.pt").read_bytes())
    page = create_app(alone, only=["edm", "techno"]).test_client().get("/model").get_data(as_text=True)
    assert "how it does\namong these genres only is unknown" in page
    for only, words in [(["techno", "house"], "not a genre of this model: house"), (["techno"], "at least two")]:
        with pytest.raises(ConfigError, match=words):
            create_app(three_genre_run, only=only)


# ------------------------------------------------------------------ long audio, large bodies, exposure

def long_flac_bytes(seconds: float, sr: int = 4000) -> bytes:
    """``seconds`` of silence as FLAC: hours in a few hundred kilobytes."""
    import numpy as np

    buf = io.BytesIO()
    block = np.zeros(sr * 600, np.int16)
    with sf.SoundFile(buf, "w", samplerate=sr, channels=1, format="FLAC", subtype="PCM_16") as f:
        for start in range(0, int(seconds * sr), len(block)):
            f.write(block[: int(seconds * sr) - start])
    return buf.getvalue()


def test_a_small_upload_of_many_hours_is_refused_from_its_header(app, trained_run):
    """1 MB of FLAC holds 12 hours of silence: within the upload limit, it cost 24 s of
    CPU to decode and then fail.  Its header says how long it is, before any decoding."""
    import time

    data = long_flac_bytes(3.5 * 3600)
    assert len(data) < 1024 * 1024  # within this app's 1-MB limit
    t0 = time.process_time()
    r = post(app.test_client(), "night.flac", data)
    assert time.process_time() - t0 < 1.0
    assert r.status_code == 422 and r.json["error"] == ("too long: 3.5 h of audio by its header, more than the 3.0 h "
                                                       "allowed: night.flac")
    short_cap = create_app(trained_run, max_upload_mb=1, max_duration=5)
    r = post(short_cap.test_client(), "a.wav", wav_bytes(7.0))
    assert r.status_code == 422 and r.json["error"].startswith("too long: 7.0 s of audio by its header")
    assert post(app.test_client(), "a.wav", wav_bytes(7.0)).status_code == 200


def test_a_body_over_the_limit_gets_json_from_the_server_too(server):
    """Waitress refuses a body over its limit before the app sees it: that answer, too,
    is JSON like every other error."""
    import json
    import socket
    from urllib.parse import urlsplit

    url = urlsplit(server)
    with socket.create_connection((url.hostname, url.port), timeout=10) as sock:
        sock.sendall(b"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; "
                     b"boundary=x\r\nContent-Length: 50000000\r\n\r\n--x\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 413"), head
    assert b"content-type: application/json" in head.lower()
    assert json.loads(body) == {"error": "file too large: the limit is 1 MB"}
    r = requests.post(f"{server}/api/predict", files={"file": ("a.wav", b"\x00" * (1024 * 1024 + 100))}, timeout=30)
    assert r.status_code == 413 and r.json() == {"error": "file too large: the limit is 1 MB"}


@pytest.mark.parametrize("host,warned", [("0.0.0.0", True), ("::", True), ("192.0.2.7", True),
                                          ("127.0.0.1", False), ("localhost", False), ("::1", False)])
def test_serving_beyond_this_machine_warns_on_stderr(monkeypatch, capsys, host, warned):
    """An unauthenticated upload endpoint on every interface is worth one line."""
    from dancegenre.web import app as web

    class Server:
        effective_port = 8000

        def run(self):
            raise KeyboardInterrupt

    monkeypatch.setattr(web, "create_app", lambda *a, **k: object())
    monkeypatch.setattr(web, "make_server", lambda *a, **k: Server())
    monkeypatch.setattr(web, "close_server", lambda server: None)
    web.serve("run", host=host)
    err = capsys.readouterr().err.strip().splitlines()
    if warned:
        assert len(err) == 1 and err[0].startswith(f"dancegenre serve: warning: listening on {host} (")
        assert "no authentication" in err[0] and "--host 127.0.0.1" in err[0]
    else:
        assert err == []



def test_a_long_upload_whose_header_understates_it_is_stopped_while_decoding(trained_run, monkeypatch):
    # the header's check passes, as for a header that lies; decoding stops at the cap
    monkeypatch.setattr("dancegenre.web.app.check_duration", lambda path, cap: None)
    client = create_app(trained_run, max_upload_mb=1, max_duration=2).test_client()
    r = post(client, "long.wav", wav_bytes())
    assert r.status_code >= 400 and "too long" in r.json["error"], r.json
