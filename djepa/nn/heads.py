"""Per-token generative heads: Gaussian diffusion and flow matching behind one interface.

A head sees rows: `loss(target [M, D], cond [M, C]) -> [M]` and
`sample(cond, uncond, temperature, guidance) -> [M, D]`; with `uncond` given, classifier-free
guidance runs both conditions through the network in one batched call.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from djepa.errors import UsageError
from djepa.nn.denoiser import DenoiserMLP
from djepa.schema import DiffusionHeadSettings, FlowHeadSettings, choices

# Head arguments that only change how a trained denoiser is sampled: free to change at sample time and on resume.
FREE_HEAD_KEYS = frozenset({"sampling_steps", "sampler", "time_shift", "clip_x0"})


class TokenHead(nn.Module):
    sampling_steps: int  # set by each head: the steps `sample` takes

    def __init__(self, token_dim: int, cond_dim: int, width: int, depth: int, out_channels: int):
        super().__init__()
        self.token_dim = token_dim
        self.net = DenoiserMLP(token_dim, cond_dim, width, depth, out_channels)

    def loss(
        self, target: torch.Tensor, cond: torch.Tensor, draws: tuple[torch.Tensor, ...] | None = None
    ) -> torch.Tensor:
        """Per-row loss [M]; `draws` (from `draw`) replace the random draws it would make itself."""
        raise NotImplementedError

    def draw(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The random draws `loss` makes for target rows shaped like `like` [M, D], in its order, each with M
        leading rows: made ahead for a large batch, a slice of rows serves a slice of the batch."""
        raise NotImplementedError

    def set_sampling_steps(self, steps: int) -> None:
        raise NotImplementedError

    def set_sampler(self, sampler: str) -> None:
        raise NotImplementedError

    def sample(
        self, cond: torch.Tensor, uncond: torch.Tensor | None = None, temperature: float = 1.0, guidance: float = 1.0
    ) -> torch.Tensor:
        raise NotImplementedError

    # The built-in heads' `loss` takes the model's conditions once for the `diffusion_batch_mul` tiled copies of the
    # target rows (DenoiserMLP embeds, then tiles); a head whose loss reads them row by row keeps this False.
    takes_untiled_cond: bool = False

    def _cond_emb(self, cond: torch.Tensor, uncond: torch.Tensor | None) -> torch.Tensor | None:
        """The net's embedding of the conditions `_guided` runs (cond, then uncond), made once per sampling call;
        None for a net that embeds its condition itself (no `embed_cond`)."""
        embed = getattr(self.net, "embed_cond", None)
        return None if embed is None else embed(cond if uncond is None else torch.cat([cond, uncond]))

    def _guided(
        self,
        x: torch.Tensor,
        t: torch.Tensor,
        cond: torch.Tensor,
        uncond: torch.Tensor | None,
        guidance: float,
        cond_emb: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Output for M rows; with `uncond`, both conditions in one call, mixed on the first D channels in fp32
        (under bf16 autocast the mix would round cond - uncond, which the x0 estimate then multiplies).
        `cond_emb` (from `_cond_emb`) spares embedding the conditions again at every step."""
        embedded = () if cond_emb is None else (cond_emb,)
        if uncond is None:
            return self.net(x, t, cond, *embedded)
        both = torch.cat([cond, uncond]) if cond_emb is None else cond  # cond is not read when cond_emb is given
        out = self.net(torch.cat([x, x]), torch.cat([t, t]), both, *embedded)
        cond_out, uncond_out = out.float().chunk(2)
        d = self.token_dim
        mixed = uncond_out[:, :d] + guidance * (cond_out[:, :d] - uncond_out[:, :d])
        return torch.cat([mixed, cond_out[:, d:]], dim=1)


# ----------------------------------------------------------------------------- diffusion


def cosine_betas(num_timesteps: int, s: float = 0.008, max_beta: float = 0.999) -> list[float]:
    def alpha_bar(t: float) -> float:
        return math.cos((t / num_timesteps + s) / (1 + s) * math.pi / 2) ** 2

    return [min(1 - alpha_bar(i + 1) / alpha_bar(i), max_beta) for i in range(num_timesteps)]


def spaced_timesteps(num_timesteps: int, count: int) -> list[int]:
    """`count` timesteps evenly spread over [0, num_timesteps - 1] (improved-DDPM respacing)."""
    if count >= num_timesteps:
        return list(range(num_timesteps))
    if count == 1:
        return [num_timesteps - 1]
    stride = (num_timesteps - 1) / (count - 1)
    return sorted({round(i * stride) for i in range(count)})


class Schedule(nn.Module):
    """Closed-form quantities of a discrete Gaussian diffusion, kept in float64."""

    # The buffers registered below, by name (`take` reads them by name too).
    betas: torch.Tensor
    sqrt_ac: torch.Tensor
    sqrt_1m_ac: torch.Tensor
    sqrt_recip_ac: torch.Tensor
    sqrt_recipm1_ac: torch.Tensor
    post_log_var: torch.Tensor
    post_coef_x0: torch.Tensor
    post_coef_xt: torch.Tensor
    timestep_map: torch.Tensor

    def __init__(self, beta_values: list[float], timestep_map: list[int]):
        super().__init__()
        # Built on the CPU whatever the default device (meta included), moved with the module.
        betas = torch.tensor(beta_values, dtype=torch.float64, device="cpu")
        alphas_cumprod = torch.cumprod(1.0 - betas, dim=0)
        prev = torch.cat([torch.ones(1, dtype=torch.float64, device="cpu"), alphas_cumprod[:-1]])
        posterior_var = betas * (1 - prev) / (1 - alphas_cumprod)
        tensors = {
            "betas": betas,
            "sqrt_ac": alphas_cumprod.sqrt(),
            "sqrt_1m_ac": (1 - alphas_cumprod).sqrt(),
            "sqrt_recip_ac": (1 / alphas_cumprod).sqrt(),
            "sqrt_recipm1_ac": (1 / alphas_cumprod - 1).sqrt(),
            # Step 0's posterior variance is 0: improved DDPM uses step 1's there; a one-step schedule has
            # none, and its only step adds no noise, so beta stands in (any finite value would do).
            "post_log_var": torch.log(torch.cat([posterior_var[1:2] if len(betas) > 1 else betas, posterior_var[1:]])),
            "post_coef_x0": betas * prev.sqrt() / (1 - alphas_cumprod),
            "post_coef_xt": (1 - prev) * (1 - betas).sqrt() / (1 - alphas_cumprod),
            "timestep_map": torch.tensor(timestep_map, dtype=torch.float64, device="cpu"),
        }
        for name, value in tensors.items():
            self.register_buffer(name, value, persistent=False)

    @classmethod
    def respaced(cls, base_betas: list[float], use: list[int]) -> Schedule:
        alphas_cumprod: list[float] = []
        running = 1.0
        for beta in base_betas:
            running *= 1 - beta
            alphas_cumprod.append(running)
        betas: list[float] = []
        last = 1.0
        for i in use:
            betas.append(1 - alphas_cumprod[i] / last)
            last = alphas_cumprod[i]
        return cls(betas, use)

    def take(self, name: str, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return getattr(self, name)[t].to(like.dtype)[:, None]

    def p_mean_log_var(
        self,
        out: torch.Tensor,
        x_t: torch.Tensor,
        t: torch.Tensor,
        clamp: bool = False,
        clip_x0: float | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and log-variance of p(x_{t-1} | x_t).

        `clamp` keeps the variance within its bounds; `clip_x0` bounds the predicted clean token.
        """
        eps, v = out.chunk(2, dim=1)
        min_log, max_log = self.take("post_log_var", t, x_t), self.take("betas", t, x_t).log()
        frac = (v + 1) / 2
        if clamp:
            # The net may extrapolate past [beta_tilde, beta]; on a respaced schedule, with its larger
            # betas, that overshoot compounds over the steps and sampling diverges.
            frac = frac.clamp(0, 1)
        log_var = frac * max_log + (1 - frac) * min_log
        x0 = self.take("sqrt_recip_ac", t, x_t) * x_t - self.take("sqrt_recipm1_ac", t, x_t) * eps
        if clip_x0 is not None:
            # At t=999 of the cosine schedule 1/sqrt(alpha_bar) is ~2e4, so a small eps error becomes
            # a huge x0; unit-variance latents never lie far outside a few sigma.
            x0 = x0.clamp(-clip_x0, clip_x0)
        return self.q_posterior_mean(x0, x_t, t), log_var

    def q_posterior_mean(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.take("post_coef_x0", t, x_t) * x0 + self.take("post_coef_xt", t, x_t) * x_t


def normal_kl(mean1: torch.Tensor, logvar1: torch.Tensor, mean2: torch.Tensor, logvar2: torch.Tensor) -> torch.Tensor:
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_scale: torch.Tensor) -> torch.Tensor:
    """-log p(x) of a Gaussian discretised into 255 bins over [-1, 1] (as improved-DDPM does at t=0)."""

    def cdf(v: torch.Tensor) -> torch.Tensor:
        return 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (v + 0.044715 * v**3)))

    centred = x - mean
    inv_std = torch.exp(-log_scale)
    cdf_plus, cdf_min = cdf(inv_std * (centred + 1 / 255)), cdf(inv_std * (centred - 1 / 255))
    log_cdf_plus = cdf_plus.clamp(min=1e-12).log()
    log_one_minus_cdf_min = (1 - cdf_min).clamp(min=1e-12).log()
    log_delta = (cdf_plus - cdf_min).clamp(min=1e-12).log()
    log_probs = torch.where(x < -0.999, log_cdf_plus, torch.where(x > 0.999, log_one_minus_cdf_min, log_delta))
    return -log_probs


