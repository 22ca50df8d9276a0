import pytest
import torch

from djepa.nn import attention as attn


@pytest.fixture(autouse=True)
def _reset_backend():
    yield
    attn.set_attention_backend("auto")


def test_sdpa_and_math_backends_agree():
    q, k, v = (torch.randn(2, 3, 17, 8) for _ in range(3))
    attn.set_attention_backend("sdpa")
    sdpa = attn.attention(q, k, v)
    attn.set_attention_backend("math")
    math = attn.attention(q, k, v)
    assert sdpa.shape == (2, 3, 17, 8)
    torch.testing.assert_close(sdpa, math, atol=1e-5, rtol=1e-5)


def test_auto_picks_sdpa_on_cpu():
    attn.set_attention_backend("auto")
    assert attn.resolve_backend(torch.device("cpu")) == "sdpa"


def test_unknown_backend_is_refused():
    with pytest.raises(ValueError, match="attention.backend"):
        attn.set_attention_backend("flash")


def test_forcing_xformers_on_cpu_names_the_problem():
    attn.set_attention_backend("xformers")
    with pytest.raises(RuntimeError, match="xformers"):
        attn.attention(*(torch.randn(1, 1, 4, 8) for _ in range(3)))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_xformers_agrees_with_sdpa_on_cuda():
    if attn.xformers_problem():
        pytest.skip(f"xformers does not run here: {attn.xformers_problem()}")
    q, k, v = (torch.randn(2, 4, 64, 32, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    attn.set_attention_backend("xformers")
    xf = attn.attention(q, k, v)
    attn.set_attention_backend("sdpa")
    torch.testing.assert_close(xf, attn.attention(q, k, v), atol=2e-2, rtol=2e-2)


def test_an_xformers_that_cannot_run_falls_back_to_sdpa_on_cuda(monkeypatch):
    """A wheel built for another torch imports but has no kernels: auto must not pick it, forcing it says why."""
    monkeypatch.setattr(attn, "xformers_problem", lambda: "NotImplementedError: no operator found")
    attn.set_attention_backend("auto")
    try:
        assert attn.resolve_backend(torch.device("cuda")) == "sdpa"
        attn.set_attention_backend("xformers")
        with pytest.raises(RuntimeError, match="does not run here.*no operator found"):
            attn.resolve_backend(torch.device("cuda"))
    finally:
        attn.set_attention_backend("auto")
