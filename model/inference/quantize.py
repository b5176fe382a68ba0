"""Quantization for decoding: `quantize(model, "int8" | "int4" | "w8a8", group_size)`.

At batch 1 a decoding step reads every weight once and does two FLOPs per weight, so the bytes
read bound its speed (gpt-fast; Frantar et al. 2022, GPTQ, arXiv:2210.17323, for the int4 format).
int8 and int4 store the weights in fewer bits and expand them inside the matmul; activations stay
in the compute dtype, so nothing else in the model changes. w8a8 stores int8's weights and also
rounds each row of a Linear's input (each token) to int8 by its own max|x| / 127 when it arrives,
so the matmul runs on integers, int8 x int8 -> int32, and the two scales follow (the vector-wise
quantization of LLM.int8(), Dettmers et al. 2022, arXiv:2208.07339, without its fp16 outliers;
llama.cpp's CPU kernels round activations to 8 bits too).

| kind | storage                          | scales                                   |
|------|----------------------------------|------------------------------------------|
| int8 | int8, symmetric                  | one per output row: max|w| / 127          |
| int4 | 4-bit, asymmetric, two per byte  | scale and zero per `group_size` inputs    |
| w8a8 | int8's; inputs int8 per row      | int8's; per input row: max|x| / 127        |

Every `nn.Linear` is quantized, the LM head included. A tied token embedding shares the head's
quantized table (a lookup expands only the rows it reads). Under w8a8 the final norm's output, the
head's input, is rounded as the head rounds it: the LM loss, which multiplies by the head's matrix
itself (model/loss.py), then scores the logits decoding computes. Left in the compute dtype: norms,
position embeddings, an untied token embedding (a lookup reads one row per token, never the table),
the MoE router (fp32 by design) and experts (3-D weights, model/ffn/moe.py), convolutions, and any
Linear a module lists in `keep_full_precision`: MLA's `kv_b_proj`, whose weight the absorbed decode
multiplies into the query, and the value-embedding gate (32 inputs, one output per KV head), a gate
like the router.

Kernels, chosen once when quantizing, by the weights' device: on the CPU PyTorch's own packed
kernels, `aten._weight_int8pack_mm` and `aten._weight_int4pack_mm_for_cpu` (the int4 packing is
the one `_convert_weight_to_int4pack_for_cpu` makes, whose layout the tied lookup reads); on any
other device the weights are expanded in the matmul's input (`F.linear(x, q.to(dtype)) * scale`,
gpt-fast's form, which torch.compile fuses). On the CPU a matmul of several rows (a prompt, a batch)
also takes the expanded weight: ATen's kernels are vectorised for AVX-512 only (docs/LOG.md).
w8a8: `torch._int_mm` on the CPU (oneDNN's int8 GEMM, which makes it the one kind faster than fp32
there, on a large enough model: docs/LOG.md); elsewhere the integer codes go through the compute
dtype's matmul, which holds them exactly (GPU figures unmeasured).
torchao is not a dependency: 0.18's int4 CPU layout needs an extra package or bf16, and PyTorch's
own kernels cover both formats. Quantize after moving the model to the device it will decode on.
"""

import functools

import torch
from torch import nn
from torch.nn import functional as F

KINDS = ("int8", "int4", "w8a8")
GROUP_SIZES = (32, 64, 128, 256)  # those `_weight_int4pack_mm_for_cpu` takes
GROUP_SIZE = 128  # int4's default
PACKINGS = (32, 64)  # the int4 CPU packing interleaves rows in blocks of 32 (AVX2) or 64 (AVX-512)
PAD_ROWS = 64  # int4 rows are padded to a multiple of both, so a model's bytes do not depend on the CPU


@functools.cache
def block_n() -> int:
    """The row block of this CPU's int4 packing, found by packing a known pattern: ATen picks the
    layout by the CPU's vector width, so a layout written down here would be wrong on the other."""
    codes = torch.arange(64 * 32, dtype=torch.int32).reshape(64, 32) % 16
    codes = (codes + torch.arange(64, dtype=torch.int32)[:, None] // 16) % 16  # no two layouts agree
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)
    for n in PACKINGS:
        if torch.equal(_unpack(packed, torch.arange(64), n).int(), codes):
            return n
    raise RuntimeError("unknown int4 CPU packing layout (neither 32- nor 64-row blocks)")


