"""Sound in: decoding (soundfile, PyAV), the one mel front end, synthetic audio."""
