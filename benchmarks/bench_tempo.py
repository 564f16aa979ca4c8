"""Tempo estimation on click tracks of known tempo (90-175 BPM, straight and swung).

    python -m benchmarks.bench_tempo [--n 100]

Prints the share within 1 BPM (target >= 90%), the share off by an octave (half or
double tempo) and other errors, separately for straight and swung tracks.
"""

from __future__ import annotations

import argparse

import numpy as np

from dancegenre.data.synth import click_track
from dancegenre.research.descriptors import SR, estimate_tempo, onset_envelope


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=100, help="tracks per kind")
    args = ap.parse_args()
    rng = np.random.default_rng(7)
    for swing in (0.0, 0.33):
        within = octave = other = 0
        for k in range(args.n):
            bpm = rng.uniform(90, 175)
            est, _ = estimate_tempo(onset_envelope(click_track(bpm, swing=swing, seed=k)), SR / 128)
            if abs(est - bpm) <= 1:
                within += 1
            elif min(abs(est - 2 * bpm), abs(est - bpm / 2)) <= 2:
                octave += 1
            else:
                other += 1
        kind = "swung (0.33)" if swing else "straight"
        print(f"{kind:13s} n={args.n}: within 1 BPM {within / args.n:.1%}, octave errors {octave / args.n:.1%}, "
              f"other errors {other / args.n:.1%}")


if __name__ == "__main__":
    main()
