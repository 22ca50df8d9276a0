import pytest
import torch

from djepa.nn.heads import DiffusionHead, FlowHead, Schedule, cosine_betas, spaced_timesteps


def fit_clusters(head, steps=300):
    """Tokens drawn around one of 4 centres, the centre given by the condition."""
    centres = torch.tensor([[2.0, 0.0], [0.0, 2.0], [-2.0, 0.0], [0.0, -2.0]])
    opt = torch.optim.AdamW(head.parameters(), lr=3e-3)
    for _ in range(steps):
        k = torch.randint(0, 4, (256,))
        loss = head.loss(centres[k] + 0.1 * torch.randn(256, 2), torch.nn.functional.one_hot(k, 4).float()).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return centres


@pytest.mark.parametrize(
    "make",
    [
        lambda: DiffusionHead(2, 4, 64, 2, sampling_steps=25),
        lambda: DiffusionHead(2, 4, 64, 2, sampling_steps=20, sampler="dpm_solver"),
        lambda: FlowHead(2, 4, 64, 2, sampling_steps=10, sampler="heun"),
    ],
)
@pytest.mark.slow
def test_head_samples_the_conditional_distribution(make):
    head = make()
    centres = fit_clusters(head)
    k = torch.arange(4).repeat(50)
    samples = head.sample(torch.nn.functional.one_hot(k, 4).float(), None, temperature=1.0)
    err = samples - centres[k]
    assert err.mean(0).abs().max() < 0.15
    assert 0.03 < err.std(0).mean() < 0.4


@pytest.mark.slow
def test_guidance_pushes_away_from_the_unconditional():
    head = FlowHead(2, 4, 64, 2, sampling_steps=10)
    centres = fit_clusters(head)
    cond = torch.nn.functional.one_hot(torch.zeros(100, dtype=torch.long), 4).float()
    uncond = torch.nn.functional.one_hot(torch.full((100,), 2), 4).float()
    plain = head.sample(cond, None)
    guided = head.sample(cond, uncond, guidance=3.0)
    # guiding away from centre 2 (at -2, 0) moves samples further along +x
    assert guided[:, 0].mean() > plain[:, 0].mean() + 0.5
    assert torch.isfinite(guided).all() and (plain - centres[0]).abs().mean() < 0.3


def test_respaced_schedule_recovers_a_point_mass_with_exact_eps():
    target = torch.tensor([[1.5, -0.7]])
    for steps in (1000, 50, 10):
        s = Schedule.respaced(cosine_betas(1000), spaced_timesteps(1000, steps))
        x = torch.randn(3, 2)
        for i in reversed(range(len(s.betas))):
            t = torch.full((3,), i)
            eps = (x - s.sqrt_ac[t, None].float() * target) / s.sqrt_1m_ac[t, None].float()
            mean, log_var = s.p_mean_log_var(torch.cat([eps, torch.zeros_like(eps)], 1), x, t)
            x = mean + (torch.exp(0.5 * log_var) * torch.randn_like(x) if i else 0)
        torch.testing.assert_close(x, target.expand(3, 2), atol=1e-3, rtol=0)


class PointMassEps(torch.nn.Module):
    """The exact eps (first D channels; zero variance channels) for data that is all `target`."""

    def __init__(self, target):
        super().__init__()
        self.target = target
        self.alphas_cumprod = torch.cumprod(1 - torch.tensor(cosine_betas(1000), dtype=torch.float64), 0)

    def forward(self, x, t, cond):
        ac = self.alphas_cumprod[t.long(), None]
        eps = ((x - ac.sqrt() * self.target) / (1 - ac).sqrt()).float()
        return torch.cat([eps, torch.zeros_like(eps)], 1)


@pytest.mark.parametrize("steps", [10, 20])
def test_dpm_solver_recovers_a_point_mass_with_exact_eps(steps):
    target = torch.tensor([[1.5, -0.7]])
    head = DiffusionHead(2, 4, 8, 1, sampling_steps=steps, sampler="dpm_solver")
    head.net = PointMassEps(target)
    x = head.sample(torch.zeros(3, 4), None, temperature=1.0)
    torch.testing.assert_close(x, target.expand(3, 2), atol=1e-3, rtol=0)


