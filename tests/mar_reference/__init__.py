"""MAR, the reference `convert_checkpoint` and the MAR-exact model switches are checked against.

`mar.py`, `diffloss.py` and `diffusion/` are LTH14/mar's models/mar.py, models/diffloss.py and diffusion/
(commit fe470ac), unchanged but for their imports, which point at the copies here, and ruff's formatting and
import order.
MIT License, Copyright (c) 2024 Tianhong Li: the full notice is LICENSE beside this file. `diffusion/` is, as
its headers say, modified from DiT and OpenAI's GLIDE, ADM and IDDPM code.
`timm_block.py` holds timm 0.9.12's `Block`, `Attention` and `Mlp` (the version MAR's environment.yaml pins),
which MAR imports from timm; Apache License 2.0, see that file's header.
"""
