"""Prior CVAE: strict layout of steve1_prior.pt, golden outputs of the original vae.py, sampling."""
from __future__ import annotations

import hashlib
import math

import numpy as np
import pytest
import torch

from steve1_ray.models.prior import TranslatorVAE, load_prior, save_prior

RELEASED_KEYS = [f"{part}.{i}.{p}" for part in ("encoder", "decoder") for i in (0, 1, 3, 4, 6)
                 for p in ("weight", "bias")]


def derived_state_dict(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Deterministic weights from each key's name (same function fills the original for the fixture)."""
    out = {}
    for key, v in model.state_dict().items():
        seed = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little") & (2**63 - 1)
        z = torch.randn(tuple(v.shape), generator=torch.Generator().manual_seed(seed))
        if v.ndim == 2:
            out[key] = z / math.sqrt(v.shape[1])
        elif key.split(".")[1] in ("1", "4") and key.endswith("weight"):  # LayerNorm
            out[key] = 1.0 + 0.1 * z
        else:
            out[key] = 0.05 * z
    return out


def golden_inputs(n: int = 8, dim: int = 512, latent: int = 512):
    g = torch.Generator().manual_seed(77)
    text = torch.randn(n, dim, generator=g)
    visual = torch.randn(n, dim, generator=g)
    z = torch.randn(n, latent, generator=g)
    eps = torch.randn(n, latent, generator=g)
    return text, visual, z, eps


@pytest.fixture(scope="module")
def golden(fixtures_dir):
    return dict(np.load(fixtures_dir / "prior" / "golden_vae.npz"))


@pytest.fixture(scope="module")
def prior():
    model = TranslatorVAE()
    model.load_state_dict(derived_state_dict(model), strict=True)
    return model.eval()


def test_released_layout(prior):
    sd = prior.state_dict()
    assert list(sd) == RELEASED_KEYS
    assert sd["encoder.0.weight"].shape == (512, 1024) and sd["encoder.6.weight"].shape == (1024, 512)
    assert sd["decoder.0.weight"].shape == (512, 1024) and sd["decoder.6.weight"].shape == (512, 512)
    assert sum(v.numel() for v in sd.values()) == 2_366_976  # 512+512+512 dims (~2.4M)


def test_matches_original(prior, golden):
    text, visual, z, eps = golden_inputs()
    with torch.no_grad():
        det = prior.sample(text, deterministic=True)
        dec = prior.decode(z, text)
        loss, info = prior.loss(visual, text, beta=0.5, eps=eps)
    np.testing.assert_allclose(det.numpy(), golden["decode_deterministic"], atol=1e-5, rtol=0)
    np.testing.assert_allclose(dec.numpy(), golden["decode_z"], atol=1e-5, rtol=0)
    assert info["kl"] == pytest.approx(float(golden["kl"]), rel=1e-5)
    assert info["mse"] == pytest.approx(float(golden["mse"]), rel=1e-5)
    assert float(loss) == pytest.approx(float(golden["loss_beta_0_5"]), rel=1e-5)


def test_sampling_seeds(prior):
    text = torch.randn(3, 512)
    a, b = prior.sample(text, seed=5), prior.sample(text, seed=5)
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, prior.sample(text, seed=6))
    z = torch.randn(3, 512, generator=torch.Generator().manual_seed(5))  # the contract: a CPU generator
    torch.testing.assert_close(a, prior.decode(z, text), atol=0, rtol=0)
    torch.testing.assert_close(prior.sample(text, deterministic=True), prior(text, deterministic=True))
    one = prior.sample(text[0].numpy(), deterministic=True)
    assert one.shape == (512,)
    torch.testing.assert_close(one, prior.sample(text, deterministic=True)[0])


def test_save_load_roundtrip_and_dims(tmp_path, prior):
    path = save_prior(prior, tmp_path / "prior.pt")
    raw = torch.load(path, weights_only=True)
    assert list(raw) == RELEASED_KEYS  # a plain state_dict, as steve1_prior.pt
    loaded = load_prior(path)
    text = torch.randn(2, 512)
    torch.testing.assert_close(loaded.sample(text, seed=1), prior.sample(text, seed=1), atol=0, rtol=0)
    small = TranslatorVAE(input_dim=32, hidden_dim=16, latent_dim=8)
    m = load_prior(save_prior(small, tmp_path / "small.pt"))
    assert (m.input_dim, m.hidden_dim, m.latent_dim) == (32, 16, 8)


def test_loss_trains_and_errors(tmp_path):
    torch.manual_seed(0)
    vae = TranslatorVAE(16, 32, 8)
    text = torch.randn(64, 16)
    visual = text @ torch.randn(16, 16) * 0.5
    opt = torch.optim.AdamW(vae.parameters(), lr=3e-3)
    first = None
    for _ in range(150):
        loss, info = vae.loss(visual, text, beta=1e-3)
        opt.zero_grad()
        loss.backward()
        opt.step()
        first = first if first is not None else info["mse"]
    assert info["mse"] < 0.3 * first
    with pytest.raises(ValueError, match="input_dim"):
        vae.sample(torch.randn(2, 512))
    with pytest.raises(ValueError, match="rows"):
        vae.loss(torch.randn(3, 16), torch.randn(2, 16))
    with pytest.raises(FileNotFoundError, match="steve1_prior.pt"):
        load_prior(tmp_path / "missing.pt")
    torch.save({"foo": torch.zeros(1)}, tmp_path / "bad.pt")
    with pytest.raises(KeyError, match="TranslatorVAE"):
        load_prior(tmp_path / "bad.pt")
