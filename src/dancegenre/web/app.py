"""``dancegenre serve``: a local web page and JSON API for trying a model.

Drop audio files on the page to get, for each, the verdict, a bar per genre, the
per-segment timeline and the mel-spectrogram.  ``POST /api/predict`` (multipart field
``file``) answers the same as JSON; ``/openapi.json`` describes the API.

Uploads are size-limited, must be audio (by extension and by decoding), no longer
than ``max_duration`` (3 hours by default, read from the file's header before any
decoding), live in a private temporary file under a random name only while the request
runs, and a bad file gets a 4xx with a JSON message while the server keeps going.

The server is waitress (a production WSGI server, pure Python): a connection that sends
nothing for ``request_timeout`` seconds (a body shorter than its Content-Length, say) is
closed.  Only the Host names the server listens on are answered (no DNS rebinding), and
a POST from a page of another origin is refused unless ``allow_origins`` names it.
Nothing asks who uploads: a server that listens beyond this machine says so on stderr.
Pages come from Jinja2 templates with autoescape.
"""

from __future__ import annotations

import atexit
import base64
import io
import json
import os
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from dancegenre.audio.decode import AUDIO_EXTENSIONS, check_duration, check_max_duration, load
from dancegenre.audio.frontend import log_mel
from dancegenre.config import MAX_AUDIO_SECONDS, PORTS, UPLOAD_MB
from dancegenre.errors import ConfigError, DanceGenreError
from dancegenre.inference.classifier import Classifier
from dancegenre.safety import one_line_text
from dancegenre.training.runs import held_out_beside, results_beside

DEFAULT_MAX_UPLOAD_MB = 100  # a 2-hour 128 kbps mix is ~115 MB; previews are < 1 MB
DEFAULT_REQUEST_TIMEOUT = 30  # seconds a connection may stay silent (mid-upload too)
TOP_K = 3  # genres in an answer: genre, then genre_2, p_2, genre_3, p_3
WEB = "dancegenre.web"  # its templates/: index.html, model.html, style.css
LOOPBACK_NAMES = ("localhost", "127.0.0.1", "::1")
ANY_ADDRESS = ("0.0.0.0", "::", "")
SPECTROGRAM_SECONDS = 30.0  # the picture shows the first 30 s


def spectrogram_png(path: str, clf: Classifier) -> str:
    """The first 30 s of ``path`` as a log-mel PNG data URI (the model's own front end)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure  # no pyplot: safe in request threads

    config = clf.config
    y = load(path, sr=config.sample_rate, max_seconds=SPECTROGRAM_SECONDS)
    db = log_mel(y, config)
    fig = Figure(figsize=(7, 2.2), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    image = ax.imshow(db, origin="lower", aspect="auto", cmap="magma", vmin=config.display_range[0],
                      vmax=config.display_range[1], extent=(0, len(y) / config.sample_rate, 0, config.n_mels))
    fig.colorbar(image, ax=ax, pad=0.01).set_label(config.scale_unit, fontsize=7)
    ax.set_xlabel("time (s)"); ax.set_ylabel("mel band")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=80)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def frontend_words(config: Any) -> str:
    """The front end in a sentence: what a user needs to know about the network's input."""
    scale = "log10(1 + 10000 mel)" if config.scale == "logC" else "dB"
    preset = f" (the {config.frontend} preset)" if config.frontend else ""
    return (f"{config.sample_rate:,} Hz mono, {config.n_mels} mel bands (FFT {config.n_fft}, hop "
            f"{config.hop_length}), {scale}{preset}; segments of {config.segment_seconds:.2f} s every "
            f"{config.segment_hop_seconds:.2f} s, one verdict a file from their mean")


