"""Micro-AU CLIP invariants: shapes, PTA locality, GDLoss, MiAUCL, backbone modes, weights."""
import numpy as np
import open_clip
import pytest
import torch

from suite.models import clip_backbone  # noqa: F401  (registers the suite's open_clip model configs: tiny)
from suite.models.micro_au_clip import (
    DEFAULTS, dependency_matrix, gd_loss, miau_contrastive_loss, region_masks,
)
from suite.registry import get_method, resolve_hparams

from helpers import AUS, frames_batch, micro_au_clip


@pytest.mark.parametrize("motion", ["token_diff", "apex", "diff_image", "concat"])
def test_shapes_and_losses(motion):
    model = micro_au_clip(motion=motion)
    out = model(frames_batch())
    assert model.encode(frames_batch()).shape == (3, len(model.local.positions), model.encoder.embed_dim)
    assert out["logits"].shape == (3, len(AUS))
    assert out["au_features"].shape == (3, len(AUS), model.encoder.embed_dim)
    assert out["gda_attention"].shape == (3, len(AUS), len(AUS))
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert {"bce", "gdloss", "miaucl"} <= set(out)


def test_pta_is_local():
    """Changing tokens outside AU k's region leaves AU k's PTA output unchanged."""
    model = micro_au_clip().eval()
    n = model.encoder.grid[0] * model.encoder.grid[1]
    tokens = torch.randn(2, n, model.encoder.embed_dim)
    masks = region_masks(AUS, model.encoder.grid, 0)
    k = AUS.index(17)  # chin: a small region
    outside = ~masks[k]
    assert outside.any() and masks[k].any()
    changed = tokens.clone()
    changed[:, outside] += torch.randn_like(changed[:, outside]) * 5
    a, b = (model.local(model.local.keep(t)) for t in (tokens, changed))
    assert torch.allclose(a[:, k], b[:, k], atol=1e-5)
    other = AUS.index(1)  # brows: region disjoint from the chin
    assert not torch.allclose(a[:, other], b[:, other], atol=1e-3)


def test_pta_keeps_only_region_patches_and_equals_attention_over_the_whole_grid():
    """The model keeps the patches inside some AU's region (fewer than the grid); PTA over them
    is the masked attention over the whole grid with keys and values projected per token."""
    torch.manual_seed(0)
    model = micro_au_clip().eval()
    grid, d = model.encoder.grid, model.encoder.embed_dim
    masks = region_masks(AUS, grid, 0)
    pta = model.local
    assert list(pta.positions) == torch.nonzero(masks.any(0)).flatten().tolist()
    assert 0 < len(pta.positions) < grid[0] * grid[1]
    tokens = torch.randn(3, grid[0] * grid[1], d)
    kept = pta.keep(tokens)
    assert torch.equal(kept, tokens[:, masks.any(0)])
    # reference: every token's key and value, attention masked to each AU's region, over the whole grid
    keys, values = pta.kv(tokens).chunk(2, -1)
    h, dh = pta.heads, pta.dh
    keys, values = keys.view(3, -1, h, dh), values.view(3, -1, h, dh)
    logits = torch.einsum("khe,bnhe->bkhn", pta.query, keys) / dh ** 0.5
    attn = logits.masked_fill(~masks[None, :, None, :], float("-inf")).softmax(-1)
    reference = pta.out(torch.einsum("bkhn,bnhe->bkhe", attn, values).reshape(3, len(AUS), d))
    assert torch.allclose(pta(kept), reference, atol=1e-5)
    # tokens outside every region change neither the encoded features nor the model's output
    batch = {"features": kept}
    assert torch.equal(model(batch)["logits"], model({"features": pta.keep(tokens + 5 * (~masks.any(0))[None, :, None])})["logits"])


def test_region_masks_match_template_and_dilation_grows_them():
    m0, m1 = region_masks(AUS, (14, 14), 0), region_masks(AUS, (14, 14), 1)
    assert m0.shape == (len(AUS), 196) and (m0.sum(1) > 0).all()
    assert ((m1.int() - m0.int()) >= 0).all() and (m1.sum() > m0.sum())
    brow = m0[AUS.index(1)].view(14, 14)
    chin = m0[AUS.index(17)].view(14, 14)
    assert brow[:6].any() and not brow[10:].any() and chin[10:].any() and not chin[:6].any()


