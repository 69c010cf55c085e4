"""The CUT framework (Park et al., ECCV 2020) as a second model family: one-sided A -> B translation.

Its networks (networks.py), data (data.py), flags (options.py) and training
loop (trainer.py) live here; data listing, checkpoints, logging, processes,
precision and the patch-loss registry (core/contrastive) are shared with
StarGAN v2.
"""
