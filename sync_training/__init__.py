"""Training Synchformer on synthetic clips (imports torch).

data    inputs from the synthetic generator, made with the runtime's feature functions
losses  segment-level symmetric InfoNCE, cross-entropy
stages  stage 1 (contrastive encoders), feature cache, stage 2 (offset head), stage 3 (synchronizability)
loop    a resumable training loop: AdamW + warmup/cosine, tqdm, safetensors + optimizer state, loss curves
"""