def test_gdloss_zero_at_target_positive_otherwise():
    y = np.array([[1, 1, 0], [1, 0, 0], [0, 1, 1], [1, 1, 1]])
    target = torch.tensor(dependency_matrix(y), dtype=torch.float32)
    assert torch.allclose(target.sum(1), torch.ones(3))
    assert target[0, 1] == pytest.approx((2 / 3) / (1 + 2 / 3 + 1 / 3))  # P(AU2|AU1)=2/3, row-normalised
    same = target.unsqueeze(0).repeat(4, 1, 1)
    assert gd_loss(same, target).item() == pytest.approx(0.0, abs=1e-6)
    other = torch.softmax(torch.randn(4, 3, 3), -1)
    assert gd_loss(other, target).item() > 1e-3


def test_miaucl_falls_as_features_approach_correct_prompt():
    torch.manual_seed(1)
    k, e = 4, 16
    text = torch.nn.functional.normalize(torch.randn(2 * k, e), dim=-1)
    labels = torch.tensor([[1, 0, 1, 0]])
    correct = torch.stack([text[j] if labels[0, j] else text[k + j] for j in range(k)])[None]
    start = torch.randn(1, k, e)
    losses = [miau_contrastive_loss((1 - t) * start + t * correct, text, labels, 0.07).item() for t in np.linspace(0, 1, 6)]
    assert all(b < a for a, b in zip(losses, losses[1:]))