def _unpack(packed: torch.Tensor, idx: torch.Tensor, n: int) -> torch.Tensor:
    """Codes of rows `idx` from a packing in blocks of n rows: input k of row n b + r sits in byte
    (b, k, r % (n / 2)), the low nibble for r < n / 2."""
    K = 2 * packed.shape[1]
    blocks = packed.view(-1, K, n // 2)  # (N / n, K, n / 2)
    r = idx % n
    byte = blocks[idx // n, :, r % (n // 2)]  # (..., K)
    return (byte >> (4 * (r >= n // 2)).unsqueeze(-1).to(torch.uint8)) & 15


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) -> int8 (N, K) and the per-row scale (N,), with w ~= q * scale."""
    scale = w.float().abs().amax(dim=1).clamp(min=1e-12) / 127
    q = torch.round(w.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
    return q, scale.to(w.dtype)


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) -> codes 0..15 (N, K) int32 and (K / group_size, N, 2) [scale, zero] with
    w ~= (q - 8) * scale + zero in each group of `group_size` inputs."""
    N, K = w.shape
    g = w.float().view(N, K // group_size, group_size)
    lo, hi = g.amin(dim=-1, keepdim=True), g.amax(dim=-1, keepdim=True)
    scale = ((hi - lo) / 15).clamp(min=1e-12)
    q = torch.round((g - lo) / scale).clamp(0, 15).to(torch.int32).view(N, K)
    zero = lo + 8 * scale
    scale_zero = torch.cat([scale, zero], dim=-1).transpose(0, 1).contiguous()  # (K/G, N, 2)
    return q, scale_zero.to(w.dtype)


class Int8Linear(nn.Module):
    """y = x W^T * scale (+ bias), W int8 per output row; x rounded to int8 per row first under
    w8a8 (the kernel's). Config: none (`quantize`)."""

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, kernel: str):
        super().__init__()
        self.register_buffer("weight_int8", weight)  # (N, K)
        self.register_buffer("scale", scale)  # (N,)
        self.bias = bias
        self.mm = INT8_KERNELS[kernel]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mm(x.reshape(-1, x.shape[-1]), self.weight_int8, self.scale.to(x.dtype))
        y = y.view(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The expanded rows `idx` of W (a tied embedding's lookup)."""
        return self.weight_int8[idx].to(self.scale.dtype) * self.scale[idx].unsqueeze(-1)

    @property
    def weight(self) -> torch.Tensor:
        """W expanded, (N, K), for code that multiplies by the matrix itself (the chunked LM loss)."""
        return self.rows(torch.arange(self.scale.shape[0], device=self.scale.device))


class Int4Linear(nn.Module):
    """y = x W^T (+ bias), W in 4 bits with a scale and zero per group of inputs; rows padded to a
    multiple of 64, whichever the CPU's packing (the padding's outputs are cut off). Config: none (`quantize`)."""

    def __init__(self, codes: torch.Tensor, scale_zero: torch.Tensor, bias: torch.Tensor | None,
                 group_size: int, kernel: str):
        super().__init__()
        self.out_features, self.group_size = codes.shape[0], group_size
        pad = -codes.shape[0] % PAD_ROWS
        codes, scale_zero = F.pad(codes, (0, 0, 0, pad)), F.pad(scale_zero, (0, 0, 0, pad))
        self.register_buffer("packed", torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes.cpu(), 1)
                             .to(codes.device))  # (N + pad, K / 2) uint8
        self.register_buffer("scale_zero", scale_zero)  # (K / G, N + pad, 2)
        self.bias = bias
        self.mm = INT4_KERNELS[kernel]
        self.block_n = block_n()  # here, not in `rows`: compiled, the layout probe would break the graph

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.mm(self, x.reshape(-1, x.shape[-1]))[:, : self.out_features]
        y = y.reshape(*x.shape[:-1], -1)
        return y if self.bias is None else y + self.bias

    def rows(self, idx: torch.Tensor) -> torch.Tensor:
        """The expanded rows `idx` of W, read from the CPU packing (`_unpack`)."""
        codes = _unpack(self.packed, idx, self.block_n)
        sz = self.scale_zero[:, idx].movedim(0, -2)  # (..., K / G, 2)
        groups = codes.unflatten(-1, (-1, self.group_size)).to(sz.dtype) - 8  # (..., K / G, G)
        return (groups * sz[..., :1] + sz[..., 1:]).flatten(-2)

    @property
    def weight(self) -> torch.Tensor:
        """W expanded, (N, K), for code that multiplies by the matrix itself (the chunked LM loss)."""
        return self.rows(torch.arange(self.out_features, device=self.packed.device))


class QuantizedEmbedding(nn.Module):
    """A token embedding tied to a quantized LM head: the rows it reads, expanded, times the
    embedding's own multiplier (`model.embed_scale`). Config: tie_embeddings, embed_scale."""

    def __init__(self, head: nn.Module, multiplier: float | None):
        super().__init__()
        self.head = [head]  # a plain list: the head stays registered once, as `lm_head`
        self.multiplier = multiplier

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        x = self.head[0].rows(idx)  # (B, T, n_embd)
        return x if self.multiplier is None else x * x.new_full((), self.multiplier)


def _int8_expand(x, weight, scale):
    return F.linear(x, weight.to(x.dtype)) * scale


def _int8_cpu(x, weight, scale):
    """One row (decoding at batch 1): ATen's kernel. Several rows (a prompt, a batch): the weight
    expanded for the BLAS matmul, since ATen's kernel is vectorised for AVX-512 only and its scalar
    form costs ~40x an fp32 matmul at 8 rows on an AVX2 CPU (docs/LOG.md)."""
    if x.shape[0] > 1:
        return _int8_expand(x, weight, scale)
    return torch.ops.aten._weight_int8pack_mm(x, weight, scale)


def _int4_expand(layer: Int4Linear, x):
    return F.linear(x, layer.weight.to(x.dtype))


def _int4_cpu(layer: Int4Linear, x):
    """As `_int8_cpu`: ATen's kernel for one row, the expanded weight for several."""
    if x.shape[0] > 1:
        return _int4_expand(layer, x)
    return torch.ops.aten._weight_int4pack_mm_for_cpu(x, layer.packed, layer.group_size,
                                                      layer.scale_zero.to(x.dtype))


def _int8_rows(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(M, K) -> int8 codes (M, K) and each row's scale (M, 1) in fp32: x ~= codes * scale."""
    x = x.float()  # one copy for a bf16 or fp16 input, none for fp32
    scale = x.abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127
    return torch.round(x / scale).to(torch.int8), scale


def _on_int8_grid(x: torch.Tensor) -> torch.Tensor:
    """x with each row rounded as w8a8 rounds a Linear's input (the kernel's own rounding of it then
    finds the same codes)."""
    codes, scale = _int8_rows(x.reshape(-1, x.shape[-1]))
    return (codes.float() * scale).to(x.dtype).view(x.shape)


def _w8a8_cpu(x, weight, scale):
    """x's rows and W in int8, multiplied exactly in int32 (`torch._int_mm`), then both scales."""
    codes, row_scale = _int8_rows(x)
    return (torch._int_mm(codes, weight.t()).float() * row_scale * scale).to(x.dtype)


def _w8a8_expand(x, weight, scale):
    """The same through the compute dtype's matmul (codes up to 127 are exact even in bf16)."""
    codes, row_scale = _int8_rows(x)
    return (F.linear(codes.to(x.dtype), weight.to(x.dtype)).float() * row_scale * scale).to(x.dtype)


INT8_KERNELS = {"cpu": _int8_cpu, "expand": _int8_expand, "w8a8-cpu": _w8a8_cpu, "w8a8-expand": _w8a8_expand}
INT4_KERNELS = {"cpu": _int4_cpu, "expand": _int4_expand}


def check_quantize(kind: str, group_size: int, width: int) -> None:
    """ValueError unless `kind` is a known kind and, for int4, `group_size` is one the kernel takes
    and divides `width` (the inputs of a quantized matrix)."""
    if kind not in KINDS:
        raise ValueError(f"quantize must be one of {', '.join(KINDS)}; got {kind!r}")
    if kind == "int4" and group_size not in GROUP_SIZES:
        raise ValueError(f"the int4 group size must be one of {', '.join(map(str, GROUP_SIZES))}; got {group_size!r}")
    if kind == "int4" and width % group_size:
        raise ValueError(f"the int4 group size {group_size} does not divide a layer's input width {width}")


def quantizable(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, Linear) for every Linear `quantize` replaces."""
    found = []
    for parent in model.modules():
        keep = getattr(parent, "keep_full_precision", ())
        found += [(parent, name, child) for name, child in parent.named_children()
                  if type(child) is nn.Linear and name not in keep]
    return found


@torch.no_grad()
def quantize(model: nn.Module, kind: str, group_size: int = GROUP_SIZE, kernel: str | None = None) -> nn.Module:
    """Replace `model`'s Linears (module docstring) by `kind` ("int8" | "int4" | "w8a8"; int4 in
    groups of `group_size` inputs) in place, for inference; returns the model. kernel: "cpu" or
    "expand" (default: "cpu" for weights on the CPU, else "expand")."""
    layers = quantizable(model)
    for _, _, linear in layers:
        check_quantize(kind, group_size, linear.in_features)
    lm_head = getattr(model, "lm_head", None)  # a Linear until quantized: a second call changes nothing
    tied = type(lm_head) is nn.Linear and lm_head.weight is model.transformer.wte.weight
    wte = model.transformer.wte
    for parent, name, linear in layers:
        w, bias = linear.weight.detach(), linear.bias
        device_kernel = kernel or ("cpu" if w.device.type == "cpu" else "expand")
        if kind != "int4":
            new = Int8Linear(*quantize_int8(w), bias, device_kernel if kind == "int8" else f"w8a8-{device_kernel}")
        else:
            new = Int4Linear(*quantize_int4(w, group_size), bias, group_size, device_kernel)
        setattr(parent, name, new)
    if tied:
        model.transformer.wte = QuantizedEmbedding(model.lm_head, getattr(wte, "scale", None))
    if kind == "w8a8" and type(lm_head) is nn.Linear:  # its inputs, rounded for the LM loss too (docstring)
        model.transformer.ln_f.register_forward_hook(lambda _, __, out: _on_int8_grid(out))
    return model.eval()
