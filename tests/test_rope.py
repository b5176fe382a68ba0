"""Rotary position embeddings against HF transformers' rotary classes, at fp32 tolerance.

Every scaling variant builds our table from a `RopeConfig` and HF's from the equivalent
`rope_parameters`; cos/sin and the rotated q/k must agree for random inputs at positions up to
block_size - 1, i.e. well beyond original_max_pos where the scalings differ from plain RoPE.
"""

import subprocess
import sys

import pytest
import torch
from transformers import Gemma3TextConfig, GPTNeoXConfig
from transformers.models.gemma3.modeling_gemma3 import Gemma3RotaryEmbedding
from transformers.models.gpt_neox.modeling_gpt_neox import GPTNeoXRotaryEmbedding
from transformers.models.gpt_neox.modeling_gpt_neox import apply_rotary_pos_emb as hf_apply_partial
from transformers.models.llama.configuration_llama import LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from model import GPT, ModelConfig, RopeConfig
from model.rope import NoRotary, Rotary, build_rotary

HEAD_DIM, BLOCK_SIZE, ORIGINAL = 32, 256, 64
TOL = dict(atol=1e-6, rtol=1e-5)

# (our RopeConfig fields, HF rope_parameters); original_max_pos = 64 puts llama3's three bands
# (kept, blended, interpolated) and YaRN's ramp all inside head_dim 32 at these thetas.
CASES = {
    "none": (dict(theta=10000.0), dict(rope_type="default", rope_theta=10000.0)),
    "linear": (
        dict(theta=10000.0, scaling="linear", factor=4.0),
        dict(rope_type="linear", rope_theta=10000.0, factor=4.0),
    ),
    "llama3": (
        dict(theta=500000.0, scaling="llama3", factor=8.0, original_max_pos=ORIGINAL,
             low_freq_factor=1.0, high_freq_factor=4.0),
        dict(rope_type="llama3", rope_theta=500000.0, factor=8.0, original_max_position_embeddings=ORIGINAL,
             low_freq_factor=1.0, high_freq_factor=4.0),
    ),
    "yarn": (
        dict(theta=10000.0, scaling="yarn", factor=4.0, original_max_pos=ORIGINAL, beta_fast=32.0, beta_slow=1.0),
        dict(rope_type="yarn", rope_theta=10000.0, factor=4.0, original_max_position_embeddings=ORIGINAL,
             beta_fast=32.0, beta_slow=1.0),
    ),
    "yarn-low-theta": (  # beta_slow's dimension lies past rot_dim / 2: the ramp's top is clamped at rot_dim - 1
        dict(theta=10.0, scaling="yarn", factor=4.0, original_max_pos=ORIGINAL, beta_fast=32.0, beta_slow=1.0),
        dict(rope_type="yarn", rope_theta=10.0, factor=4.0, original_max_position_embeddings=ORIGINAL,
             beta_fast=32.0, beta_slow=1.0),
    ),
    "yarn-untruncated": (  # gpt-oss keeps the ramp's fractional ends
        dict(theta=150000.0, scaling="yarn", factor=32.0, original_max_pos=ORIGINAL, truncate=False),
        dict(rope_type="yarn", rope_theta=150000.0, factor=32.0, original_max_position_embeddings=ORIGINAL,
             beta_fast=32.0, beta_slow=1.0, truncate=False),
    ),
}


def hf_llama_rotary(rope_parameters: dict) -> LlamaRotaryEmbedding:
    cfg = LlamaConfig(hidden_size=2 * HEAD_DIM, num_attention_heads=2, head_dim=HEAD_DIM,
                      max_position_embeddings=BLOCK_SIZE, rope_parameters=dict(rope_parameters))
    return LlamaRotaryEmbedding(cfg)