@pytest.mark.parametrize("mode, last_n", [("frozen", 1), ("last_n", 1), ("last_n", 2), ("full", 1)])
def test_gradients_reach_exactly_what_the_mode_allows(mode, last_n):
    model = micro_au_clip(backbone_mode=mode, last_n=last_n)
    model(frames_batch())["loss"].backward()
    visual = model.encoder.visual
    blocks = visual.transformer.resblocks
    got = {n for n, p in visual.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    allowed = {n for n, p in visual.named_parameters() if p.requires_grad}
    assert got <= allowed
    if mode == "frozen":
        assert not allowed
    elif mode == "last_n":
        trained_blocks = {int(n.split(".")[2]) for n in allowed if n.startswith("transformer.resblocks.")}
        assert trained_blocks == set(range(len(blocks) - last_n, len(blocks)))
        assert "proj" in allowed and not any(n.startswith("conv1") for n in allowed)
    else:
        assert "conv1.weight" in got and "proj" in got
    heads = [n for n, p in model.named_parameters() if not n.startswith("encoder.")]
    assert all(dict(model.named_parameters())[n].grad is not None for n in heads if "fuse" not in n)


def test_unknown_hyperparameter_lists_valid_ones():
    with pytest.raises(KeyError) as e:
        resolve_hparams(get_method("micro_au_clip"), {"lamda_gd": "0.1"})
    assert "lamda_gd" in str(e.value) and "lambda_gd" in str(e.value)
    hp = resolve_hparams(get_method("micro_au_clip"), {"lambda_gd": "0.5", "use_pta": "false", "epochs": "3"})
    assert hp["lambda_gd"] == 0.5 and hp["use_pta"] is False and hp["epochs"] == 3
    assert set(DEFAULTS) <= set(hp)


def test_local_pretrained_weights_load(tmp_path):
    torch.manual_seed(123)
    source = open_clip.create_model("tiny", pretrained=None)
    path = tmp_path / "tiny_clip.pt"
    torch.save(source.state_dict(), path)
    model = micro_au_clip(pretrained=str(path))
    for name, p in source.visual.state_dict().items():
        assert torch.equal(model.encoder.visual.state_dict()[name], p), name
    random = micro_au_clip()
    assert not torch.equal(random.encoder.visual.conv1.weight, source.visual.conv1.weight)


def test_patch_token_attention_equals_projecting_every_token():
    """The key/value-free PTA computes what per-token keys and values give."""
    import math

    import torch

    from suite.models.micro_au_clip import PatchTokenAttention

    torch.manual_seed(0)
    masks = torch.rand(3, 10) < 0.6
    masks[:, 0] = True
    pta = PatchTokenAttention(3, 8, 2, masks)
    torch.nn.init.normal_(pta.kv.bias)
    tokens = torch.randn(4, 10, 8)
    k, v = pta.kv(tokens).view(4, 10, 2, 2, 4).unbind(2)
    logits = torch.einsum("bnhd,khd->bkhn", k, pta.query) / math.sqrt(4)
    attn = logits.masked_fill(~masks[None, :, None, :], float("-inf")).softmax(-1)
    expected = pta.out(torch.einsum("bkhn,bnhd->bkhd", attn, v).reshape(4, -1, 8))
    torch.testing.assert_close(pta(tokens), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("method", ["micro_au_clip", "clip_global"])
def test_masked_labels_change_neither_the_loss_nor_the_fold_statistics(method):
    """A label the coding sheet leaves unknown (weight 0) may be anything: loss and gradients are
    the same; the fold's pos_weight and dependency targets count only known labels."""
    torch.manual_seed(0)
    model = get_method(method).build(resolve_hparams(get_method(method)), AUS)
    batch = frames_batch(b=4)
    known = torch.ones_like(batch["au"])
    known[1, 2] = known[3, 5] = 0
    flipped = {**batch, "au": batch["au"].clone(), "weight": known}
    flipped["au"][1, 2], flipped["au"][3, 5] = 1 - batch["au"][1, 2], 1 - batch["au"][3, 5]
    y, m = batch["au"].numpy(), known.numpy().astype(bool)
    losses = []
    for b in ({**batch, "weight": known}, flipped):
        model.on_fold_start(b["au"].numpy(), m)
        stats = [x.clone() for n, x in model.named_buffers() if n in ("pos_weight", "dependency")]
        model.zero_grad()
        torch.manual_seed(1)  # the same dropout masks
        loss = model(b)["loss"]
        loss.backward()
        losses.append((loss.item(), stats, [p.grad.clone() for p in model.parameters() if p.grad is not None]))
    (l0, s0, g0), (l1, s1, g1) = losses
    assert l0 == pytest.approx(l1, abs=1e-6) and all(torch.allclose(a, b) for a, b in zip(s0 + g0, s1 + g1))
    assert not np.allclose(y, flipped["au"].numpy())
    model.on_fold_start(flipped["au"].numpy(), np.ones_like(m))  # the flipped labels taken as known do weigh in
    torch.manual_seed(1)
    assert model({**flipped, "weight": torch.ones_like(known)})["loss"].item() != pytest.approx(l1, abs=1e-4)


def test_keyed_dropout_masks_are_murmur3_of_position_and_key_and_keep_1_minus_p():
    """The mask hash in int32 wraps modulo 2^32 as the pure-Python reference does (the same bits
    on every device), and keeps about 1 − p of the elements."""
    from suite.streams import KeyedDropout, keyed_bits

    def reference(key: int, i: int) -> int:
        m = 0xFFFFFFFF
        x = (i * 0x9E3779B1 + key) & m
        x ^= x >> 16
        x = (x * 0x85EBCA6B) & m
        x ^= x >> 13
        x = (x * 0xC2B2AE35) & m
        return (x ^ (x >> 16)) >> 8

    for key in (0, 12345, 2**31 + 7, 2**32 - 1):
        bits = keyed_bits(torch.tensor(key, dtype=torch.int64), torch.Size((4, 8, 64)), "cpu").flatten()
        assert [int(bits[i]) for i in range(0, 2048, 61)] == [reference(key, i) for i in range(0, 2048, 61)]
    drop = KeyedDropout(0.3).train()
    drop.key.fill_(99)
    out = drop(torch.ones(64, 8, 128))
    assert abs(float((out == 0).float().mean()) - 0.3) < 0.01 and torch.equal(out, drop(torch.ones(64, 8, 128)))
    drop.key.fill_(100)
    assert not torch.equal(out, drop(torch.ones(64, 8, 128)))