def model_summary(clf: Classifier) -> dict[str, Any]:
    """What ``/model`` shows and ``/api/model`` answers: the genres (with how many items
    of each trained, validated and tested), the network and its front end, the split,
    and the validation and test metrics of the run the checkpoint comes from
    (``only``: None; see :func:`restricted_summary`)."""
    from dancegenre.models.registry import count_parameters
    from dancegenre.present.figures import genre_colors
    from dancegenre.training.runs import split_beside

    ckpt = clf.checkpoint
    results = results_beside(ckpt.path)
    split = split_beside(ckpt.path)
    sides = {k: len(v) for k, v in ckpt.split.get("sides", {}).items()}
    per_genre = {lab: {"train": 0, "val": 0, "test": 0} for lab in clf.labels}
    if split is not None and {"label", "side"} <= set(split.columns):
        for (lab, side), n in split.groupby(["label", "side"]).size().items():
            if lab in per_genre and side in per_genre[lab]:
                per_genre[lab][side] = int(n)
    else:  # no split table beside the checkpoint: the sides' sizes only
        per_genre = {}
    validation = results.get("validation") or ({"summary": ckpt.validation} if ckpt.validation else {})
    held_out = None  # an ensemble's: its sources' out-of-fold verdicts averaged (cv-items.csv beside it)
    beside = None if results.get("test") else held_out_beside(ckpt.path)
    if beside is not None and [c[2:] for c in beside[0].columns if c.startswith("p_")] == list(clf.labels):
        from dancegenre.training.scoring import verdict_metrics

        held_out = {"items_of": beside[1], "item": verdict_metrics(beside[0])}
    return {
        "genres": clf.labels, "model_genres": clf.labels, "only": None,
        "colors": genre_colors(clf.labels), "items_per_genre": per_genre,
        "model": {**ckpt.model_config.to_dict(), "parameters": count_parameters(ckpt.model)},
        "features": ckpt.feature_config.to_dict(), "frontend": frontend_words(ckpt.feature_config),
        "split_by": ckpt.split.get("column"), "items_per_side": sides, "seed": ckpt.split.get("seed"),
        "epoch": ckpt.epoch, "ensemble_of": ckpt.ensemble_of, "cv": ckpt.cv,
        "validation": validation, "test": results.get("test") or {}, "held_out": held_out,
    }


def restricted_summary(summary: dict[str, Any], clf: Classifier) -> dict[str, Any]:
    """``summary`` (:func:`model_summary`) for a classifier restricted to some of its
    genres (``serve --only``): ``genres`` become those, ``model_genres`` keeps every
    genre the network knows (its figures and ``items_per_genre`` stay those of every
    genre), and ``only`` holds the held-out figures among the kept genres, computed from
    the verdicts beside the checkpoint the way the restricted verdicts are given
    (:func:`~dancegenre.training.runs.restricted_verdicts`), or None where there are none."""
    from dancegenre.training.runs import restricted_verdicts
    from dancegenre.training.scoring import verdict_metrics

    only: dict[str, Any] = {"genres": list(clf.labels), "held_out": None, "items_of": None}
    beside = held_out_beside(clf.checkpoint.path)
    if beside is not None:
        table, words = beside
        cut = restricted_verdicts(table, clf.labels) if set(clf.labels) <= {c[2:] for c in table.columns
                                                                            if c.startswith("p_")} else None
        if cut is not None and len(cut):
            only["held_out"], only["items_of"] = verdict_metrics(cut), words
    return {**summary, "genres": list(clf.labels), "model_genres": list(clf.all_labels), "only": only}


