"""`model=djepa_b|djepa_l|djepa_h train=paper` against the reference's values, so any drift fails.

Sources, read file by file: D-JEPA/djepa-imagenet at 0d5cbaf9 (scripts/djepa_base.sh by line, main_djepa.py by
flag, models/*.py and engine/djepa.py by name) and, for the files that snapshot lacks (util/, models/jepaloss.py,
models/diffloss.py, the large and huge launch scripts, which the README names), justin-herry/JEPA-T at 07d2ede8,
which carries D-JEPA's copies of them (its scripts/jepat_large.sh and jepat_huge.sh still run main_djepa.py with
model=djepa_large and djepa_huge). MAR's main_mar.py (LTH14/mar at fe470ac) has the same optimiser, schedule, EMA,
dropout and buffer defaults, without the eps of 1e-6 and qk-norm.
"""

import dataclasses
import math

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from djepa.cli.config import compose_config
from djepa.cli.train import train_config
from djepa.engine.data import TokenData
from djepa.engine.model_config import model_kwargs
from djepa.engine.trainer import Trainer, param_groups
from djepa.nn.model import DJEPA, build_jepa_projector
from djepa.nn.vit import RMSNorm

IMAGENET_TRAIN_IMAGES = 1_281_167
GLOBAL_BATCH = 2048  # scripts/djepa_base.sh:5-6: 32 per GPU, "keep the total batch size equals to 2048"
STEPS_PER_EPOCH = IMAGENET_TRAIN_IMAGES // GLOBAL_BATCH  # 625: DataLoader(drop_last=True) in main_djepa.py
EPOCHS = {
    "djepa_b": 1400,  # scripts/djepa_base.sh:27 --epochs 1400
    "djepa_l": 480,  # JEPA-T scripts/jepat_large.sh:27 --epochs 480 (model=djepa_large)
    "djepa_h": 320,  # JEPA-T scripts/jepat_huge.sh:27 --epochs 320 (model=djepa_huge)
}

# Composed key -> the reference's value, with where the reference sets it.
RECIPE = {
    "train.batch_size": GLOBAL_BATCH,
    "train.lr": None,  # main_djepa.py --lr default None: lr = blr x eff_batch_size / 256
    "train.blr": 1e-4,  # scripts/djepa_base.sh:30 --blr 1.0e-4
    "train.warmup_steps": 100 * STEPS_PER_EPOCH,  # scripts/djepa_base.sh:28 --warmup_epochs 100
    "train.lr_schedule": "constant",  # main_djepa.py --lr_schedule default 'constant'
    "train.min_lr": 0.0,  # main_djepa.py --min_lr default 0
    "train.steps": EPOCHS["djepa_b"] * STEPS_PER_EPOCH,  # djepa_l / djepa_h: train.steps= their epochs x 625
    "train.weight_decay": 0.02,  # main_djepa.py --weight_decay default 0.02 (its wd_sched: docs/concepts/model.md)
    "train.no_decay": "reference",  # models/djepa.py DJEPA.no_weight_decay_set (checked below)
    "train.grad_clip": 3.0,  # main_djepa.py --grad_clip default 3.0
    "train.adam_eps": 1e-6,  # scripts/djepa_base.sh:46 --adamw_eps "1e-6"
    "train.ema_decay": 0.9999,  # main_djepa.py --ema_rate 0.9999; JEPA-T util/ema_sched.py keeps it constant
    "train.ema_warmup": False,  # engine/djepa.py update_ema(..., rate=ema_rate) from the first step
    "train.teacher": "sampling_ema",  # engine/djepa.py: ema_model_without_ddp.forward_ema_encoder gives the targets
    "train.mask_ratio_min": 0.7,  # main_djepa.py --mask_ratio_min default 0.7
    "train.precision": "bf16",  # scripts/djepa_base.sh:40 --precision bf16
    "loss.denoise_weight": 1.0,  # scripts/djepa_base.sh:42 --diffusion_weight 1.0
    "loss.jepa_weight": 1.0,  # scripts/djepa_base.sh:43 --jepa_weight 1.0
    "loss.head._target_": "djepa.nn.heads.DiffusionHead",  # scripts/djepa_base.sh:10 diffloss="gauss"
    "loss.head.num_timesteps": 1000,  # JEPA-T models/diffloss/gaussian_diffusion: create_diffusion(""), 1000 steps
    "loss.head.sampling_steps": 100,  # main_djepa.py --num_sampling_steps default "100"
    "loss.head.clip_x0": None,  # JEPA-T models/diffloss/gaussian_diffusion/diffloss.py clip_denoised=False
    "model.buffer_size": 64,  # main_djepa.py --buffer_size default 64
    "model.attn_drop": 0.1,  # main_djepa.py --attn_dropout default 0.1
    "model.proj_drop": 0.1,  # main_djepa.py --proj_dropout default 0.1
    "model.label_drop": 0.1,  # main_djepa.py --label_drop_prob default 0.1
    "model.diffusion_batch_mul": 4,  # scripts/djepa_base.sh:31 --diffusion_batch_mul 4
    "model.mlp_ratio": 4.0,  # models/djepa.py djepa_base/large/huge: mlp_ratio=4
    "model.qk_norm": True,  # scripts/djepa_base.sh:49 --qk_norm (and JEPA-T's large and huge scripts)
    "model.jepa_projector": "reference",  # JEPA-T models/jepaloss.py: timm Mlp(norm_layer=LayerNorm)
    "model.jepa_projector_norm": True,  # the same Mlp's norm_layer
    "model.jepa_target_norm": False,  # models/djepa.py forward_ema_encoder: encoder_norm output only
    "model.jepa_without_context": True,  # models/djepa.py forward: the JEPA loss on every batch
    "sample.guidance_scale": 1.0,  # scripts/djepa_base.sh:35 --cfg_scale 1.0
    "sample.guidance_schedule": "linear",  # scripts/djepa_base.sh:38 --cfg_schedule linear
    "sample.temperature": 0.94,  # scripts/djepa_base.sh:36 --temperature 0.94
    "sample.num_steps": 64,  # scripts/djepa_base.sh:37 --num_iter 64
}