class DiffusionHead(TokenHead):
    """DDPM with a cosine schedule, learned variance (hybrid loss) and respaced sampling.

    `sampler`: "ddpm" (respaced ancestral sampling with the learned variance) or "dpm_solver" (DPM-Solver++ 2M,
    an ODE solver on the same schedule that reads only the eps channels).
    """

    SAMPLERS = choices(DiffusionHeadSettings, "sampler")
    takes_untiled_cond = True

    def __init__(
        self,
        token_dim: int,
        cond_dim: int,
        width: int,
        depth: int,
        num_timesteps: int = 1000,
        sampling_steps: int = 100,
        clip_x0: float | None = 5.0,
        sampler: str = "ddpm",
    ):
        super().__init__(token_dim, cond_dim, width, depth, out_channels=2 * token_dim)
        self.num_timesteps = num_timesteps
        self.clip_x0 = clip_x0
        self.set_sampler(sampler)
        betas = cosine_betas(num_timesteps)
        self.train_schedule = Schedule(betas, list(range(num_timesteps)))
        # float64 on the host, as the schedule's own (the DPM-Solver sampler's coefficients)
        self.alphas_cumprod: list[float] = torch.cumprod(1 - self.train_schedule.betas, dim=0).tolist()
        self.sample_schedule = Schedule.respaced(betas, spaced_timesteps(num_timesteps, sampling_steps))
        self.sampling_steps = len(self.sample_schedule.betas)

    def set_sampling_steps(self, steps: int) -> None:
        device = self.train_schedule.betas.device
        betas = cosine_betas(self.num_timesteps)
        self.sample_schedule = Schedule.respaced(betas, spaced_timesteps(self.num_timesteps, steps)).to(device)
        self.sampling_steps = len(self.sample_schedule.betas)

    def set_sampler(self, sampler: str) -> None:
        if sampler not in self.SAMPLERS:
            raise UsageError(
                f"loss.head.sampler={sampler!r} must be one of {', '.join(self.SAMPLERS)} for DiffusionHead"
            )
        self.sampler = sampler

    def draw(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        t = torch.randint(0, self.num_timesteps, (like.shape[0],), device=like.device)
        return t, torch.randn_like(like)

    def loss(
        self, target: torch.Tensor, cond: torch.Tensor, draws: tuple[torch.Tensor, ...] | None = None
    ) -> torch.Tensor:
        s = self.train_schedule
        t, noise = draws if draws is not None else self.draw(target)
        x_t = s.take("sqrt_ac", t, target) * target + s.take("sqrt_1m_ac", t, target) * noise
        out = self.net(x_t, t.float(), cond)
        eps, v = out.float().chunk(2, dim=1)
        mse = ((eps - noise) ** 2).mean(dim=1)
        # The variance is learned through the variational bound alone: the mean is frozen in it.
        mean, log_var = s.p_mean_log_var(torch.cat([eps.detach(), v], dim=1), x_t, t)
        true_mean = s.q_posterior_mean(target, x_t, t)
        true_log_var = s.take("post_log_var", t, target)
        kl = normal_kl(true_mean, true_log_var, mean, log_var).mean(dim=1) / math.log(2.0)
        nll = discretized_gaussian_nll(target, mean, 0.5 * log_var).mean(dim=1) / math.log(2.0)
        vb = torch.where(t == 0, nll, kl) * (self.num_timesteps / 1000.0)
        return mse + vb

    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, uncond: torch.Tensor | None = None, temperature: float = 1.0, guidance: float = 1.0
    ) -> torch.Tensor:
        if self.sampler == "dpm_solver":
            return self._sample_dpm_solver(cond, uncond, temperature, guidance)
        s = self.sample_schedule
        rows = cond.shape[0]
        x = torch.randn(rows, self.token_dim, device=cond.device)
        cond_emb = self._cond_emb(cond, uncond)
        for i in reversed(range(self.sampling_steps)):
            t = torch.full((rows,), i, device=cond.device, dtype=torch.long)
            out = self._guided(x, s.timestep_map[t].float(), cond, uncond, guidance, cond_emb).float()
            mean, log_var = s.p_mean_log_var(out, x, t, clamp=True, clip_x0=self.clip_x0)
            noise = torch.randn_like(x) if i > 0 else torch.zeros_like(x)
            x = mean + torch.exp(0.5 * log_var) * noise * temperature
        return x

    def _sample_dpm_solver(
        self, cond: torch.Tensor, uncond: torch.Tensor | None, temperature: float, guidance: float
    ) -> torch.Tensor:
        """DPM-Solver++(2M) (Lu et al. 2022): the probability-flow ODE solved in the data prediction, second order
        from the previous step's x0. Steps as diffusers' DPMSolverMultistepScheduler (algorithm_type="dpmsolver++",
        solver_order=2, "linspace" timesteps from num_timesteps - 1, final sigma 0 reached by a first-order step)."""
        rows, d = cond.shape[0], self.token_dim
        alphas_cumprod = self.alphas_cumprod  # host floats: no device read per call
        spaced = np.linspace(0, self.num_timesteps - 1, self.sampling_steps + 1).round()[::-1][:-1]
        timesteps = sorted({int(t) for t in spaced}, reverse=True)
        alpha = [math.sqrt(alphas_cumprod[t]) for t in timesteps] + [1.0]
        sigma = [math.sqrt(1 - alphas_cumprod[t]) for t in timesteps] + [0.0]
        lam = [math.log(a / s) if s > 0 else math.inf for a, s in zip(alpha, sigma)]  # log-SNR / 2
        # A deterministic sampler draws noise only once: temperature scales that initial noise.
        x = torch.randn(rows, d, device=cond.device) * temperature
        cond_emb = self._cond_emb(cond, uncond)
        prev_x0: torch.Tensor | None = None
        for i, t in enumerate(timesteps):
            t_rows = torch.full((rows,), float(t), device=cond.device)
            eps = self._guided(x, t_rows, cond, uncond, guidance, cond_emb)[:, :d].float()
            x0 = (x - sigma[i] * eps) / alpha[i]
            if self.clip_x0 is not None:
                x0 = x0.clamp(-self.clip_x0, self.clip_x0)  # as the ddpm path does (see Schedule.p_mean_log_var)
            h = lam[i + 1] - lam[i]
            if prev_x0 is None or i == len(timesteps) - 1:
                data = x0  # first order at the first step and at the last (lower_order_final)
            else:
                r = (lam[i] - lam[i - 1]) / h
                data = x0 + (x0 - prev_x0) / (2 * r)
            x = (sigma[i + 1] / sigma[i]) * x - alpha[i + 1] * math.expm1(-h) * data
            prev_x0 = x0
        return x


