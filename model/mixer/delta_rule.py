"""The gated delta rule, two ways: chunked (training, prefill) and recurrent (decoding).

Gated DeltaNet (Yang, Kautz & Hatamizadeh 2024, arXiv:2412.06464) keeps, per head, a state S of
(head_dim x v_head_dim) numbers, a fast-weight memory from keys to values. Each token first decays
the whole memory by alpha_t = exp(g_t) (Mamba2's gate), then writes the correction of what the memory
predicted for its key (the delta rule, Widrow-Hoff; DeltaNet, arXiv:2406.06484), with strength beta_t:

    S_t = alpha_t S_{t-1} + k_t u_t^T,   u_t = beta_t (v_t - alpha_t S_{t-1}^T k_t),   o_t = S_t^T q_t

`recurrent_delta_rule` runs exactly that, one token at a time: O(1) memory per step, what decoding
uses. `chunked_delta_rule` gives the same numbers with matmuls: inside a chunk of C tokens, with
gamma_i = g_1 + ... + g_i and S_0 the state at the chunk's start, the u's solve a unit lower-triangular
system (the WY / UT form, arXiv:2406.06484 sec. 3):

    (I + A) U = beta V - diag(beta e^gamma) K S_0,   A_ij = beta_i e^(gamma_i - gamma_j) k_i . k_j  (j < i)
    O = (Q * e^gamma) S_0 + ((Q K^T) * e^(gamma_i - gamma_j), j <= i) U
    S_C = e^gamma_C S_0 + (K * e^(gamma_C - gamma))^T U

so only the chunk-to-chunk step is sequential (T / C steps instead of T). Both take q, k (B, H, T,
head_dim), v (B, H, T, v_head_dim), g and beta (B, H, T) and an optional state (B, H, head_dim,
v_head_dim); both compute in fp32 and return (o in q's dtype, the final fp32 state). q must already
carry its 1/sqrt(head_dim) scale. HF's torch fallbacks `torch_chunk_gated_delta_rule` and
`torch_recurrent_gated_delta_rule` (Qwen3-Next) compute the same; tests/test_deltanet.py compares.
`fla_delta_rule` calls flash-linear-attention's Triton kernel (optional extra `fla`, CUDA only; no
device picks it yet, model/kernels.py).
"""

import torch
from torch.nn import functional as F

CHUNK = 64  # tokens per chunk: the triangular solves are C x C, the sequential scan T / C steps


def recurrent_delta_rule(q, k, v, g, beta, state: torch.Tensor | None = None):
    """One token at a time (the definition above): (B, H, T, v_head_dim), final state."""
    B, H, T, dk = k.shape
    dtype = q.dtype
    q, k, v, g, beta = (x.float() for x in (q, k, v, g, beta))
    S = q.new_zeros(B, H, dk, v.shape[-1]) if state is None else state.float()
    out = []
    for t in range(T):
        S = S * g[:, :, t, None, None].exp()  # forget
        kt = k[:, :, t]  # (B, H, dk)
        u = beta[:, :, t, None] * (v[:, :, t] - torch.einsum("bhk,bhkv->bhv", kt, S))  # the correction
        S = S + kt[..., None] * u[..., None, :]  # write it at key k_t
        out.append(torch.einsum("bhk,bhkv->bhv", q[:, :, t], S))  # read at query q_t
    return torch.stack(out, dim=2).to(dtype), S


def chunked_delta_rule(q, k, v, g, beta, state: torch.Tensor | None = None, chunk: int = CHUNK):
    """The same in chunks of `chunk` tokens (module docstring): (B, H, T, v_head_dim), final state."""
    B, H, T, dk = k.shape
    dv, dtype = v.shape[-1], q.dtype
    q, k, v, g, beta = (x.float() for x in (q, k, v, g, beta))
    pad = -T % chunk  # padded tokens have k = v = 0, beta = 0, g = 0: they change nothing
    q, k, v = (F.pad(x, (0, 0, 0, pad)).unflatten(2, (-1, chunk)) for x in (q, k, v))  # (B, H, n, C, d)
    g, beta = (F.pad(x, (0, pad)).unflatten(2, (-1, chunk)) for x in (g, beta))  # (B, H, n, C)
    # log of the decay from the chunk's start to each token. The sums are taken in fp64: with strong
    # decays they reach -1e3 within a chunk, where fp32 keeps only ~1e-4 of the differences
    # gamma_i - gamma_j that every product below is decayed by (the recurrent form has no such sums).
    gamma64 = g.double().cumsum(-1)
    gamma = gamma64.float()
    causal = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    pairwise = (gamma64[..., :, None] - gamma64[..., None, :]).float()
    decay = pairwise.masked_fill(~causal, float("-inf")).exp()  # (B, H, n, C, C): e^(gamma_i - gamma_j), j <= i
    k_beta = k * beta[..., None]
    system = torch.eye(chunk, device=q.device) + ((k_beta @ k.transpose(-1, -2)) * decay).tril(-1)  # I + A
    u_v = torch.linalg.solve_triangular(system, v * beta[..., None], upper=False, unitriangular=True)
    u_k = torch.linalg.solve_triangular(system, k_beta * gamma.exp()[..., None], upper=False, unitriangular=True)
    scores = (q @ k.transpose(-1, -2)) * decay  # within-chunk attention, decayed, causal
    q_decayed = q * gamma.exp()[..., None]  # reads S_0 through the decay so far
    k_decayed = k * (gamma64[..., -1:] - gamma64).float().exp()[..., None]  # writes decay until the chunk's end
    chunk_decay = gamma[..., -1].exp()[..., None, None]  # (B, H, n, 1, 1)
    S = q.new_zeros(B, H, dk, dv) if state is None else state.float()
    out = []
    for i in range(q.shape[2]):  # sequential over chunks only
        u = u_v[:, :, i] - u_k[:, :, i] @ S  # (B, H, C, dv)
        out.append(q_decayed[:, :, i] @ S + scores[:, :, i] @ u)
        S = S * chunk_decay[:, :, i] + k_decayed[:, :, i].transpose(-1, -2) @ u
    return torch.stack(out, dim=2).flatten(2, 3)[:, :, :T].to(dtype), S


def fla_delta_rule(q, k, v, g, beta, state: torch.Tensor | None = None):
    """flash-linear-attention's chunked kernel (`fla.ops.gated_delta_rule.chunk_gated_delta_rule`,
    tokens-first layout) with the signature above; q is already scaled, so its scale is 1. Its Triton
    matmuls take operands of one dtype, so q and k (fp32 after the layer's L2 norm) are cast to v's,
    the compute dtype, as HF passes them; g and beta stay fp32 and o comes back in v's dtype."""
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    q, k = q.to(v.dtype), k.to(v.dtype)
    o, S = chunk_gated_delta_rule(*(x.transpose(1, 2) for x in (q, k, v, g, beta)), scale=1.0,
                                  initial_state=state, output_final_state=True)
    return o.transpose(1, 2), S


def fla_available() -> bool:
    try:
        import fla.ops.gated_delta_rule  # noqa: F401
    except Exception:  # not installed, or no Triton / GPU to import it with
        return False
    return True


RULES = {"torch": chunked_delta_rule, "fla": fla_delta_rule}  # the chunked kernel, by name