# models/djepa.py djepa_base / djepa_large / djepa_huge.
SIZES = {
    "djepa_b": dict(depth=12, width=768, heads=12, diffloss_d=6, diffloss_w=1024),
    "djepa_l": dict(depth=24, width=1024, heads=16, diffloss_d=8, diffloss_w=1280),
    "djepa_h": dict(depth=32, width=1280, heads=16, diffloss_d=12, diffloss_w=1536),
}

# models/djepa.py DJEPA.no_weight_decay_set in djepa's module names; JEPA-T util/misc.py add_weight_decay skips a
# parameter whose name contains one of them, is 1-D, or ends in ".bias".
REFERENCE_NO_DECAY = {
    "diffloss": "head",
    "jepaloss": "jepa_proj",
    "buffer": "buffer",
    "class_emb": "class_emb",
    "fake_latent": "fake_class",
    "z_proj": "token_proj",
    "encoder_pos_embed_learned": "encoder_pos",
    "decoder_embed": "predictor_embed",
    "mask_token": "mask_token",
    "decoder_pos_embed_learned": "predictor_pos",
}

TINY = ["model.encoder_depth=1", "model.predictor_depth=1", "model.denoiser_depth=1", "model.denoiser_width=32"]


def test_paper_configs_compose_the_reference_recipe():
    for size, s in SIZES.items():
        cfg = compose_config([f"model={size}", "train=paper"])
        got = {key: OmegaConf.select(cfg, key) for key in RECIPE}
        assert got == RECIPE, {k: (got[k], v) for k, v in RECIPE.items() if got[k] != v}
        m = cfg.model
        assert (m.encoder_depth, m.predictor_depth) == (s["depth"], s["depth"])
        assert (m.encoder_width, m.predictor_width) == (s["width"], s["width"])
        assert (m.num_heads, m.denoiser_depth, m.denoiser_width) == (s["heads"], s["diffloss_d"], s["diffloss_w"])
        recipe = train_config(cfg)
        assert recipe.peak_lr == pytest.approx(1e-4 * GLOBAL_BATCH / 256)  # 8e-4
        assert recipe.steps == EPOCHS["djepa_b"] * STEPS_PER_EPOCH == 875_000
    # An RGB folder's own defaults (flow head, constant guidance, 2,000 steps) stay out of the chosen recipe.
    rgb_folder = ["modality.adapter.data_dir=/x", "modality.adapter.channels=3"]
    folder = compose_config(["model=djepa_b", "train=paper", *rgb_folder])
    assert {key: OmegaConf.select(folder, key) for key in RECIPE} == RECIPE
    assert compose_config(["model=djepa_b", *rgb_folder]).loss.head._target_ == "djepa.nn.heads.FlowHead"  # otherwise
    # and the recipe wins over a modality's own groups (video: flow head, temperature 0.7, prefix masks)
    video = compose_config(["modality=video", "model=djepa_b", "train=paper"])
    assert {key: OmegaConf.select(video, key) for key in RECIPE} == RECIPE and video.train.prefix_mask_prob == 0


