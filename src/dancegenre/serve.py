"""``dancegenre serve``: a local web page and JSON API for trying a model.

Drop audio files on the page to get, for each, the verdict, a bar per genre, the
per-segment timeline and the mel-spectrogram.  ``POST /api/predict`` (multipart field
``file``) answers the same as JSON; ``/openapi.json`` describes the API.

Uploads are size-limited, must be audio (by extension and by decoding), live in a
private temporary file under a random name only while the request runs, and a bad file
gets a 4xx with a message while the server keeps going.
"""

from __future__ import annotations

import atexit
import base64
import io
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any


from dancegenre.audio import AUDIO_EXTENSIONS, load
from dancegenre.errors import DanceGenreError
from dancegenre.features import log_mel
from dancegenre.predict import Classifier

DEFAULT_MAX_UPLOAD_MB = 100  # a 2-hour 128 kbps mix is ~115 MB; previews are < 1 MB
SPECTROGRAM_SECONDS = 30.0  # the picture shows the first 30 s


def spectrogram_png(path: str, clf: Classifier) -> str:
    """The first 30 s of ``path`` as a log-mel PNG data URI (the model's own front end)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: safe in request threads

    config = clf.config
    y = load(path, sr=config.sample_rate, max_seconds=SPECTROGRAM_SECONDS)
    db = log_mel(y, config)
    fig = Figure(figsize=(7, 2.2))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=-80, vmax=20,
              extent=(0, len(y) / config.sample_rate, 0, config.n_mels))
    ax.set_xlabel("time (s)"); ax.set_ylabel("mel band")
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def model_summary(clf: Classifier) -> dict[str, Any]:
    ckpt = clf.checkpoint
    sides = {k: len(v) for k, v in ckpt.split.get("sides", {}).items()}
    summary: dict[str, Any] = {"genres": clf.labels, "model": ckpt.model_config.to_dict(),
                               "features": ckpt.feature_config.to_dict(), "split_by": ckpt.split.get("column"),
                               "items_per_side": sides, "epoch": ckpt.extra.get("epoch"),
                               "validation": ckpt.extra.get("val")}
    results = ckpt.path.parent / "results.json"
    if results.exists():
        test = json.loads(results.read_text()).get("test", {})
        if test:
            summary["test"] = {level: {k: test[level][k] for k in ("n", "accuracy", "macro_f1", "roc_auc")}
                               for level in ("item", "segment")}
    return summary


def openapi_spec() -> dict[str, Any]:
    prediction = {"type": "object", "properties": {
        "filename": {"type": "string"}, "genre": {"type": "string"}, "confidence": {"type": "number"},
        "probabilities": {"type": "object", "additionalProperties": {"type": "number"}},
        "timeline": {"type": "array", "items": {"type": "object"}},
        "sections": {"type": "array", "items": {"type": "object"}},
        "tags": {"type": "object", "additionalProperties": {"type": "number"},
                 "description": "runs on a pretrained musicnn: its 5 most likely MSD/MTT tags"},
        "spectrogram": {"type": "string", "description": "PNG data URI of the first 30 s"}}}
    error = {"type": "object", "properties": {"error": {"type": "string"}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "dancegenre", "version": "1", "description": "Genre of an audio file, with a timeline."},
        "paths": {
            "/api/predict": {"post": {
                "summary": "Predict the genre of one uploaded audio file",
                "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file"],
                    "properties": {"file": {"type": "string", "format": "binary"}}}}}},
                "responses": {
                    "200": {"description": "the verdict", "content": {"application/json": {"schema": prediction}}},
                    "400": {"description": "no file", "content": {"application/json": {"schema": error}}},
                    "413": {"description": "too large", "content": {"application/json": {"schema": error}}},
                    "415": {"description": "not an audio file type", "content": {"application/json": {"schema": error}}},
                    "422": {"description": "not decodable or too short", "content": {"application/json": {"schema": error}}},
                }}},
            "/api/model": {"get": {"summary": "The model: genres, training data, metrics",
                                   "responses": {"200": {"description": "model summary"}}}},
        },
    }


def create_app(checkpoint: str | os.PathLike[str], *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> Any:
    """The Flask app for ``checkpoint`` (a run folder or .pt file)."""
    from flask import Flask, Response, jsonify, request
    from werkzeug.exceptions import RequestEntityTooLarge

    clf = Classifier.load(checkpoint)
    lock = threading.Lock()  # one inference at a time: the model is shared
    app = Flask("dancegenre")
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    upload_dir = tempfile.mkdtemp(prefix="dancegenre-uploads-")
    atexit.register(shutil.rmtree, upload_dir, True)

    def fail(status: int, message: str) -> Any:
        return jsonify({"error": message}), status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: Exception) -> Any:
        return fail(413, f"file too large: the limit is {max_upload_mb:g} MB")

    @app.get("/")
    def index() -> Response:
        return Response(INDEX_HTML.replace("__MAX_MB__", f"{max_upload_mb:g}"), mimetype="text/html")

    @app.get("/model")
    def model_page() -> Response:
        s = model_summary(clf)
        rows = "".join(f"<tr><th>{k}</th><td><pre>{json.dumps(v, indent=1)}</pre></td></tr>" for k, v in s.items())
        return Response(f"<!DOCTYPE html><html><head><meta charset=utf-8><title>dancegenre model</title>"
                        f"<style>{PAGE_CSS}</style></head><body><h1>Model</h1><p><a href='/'>back</a></p>"
                        f"<table>{rows}</table></body></html>", mimetype="text/html")

    @app.get("/api/model")
    def model_api() -> Any:
        return jsonify(model_summary(clf))

    @app.get("/openapi.json")
    def openapi() -> Any:
        return jsonify(openapi_spec())

    @app.post("/api/predict")
    def predict() -> Any:
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            return fail(400, "no file: send one as the multipart field 'file'")
        suffix = Path(upload.filename).suffix.lower()
        if suffix not in AUDIO_EXTENSIONS:
            return fail(415, f"not an audio file type ({suffix or 'no extension'}); accepted: {', '.join(AUDIO_EXTENSIONS)}")
        # A random name in our own folder: the user's file name never touches the disk.
        fd, tmp = tempfile.mkstemp(suffix=suffix, dir=upload_dir)
        try:
            with os.fdopen(fd, "wb") as fh:
                upload.save(fh)
            if os.path.getsize(tmp) == 0:
                return fail(400, "the file is empty")
            with lock:
                result = clf.predict(tmp)
            body = result.to_dict()
            body.pop("path", None)
            body["filename"] = Path(upload.filename).name
            body["spectrogram"] = spectrogram_png(tmp, clf)
            return jsonify(body)
        except DanceGenreError as exc:
            return fail(422, str(exc).replace(tmp, Path(upload.filename).name))
        finally:
            Path(tmp).unlink(missing_ok=True)

    return app


def serve(checkpoint: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> None:
    """Run the app with a threaded server until Ctrl-C."""
    from werkzeug.serving import make_server

    app = create_app(checkpoint, max_upload_mb=max_upload_mb)
    server = make_server(host, port, app, threaded=True)
    print(f"dancegenre serve: http://{host}:{server.server_port}/ (Ctrl-C stops)")
    server.serve_forever()


PAGE_CSS = """body{font-family:system-ui,sans-serif;max-width:980px;margin:2em auto;padding:0 1em;color:#222}
#drop{border:2px dashed #888;border-radius:10px;padding:2.5em;text-align:center;background:#fafafa}
#drop.over{background:#eef5ff;border-color:#36c}.card{border:1px solid #ddd;border-radius:8px;padding:1em;margin:1em 0}
.bar{height:1.1em;background:#36c;border-radius:3px}.barrow{display:flex;align-items:center;gap:.6em;margin:.2em 0}
.barrow span{width:9em}.barwrap{flex:1;background:#eee;border-radius:3px}.error{color:#b00}
.verdict{font-size:1.3em;font-weight:600}img{max-width:100%}table{border-collapse:collapse}
td,th{border:1px solid #ddd;padding:.3em .6em;text-align:left;vertical-align:top}pre{margin:0}"""

INDEX_HTML = """<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>dancegenre</title>
<style>""" + PAGE_CSS + """</style></head><body>
<h1>dancegenre</h1><p>Drop audio files (mp3, m4a, wav, flac, ogg, opus; up to __MAX_MB__ MB each) to see what the
model hears. <a href="/model">About the model</a> &middot; <a href="/openapi.json">API</a></p>
<div id="drop">Drop files here, or <input id="files" type="file" multiple accept="audio/*,.mp3,.m4a,.wav,.flac,.ogg,.opus,.aiff"></div>
<div id="results"></div>
<script>
const COLORS = ["#36c", "#e63", "#393", "#c3c", "#fa0", "#0aa", "#666", "#a52"];
function el(tag, attrs, text) { const e = document.createElement(tag); Object.assign(e, attrs || {}); if (text !== undefined) e.textContent = text; return e; }
function timelineSvg(timeline, genres) {
  const w = 900, h = 160, pad = 30;
  const ns = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", `0 0 ${w} ${h}`); svg.setAttribute("class", "timeline"); svg.style.width = "100%";
  const end = timeline.length ? timeline[timeline.length - 1].end : 1;
  genres.forEach((g, k) => {
    const pts = timeline.map(r => `${pad + (r.start / end) * (w - 2 * pad)},${h - pad - r[g] * (h - 2 * pad)}`).join(" ");
    const line = document.createElementNS(ns, "polyline");
    line.setAttribute("points", pts); line.setAttribute("fill", "none");
    line.setAttribute("stroke", COLORS[k % COLORS.length]); line.setAttribute("stroke-width", "2");
    svg.appendChild(line);
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", w - pad - 120); label.setAttribute("y", 14 + 14 * k); label.setAttribute("fill", COLORS[k % COLORS.length]);
    label.textContent = g; svg.appendChild(label);
  });
  const axis = document.createElementNS(ns, "text");
  axis.setAttribute("x", pad); axis.setAttribute("y", h - 8); axis.textContent = `0 s ... ${end.toFixed(0)} s (probability per 3-second segment)`;
  svg.appendChild(axis);
  return svg;
}
function upload(file) {
  const card = el("div", {className: "card"});
  card.appendChild(el("h3", {}, file.name));
  const status = el("p", {className: "status"}, "uploading 0%");
  card.appendChild(status);
  document.getElementById("results").prepend(card);
  const form = new FormData(); form.append("file", file);
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/predict");
  xhr.upload.onprogress = e => { if (e.lengthComputable) status.textContent = `uploading ${Math.round(100 * e.loaded / e.total)}%`; };
  xhr.upload.onload = () => { status.textContent = "analysing..."; };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = {error: `server answered ${xhr.status}`}; }
    if (xhr.status !== 200) { status.className = "error"; status.textContent = body.error || `error ${xhr.status}`; return; }
    status.remove();
    card.appendChild(el("p", {className: "verdict"}, `${body.genre} (${(100 * body.confidence).toFixed(0)}%)`));
    const genres = Object.keys(body.probabilities);
    genres.forEach(g => {
      const row = el("div", {className: "barrow"}); row.appendChild(el("span", {}, g));
      const wrap = el("div", {className: "barwrap"}); const bar = el("div", {className: "bar"});
      bar.style.width = `${(100 * body.probabilities[g]).toFixed(1)}%`; wrap.appendChild(bar); row.appendChild(wrap);
      row.appendChild(el("span", {}, `${(100 * body.probabilities[g]).toFixed(1)}%`)); card.appendChild(row);
    });
    if (body.tags) {  // a run on the pretrained musicnn: its own tags, beside the verdict
      const t = Object.entries(body.tags).map(([k, v]) => `${k} ${(100 * v).toFixed(0)}%`).join(", ");
      card.appendChild(el("p", {className: "tags"}, `pretrained tags: ${t}`));
    }
    card.appendChild(timelineSvg(body.timeline, genres));
    card.appendChild(el("img", {className: "spectrogram", src: body.spectrogram, alt: "mel spectrogram"}));
  };
  xhr.onerror = () => { status.className = "error"; status.textContent = "the upload failed (is the server running?)"; };
  xhr.send(form);
}
const drop = document.getElementById("drop");
drop.addEventListener("dragover", e => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", e => { e.preventDefault(); drop.classList.remove("over"); [...e.dataTransfer.files].forEach(upload); });
document.getElementById("files").addEventListener("change", e => [...e.target.files].forEach(upload));
</script></body></html>"""
