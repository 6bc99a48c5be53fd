"""Media in: PyAV decoding at 25 fps / 16 kHz, probing, spans of decoded media, source normalisation."""