def confusion_png(matrix: list[list[int]], labels: list[str], title: str) -> str:
    """A confusion matrix as a PNG data URI, drawn the way reports draw it."""
    import numpy as np

    from dancegenre.inference.evaluate import plot_confusion

    buf = io.BytesIO()
    plot_confusion(np.asarray(matrix), labels, buf, title=title)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


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
                    "422": {"description": "not decodable, too short, or longer than the server's limit "
                                           "(3 hours by default)",
                            "content": {"application/json": {"schema": error}}},
                }}},
            "/api/model": {"get": {
                "summary": "The model: genres (items of each per side), network, front end, split, "
                           "validation and test metrics",
                "responses": {"200": {"description": "model summary", "content": {"application/json": {
                    "schema": {"type": "object", "properties": {
                        "genres": {"type": "array", "items": {"type": "string"}},
                        "colors": {"type": "object", "additionalProperties": {"type": "string"},
                                   "description": "each genre's colour on the page and in figures"},
                        "items_per_genre": {"type": "object", "description": "genre -> {train, val, test} items"},
                        "model": {"type": "object", "description": "the network's config and its parameters"},
                        "features": {"type": "object"}, "frontend": {"type": "string"},
                        "split_by": {"type": "string"}, "items_per_side": {"type": "object"},
                        "validation": {"type": "object", "description": "{item, segment} metrics"},
                        "test": {"type": "object", "description": "{item, segment} metrics"},
                        "model_genres": {"type": "array", "items": {"type": "string"},
                                         "description": "with serve --only: every genre of the network"},
                        "only": {"type": "object", "description": "with serve --only: the genres of the verdicts "
                                 "and the held-out item metrics among them (held_out, items_of)"}}}}}}}}},
            "/model": {"get": {"summary": "The same as a page for people (HTML)",
                               "responses": {"200": {"description": "text/html"}}}},
        },
    }


def host_names(host: str, extra: list[str] | tuple[str, ...] = ()) -> set[str]:
    """The Host names (without port) a server listening on ``host`` answers to: the
    address itself, the loopback names for a loopback or any-address server, this
    machine's names and addresses for an any-address one, and ``extra`` (the names a
    reverse proxy or DNS gives it)."""
    import socket

    names = {host.strip("[]").lower()}
    if host in ANY_ADDRESS or is_loopback(host):
        names |= set(LOOPBACK_NAMES)
    if host in ANY_ADDRESS:
        names |= {socket.gethostname().lower(), socket.getfqdn().lower()}
        try:
            names |= {str(info[4][0]).lower() for info in socket.getaddrinfo(socket.gethostname(), None)}
        except OSError:
            pass
    return (names | {e.lower() for e in extra}) - {""}


def is_loopback(host: str) -> bool:
    """True when a server listening on ``host`` is reachable from this machine only: a
    loopback address, or a name whose every address is one (``localhost``)."""
    import ipaddress
    import socket

    if host in ANY_ADDRESS:
        return False
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        found = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
    except OSError:
        return host.lower() == "localhost"
    return bool(found) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in found)


def exposure_warning(host: str) -> str | None:
    """The line ``serve`` prints on stderr when it listens beyond this machine (None on
    a loopback address): the upload endpoint asks no one who they are."""
    if is_loopback(host):
        return None
    where = "every network interface" if host in ANY_ADDRESS else "an address other machines can reach"
    return (f"dancegenre serve: warning: listening on {one_line_text(host) or repr(host)} ({where}); there is "
            "no authentication: anyone who can reach it can upload files and use the model; --host 127.0.0.1 "
            "keeps it on this machine")


def too_large_message(max_upload_mb: float) -> str:
    """What an upload over the limit is answered, by the app and by the server alike."""
    return f"file too large: the limit is {max_upload_mb:g} MB"


def web_origin(text: str) -> str:
    """``text`` as the origin a browser sends (``scheme://host[:port]``, lower case), or ``*``.

    Raises ConfigError for anything a browser never sends as an Origin (a path, a query,
    no scheme or host), which would never match and so allow nothing, silently."""
    from urllib.parse import urlsplit

    origin = text.strip().rstrip("/").lower()
    if origin == "*":
        return origin
    try:
        parts = urlsplit(origin)
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        parts = None
    if parts is None or not parts.scheme or not parts.hostname or parts.path or parts.query or parts.fragment \
            or "@" in parts.netloc:  # a scheme of its own is fine: chrome-extension://<id>
        raise ConfigError(f"--allow-origin {text!r} is not an origin: give scheme://host[:port], "
                          "e.g. https://example.org (no path), or *")
    return origin