def test_paper_model_has_the_reference_layers_and_optimizer(tmp_path):
    widths = ["model.encoder_width=48", "model.predictor_width=48", "model.num_heads=2"]
    cfg = compose_config(["model=djepa_b", "train=paper", *widths, *TINY])
    model = DJEPA(token_dim=4, grid=(2, 2), num_classes=3, **model_kwargs(cfg))
    # qk-norm: an RMS norm over each head's 24 channels on queries and keys in every attention layer
    for blocks in (model.encoder.blocks, model.predictor.blocks):
        for block in blocks:
            for norm in (block.attn.q_norm, block.attn.k_norm):
                assert isinstance(norm, RMSNorm) and norm.weight.shape == (24,) and bool((norm.weight == 1).all())
            assert block.mlp.hidden_drop.p == block.mlp.drop.p == 0.1  # timm Mlp: dropout after GELU and fc2
    x = torch.randn(3, 5, 2, 24)
    expected = x / x.pow(2).mean(-1, keepdim=True).add(1e-6).sqrt()  # JEPA-T/D-JEPA models/block.py RMSNorm
    assert torch.allclose(model.encoder.blocks[0].attn.q_norm(x), expected, atol=1e-6)
    # the projector: fc1 -> GELU -> LayerNorm(eps 1e-6) -> fc2, hidden 4x the predictor width, default init
    assert [type(m) for m in model.jepa_proj] == [nn.Linear, nn.GELU, nn.LayerNorm, nn.Linear]
    assert model.jepa_proj[0].out_features == 4 * 48 and model.jepa_proj[2].eps == 1e-6
    torch.manual_seed(1)
    built = build_jepa_projector(48, 48, layout="reference")
    torch.manual_seed(1)
    default = (nn.Linear(48, 192), nn.Linear(192, 48))  # timm Mlp's fc1 and fc2 as PyTorch initialises them
    assert torch.equal(built[0].weight, default[0].weight) and torch.equal(built[3].bias, default[1].bias)
    # the optimizer: AdamW (0.9, 0.95), eps 1e-6, decay only on the transformer blocks' matrices
    data = TokenData(torch.randn(8, 4, 4), None, torch.arange(8) % 3)
    config = dataclasses.replace(train_config(cfg), batch_size=4, precision="fp32")
    trainer = Trainer(model, data, config, tmp_path, torch.device("cpu"))
    group = trainer.optimizer.param_groups
    assert trainer.optimizer.defaults["eps"] == 1e-6 and trainer.optimizer.defaults["betas"] == (0.9, 0.95)
    names = {id(p): n for n, p in model.named_parameters()}
    no_decay = {names[id(p)] for g in group if g["weight_decay"] == 0 for p in g["params"]}
    decay = {names[id(p)] for g in group if g["weight_decay"] == 0.02 for p in g["params"]}
    reference = {
        n
        for n, p in model.named_parameters()
        if p.ndim == 1 or n.endswith(".bias") or n.split(".")[0] in REFERENCE_NO_DECAY.values()
    }
    assert no_decay == reference and decay == set(names.values()) - reference
    assert all(n.split(".")[0] in ("encoder", "predictor") and n.endswith(".weight") for n in decay)
    assert {"encoder.blocks.0.attn.q_norm.weight", "predictor.blocks.0.attn.k_norm.weight"} <= no_decay
    assert [id(p) for p in param_groups(model, 0.02, "reference")[0]["params"]] == list(map(id, group[0]["params"]))
    # the one EMA samples and teaches, at 0.9999 from the first step (no warm-up)
    assert trainer.teacher is None and not config.ema_warmup
    before = [e.clone() for e in trainer.ema.parameters()]
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1.0)
    trainer.update_ema()
    for old, new, p in zip(before, trainer.ema.parameters(), model.parameters()):
        assert torch.allclose(new, old + 1e-4 * (p - old), atol=1e-6)
    assert math.isclose(config.ema_decay, 0.9999)
