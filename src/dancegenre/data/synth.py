"""A procedural techno / EDM corpus for the demo and the tests.

Each clip is rendered from one *artist* preset (a shared kit: kick, hats, bass type,
brightness, reverb), so grouped splits by artist mean something.  The genres overlap on
purpose: tempo ranges overlap (techno 120-135 BPM, EDM 124-132), a few techno clips
carry a vocal chop, a third of EDM clips have no lead, and brightness varies per artist.

techno: four-on-the-floor kick, off-beat open hats and 16th closed hats, a rumbling
    (reverberated, low-passed kick) or acid (resonant 16th-note saw) bass, a hypnotic
    one-bar stab loop, sometimes a drone, a darker master.
edm: a build-up (snare roll that speeds up, noise riser) into a drop, or a breakdown,
    supersaw chords with side-chain pumping, an off-beat saw bass, a vocal-like formant
    lead most of the time, a brighter, wider master.
"""

from __future__ import annotations

import csv
import io
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import scipy.signal as sps
import soundfile as sf

from dancegenre.config import MAX_SYNTH_PER_GENRE
from dancegenre.data.scheduler import parallel_map
from dancegenre.errors import ConfigError
from dancegenre.safety import atomic_path, atomic_write, claim_folder, releasing

GENRES = ("techno", "edm")
SR = 44100  # Hz: the rate of the previews users download
CLIP_SECONDS = 30.0
FORMATS = {"mp3": "MP3", "wav": "WAV", "flac": "FLAC", "ogg": "OGG"}
TEMPO_RANGE = {"techno": (120.0, 135.0), "edm": (124.0, 132.0)}
VOWELS = {  # first two formants (Hz) of sung vowels
    "a": (800, 1150), "e": (400, 1600), "i": (300, 2300), "o": (450, 800), "u": (325, 700),
}
CATALOG_COLUMNS = ["path", "label", "track_id", "artist", "tempo", "key", "vocal", "structure"]


@dataclass(frozen=True)
class ClipSpec:
    """What one synthetic clip is; the ground truth written to the catalog."""

    genre: str
    index: int
    artist: int
    seed: int

    @property
    def track_id(self) -> str:
        return f"{self.genre}_{self.index:04d}"

    @property
    def artist_name(self) -> str:
        return f"{self.genre}_artist_{self.artist:02d}"


# ---------------------------------------------------------------- building blocks

def _t(n: int) -> np.ndarray:
    return np.arange(n, dtype=np.float32) / SR


def _midi_hz(m: float) -> float:
    return 440.0 * 2.0 ** ((m - 69.0) / 12.0)


def _saw(freq: float | np.ndarray, n: int, phase: float = 0.0) -> np.ndarray:
    inc = np.broadcast_to(np.asarray(freq, dtype=np.float64) / SR, (n,))
    ph = (phase + np.cumsum(inc)) % 1.0
    return (2.0 * ph - 1.0).astype(np.float32)


def _butter(kind: str, cutoff: float | tuple[float, float], order: int = 2) -> np.ndarray:
    if isinstance(cutoff, tuple):
        cutoff = (max(20.0, cutoff[0]), min(SR / 2 * 0.95, cutoff[1]))
    else:
        cutoff = min(max(20.0, cutoff), SR / 2 * 0.95)
    return sps.butter(order, cutoff, btype=kind, fs=SR, output="sos")


def _filt(kind: str, x: np.ndarray, cutoff: float | tuple[float, float], order: int = 2) -> np.ndarray:
    return sps.sosfilt(_butter(kind, cutoff, order), x, axis=-1).astype(np.float32)


def _resonant_lowpass(x: np.ndarray, cutoff: float, q: float) -> np.ndarray:
    """RBJ-cookbook biquad low-pass: the squelch of an acid line at high ``q``."""
    w0 = 2 * math.pi * min(cutoff, SR * 0.45) / SR
    alpha = math.sin(w0) / (2 * q)
    cw = math.cos(w0)
    b = np.array([(1 - cw) / 2, 1 - cw, (1 - cw) / 2])
    a = np.array([1 + alpha, -2 * cw, 1 - alpha])
    return sps.lfilter(b / a[0], a / a[0], x).astype(np.float32)


