"""D-JEPA's network as its models/djepa.py builds it (restated; see this package's docstring), CPU-runnable as MAR's.

What differs from MAR (tests/mar_reference/mar.py): a separate `buffer` parameter [1, B, D] (zero at init) that
carries the class embedding, position tables over the token rows only (`encoder_pos_embed_learned` added before
the buffer is prepended, `decoder_pos_embed_learned` to the decoder's token rows), no diffusion position table,
RMS qk-norm per head (eps 1e-6, in fp32, with a weight), and the JEPA projector `jepaloss.net`.
"""

from functools import partial

import torch
import torch.nn as nn
from mar_reference.diffloss import DiffLoss
from mar_reference.mar import MAR
from mar_reference.timm_block import Block, Mlp


class RMSNorm(nn.Module):
    """models/block.py RMSNorm: x / sqrt(mean(x^2) + eps) in fp32, back to x's dtype, times `weight`."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        x32 = x.float()
        return (x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def djepa_block(dim, num_heads, mlp_ratio, qk_norm, proj_drop, attn_drop):
    """models/block.py Block: timm's pre-norm block, qkv bias, LayerNorm eps 1e-6, RMSNorm on each head's q and k."""
    block = Block(
        dim,
        num_heads,
        mlp_ratio,
        qkv_bias=True,
        proj_drop=proj_drop,
        attn_drop=attn_drop,
        norm_layer=partial(nn.LayerNorm, eps=1e-6),
    )
    if qk_norm:
        block.attn.q_norm = RMSNorm(dim // num_heads)
        block.attn.k_norm = RMSNorm(dim // num_heads)
    return block


class JepaLoss(nn.Module):
    """models/jepaloss.py: predictor features -> encoder width (timm Mlp with a norm), smooth L1 (beta 2) to targets."""

    def __init__(self, in_features, out_features, norm_layer, beta=2.0):
        super().__init__()
        self.net = Mlp(in_features, hidden_features=in_features * 4, out_features=out_features, norm_layer=norm_layer)
        self.loss = nn.SmoothL1Loss(reduction="none", beta=beta)

    def forward(self, x, ema_x, mask=None):
        loss = self.loss(self.net(x), ema_x.detach())
        if mask is not None:
            return (loss.mean(dim=-1) * mask).sum() / mask.sum()
        return loss.mean()


class DJEPA(nn.Module):
    def __init__(
        self,
        img_size=256,
        vae_stride=16,
        patch_size=1,
        encoder_embed_dim=1024,
        encoder_depth=16,
        encoder_num_heads=16,
        decoder_embed_dim=1024,
        decoder_depth=16,
        decoder_num_heads=16,
        mlp_ratio=4,
        qk_norm=False,
        vae_embed_dim=16,
        label_drop_prob=0.1,
        class_num=1000,
        attn_dropout=0.1,
        proj_dropout=0.1,
        buffer_size=64,
        diffloss_d=3,
        diffloss_w=1024,
        num_sampling_steps="100",
        diffusion_batch_mul=4,
        jepaloss="jepa",
    ):
        super().__init__()
        self.vae_embed_dim = vae_embed_dim
        self.img_size, self.vae_stride, self.patch_size = img_size, vae_stride, patch_size
        self.seq_h = self.seq_w = img_size // vae_stride // patch_size
        self.seq_len = self.seq_h * self.seq_w
        self.token_embed_dim = vae_embed_dim * patch_size**2
        self.buffer_size = buffer_size
        self.num_classes = class_num
        self.label_drop_prob = label_drop_prob
        self.diffusion_batch_mul = diffusion_batch_mul
        norm_layer = partial(nn.LayerNorm, eps=1e-6)

        self.class_emb = nn.Embedding(class_num, encoder_embed_dim)
        self.fake_latent = nn.Parameter(torch.zeros(1, encoder_embed_dim))
        self.buffer = nn.Parameter(torch.zeros(1, buffer_size, encoder_embed_dim))
        self.z_proj = nn.Linear(self.token_embed_dim, encoder_embed_dim, bias=True)
        self.z_proj_ln = norm_layer(encoder_embed_dim)
        self.encoder_blocks = nn.ModuleList(
            djepa_block(encoder_embed_dim, encoder_num_heads, mlp_ratio, qk_norm, proj_dropout, attn_dropout)
            for _ in range(encoder_depth)
        )
        self.encoder_norm = norm_layer(encoder_embed_dim)
        self.encoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len, encoder_embed_dim))

        self.decoder_embed = nn.Linear(encoder_embed_dim, decoder_embed_dim, bias=True)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, decoder_embed_dim))
        self.decoder_blocks = nn.ModuleList(
            djepa_block(decoder_embed_dim, decoder_num_heads, mlp_ratio, qk_norm, proj_dropout, attn_dropout)
            for _ in range(decoder_depth)
        )
        self.decoder_norm = norm_layer(decoder_embed_dim)
        self.decoder_pos_embed_learned = nn.Parameter(torch.zeros(1, self.seq_len, decoder_embed_dim))

        self.diffloss = DiffLoss(
            target_channels=self.token_embed_dim,
            z_channels=decoder_embed_dim,
            width=diffloss_w,
            depth=diffloss_d,
            num_sampling_steps=num_sampling_steps,
        )
        # main_djepa.py builds the projector only when the JEPA term is weighted (--jepa_weight > 0)
        self.jepaloss = JepaLoss(decoder_embed_dim, encoder_embed_dim, norm_layer) if jepaloss == "jepa" else None

    # MAR's (D-JEPA's F.unfold / F.fold patchify is the same layout), MAR's NumPy generation orders
    patchify, unpatchify, sample_orders = MAR.patchify, MAR.unpatchify, MAR.sample_orders

    def forward_encoder(self, x, mask, class_embedding):
        x = self.z_proj(x)
        bsz, _, embed_dim = x.shape
        x = x + self.encoder_pos_embed_learned
        buffer = self.buffer + class_embedding.unsqueeze(1)
        x = torch.cat([buffer.type_as(x), x], dim=1)
        mask_with_buffer = torch.cat([torch.zeros(bsz, self.buffer_size, device=x.device), mask], dim=1)
        x = x[(1 - mask_with_buffer.float()).nonzero(as_tuple=True)].reshape(bsz, -1, embed_dim)
        x = self.z_proj_ln(x)
        for blk in self.encoder_blocks:
            x = blk(x)
        return self.encoder_norm(x)

    def forward_decoder(self, x, mask):
        bsz = len(x)
        x = self.decoder_embed(x)
        mask_with_buffer = torch.cat([torch.zeros(bsz, self.buffer_size, device=x.device), mask], dim=1)
        x_after_pad = self.mask_token.repeat(bsz, self.buffer_size + self.seq_len, 1).type_as(x).clone()
        x_after_pad[(1 - mask_with_buffer).nonzero(as_tuple=True)] = x.reshape(x.shape[0] * x.shape[1], x.shape[2])
        x_after_pad[:, self.buffer_size :] += self.decoder_pos_embed_learned
        x = x_after_pad
        for blk in self.decoder_blocks:
            x = blk(x)
        return self.decoder_norm(x)[:, self.buffer_size :]

    @torch.no_grad()
    def forward_ema_encoder(self, imgs, labels):
        """The JEPA targets: every token visible, the buffer rows dropped (eval mode: no label drop)."""
        x = self.patchify(imgs)
        mask = torch.zeros(x.shape[0], x.shape[1], device=x.device)
        return self.forward_encoder(x, mask, self.class_emb(labels))[:, self.buffer_size :]

    # MAR's loop; its forward_mae_* are D-JEPA's forward_encoder / forward_decoder here
    forward_mae_encoder, forward_mae_decoder = forward_encoder, forward_decoder

    def sample_tokens(self, bsz, num_iter=64, cfg_scale=1.0, cfg_schedule="linear", labels=None, temperature=1.0):
        return MAR.sample_tokens(self, bsz, num_iter, cfg_scale, cfg_schedule, labels, temperature)
