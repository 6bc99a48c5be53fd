"""The runtime: the segment-encoding seam, the segment cache, shift views, scan, stream and model loading."""
