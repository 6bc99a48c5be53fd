"""Training Synchformer on synthetic clips (imports torch); not part of the runtime wheel.

The recipe (`recipe.train`, run by `python export/train.py`):
- a bank of long in-sync synthetic clips; per clip every visual grid segment goes once through the
  frozen, motion-sensitive visual backbone and every audio grid segment's log-mel is computed once;
- stage 1 trains the audio encoder and the visual spatial aggregation layer on event detection plus
  segment-level contrastive learning;
- stage 2 freezes the encoders, caches their grid features and trains the 21-class offset head:
  first on windows assembled from real tokens along freshly drawn event trains (`token_windows`),
  with a class curriculum and a lag-map loss, then on the clips' real visual windows with freshly
  drawn audio tokens;
- stage 3 trains the 2-class synchronizability head (13 segments) from the stage-2 head: the clip's
  own audio at any grid offset against the audio of another clip of the same scene kind, with stage
  2's losses kept on the synchronizable windows.
The experiments behind these choices: docs/synthetic-tiny-experiments.md.

data           inputs from the synthetic generator, made with the runtime's feature functions
encoder_init   initialisation, and the frozen motion-sensitive visual backbone
stage1         the clip bank, stage 1's heads and losses
features       frozen-encoder grid features and the head-training windows drawn from them
token_windows  stage-2 windows of real tokens along freshly drawn event trains
head           stages 2 and 3: head initialisation, curriculum, offset / lag-map / synchronizability losses
losses         segment-level symmetric InfoNCE, cross-entropy
metrics        offset Acc@1, synchronizability accuracy and ROC AUC (NumPy only)
loop           a resumable training loop: AdamW + warmup/cosine, tqdm, state files, loss curves
recipe         the whole run, resumable, and its settings (TrainConfig)
"""