def _hostname(host_header: str) -> str:
    """``name`` of a Host header ``name:port`` or ``[v6]:port``, lower case."""
    h = host_header.strip().lower()
    if h.startswith("["):
        return h[1:h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def finite_json(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None: JSON has no NaN, and
    a browser's JSON.parse refuses it."""
    import math

    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def check_upload_limit(max_upload_mb: object) -> float:
    """``max_upload_mb`` if it is a size within :data:`~dancegenre.config.UPLOAD_MB` (as
    ``--max-upload-mb``), else ConfigError."""
    low, high = UPLOAD_MB
    if isinstance(max_upload_mb, bool) or not isinstance(max_upload_mb, (int, float)) \
            or not low <= max_upload_mb <= high:
        raise ConfigError(f"max_upload_mb must be from {low:g} to {high:g} (MB), not {max_upload_mb!r}")
    return float(max_upload_mb)


def create_app(checkpoint: str | os.PathLike[str], *, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
               allowed_hosts: set[str] | None = None, allow_origins: list[str] | tuple[str, ...] = (),
               only: Sequence[str] | None = None, max_duration: float | None = MAX_AUDIO_SECONDS) -> Any:
    """The Flask app for ``checkpoint`` (a run folder or .pt file).

    ``only``: verdicts among these of the model's genres (at least two; see
    :meth:`Classifier.restrict`); raises ConfigError for a genre the model lacks.

    ``max_duration``: seconds; a longer upload is answered 422 from its header, before
    any decoding (:data:`~dancegenre.config.MAX_AUDIO_SECONDS`, 3 hours, by default;
    None: no cap).  The upload limit alone bounds nothing: 1 MB of FLAC holds 12 hours
    of silence.

    ``allowed_hosts``: the Host names answered (see :func:`host_names`); None answers
    any (the test client).  ``allow_origins``: origins (``https://example.org``) whose
    pages may POST to ``/api/predict``; ``*`` allows any.
    """
    from flask import Flask, Response, jsonify, request
    from flask.json.provider import DefaultJSONProvider
    from werkzeug.exceptions import RequestEntityTooLarge

    from dancegenre.present.html import render, stylesheet

    check_upload_limit(max_upload_mb)
    max_duration = check_max_duration(max_duration)
    css = stylesheet() + stylesheet(WEB)  # the base of every page, then the web page's own
    origins = {web_origin(o) for o in allow_origins}
    clf = Classifier.load(checkpoint)
    lock = threading.Lock()  # one inference at a time: the model is shared

    class FiniteJSON(DefaultJSONProvider):
        sort_keys = False  # keys in their order: genres as the model has them, tags most likely first

        def dumps(self, obj: Any, **kwargs: Any) -> str:
            return super().dumps(finite_json(obj), **kwargs)

    app = Flask("dancegenre")
    app.json = FiniteJSON(app)
    app.config["MAX_CONTENT_LENGTH"] = int(max_upload_mb * 1024 * 1024)
    upload_dir = tempfile.mkdtemp(prefix="dancegenre-uploads-")
    atexit.register(shutil.rmtree, upload_dir, True)

    def fail(status: int, message: str) -> Any:
        return jsonify({"error": message}), status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(_: Exception) -> Any:
        return fail(413, too_large_message(max_upload_mb))

    def same_origin(origin: str) -> bool:
        return origin == f"{request.scheme}://{request.host}".lower()

    @app.before_request
    def guard() -> Any:
        if allowed_hosts is not None and _hostname(request.host) not in allowed_hosts:
            # a page of another site reaching us through a rebound DNS name
            return fail(421, f"this server does not answer to the host name {_hostname(request.host)!r}; "
                             "start it with --allow-host for that name")
        origin = (request.headers.get("Origin") or "").rstrip("/").lower()
        if (request.method not in ("GET", "HEAD", "OPTIONS") and origin and not same_origin(origin)
                and origin not in origins and "*" not in origins):
            return fail(403, f"cross-origin request from {origin} refused; start serve with --allow-origin {origin} "
                             "to accept it")
        return None

    @app.after_request
    def headers(response: Response) -> Response:
        origin = (request.headers.get("Origin") or "").rstrip("/").lower()
        if origin and (origin in origins or "*" in origins) and request.path.startswith("/api/"):
            response.headers["Access-Control-Allow-Origin"] = origin
            response.headers["Vary"] = "Origin"
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        return response

    summary = model_summary(clf)
    held_out = "test" if summary["test"] else "validation"
    confusion = summary[held_out].get("item", {}).get("confusion")
    if not confusion and summary["held_out"]:  # an ensemble: its cross-validations' out-of-fold verdicts
        held_out, confusion = "held-out", summary["held_out"]["item"]["confusion"]
    confusion_image = confusion_png(confusion, clf.labels, f"{held_out} items (one verdict per file)") \
        if confusion else None
    only_confusion = None
    if only is not None:
        clf.restrict(only)
        summary = restricted_summary(summary, clf)
        among = summary["only"]["held_out"]
        if among is not None:
            only_confusion = confusion_png(among["confusion"], clf.labels,
                                           f"held-out items among {len(clf.labels)} genres")

    @app.get("/")
    def index() -> Response:
        return Response(render("index.html", package=WEB, css=css, max_mb=f"{max_upload_mb:g}",
                               genres=clf.labels, colors=summary["colors"]), mimetype="text/html")

    @app.get("/model")
    def model_page() -> Response:
        return Response(render("model.html", package=WEB, css=css, summary=summary, confusion=confusion_image,
                               confusion_side=held_out, only_confusion=only_confusion,
                               checkpoint=Path(clf.checkpoint.path).name),
                        mimetype="text/html")

    @app.get("/api/model")
    def model_api() -> Any:
        return jsonify(summary)

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
            check_duration(tmp, max_duration)  # the header only: a long file costs no decoding
            with lock:
                result = clf.predict(tmp, max_duration=max_duration)
            body = result.to_dict(top_k=TOP_K)
            body.pop("path", None)
            body["filename"] = Path(upload.filename).name
            body["spectrogram"] = spectrogram_png(tmp, clf)
            return jsonify(body)
        except DanceGenreError as exc:
            return fail(422, str(exc).replace(tmp, Path(upload.filename).name))
        finally:
            Path(tmp).unlink(missing_ok=True)

    return app


def _json_channel(too_large: str) -> type:
    """A waitress channel class whose own error answers (a body over the size limit,
    a malformed request) are JSON ``{"error": ...}``, as the app's are, not text."""
    from waitress.channel import HTTPChannel
    from waitress.task import ErrorTask

    class JSONErrorTask(ErrorTask):
        def execute(self) -> None:
            error = self.request.error
            message = too_large if error.code == 413 else f"{error.reason.lower()}: {error.body}"
            body = json.dumps({"error": message}).encode()
            self.status = f"{error.code} {error.reason}"
            self.response_headers.append(("Content-Type", "application/json"))
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    class JSONChannel(HTTPChannel):
        error_task_class = JSONErrorTask

    return JSONChannel


def make_server(app: Any, *, host: str = "127.0.0.1", port: int = 8000, max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB,
                request_timeout: float = DEFAULT_REQUEST_TIMEOUT, threads: int = 4) -> Any:
    """A waitress server for ``app`` (``.run()`` serves; ``.effective_port`` is the port).

    A connection silent for ``request_timeout`` seconds is closed; a body over the
    upload limit is refused before it is read whole, with the JSON answer the app
    gives (``{"error": "file too large: ..."}``, 413).

    Raises ConfigError: the address cannot be listened on (taken, not this machine's, not
    an address or a name at all)."""
    from waitress.server import create_server

    check_upload_limit(max_upload_mb)
    if isinstance(port, bool) or not isinstance(port, int) or not PORTS[0] <= port <= PORTS[1]:
        raise ConfigError(f"port must be a whole number from 0 (any free port) to {PORTS[1]}, not {port!r}")
    from waitress.server import BaseWSGIServer

    try:
        server = create_server(app, host=host, port=port, threads=threads, channel_timeout=request_timeout,
                               cleanup_interval=max(1, min(30, int(request_timeout / 2))),
                               max_request_body_size=int(max_upload_mb * 1024 * 1024) + 64 * 1024,
                               ident="dancegenre", clear_untrusted_proxy_headers=True)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    except ValueError:  # waitress: the host resolves to no address
        raise ConfigError(f"cannot listen on {host!r}: not an address or a name of this machine") from None
    channel = _json_channel(too_large_message(max_upload_mb))
    # every listening socket (a name such as localhost may give two) makes its connections JSON-speaking
    for listener in getattr(server, "_map", getattr(server, "map", {})).values():
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = channel
    return server


def close_server(server: Any) -> None:
    """Close a server made by :func:`make_server` whose loop has ended.

    Waitress's own ``close()`` leaves its request threads running and closes only the
    listening socket and the wake-up pipe.  A request thread that finishes afterwards
    writes a byte to that pipe's closed descriptor, which by then may belong to another
    file of the process (a child's stdout, say).  So the threads are joined first, then
    every connection, the socket and the pipe are closed."""
    server.task_dispatcher.shutdown()
    _close_sockets(server)


def _close_sockets(server: Any) -> None:
    for dispatcher in list(server._map.values()):
        dispatcher.close()


@contextmanager
def serving(server: Any, timeout: float = 10.0) -> Iterator[str]:
    """Serve ``server`` (from :func:`make_server`) on a background thread; yields its URL.

    On exit the request threads are joined, everything is closed from the server's own
    loop (so the loop never polls a closed descriptor) and the thread is waited for::

        with serving(make_server(create_app("runs/demo"), port=0)) as url:
            requests.get(url)
    """
    thread = threading.Thread(target=server.run, name="dancegenre-serve", daemon=True)
    thread.start()
    host = server.effective_host
    try:
        yield f"http://{f'[{host}]' if ':' in host else host}:{server.effective_port}"
    finally:
        server.task_dispatcher.shutdown()
        server.trigger.pull_trigger(lambda: _close_sockets(server))  # the loop ends with its map empty
        thread.join(timeout)


def serve(checkpoint: str | os.PathLike[str], *, host: str = "127.0.0.1", port: int = 8000,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, allow_hosts: list[str] | tuple[str, ...] = (),
          allow_origins: list[str] | tuple[str, ...] = (), request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
          only: Sequence[str] | None = None, max_duration: float | None = MAX_AUDIO_SECONDS) -> None:
    """Serve the app with waitress until Ctrl-C; one warning line on stderr when ``host``
    is not a loopback address (:func:`exposure_warning`).  ``max_duration``: seconds of
    audio an upload may hold (:func:`create_app`).

    Raises
    ------
    ConfigError
        The address cannot be listened on, or a limit is out of range.
    """
    app = create_app(checkpoint, max_upload_mb=max_upload_mb, allowed_hosts=host_names(host, allow_hosts),
                     allow_origins=allow_origins, only=only, max_duration=max_duration)
    server = make_server(app, host=host, port=port, max_upload_mb=max_upload_mb, request_timeout=request_timeout)
    warning = exposure_warning(host)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    shown = f"[{host}]" if ":" in host else host
    print(f"dancegenre serve: http://{shown}:{server.effective_port}/ (Ctrl-C stops)", flush=True)
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        close_server(server)