def random_qk(T: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(2, 4, T, HEAD_DIM, generator=g)  # (B, n_head, T, head_dim)
    k = torch.randn(2, 2, T, HEAD_DIM, generator=g)  # (B, n_kv_head, T, head_dim)
    positions = torch.randperm(BLOCK_SIZE, generator=g)[:T]  # any order, many > original_max_pos
    return q, k, positions


def ours(rope: RopeConfig) -> Rotary:
    return Rotary(rope, rope.theta, rope.scaling, HEAD_DIM, BLOCK_SIZE)


@pytest.mark.parametrize("name", list(CASES))
def test_rope_matches_hf(name):
    our_fields, hf_params = CASES[name]
    mine, hf = ours(RopeConfig(**our_fields)), hf_llama_rotary(hf_params)
    q, k, positions = random_qk(T=48)
    assert positions.max() > ORIGINAL
    hf_cos, hf_sin = hf(q, positions[None])  # (1, T, head_dim)
    cos, sin = mine.cos[positions], mine.sin[positions]  # (T, head_dim / 2)
    torch.testing.assert_close(torch.cat((cos, cos), -1), hf_cos[0], **TOL)
    torch.testing.assert_close(torch.cat((sin, sin), -1), hf_sin[0], **TOL)
    hf_q, hf_k = apply_rotary_pos_emb(q, k, hf_cos, hf_sin)
    our_q, our_k = mine(q, k, positions)
    torch.testing.assert_close(our_q, hf_q, **TOL)
    torch.testing.assert_close(our_k, hf_k, **TOL)


def test_yarn_scales_cos_and_sin():
    """The YaRN attention factor is in the table: 0.1 * ln(4) + 1 at position 0."""
    mine = ours(RopeConfig(**CASES["yarn"][0]))
    assert mine.cos[0, 0].item() == pytest.approx(0.1 * torch.log(torch.tensor(4.0)).item() + 1.0, abs=1e-6)


@pytest.mark.parametrize("name,fraction", [("none", 0.25), ("none", 0.5), ("yarn", 0.5), ("llama3", 0.5)])
def test_partial_rotary_matches_hf(name, fraction):
    """rope.fraction < 1 rotates the first fraction * head_dim dims (HF `partial_rotary_factor`)."""
    our_fields, hf_params = CASES[name]
    mine = ours(RopeConfig(**our_fields, fraction=fraction))
    hf_cfg = GPTNeoXConfig(hidden_size=2 * HEAD_DIM, num_attention_heads=2, max_position_embeddings=BLOCK_SIZE,
                           rope_parameters=dict(hf_params, partial_rotary_factor=fraction))
    hf = GPTNeoXRotaryEmbedding(hf_cfg)
    q, k, positions = random_qk(T=40, seed=1)
    hf_cos, hf_sin = hf(q, positions[None])
    assert hf_cos.shape[-1] == mine.rot_dim == int(HEAD_DIM * fraction)
    hf_q, hf_k = hf_apply_partial(q, k, hf_cos, hf_sin)
    our_q, our_k = mine(q, k, positions)
    torch.testing.assert_close(our_q, hf_q, **TOL)
    torch.testing.assert_close(our_k, hf_k, **TOL)
    torch.testing.assert_close(our_q[..., mine.rot_dim:], q[..., mine.rot_dim:], atol=0, rtol=0)


def test_local_theta_matches_gemma3():
    """Sliding-window layers use plain RoPE at local_theta; global layers theta and the scaling."""
    cfg = ModelConfig(n_layer=2, n_head=2, n_embd=2 * HEAD_DIM, block_size=BLOCK_SIZE, pos="rope",
                      rope=RopeConfig(theta=1e6, scaling="linear", factor=8.0, local_theta=10000.0),
                      window=16, global_every=2)
    hf = Gemma3RotaryEmbedding(Gemma3TextConfig(
        hidden_size=2 * HEAD_DIM, num_attention_heads=2, head_dim=HEAD_DIM, max_position_embeddings=BLOCK_SIZE,
        rope_parameters={"sliding_attention": dict(rope_type="default", rope_theta=10000.0),
                         "full_attention": dict(rope_type="linear", rope_theta=1e6, factor=8.0)}))
    q, k, positions = random_qk(T=32, seed=2)
    for local, layer_type in ((True, "sliding_attention"), (False, "full_attention")):
        hf_q, hf_k = apply_rotary_pos_emb(q, k, *hf(q, positions[None], layer_type))
        our_q, our_k = build_rotary(cfg, local)(q, k, positions)
        torch.testing.assert_close(our_q, hf_q, **TOL)
        torch.testing.assert_close(our_k, hf_k, **TOL)


def test_scores_depend_only_on_distance():
    """The point of RoPE: <R(m) q, R(n) k> is a function of m - n."""
    mine = ours(RopeConfig())
    q, k = torch.randn(1, 1, 1, HEAD_DIM), torch.randn(1, 1, 1, HEAD_DIM)
    scores = []
    for m, n in ((7, 3), (104, 100), (250, 246)):
        rq, _ = mine(q, q, torch.tensor([m]))
        _, rk = mine(k, k, torch.tensor([n]))
        scores.append((rq * rk).sum())
    torch.testing.assert_close(scores[1], scores[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(scores[2], scores[0], atol=1e-4, rtol=0)
    rq, _ = mine(q, q, torch.tensor([8]))
    assert not torch.allclose((rq * rk).sum(), scores[0], atol=1e-3)


def test_tables_are_not_in_the_state_dict():
    model = GPT(ModelConfig(vocab_size=64, block_size=32, n_layer=2, n_head=2, n_embd=32, pos="rope"))
    assert not any("cos" in k or "sin" in k for k in model.state_dict())
    assert "wpe" not in model.transformer  # rotary replaces the learned position table
    assert isinstance(build_rotary(ModelConfig(pos="learned"), local=False), NoRotary)


def test_odd_rotary_dim_is_rejected_by_the_config():
    with pytest.raises(ValueError, match=r"model.rope.fraction \* head_dim .* got 0.5 \* 30 -> 15"):
        ModelConfig(n_head=2, n_embd=2 * 30, pos="rope", rope=RopeConfig(fraction=0.5))  # 15 dims
    with pytest.raises(ValueError, match=r"got 0.05 \* 30 -> 1"):
        ModelConfig(n_head=2, n_embd=2 * 30, pos="rope", rope=RopeConfig(fraction=0.05))
    with pytest.raises(ValueError, match=r"got 0.02 \* 30 -> 0"):  # even, but nothing would rotate
        ModelConfig(n_head=2, n_embd=2 * 30, pos="rope", rope=RopeConfig(fraction=0.02))
    ModelConfig(n_head=2, n_embd=2 * 30, pos="learned", rope=RopeConfig(fraction=0.5))  # nothing rotates


FRESH_PROCESS = """
import torch
from model import GPT, ModelConfig
from model.rope import _base_inv_freq
torch.set_num_threads(2)
rotary = GPT(ModelConfig(n_layer=1, n_head=2, n_embd=128, block_size=256, pos="rope")).transformer.h[0].attn.rotary
angles = torch.arange(256).float()[:, None] * _base_inv_freq(10000.0, 64)[None, :]
print((rotary.cos.double() - angles.double().cos()).abs().max().item())
"""


@pytest.mark.slow
def test_a_fresh_processs_rope_table_is_exact():
    """A process's first vector-math call on two threads gave the second thread's half of the table
    a cos off by 1.5e-4 in 2 to 4 processes of 16 (torch 2.13, AVX-512; model/rope.py). Six fresh
    processes, each building a model with a 256 x 32 table."""
    for _ in range(6):
        found = subprocess.run([sys.executable, "-c", FRESH_PROCESS], capture_output=True, text=True, check=True)
        assert float(found.stdout) < 1e-6
