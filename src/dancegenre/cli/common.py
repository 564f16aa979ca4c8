"""What every command group shares: the command registry, argument types, exit codes.

The groups (``data``, ``model``, ``pretrained``, ``research``) import this module and
register their commands with :func:`command`; ``parser`` imports the groups.  Nothing
here imports a group, so there is no import circle.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from dancegenre.config import AUDIO_SECONDS, MAX_AUDIO_SECONDS, MAX_SEED, PORTS, UPLOAD_MB, FeatureConfig

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def command(name: str) -> Callable:
    def register(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS[name] = fn
        return fn
    return register


def number_in(cast: Callable[[str], float], low: float, high: float, what: str) -> Callable[[str], float]:
    """An argparse type: ``cast`` the text and require ``low <= value <= high``."""
    def parse(text: str) -> float:
        try:
            value = cast(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {what}: {text!r}") from None
        if not low <= value <= high:
            shown = str if cast is int else (lambda v: f"{v:g}")  # a seed's bound in full, not 4.29497e+09
            bounds = f"at least {shown(low)}" if high == float("inf") else f"between {shown(low)} and {shown(high)}"
            raise argparse.ArgumentTypeError(f"must be {bounds}, got {value}")
        return value
    return parse


positive_int = number_in(int, 1, float("inf"), "a whole number")
probability = number_in(float, 0.0, 1.0, "a number")
seed_number = number_in(int, 0, MAX_SEED, "a whole number")  # --seed: numpy's range
port_number = number_in(int, *PORTS, "a port number")
upload_mb = number_in(float, *UPLOAD_MB, "a number")
audio_seconds = number_in(float, *AUDIO_SECONDS, "a number of seconds")  # --max-duration


def add_max_duration_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-duration", type=audio_seconds, default=MAX_AUDIO_SECONDS,
                   help="seconds; a longer file is refused from its header, before any decoding (default "
                        "%(default)g: 3 hours)")


def scheduler_name(text: str) -> str:
    from dancegenre.data.scheduler import check_scheduler
    from dancegenre.errors import ConfigError

    try:
        return check_scheduler(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def process_count(text: str) -> int:
    """An argparse type for --workers: 1 to 4 local processes per core."""
    from dancegenre.data.scheduler import check_workers
    from dancegenre.errors import ConfigError

    count = positive_int(text)
    try:
        return check_workers(count)
    except ConfigError as exc:  # argparse names the option itself
        raise argparse.ArgumentTypeError(str(exc).removeprefix(f"--workers {count}: ")) from None


def add_scheduler_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--scheduler", type=scheduler_name, default="processes",
                   help="where the files are decoded: processes (local cores, default), dask-local "
                        "(a Dask LocalCluster of --workers processes) or a Dask scheduler address, "
                        "e.g. tcp://10.0.0.5:8786")


def genre_list(text: str) -> list[str]:
    """``a,b,c`` -> ["a", "b", "c"]: the genres of --labels and --only (checked where used)."""
    return [g.strip() for g in text.split(",")]


def named_path(text: str) -> Path:
    """An argparse type for a path to write (``--out``, ``--sort-into``...): any but an
    empty one, which would be the current folder."""
    from dancegenre.errors import EMPTY_PATH

    if not text.strip():
        raise argparse.ArgumentTypeError(EMPTY_PATH)
    return Path(text)


def existing_path(text: str) -> Path:
    path = named_path(text)
    if not path.exists():
        raise argparse.ArgumentTypeError(f"no such file or folder: {one_line(text)}")
    return path


def _add_feature_options(p: argparse.ArgumentParser) -> None:
    from dancegenre.config import FRONTENDS

    d = FeatureConfig()
    g = p.add_argument_group("feature config (stored with the output; later stages read it back)")
    g.add_argument("--frontend", choices=list(FRONTENDS), default="study",
                   help="a preset: study (22,050 Hz, 128 bands, dB; default) or musicnn (16 kHz, 96 bands, "
                        "log10(1+10000 mel), 187-frame segments: what musicnn-msd/-mtt take); the options "
                        "below change single values of it")
    g.add_argument("--sample-rate", type=positive_int, default=None, help=f"Hz (study: {d.sample_rate})")
    g.add_argument("--n-fft", type=positive_int, default=None, help=f"STFT size (study: {d.n_fft})")
    g.add_argument("--hop-length", type=positive_int, default=None, help=f"STFT hop (study: {d.hop_length})")
    g.add_argument("--n-mels", type=positive_int, default=None, help=f"mel bands (study: {d.n_mels})")
    g.add_argument("--segment-frames", type=positive_int, default=None,
                   help=f"frames per segment (study: {d.segment_frames} = 2.97 s; musicnn: 187 = 3 s)")
    g.add_argument("--segment-hop", type=positive_int, default=None,
                   help="frames between segment starts; smaller overlaps (default: --segment-frames)")


def _feature_config(args: argparse.Namespace) -> FeatureConfig:
    names = ("sample_rate", "n_fft", "hop_length", "n_mels", "segment_frames", "segment_hop")
    overrides = {n: getattr(args, n) for n in names if getattr(args, n) is not None}
    if "segment_frames" in overrides and "segment_hop" not in overrides:
        overrides["segment_hop"] = overrides["segment_frames"]
    return FeatureConfig.preset(args.frontend, **overrides)


def _with_parents(add_parser: Callable, common: argparse.ArgumentParser) -> Callable:
    def add(name: str, **kwargs: object) -> argparse.ArgumentParser:
        return add_parser(name, parents=[common], **kwargs)
    return add


def one_line(text: str) -> str:
    """``text`` on one line of the terminal: a message may quote input (a file name, a
    tag) that holds line breaks or escape sequences, shown as ``\\n``, ``\\x1b``."""
    from dancegenre.safety import one_line_text

    return one_line_text(text)