def _decay(n: int, seconds: float) -> np.ndarray:
    return np.exp(-_t(n) / max(seconds, 1e-3)).astype(np.float32)


def _place(track: np.ndarray, sample: np.ndarray, onsets: np.ndarray, gains: np.ndarray | None = None) -> None:
    """Add ``sample`` into ``track`` at each onset (in samples), scaled by ``gains``."""
    n = len(track)
    for k, start in enumerate(onsets.astype(np.int64)):
        if start >= n:
            break
        end = min(n, start + len(sample))
        g = 1.0 if gains is None else float(gains[k])
        track[start:end] += g * sample[: end - start]


def _reverb(x: np.ndarray, rng: np.random.Generator, seconds: float, wet: float) -> np.ndarray:
    if wet <= 0:
        return x
    n = int(seconds * SR)
    ir = rng.standard_normal(n).astype(np.float32) * _decay(n, seconds / 5)
    ir = _filt("lowpass", ir, 6000)
    ir /= np.sqrt(np.sum(ir**2)) + 1e-9
    return x + wet * sps.fftconvolve(x, ir)[: len(x)].astype(np.float32)


def _pump(n: int, beat: float, depth: float, release: float) -> np.ndarray:
    """Side-chain gain: ducks to 1 - depth on each beat and recovers."""
    pos = (_t(n) % beat).astype(np.float32)
    return (1.0 - depth * np.exp(-pos / release)).astype(np.float32)


# ---------------------------------------------------------------- drum one-shots

def _kick(p: dict) -> np.ndarray:
    n = int(0.45 * SR)
    t = _t(n)
    f = p["kick_end"] + (p["kick_start"] - p["kick_end"]) * np.exp(-t / p["kick_sweep"])
    body = np.sin(2 * np.pi * np.cumsum(f) / SR).astype(np.float32) * _decay(n, p["kick_decay"])
    click = np.random.default_rng(7).standard_normal(n).astype(np.float32) * _decay(n, 0.004)
    k = np.tanh(p["kick_drive"] * (body + 0.3 * click)) / np.tanh(p["kick_drive"])
    return k.astype(np.float32)


def _noise_hit(rng: np.random.Generator, seconds: float, decay: float, band: tuple[float, float]) -> np.ndarray:
    n = int(seconds * SR)
    x = rng.standard_normal(n).astype(np.float32)
    return _filt("bandpass", x, band) * _decay(n, decay)


def _clap(rng: np.random.Generator) -> np.ndarray:
    hit = _noise_hit(rng, 0.25, 0.05, (900, 3500))
    out = hit.copy()
    for lag in (0.011, 0.023):
        s = int(lag * SR)
        out[s:] += 0.8 * hit[:-s]
    return out


def _snare(rng: np.random.Generator) -> np.ndarray:
    n = int(0.18 * SR)
    tone = np.sin(2 * np.pi * 190 * _t(n)).astype(np.float32) * _decay(n, 0.03)
    return 0.5 * tone + _noise_hit(rng, 0.18, 0.05, (1500, 8000))


# ---------------------------------------------------------------- artists

def artist_preset(genre: str, artist: int, seed: int) -> dict:
    """The sound kit one artist uses for all their clips."""
    r = np.random.default_rng([seed, GENRES.index(genre), 10_000 + artist])
    dark = genre == "techno"
    return {
        "kick_start": r.uniform(140, 260), "kick_end": r.uniform(42, 58),
        "kick_sweep": r.uniform(0.02, 0.05), "kick_decay": r.uniform(0.12, 0.35 if dark else 0.22),
        "kick_drive": r.uniform(1.5, 5.0 if dark else 3.0),
        "hat_band": (r.uniform(5000, 8000), r.uniform(11000, 16000)),
        "hat_decay": r.uniform(0.015, 0.05), "open_decay": r.uniform(0.06, 0.15),
        "hat_pattern": r.uniform(0.3, 1.0, 16),
        "bass": r.choice(["rumble", "acid"]) if dark else r.choice(["offbeat", "reese"]),
        "acid_q": r.uniform(4, 12), "acid_steps": r.random(16) < r.uniform(0.5, 0.9),
        "acid_notes": r.choice([0, 0, 0, 3, 7, 10, 12], 16),
        "stab_steps": r.random(16) < 0.3, "stab_band": r.uniform(400, 2500),
        "tone": r.uniform(5000, 11000) if dark else r.uniform(9000, 17000),  # master low-pass
        "air": r.uniform(0.0, 0.25) if dark else r.uniform(0.15, 0.6),  # high-shelf mix
        "reverb": r.uniform(0.1, 0.5), "width": r.uniform(0.1, 0.4) if dark else r.uniform(0.3, 0.8),
        "supersaw_voices": int(r.integers(5, 9)), "detune": r.uniform(0.08, 0.3),
        "pump": r.uniform(0.5, 0.9), "tempo_centre": r.uniform(*TEMPO_RANGE[genre]),
    }


