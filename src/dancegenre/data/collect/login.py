"""Signing in to Spotify as the user: Authorization Code with PKCE, through spotipy.

Since 2026 a Development Mode app reads a playlist's items only for the signed-in user
who owns or collaborates on it, so ``collect spotify login`` signs that user in: the
client id only (no secret), a loopback redirect URI ``http://127.0.0.1:PORT/callback``
(Spotify no longer accepts ``localhost``), the browser opened with ``webbrowser`` (so
``BROWSER`` is honoured) and the redirect caught on that port; or, with
``--no-browser``, the URL printed and the redirected URL pasted back.  The sign-in sends
a random ``state`` and takes only a redirect that brings it back: another page cannot
sign the user in with a code of its own.  The tokens are
kept in the user's config folder (``$DANCEGENRE_CONFIG``, else
``$XDG_CONFIG_HOME/dancegenre``, else ``~/.config/dancegenre``) in a file of mode 0600,
never in the working directory, never printed.
"""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dancegenre.data.collect.http import SPOTIFY_AUTH, TIMEOUT, CollectError
from dancegenre.safety import atomic_path

SCOPES = "playlist-read-private playlist-read-collaborative"
DEFAULT_PORT = 8888


def config_dir() -> Path:
    if os.environ.get("DANCEGENRE_CONFIG"):
        return Path(os.environ["DANCEGENRE_CONFIG"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "dancegenre"


def token_path() -> Path:
    return config_dir() / "spotify-login.json"


def _cache_handler() -> Any:
    from spotipy.cache_handler import CacheHandler

    class PrivateFile(CacheHandler):
        """spotipy's token cache as a file only its owner can read (mode 0600)."""

        def get_cached_token(self) -> dict[str, Any] | None:
            try:
                return json.loads(token_path().read_text())
            except (OSError, ValueError):
                return None

        def save_token_to_cache(self, token_info: dict[str, Any]) -> None:
            path = token_path()
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            with atomic_path(path, mode=0o600) as part:
                fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # yours alone from the start
                with os.fdopen(fd, "w") as f:
                    json.dump(token_info, f)
                os.chmod(part, 0o600)

    return PrivateFile()


def auth_manager(client_id: str, *, port: int = DEFAULT_PORT, open_browser: bool = True) -> Any:
    """spotipy's PKCE manager, its authorize and token URLs on ``DANCEGENRE_SPOTIFY_AUTH_URL``'s
    origin, sending a random ``state`` and refusing a redirect without it."""
    from spotipy.oauth2 import SpotifyPKCE, start_local_http_server

    token_url = os.environ.get("DANCEGENRE_SPOTIFY_AUTH_URL", "").strip() or SPOTIFY_AUTH
    parts = urlparse(token_url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise CollectError("DANCEGENRE_SPOTIFY_AUTH_URL must be an http(s) URL")

    class _PKCE(SpotifyPKCE):
        OAUTH_TOKEN_URL = token_url
        OAUTH_AUTHORIZE_URL = f"{parts.scheme}://{parts.netloc}/authorize"

        def _get_auth_response(self, open_browser: bool | None = None) -> str:
            # spotipy checks the state too, but fails with a TypeError (or AttributeError)
            # when a redirect brings none: the check is ours, one clear line
            if self.open_browser if open_browser is None else open_browser:
                server = start_local_http_server(port)
                self._open_auth_url()
                server.handle_request()
                state, code, error = getattr(server, "state", None), server.auth_code, server.error
                if error is not None:
                    raise error
            else:
                reply = self._get_user_input(f"Go to the following URL: {self.get_authorize_url()}\n"
                                             "Enter the URL you were redirected to: ")
                state, code = self.parse_auth_response_url(reply)
            return _checked_code(self.state, state, code)

    return _PKCE(client_id=client_id, redirect_uri=f"http://127.0.0.1:{port}/callback", scope=SCOPES,
                 cache_handler=_cache_handler(), open_browser=open_browser, requests_timeout=TIMEOUT,
                 state=secrets.token_urlsafe(16))


def _checked_code(sent: str, state: str | None, code: str | None) -> str:
    """``code`` when the redirect brought back the ``state`` we ``sent``; CollectError for
    a redirect this sign-in did not start (another page's, or an old one)."""
    if not state or not secrets.compare_digest(state.encode(), sent.encode()):
        raise CollectError("Spotify sign-in refused: the redirect does not carry the state this sign-in sent "
                           "(a redirect from another page, or an old one); sign in again")
    if not code:
        from spotipy.oauth2 import SpotifyOauthError

        raise SpotifyOauthError("no code came back")
    return code


def client_id() -> str:
    from dancegenre.data.collect.spotify import read_dotenv

    cid = {**read_dotenv(), **os.environ}.get("SPOTIPY_CLIENT_ID", "")
    if not cid:
        raise CollectError("signing in needs SPOTIPY_CLIENT_ID (environment or a .env file; no secret needed)")
    return cid


def login(*, port: int = DEFAULT_PORT, open_browser: bool = True) -> Path:
    """Sign the user in and keep the tokens; returns where (the file, mode 0600)."""
    import spotipy

    manager = auth_manager(client_id(), port=port, open_browser=open_browser)
    try:
        manager.get_access_token(check_cache=False)
    except spotipy.oauth2.SpotifyOauthError as exc:
        raise CollectError(f"Spotify sign-in failed ({exc.error or 'no code came back'})") from None
    except OSError as exc:
        raise CollectError(f"Spotify sign-in failed: cannot listen on 127.0.0.1:{port} ({exc.strerror}); "
                           "choose another --port (and add its redirect URI to the app)") from None
    if not token_path().is_file():
        raise CollectError("Spotify sign-in failed: no token came back")
    return token_path()


def logout() -> bool:
    """Remove the stored login (ours); False when there was none."""
    try:
        token_path().unlink()
        return True
    except FileNotFoundError:
        return False


def stored_login() -> bool:
    return token_path().is_file()