# ----------------------------------------------------------------------------- flow matching


class FlowHead(TokenHead):
    """Rectified flow: linear path from noise (t=0) to data (t=1), velocity target, Euler or Heun."""

    SAMPLERS = choices(FlowHeadSettings, "sampler")
    takes_untiled_cond = True

    def __init__(
        self,
        token_dim: int,
        cond_dim: int,
        width: int,
        depth: int,
        sampling_steps: int = 50,
        sampler: str = "heun",
        time_shift: float = 1.0,
    ):
        super().__init__(token_dim, cond_dim, width, depth, out_channels=token_dim)
        self.set_sampler(sampler)
        self.sampling_steps = sampling_steps
        self.time_shift = time_shift

    def set_sampling_steps(self, steps: int) -> None:
        self.sampling_steps = steps

    def set_sampler(self, sampler: str) -> None:
        if sampler not in self.SAMPLERS:
            raise UsageError(f"loss.head.sampler={sampler!r} must be one of {', '.join(self.SAMPLERS)} for FlowHead")
        self.sampler = sampler

    def shift(self, t: torch.Tensor) -> torch.Tensor:
        """Spend more of the path near the noise end when time_shift > 1."""
        return t / (self.time_shift - (self.time_shift - 1) * t)

    def draw(self, like: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.rand(like.shape[0], device=like.device), torch.randn_like(like)

    def loss(
        self, target: torch.Tensor, cond: torch.Tensor, draws: tuple[torch.Tensor, ...] | None = None
    ) -> torch.Tensor:
        u, noise = draws if draws is not None else self.draw(target)
        t = self.shift(u)
        x_t = t[:, None] * target + (1 - t[:, None]) * noise
        velocity = self.net(x_t, t * 1000, cond).float()
        return ((velocity - (target - noise)) ** 2).mean(dim=1)

    @torch.no_grad()
    def sample(
        self, cond: torch.Tensor, uncond: torch.Tensor | None = None, temperature: float = 1.0, guidance: float = 1.0
    ) -> torch.Tensor:
        rows = cond.shape[0]
        x = torch.randn(rows, self.token_dim, device=cond.device) * temperature
        times = self.shift(torch.linspace(0, 1, self.sampling_steps + 1, device=cond.device))
        cond_emb = self._cond_emb(cond, uncond)
        for i in range(self.sampling_steps):
            t0, t1 = times[i], times[i + 1]
            v0 = self._guided(x, (t0 * 1000).expand(rows), cond, uncond, guidance, cond_emb).float()
            if self.sampler == "heun" and i < self.sampling_steps - 1:
                x_next = x + (t1 - t0) * v0
                v1 = self._guided(x_next, (t1 * 1000).expand(rows), cond, uncond, guidance, cond_emb).float()
                x = x + (t1 - t0) * 0.5 * (v0 + v1)
            else:
                x = x + (t1 - t0) * v0
        return x
