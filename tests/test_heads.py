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


def test_spaced_timesteps_cover_both_ends():
    use = spaced_timesteps(1000, 100)
    assert len(use) == 100 and use[0] == 0 and use[-1] == 999


def test_flow_rejects_unknown_sampler():
    with pytest.raises(ValueError, match="sampler"):
        FlowHead(2, 4, 8, 1, sampler="rk45")
