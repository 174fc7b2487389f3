"""The model: shapes at every level, the attention equation, parameter counts, the switches."""

import pytest
import torch

from stroke_helpers.model import (
    PAPER_WIDTHS,
    AdditiveCrossAttention,
    ConvBlock,
    CrossAttentionAutoencoder,
    count_parameters,
)

SMALL = (4, 4, 8, 8, 16, 16)


def conv_block_params(c_in, c_out):
    return 9 * c_in * c_out + 9 * c_out * c_out + 4 * c_out  # two bias-free convs, two BatchNorms


def expected_parameters(c0, w, attention=True, multilevel=True):
    n = sum(conv_block_params(a, b) for a, b in zip((c0, *w[:-1]), w))
    n += sum(conv_block_params(w[i] + w[i + 1], w[i]) for i in range(len(w) - 1))
    if attention:  # W_e, W_d (1x1, bias) to F_int = w[i]; W_phi to 1 channel
        n += sum(w[i] * w[i] + w[i] + w[i + 1] * w[i] + w[i] + w[i] + 1 for i in range(len(w) - 1))
    n += sum(c + 1 for c in (w if multilevel else w[:1]))
    return n


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("multilevel", [True, False])
def test_paper_preset_parameter_count(attention, multilevel):
    model = CrossAttentionAutoencoder(5, PAPER_WIDTHS, attention, multilevel)
    assert count_parameters(model) == expected_parameters(5, PAPER_WIDTHS, attention, multilevel)
    if attention and multilevel:
        assert 32e6 < count_parameters(model) < 33e6  # a 32..1024 U-Net: ~31 M, plus gates and heads


def test_output_shapes_at_every_level():
    torch.manual_seed(0)
    model = CrossAttentionAutoencoder(3, SMALL).eval()
    out = model(torch.randn(2, 3, 64, 96), levels=True, attention=True)
    assert out.logits.shape == (2, 1, 64, 96)
    assert len(out.levels) == 6 and all(y.shape == (2, 1, 64, 96) for y in out.levels)
    assert torch.equal(out.levels[-1], out.logits)
    assert sorted(out.attention) == [1, 2, 3, 4, 5]
    for level, gate in out.attention.items():
        h, w = 64 // 2 ** (level - 1), 96 // 2 ** (level - 1)
        c = SMALL[level - 1]
        assert gate.refined.shape == (2, c, h, w)
        assert gate.attention.shape == (2, 1, h, w)
        assert gate.similarities.shape == (2, c, h, w)
        assert gate.attention.min() >= 0 and gate.attention.max() <= 1 and gate.similarities.min() >= 0
    plain = model(torch.randn(2, 3, 64, 96))
    assert plain.levels == [] and plain.attention == {}


def test_input_size_must_divide():
    with pytest.raises(ValueError, match="divisible by 32"):
        CrossAttentionAutoencoder(1, SMALL)(torch.randn(1, 1, 48, 48))


def test_attention_equation_against_direct_computation():
    torch.manual_seed(1)
    module = AdditiveCrossAttention(3, 5, inner_channels=4)
    x_e, x_d = torch.randn(2, 3, 6, 7), torch.randn(2, 5, 6, 7)
    we, be = module.w_e.weight[:, :, 0, 0], module.w_e.bias
    wd, bd = module.w_d.weight[:, :, 0, 0], module.w_d.bias
    wp, bp = module.w_phi.weight[:, :, 0, 0], module.w_phi.bias
    q = torch.relu(
        torch.einsum("oc,bchw->bohw", we, x_e)
        + be[:, None, None]
        + torch.einsum("oc,bchw->bohw", wd, x_d)
        + bd[:, None, None]
    )
    a = torch.sigmoid(torch.einsum("oc,bchw->bohw", wp, q) + bp[:, None, None])
    out = module(x_e, x_d)
    torch.testing.assert_close(out.similarities, q)
    torch.testing.assert_close(out.attention, a)
    torch.testing.assert_close(out.refined, x_e * a)


def test_attention_off_is_plain_skip_connections():
    """Without attention, the decoder sees the encoder features unchanged: copying the weights
    of an attention model and forcing its gates open (a = 1) gives the same output."""
    torch.manual_seed(2)
    plain = CrossAttentionAutoencoder(2, SMALL, attention=False).eval()
    gated = CrossAttentionAutoencoder(2, SMALL, attention=True).eval()
    missing = gated.load_state_dict(plain.state_dict(), strict=False)
    assert all(k.startswith("attention.") for k in missing.missing_keys) and not missing.unexpected_keys
    assert not any(isinstance(m, AdditiveCrossAttention) for m in plain.modules())
    for gate in gated.attention:  # sigmoid(W_phi q) == 1: W_phi = 0, bias large
        torch.nn.init.zeros_(gate.w_phi.weight)
        torch.nn.init.constant_(gate.w_phi.bias, 100.0)
    x = torch.randn(1, 2, 32, 32)
    torch.testing.assert_close(gated(x).logits, plain(x).logits)
    for gate in gated.attention:  # a closed gate changes the result
        torch.nn.init.constant_(gate.w_phi.bias, -100.0)
    assert not torch.allclose(gated(x).logits, plain(x).logits)


def test_multilevel_heads_commute_with_interpolation():
    """Conv-first heads equal the paper's interpolate-first order (both are linear maps)."""
    torch.manual_seed(3)
    head = torch.nn.Conv2d(8, 1, 1)
    f = torch.randn(1, 8, 4, 4)
    up = lambda t: torch.nn.functional.interpolate(t, size=(32, 32), mode="bilinear", align_corners=False)  # noqa: E731
    torch.testing.assert_close(up(head(f)), head(up(f)), atol=1e-5, rtol=1e-5)


def test_conv_block_shapes_and_gradients():
    block = ConvBlock(3, 6)
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = block(x)
    assert y.shape == (2, 6, 8, 8) and y.min() >= 0
    y.sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


@pytest.mark.parametrize("multilevel", [True, False])
def test_heads_start_at_the_lesion_prior(multilevel):
    """Every head's bias is logit(0.01): a fresh model predicts background (p ~ 0.01) and has to
    learn positive evidence for a lesion (the cure for the all-negative-head collapse)."""
    from stroke_helpers.model import LESION_PRIOR

    torch.manual_seed(0)
    model = CrossAttentionAutoencoder(2, SMALL, multilevel=multilevel)
    assert len(model.heads) == (6 if multilevel else 1)
    for head in model.heads:
        assert torch.sigmoid(head.bias).item() == pytest.approx(LESION_PRIOR, rel=1e-5)
    with torch.no_grad():
        p = torch.sigmoid(model.heads[0](torch.zeros(1, SMALL[0], 4, 4)))
    assert torch.allclose(p, torch.full_like(p, LESION_PRIOR))
