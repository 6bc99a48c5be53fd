"""Model files: checkpoints read without unpickling, official downloads, state-dict rules, export manifests."""