def test_dpm_solver_matches_diffusers_multistep_scheduler():
    """The same steps as diffusers' DPMSolverMultistepScheduler (dpmsolver++, order 2, eps, cosine betas)."""
    from diffusers import DPMSolverMultistepScheduler

    class SomeEps(torch.nn.Module):  # any smooth function of (x, t, cond)
        def forward(self, x, t, cond):
            eps = 0.98 * x + 0.2 * torch.tanh(cond[:, :2] + t[:, None] / 500)
            return torch.cat([eps, torch.zeros_like(eps)], 1)

    def clamped(to_x0):
        return lambda *args, **kwargs: to_x0(*args, **kwargs).clamp(-5, 5)

    cond = torch.randn(6, 4)
    for steps in (1, 2, 7, 20):
        head = DiffusionHead(2, 4, 8, 1, sampling_steps=steps, sampler="dpm_solver", clip_x0=5.0)
        head.net = SomeEps()
        torch.manual_seed(3)
        ours = head.sample(cond, None)
        scheduler = DPMSolverMultistepScheduler(
            beta_schedule="squaredcos_cap_v2", algorithm_type="dpmsolver++", solver_order=2, variance_type=None
        )
        # clip_x0 as a clamp of diffusers' x0 (its own `thresholding` is dynamic, not a clamp)
        scheduler.convert_model_output = clamped(scheduler.convert_model_output)
        scheduler.set_timesteps(steps)
        torch.manual_seed(3)
        x = torch.randn(6, 2)
        for t in scheduler.timesteps:
            x = scheduler.step(SomeEps()(x, torch.full((6,), float(t)), cond)[:, :2], t, x).prev_sample
        torch.testing.assert_close(ours, x, atol=1e-5, rtol=0)


def test_ddpm_is_the_default_and_unchanged_by_the_sampler_switch():
    torch.manual_seed(0)
    head = DiffusionHead(2, 4, 16, 1, sampling_steps=8)
    cond, uncond = torch.randn(5, 4), torch.randn(5, 4)

    def draw():
        torch.manual_seed(1)
        return head.sample(cond, uncond, temperature=0.9, guidance=2.0)

    default = draw()
    # the respaced ancestral loop, written out
    torch.manual_seed(1)
    s, x = head.sample_schedule, torch.randn(5, 2)
    for i in reversed(range(8)):
        t = torch.full((5,), i)
        mean, log_var = s.p_mean_log_var(head._guided(x, s.timestep_map[t].float(), cond, uncond, 2.0), x, t, True, 5.0)
        x = mean + torch.exp(0.5 * log_var) * (torch.randn_like(x) if i else torch.zeros_like(x)) * 0.9
    assert head.sampler == "ddpm" and torch.equal(default, x)
    head.set_sampler("dpm_solver")
    assert not torch.equal(draw(), default)
    head.set_sampler("ddpm")
    assert torch.equal(draw(), default)
    explicit = DiffusionHead(2, 4, 16, 1, sampling_steps=8, sampler="ddpm")
    explicit.load_state_dict(head.state_dict())
    torch.manual_seed(1)
    assert torch.equal(explicit.sample(cond, uncond, temperature=0.9, guidance=2.0), default)


def test_dpm_solver_draws_noise_only_at_the_start():
    """temperature scales the initial noise; at 0 the ODE sampler is deterministic whatever the seed."""
    head = DiffusionHead(2, 4, 16, 1, sampling_steps=5, sampler="dpm_solver")
    cond = torch.randn(4, 4)
    torch.manual_seed(0)
    first = head.sample(cond, None, temperature=0.0)
    torch.manual_seed(1)
    assert torch.equal(head.sample(cond, None, temperature=0.0), first)


def test_spaced_timesteps_cover_both_ends():
    use = spaced_timesteps(1000, 100)
    assert len(use) == 100 and use[0] == 0 and use[-1] == 999


def test_flow_rejects_unknown_sampler():
    with pytest.raises(ValueError, match="sampler"):
        FlowHead(2, 4, 8, 1, sampler="rk45")


def test_heads_reject_unknown_or_the_other_heads_samplers():
    for bad in ("rk45", "heun"):
        with pytest.raises(ValueError, match="loss.head.sampler"):
            DiffusionHead(2, 4, 8, 1, sampler=bad)
    with pytest.raises(ValueError, match="loss.head.sampler"):
        FlowHead(2, 4, 8, 1, sampler="dpm_solver")
    head = DiffusionHead(2, 4, 8, 1)
    with pytest.raises(ValueError, match="loss.head.sampler"):
        head.set_sampler("euler")
    assert head.sampler == "ddpm"
    flow = FlowHead(2, 4, 8, 1)
    flow.set_sampler("euler")
    assert flow.sampler == "euler"


def test_one_sampling_step_is_a_valid_schedule():
    head = DiffusionHead(2, 4, 16, 1, sampling_steps=1)
    out = head.sample(torch.randn(3, 4))
    assert out.shape == (3, 2) and torch.isfinite(out).all()
