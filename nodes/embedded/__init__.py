"""Captioned shape scenes and the embedded model trained on them: `dataset` draws scenes (and their training
batches), `train` builds the embedded model, `segment` finds a scene's object from pixels (the ObjectMask node
uses it) and `analyzer` goes on to name its colour, shape and size, so generated images and edits can be scored
with numbers."""
