"""D-JEPA: context encoder, feature predictor and per-token denoising head over a grid of tokens.

The model knows tokens, a grid shape and class ids; never pixels, frames or samples.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from torch.profiler import record_function
from tqdm import tqdm

from djepa import builders
from djepa.nn.denoiser import ResBlock
from djepa.nn.heads import TokenHead
from djepa.nn.pos_embed import positional_embedding
from djepa.nn.vit import Block, Transformer

GUIDANCE_SCHEDULES = ("linear", "constant")


# The paper's head, for a model built in code without naming one.
DEFAULT_HEAD: dict[str, Any] = {"_target_": "djepa.nn.heads.DiffusionHead"}

# A loss's random draws made ahead (DJEPA.loss_draws): the label drops' uniforms [B, 1] (None without label
# drop) and the head's draws for its rows (TokenHead.draw).
LossDraws = tuple[torch.Tensor | None, tuple[torch.Tensor, ...]]


def build_head(token_dim: int, cond_dim: int, width: int, depth: int, head: dict[str, Any]) -> TokenHead:
    """The denoising head `head["_target_"]` names (a TokenHead), its sizes given by the model."""
    sizes = {"token_dim": token_dim, "cond_dim": cond_dim, "width": width, "depth": depth}
    return builders.head(head, sizes)


def split_indices(mask: torch.Tensor, num_visible: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The visible and the hidden token indices of each row, each in grid order; rows must share a count.

    `num_visible`, when the caller knows it (the trainer draws its masks on the host), spares the device
    sync that reading the count off the mask costs.
    """
    if num_visible is None:
        counts = (~mask).sum(dim=1)
        if counts.numel() and not bool((counts == counts[0]).all()):
            raise ValueError("every row of a batch must have the same number of visible tokens")
        num_visible = int(counts[0]) if counts.numel() else 0
    # A stable sort puts the visible (False) positions first, then the hidden ones, each in grid order.
    order = torch.argsort(mask.to(torch.int8), dim=1, stable=True)
    return order[:, :num_visible], order[:, num_visible:]


def visible_indices(mask: torch.Tensor) -> torch.Tensor:
    """Indices of the unmasked tokens of each row, in grid order; rows must share a count."""
    return split_indices(mask)[0]