# ---------------------------------------------------------------- genres

def _grid(bpm: float, n: int) -> tuple[float, float, int]:
    beat = 60.0 / bpm
    step = beat / 4
    return beat, step, int(n / (step * SR)) + 1


def _render_techno(p: dict, rng: np.random.Generator, bpm: float, root: int, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    n = int(CLIP_SECONDS * SR)
    beat, step, steps = _grid(bpm, n)
    on = (np.arange(steps) * step * SR).astype(np.int64)
    drums, music = np.zeros(n, np.float32), np.zeros(n, np.float32)
    # A break of one or two bars with no kick in a quarter of the clips.
    kick_mask = np.ones(steps, bool)
    if rng.random() < 0.25:
        b0 = int(rng.integers(2, 10)) * 16
        kick_mask[b0 : b0 + 16 * int(rng.integers(1, 3))] = False
    kicks = [s for s in range(0, steps, 4) if kick_mask[s]]
    kick = _kick(p)
    _place(drums, kick, on[kicks], np.full(len(kicks), 0.9))
    hat = _noise_hit(rng, 0.08, p["hat_decay"], p["hat_band"])
    idx = np.arange(steps)
    _place(drums, hat, on, 0.25 * p["hat_pattern"][idx % 16] * (rng.random(steps) < 0.85))
    ohat = _noise_hit(rng, 0.25, p["open_decay"], (p["hat_band"][0] * 0.8, p["hat_band"][1]))
    off = idx[idx % 4 == 2]
    _place(drums, ohat, on[off], np.full(len(off), 0.35))
    if rng.random() < 0.5:
        claps = idx[idx % 16 == 4].tolist() + idx[idx % 16 == 12].tolist()
        _place(drums, _clap(rng), on[sorted(claps)], np.full(len(claps), 0.3))
    if p["bass"] == "rumble":
        kicks_only = np.zeros(n, np.float32)
        _place(kicks_only, kick, on[kicks])
        rumble = _reverb(kicks_only, rng, 1.2, 3.0) - kicks_only
        rumble = _filt("lowpass", np.tanh(2 * rumble), 180 + rng.uniform(-40, 60), 4)
        music += 0.5 * rumble * _pump(n, beat, 0.8, 0.08)
    else:
        sweep = 0.5 + 0.5 * np.sin(2 * np.pi * (idx * step) / rng.uniform(6, 20) + rng.uniform(0, 6))
        note_len = int(step * SR)
        for s in idx[p["acid_steps"][idx % 16]]:
            f = _midi_hz(root - 24 + int(p["acid_notes"][s % 16]))
            x = _saw(f, note_len) * _decay(note_len, step * rng.uniform(0.5, 1.2))
            cutoff = 250 + 2500 * sweep[s] * (1.4 if s % 4 == 0 else 1.0)
            _place(music, 0.25 * np.tanh(1.5 * _resonant_lowpass(x, cutoff, p["acid_q"])), on[[s]])
    # Hypnotic one-bar stab loop, echoed.
    stab_len = int(0.12 * SR)
    stab_f = _midi_hz(root + rng.choice([0, 3, 7]))
    stab = _filt("bandpass", _saw(stab_f, stab_len) + 0.5 * _saw(stab_f * 1.5, stab_len),
                 (p["stab_band"] * 0.6, p["stab_band"] * 1.6)) * _decay(stab_len, 0.04)
    stab_on = idx[p["stab_steps"][idx % 16]]
    for echo in range(3):
        shift = int(echo * 3 * step * SR)
        _place(music, stab, on[stab_on] + shift, np.full(len(stab_on), 0.2 * 0.5**echo))
    if rng.random() < 0.4:  # dark drone
        drone = _saw(_midi_hz(root - 12), n) + _saw(_midi_hz(root - 12) * 1.005, n)
        music += 0.06 * _filt("lowpass", drone, rng.uniform(300, 900))
    meta["vocal"] = bool(rng.random() < 0.1)
    if meta["vocal"]:  # a rare, short vocal chop
        chop = _formant_phrase(rng, root, n, beat, density=0.15)
        music += 0.25 * chop
    meta["structure"] = "loop"
    return drums, music


def _formant_phrase(rng: np.random.Generator, root: int, n: int, beat: float, density: float) -> np.ndarray:
    """A vocal-like melody: a buzzy source through two vowel formant filters, with vibrato."""
    out = np.zeros(n, np.float32)
    scale = [0, 2, 3, 5, 7, 8, 10, 12]
    note = int(beat / 2 * SR)
    for start in range(0, n - note, note):
        if rng.random() > density:
            continue
        length = note * int(rng.integers(1, 4))
        length = min(length, n - start)
        f0 = _midi_hz(root + 12 + rng.choice(scale))
        vib = f0 * (1 + 0.01 * np.sin(2 * np.pi * 5.5 * _t(length)))
        src = _saw(vib, length) + 0.3 * rng.standard_normal(length).astype(np.float32) * 0.1
        f1, f2 = VOWELS[rng.choice(list(VOWELS))]
        voice = _filt("bandpass", src, (f1 * 0.8, f1 * 1.25)) + 0.6 * _filt("bandpass", src, (f2 * 0.85, f2 * 1.15))
        env = np.minimum(1, _t(length) / 0.02) * np.minimum(1, (length - np.arange(length)) / (0.05 * SR))
        out[start : start + length] += voice * env.astype(np.float32)
    return out


def _render_edm(p: dict, rng: np.random.Generator, bpm: float, root: int, meta: dict) -> tuple[np.ndarray, np.ndarray]:
    n = int(CLIP_SECONDS * SR)
    beat, step, steps = _grid(bpm, n)
    on = (np.arange(steps) * step * SR).astype(np.int64)
    idx = np.arange(steps)
    bar_steps = 16
    drop_from = {"drop": 0, "build-drop": int(rng.integers(4, 10)) * bar_steps,
                 "breakdown-build": steps + 1}
    structure = rng.choice(list(drop_from), p=[0.35, 0.45, 0.2])
    d0 = drop_from[structure]
    build0 = max(0, d0 - int(rng.integers(2, 5)) * bar_steps) if structure != "drop" else 0
    if structure == "breakdown-build":
        build0 = int(rng.integers(6, 12)) * bar_steps
    drums, music = np.zeros(n, np.float32), np.zeros(n, np.float32)
    in_drop = idx >= d0
    kick = _kick(p)
    kicks = idx[(idx % 4 == 0) & in_drop]
    _place(drums, kick, on[kicks], np.full(len(kicks), 0.85))
    claps = idx[(idx % 8 == 4) & in_drop]
    _place(drums, _clap(rng), on[claps], np.full(len(claps), 0.4))
    ohat = _noise_hit(rng, 0.2, p["open_decay"], p["hat_band"])
    offs = idx[(idx % 4 == 2) & in_drop]
    _place(drums, ohat, on[offs], np.full(len(offs), 0.3))
    # Build-up: snare roll from quarters to 16ths, a rising noise sweep.
    build_end = min(d0, steps)
    if build_end > build0 and structure != "drop":
        sn = _snare(rng)
        span = build_end - build0
        hits = [s for s in range(build0, build_end)
                if (s - build0) % (4 if (s - build0) < span / 2 else 2 if (s - build0) < 3 * span / 4 else 1) == 0]
        gains = np.linspace(0.15, 0.6, len(hits))
        _place(drums, sn, on[hits], gains)
        a, b = int(on[build0]), min(n, int(on[build_end - 1] + step * SR))
        riser = rng.standard_normal(b - a).astype(np.float32) * np.linspace(0, 0.25, b - a, dtype=np.float32)
        riser = _filt("highpass", riser, rng.uniform(2000, 5000))
        music[a:b] += riser
    # Supersaw chords, a chord per bar, pumped by the kick's side-chain.
    prog = [[0, 4, 7], [7, 11, 14], [9, 12, 16], [5, 9, 12]] if rng.random() < 0.5 else \
        [[9, 12, 16], [5, 9, 12], [0, 4, 7], [7, 11, 14]]
    bar = int(bar_steps * step * SR)
    chords = np.zeros(n, np.float32)
    voices, detune = p["supersaw_voices"], p["detune"]
    for b, start in enumerate(range(0, n, bar)):
        length = min(bar, n - start)
        for semis in prog[b % 4]:
            f = _midi_hz(root + semis)
            for v in range(voices):
                cents = detune * (v - (voices - 1) / 2) / ((voices - 1) / 2)
                chords[start : start + length] += _saw(f * 2 ** (cents / 12), length, rng.random()) / voices
    chords = _filt("lowpass", chords, rng.uniform(5000, 12000))
    gain = np.where(np.arange(n) >= on[min(d0, steps - 1)], 1.0, 0.55).astype(np.float32)
    music += 0.22 * chords * gain * _pump(n, beat, p["pump"], 0.1)
    # Off-beat saw bass (big room) or a detuned reese, in the drop.
    bass = np.zeros(n, np.float32)
    bass_len = int(step * 2 * SR)
    for s in idx[(idx % 4 == 2) & in_drop]:
        f = _midi_hz(root - 24 + prog[(s // bar_steps) % 4][0])
        x = _saw(f, bass_len) + (_saw(f * 1.01, bass_len) if p["bass"] == "reese" else 0)
        _place(bass, _filt("lowpass", x, 900) * _decay(bass_len, step), on[[s]])
    music += 0.35 * bass
    meta["vocal"] = bool(rng.random() < 0.7)
    if meta["vocal"]:
        music += 0.3 * _formant_phrase(rng, root, n, beat, density=0.6)
    meta["structure"] = str(structure)
    return drums, music


RENDERERS: dict[str, Callable] = {"techno": _render_techno, "edm": _render_edm}


def clip_tempo_and_root(spec: ClipSpec) -> tuple[float, int]:
    """Tempo (BPM) and root note (MIDI) of a clip, without rendering it."""
    p = artist_preset(spec.genre, spec.artist, spec.seed)
    rng = np.random.default_rng([spec.seed, GENRES.index(spec.genre), spec.index, 1])
    lo, hi = TEMPO_RANGE[spec.genre]
    bpm = float(np.clip(p["tempo_centre"] + rng.normal(0, 3), lo, hi))
    return bpm, int(rng.integers(45, 57))  # root A2..G#3


def render_clip(spec: ClipSpec) -> tuple[np.ndarray, dict]:
    """Render one clip.

    Returns
    -------
    (audio, meta): audio of shape (CLIP_SECONDS * 44,100, 2), float32 in [-1, 1];
    meta with tempo, key, vocal and structure.
    """
    p = artist_preset(spec.genre, spec.artist, spec.seed)
    bpm, root = clip_tempo_and_root(spec)
    rng = np.random.default_rng([spec.seed, GENRES.index(spec.genre), spec.index])
    meta: dict = {"tempo": round(bpm, 2), "key": int(root % 12)}
    drums, music = RENDERERS[spec.genre](p, rng, bpm, root, meta)
    wet = _reverb(music, rng, 1.5, p["reverb"])
    mix = drums + wet
    bright = _filt("lowpass", mix, p["tone"], 2)
    bright = bright + p["air"] * _filt("highpass", mix, 6000, 2)
    side = _filt("highpass", wet, 300) * p["width"]
    stereo = np.stack([bright + side, bright - side], axis=1)
    stereo = np.tanh(1.2 * stereo)
    stereo *= rng.uniform(0.5, 0.95) / (np.max(np.abs(stereo)) + 1e-9)
    return stereo.astype(np.float32), meta


def _write_one(args: tuple[ClipSpec, str, str]) -> dict:
    spec, out_dir, fmt = args
    rel = f"{spec.genre}/{spec.track_id}.{fmt}"
    dest = Path(out_dir) / rel
    audio, meta = render_clip(spec)
    if not (dest.exists() and dest.stat().st_size > 0):
        with atomic_path(dest) as tmp:
            sf.write(str(tmp), audio, SR, format=FORMATS[fmt])
    return {"path": rel, "label": spec.genre, "track_id": spec.track_id,
            "artist": spec.artist_name, **meta}


def check_per_genre(per_genre: object) -> int:
    """``per_genre`` if it is a whole number of clips from 1 to
    :data:`~dancegenre.config.MAX_SYNTH_PER_GENRE`, else ConfigError: counted before any
    clip is listed, so a typo costs nothing."""
    if isinstance(per_genre, bool) or not isinstance(per_genre, int) or not 1 <= per_genre <= MAX_SYNTH_PER_GENRE:
        raise ConfigError(f"--per-genre must be a whole number from 1 to {MAX_SYNTH_PER_GENRE:,}, not {per_genre!r}")
    return per_genre


def clip_specs(per_genre: int, seed: int, artists_per_genre: int | None = None) -> list[ClipSpec]:
    """The clips of a corpus: ``per_genre`` per genre, spread over the artists.

    Raises ConfigError for ``per_genre`` outside 1 to :data:`~dancegenre.config.MAX_SYNTH_PER_GENRE`."""
    check_per_genre(per_genre)
    n_artists = artists_per_genre or max(2, math.ceil(per_genre / 6))
    return [ClipSpec(g, i, i % n_artists, seed) for g in GENRES for i in range(per_genre)]


@releasing
def synthesize(
    out: str | os.PathLike[str],
    *,
    per_genre: int = 100,
    seed: int = 0,
    fmt: str = "mp3",
    workers: int | None = None,
    artists_per_genre: int | None = None,
    progress: bool = True,
) -> Path:
    """Write a corpus to ``out/<genre>/<track_id>.<fmt>`` and ``out/catalog.csv``.

    Deterministic for a seed; files already there are kept (a rerun completes an
    interrupted one).  Returns the catalog's path.

    Raises
    ------
    ConfigError
        An unknown format, or ``per_genre`` outside 1 to
        :data:`~dancegenre.config.MAX_SYNTH_PER_GENRE` (checked before anything is made).
    """
    if fmt not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}")
    specs = clip_specs(per_genre, seed, artists_per_genre)  # before the folder: a bad count makes nothing
    # its catalog.csv must never replace a user's; one made before the marker holds the
    # catalog and the genre folders, nothing else
    out = claim_folder(out, "corpus", legacy=("catalog.csv",), legacy_others=GENRES, what="corpus folder")
    for g in GENRES:
        (out / g).mkdir(parents=True, exist_ok=True)
    tasks = [(s, str(out), fmt) for s in specs]
    done = parallel_map(_write_one, {i: (t,) for i, t in enumerate(tasks)}, workers=workers, progress=progress,
                        desc="synth")
    rows = [done[i] for i in range(len(tasks))]
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=CATALOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return atomic_write(out / "catalog.csv", text.getvalue())


def click_track(bpm: float, *, seconds: float = 20.0, swing: float = 0.0, sr: int = 22050,
                seed: int = 0) -> np.ndarray:
    """A test signal of known tempo: a kick-like click on every beat and a soft hat on
    the off-beat 8th, which ``swing`` delays by that fraction of an 8th note.  Mono
    float32 at ``sr``; used to check tempo estimation."""
    rng = np.random.default_rng(seed)
    y = 0.002 * rng.standard_normal(int(seconds * sr)).astype(np.float32)
    n_click, n_hat = int(0.03 * sr), int(0.01 * sr)
    click = np.exp(-np.arange(n_click) / (0.005 * sr)) * np.sin(2 * np.pi * 120 * np.arange(n_click) / sr)
    hat = rng.standard_normal(n_hat) * np.exp(-np.arange(n_hat) / (0.002 * sr))
    beat = 60.0 / bpm
    t = 0.0
    while t < seconds - 0.1:
        i = int(t * sr)
        y[i : i + n_click] += (0.8 * click[: len(y) - i]).astype(np.float32)
        j = int((t + beat / 2 * (1 + swing)) * sr)
        if j < len(y) - n_hat:
            y[j : j + n_hat] += (0.2 * hat).astype(np.float32)
        t += beat
    return y
