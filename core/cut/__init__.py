"""The CUT framework (Park et al., ECCV 2020) as a second model family: one-sided A -> B translation.

networks.py (the released networks and keys), data.py (unaligned A/B data),
options.py (the flags of CUT and its forks; core/families/cut.py plugs them
into the command line), trainer.py (the training loop), inference.py (the
generator files), translator.py (the Python API: OneSidedTranslator, what
--mode translate, app and export load), translate.py (--mode translate),
evaluate.py (--mode eval: FID as published), demo.py (--preset demo-cut).
Data listing, checkpoints, logging, processes, precision and the patch-loss
registry (core/contrastive) are shared with StarGAN v2. See docs/cut.md.
"""
