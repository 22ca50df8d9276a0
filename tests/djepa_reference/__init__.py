"""D-JEPA (D-JEPA/djepa-imagenet at 0d5cbaf9, models/djepa.py and models/block.py), the reference `convert_checkpoint`'s
D-JEPA path is checked against.

The public D-JEPA snapshot carries no licence file and lacks the modules its model imports (models/diffloss.py,
models/jepaloss.py, util/misc.py), so nothing of it is copied here: `djepa.py` restates its network from a reading
of those files, with its module and parameter names (which fix the checkpoint's state-dict keys), its buffer,
position tables, qk-norm and forward order, on top of MAR's vendored code (tests/mar_reference/, MIT) where
D-JEPA's is MAR's: the denoising MLP and its diffusion (D-JEPA's GaussDiffLoss is MAR's DiffLoss with
`sample(z, temperature, cfg_scale)`; justin-herry/JEPA-T at 07d2ede8, MIT, "Copyright (c) 2024 D-JEPA", carries
the same copy), timm's Block and Mlp, and the masked generation loop (D-JEPA's sample_tokens is MAR's with
`cfg_scale` for `cfg`). The JEPA projector is JEPA-T's models/jepaloss.py layout: `jepaloss.net`, a timm Mlp of
hidden width 4x the decoder's with a LayerNorm after the activation.
"""
