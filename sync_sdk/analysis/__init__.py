"""Analyses on the segment-encoding seam: DeSync, attribution, offset search, visual features, plots."""
