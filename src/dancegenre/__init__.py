"""dancegenre: tell dance-music genres apart from audio."""

__version__ = "0.1.0"