def gather_rows(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """x[b, indices[b]] for every row, flattened to [B * K, ...]: x[mask] with the count known, so no sync."""
    picked = torch.gather(x, 1, indices[..., None].expand(-1, -1, x.shape[-1]))
    return picked.flatten(0, 1)


JEPA_PROJECTORS = ("djepa", "reference")


def build_jepa_projector(
    predictor_width: int, encoder_width: int, hidden_norm: bool = True, layout: str = "djepa"
) -> nn.Sequential:
    """Predictor features -> encoder width: an MLP with a LayerNorm on its hidden layer.

    `layout` "reference" is the reference's timm Mlp: Linear -> GELU -> LayerNorm -> Linear, hidden 4x the
    predictor width, PyTorch's default init (it is built after the reference's weight init). "djepa": Linear ->
    LayerNorm -> GELU -> Linear, hidden 4x the encoder width, xavier init. The paper sizes have equal widths, so
    both match the paper's parameter counts. `hidden_norm` False drops the LayerNorm (an ablation switch).
    """
    if layout not in JEPA_PROJECTORS:
        raise ValueError(f"model.jepa_projector must be one of {', '.join(JEPA_PROJECTORS)}, got {layout!r}")
    hidden = 4 * (predictor_width if layout == "reference" else encoder_width)
    norm: nn.Module = nn.LayerNorm(hidden, eps=1e-6) if hidden_norm else nn.Identity()
    first = nn.Linear(predictor_width, hidden)
    last = nn.Linear(hidden, encoder_width)
    if layout == "reference":
        return nn.Sequential(first, nn.GELU(), norm, last)
    for m in (first, last):
        nn.init.xavier_uniform_(m.weight)
        nn.init.zeros_(m.bias)
    return nn.Sequential(first, norm, nn.GELU(), last)


class DJEPA(nn.Module):
    def __init__(
        self,
        token_dim: int,
        grid: tuple[int, ...] | list[int],
        num_classes: int,
        encoder_depth: int = 4,
        encoder_width: int = 256,
        predictor_depth: int = 4,
        predictor_width: int = 256,
        num_heads: int = 4,
        mlp_ratio: float = 4.0,
        buffer_size: int = 64,
        label_drop: float = 0.1,
        attn_drop: float = 0.0,
        proj_drop: float = 0.0,
        denoiser_depth: int = 3,
        denoiser_width: int = 256,
        diffusion_batch_mul: int = 4,
        jepa: bool = True,
        head_config: dict[str, Any] | None = None,
        grad_checkpointing: bool = False,
        # Ablation switches; the defaults are the reference's.
        jepa_projector_norm: bool = True,  # the projector's hidden LayerNorm
        jepa_target_norm: bool = False,  # a second layer norm over the targets (the pre-fix targets)
        jepa_without_context: bool = False,  # the JEPA term also on batches with no visible token
        # The reference script's switches (its ImageNet recipe turns both on: configs/model/_paper.yaml).
        qk_norm: bool = False,  # RMS-normalised queries and keys in every attention layer
        jepa_projector: str = "djepa",  # "reference": the reference's projector layout and init
        # Architecture switches; the defaults are djepa's, `learned` / True are MAR's (models/mar.py).
        pos_embed: str = "factorised",  # token positions: factorised sin-cos + per-axis tables, or one learned table
        diffusion_pos_embed: bool = False,  # a learned table added to the predictor's output (MAR's)
        buffer_pos_embed: bool = True,  # with learned positions, a table over the predictor's buffer rows (MAR's)
    ):
        super().__init__()
        if buffer_size < 1:
            raise ValueError("model.buffer_size must be at least 1: the buffer carries the class embedding")
        self.config = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        self.config["grid"] = [int(g) for g in grid]
        self.config["head_config"] = dict(head_config or DEFAULT_HEAD)
        self.token_dim = token_dim
        self.grid = tuple(self.config["grid"])
        self.num_tokens = math.prod(self.grid)
        self.num_classes = num_classes
        self.buffer_size = buffer_size
        self.label_drop = label_drop
        self.diffusion_batch_mul = diffusion_batch_mul
        self.jepa = jepa
        self.jepa_target_norm = jepa_target_norm
        self.jepa_without_context = jepa_without_context

        self.class_emb = nn.Embedding(num_classes, encoder_width)
        self.fake_class = nn.Parameter(torch.zeros(1, encoder_width))
        self.buffer = nn.Parameter(torch.zeros(1, buffer_size, encoder_width))
        self.token_proj = nn.Linear(token_dim, encoder_width)
        # With learned positions the encoder's sequence table is [buffer; encoder_pos] (MAR's
        # encoder_pos_embed_learned) and the predictor's [predictor_buffer_pos; predictor_pos]; the buffer rows
        # carry copies of the class embedding in both models. The D-JEPA reference's tables cover the token rows
        # only (`buffer_pos_embed=False`: no predictor_buffer_pos, and the buffer starts at zero).
        self.encoder_pos = positional_embedding(pos_embed, self.grid, encoder_width)
        self.encoder_in_norm = nn.LayerNorm(encoder_width, eps=1e-6)
        self.encoder = Transformer(
            encoder_depth, encoder_width, num_heads, mlp_ratio, attn_drop, proj_drop, grad_checkpointing, qk_norm
        )

        self.predictor_embed = nn.Linear(encoder_width, predictor_width)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, predictor_width))
        self.predictor_pos = positional_embedding(pos_embed, self.grid, predictor_width)
        self.predictor = Transformer(
            predictor_depth, predictor_width, num_heads, mlp_ratio, attn_drop, proj_drop, grad_checkpointing, qk_norm
        )
        # Built only when switched on, so the default model draws its initial weights as it always has.
        self.predictor_buffer_pos: nn.Parameter | None = None
        self.diffusion_pos: nn.Parameter | None = None
        if pos_embed == "learned" and buffer_pos_embed:
            self.predictor_buffer_pos = nn.Parameter(torch.zeros(1, buffer_size, predictor_width))
        if diffusion_pos_embed:
            self.diffusion_pos = nn.Parameter(torch.zeros(self.num_tokens, predictor_width))
        self._init_weights()
        # Built after the generic init: the denoiser has its own (zeroed modulation and output).
        self.head = build_head(token_dim, predictor_width, denoiser_width, denoiser_depth, self.config["head_config"])
        # The JEPA projector comes last, so building it draws nothing from the random stream before the
        # shared parameters: the same seed gives D-JEPA and MAR mode bit-identical shared weights.
        self.jepa_proj = (
            build_jepa_projector(predictor_width, encoder_width, jepa_projector_norm, jepa_projector) if jepa else None
        )

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm) and m.elementwise_affine:
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        for p in (self.class_emb.weight, self.fake_class, self.mask_token):
            nn.init.normal_(p, std=0.02)
        if self.predictor_buffer_pos is not None:  # MAR's tables, buffer rows included, start at std 0.02
            for p in (self.buffer, self.predictor_buffer_pos):
                nn.init.normal_(p, std=0.02)
        if self.diffusion_pos is not None:
            nn.init.normal_(self.diffusion_pos, std=0.02)

    # ------------------------------------------------------------------ pieces

    def class_embedding(
        self, labels: torch.Tensor | None, batch: int, drop_draw: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Class embeddings; in training each row's label is dropped to the fake class with chance label_drop,
        decided by `drop_draw` [batch, 1] (uniform draws, see loss_draws) or by a fresh draw."""
        if labels is None:
            return self.fake_class.expand(batch, -1)
        emb = self.class_emb(labels)
        if self.training and self.label_drop > 0:
            u = torch.rand(batch, 1, device=emb.device) if drop_draw is None else drop_draw
            emb = torch.where(u < self.label_drop, self.fake_class.to(emb.dtype), emb)
        return emb

    def encode(self, tokens: torch.Tensor, visible: torch.Tensor, class_emb: torch.Tensor) -> torch.Tensor:
        """Context encoder over the visible tokens, buffer in front: [B, buffer + V, encoder_width]."""
        x = self.token_proj(tokens) + self.encoder_pos()
        x = torch.gather(x, 1, visible[..., None].expand(-1, -1, x.shape[-1]))
        buffer = (self.buffer + class_emb[:, None]).to(x.dtype)
        x = self.encoder_in_norm(torch.cat([buffer, x], dim=1))
        return self.encoder(x)

    def predict(self, encoded: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
        """Feature predictor: mask tokens fill the hidden positions; features [B, N, predictor_width]."""
        h = self.predictor_embed(encoded)
        b, _, width = h.shape
        full = self.mask_token.to(h.dtype).expand(b, self.num_tokens, width)
        full = full.scatter(1, visible[..., None].expand(-1, -1, width), h[:, self.buffer_size :])
        # The residual stream stays fp32 under autocast, as the encoder's and MAR's decoder's (whose bf16 tokens
        # meet its fp32 position table): only the blocks' matmuls run in bf16.
        full = full.float() + self.predictor_pos().float()
        buffer = h[:, : self.buffer_size].float()
        if self.predictor_buffer_pos is not None:
            buffer = buffer + self.predictor_buffer_pos.float()
        x = self.predictor(torch.cat([buffer, full], dim=1))[:, self.buffer_size :]
        if self.diffusion_pos is not None:
            x = x + self.diffusion_pos.to(x.dtype)
        return x

    # The parts the JEPA targets come from: what a teacher EMA has to track.
    TARGET_MODULES = ("class_emb", "buffer", "token_proj", "encoder_pos", "encoder_in_norm", "encoder")

    @torch.no_grad()
    def target_features(self, tokens: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """JEPA targets: the encoder's final-norm features of every token, all visible (as the reference)."""
        b, n, _ = tokens.shape
        visible = torch.arange(n, device=tokens.device).expand(b, n)
        emb = self.class_emb(labels)
        features = self.encode(tokens, visible, emb)[:, self.buffer_size :].float()
        return F.layer_norm(features, features.shape[-1:]) if self.jepa_target_norm else features

    # ------------------------------------------------------------------ training

    def loss(
        self,
        tokens: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor,
        targets: torch.Tensor | None = None,
        num_visible: int | None = None,
        draws: LossDraws | None = None,
        with_jepa: bool = True,
    ) -> dict[str, torch.Tensor]:
        """Per-term losses for tokens [B, N, D] with `mask` [B, N] True where hidden.

        `targets` are the EMA model's `target_features`; required when the model has a JEPA loss.
        `num_visible`, the visible count every row shares, lets the step run without a host sync.
        `draws` (loss_draws, slice_draws) replace the random draws the loss would make itself.
        `with_jepa=False` turns the JEPA term off for this batch (no targets needed; loss.jepa_every).
        """
        b, n, _ = tokens.shape
        if n != self.num_tokens:
            raise ValueError(f"got {n} tokens, the model's grid {self.grid} holds {self.num_tokens}")
        drop_draw, head_draws = draws if draws is not None else (None, None)
        visible, hidden = split_indices(mask, num_visible)
        with record_function("djepa::encoder"):
            encoded = self.encode(tokens, visible, self.class_embedding(labels, b, drop_draw))
        with record_function("djepa::predictor"):
            z = self.predict(encoded, visible)
        # Only the hidden tokens are denoised: the reference multiplies the loss of all tokens by
        # the mask, which gives the same gradient for more work.
        cond, target = gather_rows(z, hidden), gather_rows(tokens, hidden)
        mul = self.diffusion_batch_mul
        # Built-in heads embed each condition once and tile the embedding over the copies (the same numbers as
        # embedding the tiled conditions, for 1/mul of the work).
        rows = (target.repeat(mul, 1), cond if self.head.takes_untiled_cond else cond.repeat(mul, 1))
        with record_function("djepa::head"):
            per_row = self.head.loss(*rows) if head_draws is None else self.head.loss(*rows, head_draws)
        losses = {"denoise": per_row.mean()}
        if self.jepa:
            assert self.jepa_proj is not None  # built exactly when jepa is on
            jepa_rows = b if targets is None else targets.shape[0]
            with record_function("djepa::jepa_projector"):
                pred = self.jepa_proj(cond[: jepa_rows * hidden.shape[1]]).float()
            if not with_jepa or (visible.shape[1] == 0 and not self.jepa_without_context):
                # No visible token (a quarter of batches at 16 tokens): nothing to predict the targets from; or
                # a step the trainer skips (loss.jepa_every). The term is off; zero-weighted, the projector still
                # takes part (DDP needs every parameter used). The denoiser still learns, with no context the
                # first, context-free token.
                losses["jepa"] = pred.sum() * 0.0
            elif targets is None:
                raise ValueError("the JEPA loss needs target features from the EMA model")
            else:
                # Targets for only the first rows (loss.jepa_rows): the term is their mean, the rest skip it.
                losses["jepa"] = F.smooth_l1_loss(pred, gather_rows(targets, hidden[:jepa_rows]), beta=2.0)
        return losses

    def loss_draws(self, batch: int, num_hidden: int, like: torch.Tensor) -> LossDraws:
        """Every random draw `loss` makes for `batch` rows with `num_hidden` hidden tokens each (dropout aside),
        made now in the order `loss` makes them: the label drops' uniforms, then the head's draws for its rows.
        `like` gives the tokens' device and dtype. Sliced by slice_draws, a share of rows takes its share."""
        drop = torch.rand(batch, 1, device=like.device) if self.training and self.label_drop > 0 else None
        rows = self.diffusion_batch_mul * batch * num_hidden
        return drop, self.head.draw(like.new_empty(rows, self.token_dim))

    def slice_draws(self, draws: LossDraws, batch: int, num_hidden: int, part: slice) -> LossDraws:
        """The draws of rows `part` of a batch's loss_draws: the head's rows run (copy, row, hidden token)."""
        drop, head = draws
        mul = self.diffusion_batch_mul

        def rows(x: torch.Tensor) -> torch.Tensor:
            return x.view(mul, batch, num_hidden, *x.shape[1:])[:, part].reshape(-1, *x.shape[1:])

        return (None if drop is None else drop[part]), tuple(rows(x) for x in head)

    def forward(
        self,
        tokens: torch.Tensor,
        labels: torch.Tensor,
        mask: torch.Tensor | None = None,
        targets: torch.Tensor | None = None,
        num_visible: int | None = None,
        draws: LossDraws | None = None,
        with_jepa: bool = True,
    ) -> dict[str, torch.Tensor] | torch.Tensor:
        """The entry DDP, FSDP and torch.compile wrap: `loss`, or with no mask the EMA's `target_features`."""
        if mask is None:
            return self.target_features(tokens, labels)
        return self.loss(tokens, labels, mask, targets, num_visible, draws, with_jepa)

    # ------------------------------------------------------------------ sampling

    @torch.no_grad()
    def sample(
        self,
        labels: torch.Tensor | None,
        batch: int | None = None,
        num_steps: int = 64,
        guidance: float = 1.0,
        temperature: float = 1.0,
        known_tokens: torch.Tensor | None = None,
        known_mask: torch.Tensor | None = None,
        progress: bool = False,
        guidance_schedule: str = "linear",
    ) -> torch.Tensor:
        """Masked autoregressive sampling: tokens [B, N, D].

        `labels` None samples unconditionally. `known_tokens` with `known_mask` [B, N] (True where
        known) stay visible from the start and are never resampled: continuation and inpainting.
        `guidance_schedule` "linear" ramps the guidance scale from 1 to `guidance` as tokens are revealed (MAR);
        "constant" guides every token fully.
        """
        if guidance_schedule not in GUIDANCE_SCHEDULES:
            raise ValueError(f"guidance_schedule must be linear or constant, got {guidance_schedule!r}")
        device = self.buffer.device
        b = labels.shape[0] if labels is not None else int(batch or 1)
        n = self.num_tokens
        tokens = torch.zeros(b, n, self.token_dim, device=device)
        hidden = torch.ones(b, n, dtype=torch.bool, device=device)
        unknown = n
        if known_mask is not None:
            assert known_tokens is not None, "known_mask needs known_tokens"
            # Counted where the caller made the mask (the host, usually): the one read of a count in sampling.
            known_counts = known_mask.sum(dim=1)
            if known_counts.numel() and not bool((known_counts == known_counts[0]).all()):
                raise ValueError("every row of a batch must have the same number of visible tokens")
            unknown = n - (int(known_counts[0]) if known_counts.numel() else 0)
            known_mask = known_mask.to(device)
            tokens = torch.where(known_mask[..., None], known_tokens.to(device, tokens.dtype), tokens)
            hidden = ~known_mask
        # Hidden positions first in a random order, known ones last: at every step the hidden tokens are
        # orders[:, :remaining], so what each step reveals is a slice of it and no count is read off the device.
        scores = torch.rand(b, n, device=device).masked_fill(~hidden, 2.0)
        orders = torch.argsort(scores, dim=1)
        guided = guidance != 1.0 and labels is not None
        cond_emb = self.class_embedding(labels, b)
        if guided:
            cond_emb = torch.cat([cond_emb, self.fake_class.expand(b, -1)])
        remaining = unknown
        steps = range(num_steps)
        for step in tqdm(steps, desc="sampling", leave=False) if progress else steps:
            if remaining == 0:
                break
            visible = orders[:, remaining:].sort(dim=1).values  # grid order, as the encoder takes them
            x, vis = (torch.cat([tokens, tokens]), torch.cat([visible, visible])) if guided else (tokens, visible)
            with record_function("djepa::sample_trunk"):
                z = self.predict(self.encode(x, vis, cond_emb), vis)
            mask_len = math.floor(unknown * math.cos(math.pi / 2 * (step + 1) / num_steps))
            mask_len = max(1, min(remaining - 1, mask_len))
            # The linear ramp reads the count left masked before the last step reveals everything, so it never
            # reaches the full scale (1 + (cfg - 1) * (N - 1) / N at the end), as MAR's sample_tokens.
            revealed = (unknown - mask_len) / unknown if guidance_schedule == "linear" else 1.0
            if step == num_steps - 1 or remaining == 1:
                mask_len = 0
            # The tokens revealed now, in grid order: the rows the head samples, in the order its noise is drawn.
            reveal = orders[:, mask_len:remaining].sort(dim=1).values
            step_guidance = 1.0 + (guidance - 1.0) * revealed if guided else 1.0
            uncond = gather_rows(z[b:], reveal).float() if guided else None
            with record_function("djepa::sample_head"):
                new = self.head.sample(gather_rows(z[:b], reveal).float(), uncond, temperature, step_guidance)
            index = reveal[..., None].expand(-1, -1, self.token_dim)
            tokens = tokens.scatter(1, index, new.to(tokens.dtype).view(b, -1, self.token_dim))
            remaining = mask_len
        return tokens

    def repeated_blocks(self) -> list[nn.Module]:
        """The transformer and denoiser blocks: the units FSDP shards and regional compilation compiles."""
        return [m for m in self.modules() if isinstance(m, (Block, ResBlock))]

    # ------------------------------------------------------------------ persistence

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def save_pretrained(self, directory: str | Path) -> None:
        from djepa.io import atomic_write_json, atomic_write_safetensors

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write_json(directory / "config.json", self.config)
        atomic_write_safetensors(directory / "model.safetensors", self.state_dict())

    @classmethod
    def from_pretrained(cls, directory: str | Path, device: str | torch.device = "cpu") -> DJEPA:
        directory = Path(directory)
        config = json.loads((directory / "config.json").read_text())
        model = cls(**config)
        model.load_state_dict(load_file(str(directory / "model.safetensors"), device=str(device)))
        return model.to(device)
