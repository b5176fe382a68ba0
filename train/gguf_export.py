"""A run's model as one GGUF file (llama.cpp's format), written with the `gguf` package's GGUFWriter.

The route is the HF export's: our GPT -> `to_hf` (model/hf/, exact) -> the HF state dict -> GGUF's
names and layouts (train/gguf_layouts.py), per architecture (train/gguf_archs.py, which lists them and
how each is checked).
The metadata is the architecture's, then the tokenizer: GPT-2's BPE (tokens and merges), or the byte
tokenizer as the 256 byte tokens in GPT-2's byte-to-unicode alphabet plus <|endoftext|>, with an
empty merge list (llama.cpp's BPE loader requires the key; GGUFWriter refuses an empty array, so
`_writer_class` writes it). <|endoftext|> is the bos, eos and pad token.
scripts/gguf_llama_cpp.py runs a run's file in llama.cpp beside our model.

--gguf_type: f32 keeps every tensor in fp32; f16 and bf16 store matrices in that type and keep 1-D
tensors (norms, biases) in fp32, as llama.cpp's converter does. q8_0, q5_1, q5_0, q4_1 and q4_0
quantize the matrices whose rows are a multiple of 32 long (`gguf.quants.quantize`), store the
others in fp16 and say which. The k-quants q6_k, q5_k, q4_k (train/gguf_kquants.py), q3_k and q2_k
(train/gguf_kquants_low.py) take rows a multiple of 256 and keep the others in llama.cpp's fallback
(q8_0, q5_1, q5_0, q4_0, q4_0; f16 below 32). q8_0 is the one quantized type llama.cpp's converter
writes. q5_k_m, q4_k_m, q3_k_l and q3_k_m are llama-quantize's mixes (`gguf_kquants.mixed`): q6_k
for the output matrix, more bits for the value projections, ffn_down and attn_output of some or all
layers (q8_0 for keys and values with 8 experts), the named k-quant for the rest. iq4_nl and iq4_xs
(train/gguf_iquants.py) map each weight to one of 16 non-uniform levels, in blocks of 32 and
super-blocks of 256 (iq4_xs falls back to iq4_nl). Every type's tensors are, byte for byte, what
llama.cpp's llama-quantize writes from our f32 file: with --pure (every matrix in the type, token
embeddings and output too), and without it for the mixes. As there, only tensors named *weight with
more than one row are quantized: norms, biases, the router (`ffn_gate_inp`), GPT-2's position table
and Gated DeltaNet's convolution stay fp32 in every type.

A model no architecture can hold is refused, naming the closest one and the settings that block it
(`choose_gguf_family`). `GGUFExport.load_kwargs` holds the HF config fields transformers' reader
does not take from the file, where the run needs them, or None for a file transformers cannot build.
"""

import functools
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from model.config import ModelConfig
from model.hf import Unrepresentable, config_to_hf, to_hf

from .errors import ConfigError
from .files import staged_dir
from .gguf_archs import ARCHS
from .gguf_iquants import QUANTIZERS as I_QUANTIZERS
from .gguf_iquants import quantize_iq
from .gguf_kquants import MIXES, QK_K, QUANTIZERS, blockwise, mixed
from .gguf_kquants_low import QUANTIZERS as LOW_QUANTIZERS
from .gguf_layouts import SPLITS
from .hf_tokenizer import CHAT_TEMPLATE, bytes_to_unicode, gpt2_vocab_and_merges
from .post.chat_format import SPECIAL, ChatFormat
from .tokenizer import EOT_TEXT

# --gguf_type -> (general.file_type, the matrices' ggml type); a quantized type's block is 32 values
# (256 for a k-quant and iq4_xs), and a row must be a multiple of it
FILE_TYPES = {"f32": ("ALL_F32", "F32"), "f16": ("MOSTLY_F16", "F16"), "bf16": ("MOSTLY_BF16", "BF16"),
              "q8_0": ("MOSTLY_Q8_0", "Q8_0"), "q6_k": ("MOSTLY_Q6_K", "Q6_K"), "q5_k_m": ("MOSTLY_Q5_K_M", "Q5_K"),
              "q5_k": ("MOSTLY_Q5_K_S", "Q5_K"), "q5_1": ("MOSTLY_Q5_1", "Q5_1"), "q5_0": ("MOSTLY_Q5_0", "Q5_0"),
              "q4_k_m": ("MOSTLY_Q4_K_M", "Q4_K"), "q4_k": ("MOSTLY_Q4_K_S", "Q4_K"), "q4_1": ("MOSTLY_Q4_1", "Q4_1"),
              "q4_0": ("MOSTLY_Q4_0", "Q4_0"), "q3_k_l": ("MOSTLY_Q3_K_L", "Q3_K"), "q3_k_m": ("MOSTLY_Q3_K_M", "Q3_K"),
              "q3_k": ("MOSTLY_Q3_K_S", "Q3_K"), "q2_k": ("MOSTLY_Q2_K", "Q2_K"),
              "iq4_nl": ("MOSTLY_IQ4_NL", "IQ4_NL"), "iq4_xs": ("MOSTLY_IQ4_XS", "IQ4_XS")}
# llama.cpp's, for rows not a multiple of 256
FALLBACK = {"Q6_K": "Q8_0", "Q5_K": "Q5_1", "Q4_K": "Q5_0", "Q3_K": "Q4_0", "Q2_K": "Q4_0", "IQ4_XS": "IQ4_NL"}
K_QUANTIZERS = QUANTIZERS | LOW_QUANTIZERS  # ggml type -> its k-quant's super-block quantizer
FILE_NAME = "model.gguf"
ALWAYS_F32 = ("ffn_gate_inp", "position_embd", "ssm_conv1d")  # kept in fp32 whatever the type, as llama.cpp does


# ----------------------------------------------------------------------------- choosing the architecture
def blockers(cfg: ModelConfig, family: str) -> tuple[list[str], bool]:
    """`field=value` for each of our settings that `family`'s GGUF architecture cannot hold, and
    whether the list is whole: a family-specific HF refusal gives its first reason only."""
    base, key = ARCHS[family].extends
    if base and (value := functools.reduce(getattr, key.split("."), cfg)) in (0, "none"):
        found, whole = blockers(cfg, base)
        return found + [f"model.{key}={value!r}"], whole
    whole = True
    try:
        config_to_hf(cfg, family)
        found = []
    except Unrepresentable as e:
        found = list(e.settings)
    except ValueError as e:  # a family-specific refusal, which gives its reason
        found, whole = [str(e).removeprefix(f"HF {family} cannot represent ")], False
    found += [f"{name}={value!r}" for name, value in ARCHS[family].limits(cfg).items()]
    return list(dict.fromkeys(found)), whole  # a setting both HF and GGUF refuse, once


def choose_gguf_family(cfg: ModelConfig, family: str = "auto") -> str:
    """`family` if its GGUF architecture holds `cfg`; for "auto" the first of ARCHS that does. The
    refusal names the closest architecture (fewest blocking settings, below) and what blocks it."""
    if family != "auto" and family not in ARCHS:
        raise ConfigError(f"--family for --format gguf must be auto or one of {', '.join(ARCHS)}; got {family!r}")
    blocked = {}
    for name in [family] if family != "auto" else ARCHS:
        blocked[name] = blockers(cfg, name)
        if not blocked[name][0]:
            return name
    # a list cut short by an HF refusal says little of how far its family is: whole lists come first
    closest = min(blocked, key=lambda n: (not blocked[n][1], len(blocked[n][0])))
    why = blocked[closest][0]
    listed = ", ".join(item if len(item) <= 80 else item[:77] + "..." for item in why[:4])
    more = f" and {len(why) - 4} more" if len(why) > 4 else ""
    if family != "auto":
        raise ConfigError(f"cannot export as GGUF {family}: {listed}{more}")
    raise ConfigError(f"none of the {len(ARCHS)} GGUF architectures can hold this model; the closest, "
                      f"{closest}, is blocked by {listed}{more}")


# ----------------------------------------------------------------------------- tensors
def gguf_tensors(hf_model, family: str, cfg: ModelConfig) -> dict[str, np.ndarray]:
    """The HF model's tensors under GGUF names, in GGUF's layout, as fp32 arrays."""
    import gguf

    arch = ARCHS[family]
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.arch], cfg.n_layer)
    state = hf_model.state_dict()
    if hf_model.config.tie_word_embeddings and not arch.tied_output:
        state.pop("lm_head.weight", None)  # GGUF: no `output` tensor means tied
    out = {}
    for hf_name, tensor in state.items():
        for pattern, reshape in arch.reshape.items():
            if re.search(pattern, hf_name):
                tensor = reshape(tensor, cfg)
        for pattern, replacement in arch.renames.items():
            hf_name = re.sub(pattern, replacement, hf_name)
        split = next((f for pattern, f in SPLITS.items() if re.search(pattern, hf_name)), None)
        parts = split(hf_name, tensor, cfg) if split else {hf_name: tensor}
        for name, t in parts.items():
            # stacked experts are HF parameters without a suffix; in GGUF every matrix is `.weight`
            # (".bare": a tensor llama.cpp names without a suffix, as Qwen3.5's ssm_a)
            base, suffix = name.rsplit(".", 1) if name.endswith((".weight", ".bias", ".bare")) else (name, "weight")
            gguf_name = names.get_name(base)
            assert gguf_name is not None, f"no GGUF name for {name} in {arch.arch}"
            out[gguf_name if suffix == "bare" else f"{gguf_name}.{suffix}"] = t.detach().float().contiguous().numpy()
    return out | {name: t.float().numpy() for name, t in arch.extra(cfg).items()}


def intended_types(tensors: dict[str, np.ndarray], gguf_type: str, cfg: ModelConfig) -> dict[str, str]:
    """Each tensor's ggml type as --gguf_type says (the module docstring), before a row that is no
    multiple of its block moves it to a fallback (`stored`)."""
    kind = FILE_TYPES[gguf_type][1]
    matrices = [name for name, array in tensors.items()  # as llama-quantize's tensor_allows_quantization
                if kind != "F32" and name.endswith("weight") and "_norm.weight" not in name
                and max(array.shape[:-1], default=1) > 1 and not any(key in name for key in ALWAYS_F32)]
    types = dict.fromkeys(tensors, "F32") | dict.fromkeys(matrices, kind)
    if gguf_type in MIXES:
        types |= mixed(matrices, gguf_type, cfg.n_layer, cfg.moe.n_expert)
    return types


def stored(array: np.ndarray, kind: str):
    """(data, ggml type) of one tensor meant for ggml type `kind`: a row no multiple of its block
    takes its FALLBACK (a k-quant's or iq4_xs's), and f16 where even that does not fit."""
    from gguf import GGML_QUANT_SIZES
    from gguf import GGMLQuantizationType as Q
    from gguf.quants import quantize

    qtype = Q[kind]
    if qtype == Q.F32:
        return array, Q.F32
    if array.shape[-1] % GGML_QUANT_SIZES[qtype][0] and qtype.name in FALLBACK:  # values per block
        qtype = Q[FALLBACK[qtype.name]]
    if array.shape[-1] % GGML_QUANT_SIZES[qtype][0]:
        qtype = Q.F16
    if qtype.name in K_QUANTIZERS:
        return blockwise(array, K_QUANTIZERS[qtype.name], QK_K), qtype
    if qtype.name in I_QUANTIZERS:
        return quantize_iq(array, qtype.name), qtype
    return quantize(array, qtype), qtype


# ----------------------------------------------------------------------------- tokenizer
def tokenizer_metadata(w, tok, n_vocab: int, chat: bool = False) -> None:
    """Our tokenizer as GGUF's "gpt2" (byte-level BPE) tokenizer keys; ids past the tokenizer's
    (a model.vocab_size padded beyond it) are unused [PAD<id>] tokens, as llama.cpp writes them.
    chat: a chat run's four tokens follow as control tokens, <|end|> is the eos and the chat
    template is HF's (train/hf_tokenizer.py), so a GGUF runtime prompts it as train.chat does."""
    import gguf
    from gguf import TokenType

    if tok.name == "gpt2":
        vocab, merges = gpt2_vocab_and_merges(tok.ranks())
        tokens = sorted(vocab, key=vocab.get)
    else:
        to_char = bytes_to_unicode()
        tokens, merges = [to_char[b] for b in range(256)] + [EOT_TEXT], []
    assert tokens.index(EOT_TEXT) == tok.eot == len(tokens) - 1
    types = [TokenType.NORMAL] * (len(tokens) - 1) + [TokenType.CONTROL]
    eos = tok.eot
    if chat:
        eos = ChatFormat(tok).end  # the specials follow the tokenizer's ids, in SPECIAL's order
        tokens, types = tokens + list(SPECIAL), types + [TokenType.CONTROL] * len(SPECIAL)
        w.add_chat_template(CHAT_TEMPLATE)
    tokens += [f"[PAD{i}]" for i in range(len(tokens), n_vocab)]
    types += [TokenType.UNUSED] * (n_vocab - len(types))
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("gpt-2")
    w.add_token_list(tokens)
    w.add_token_types(types)
    w.add_key_value(gguf.Keys.Tokenizer.MERGES, [f"{a} {b}" for a, b in merges], gguf.GGUFValueType.ARRAY,
                    sub_type=gguf.GGUFValueType.STRING)  # a byte vocabulary's is empty
    w.add_bos_token_id(tok.eot)
    w.add_eos_token_id(eos)
    w.add_pad_token_id(eos)
    w.add_add_bos_token(False)


# ----------------------------------------------------------------------------- export
def _writer_class():
    import gguf

    class Writer(gguf.GGUFWriter):
        """GGUFWriter that also writes an empty array, which the format and llama.cpp's reader allow."""

        def _pack_val(self, val, vtype, add_vtype, sub_type=None):
            if vtype == gguf.GGUFValueType.ARRAY and len(val) == 0:
                return (self._pack("I", vtype) if add_vtype else b"") + self._pack("I", sub_type) + self._pack("Q", 0)
            return super()._pack_val(val, vtype, add_vtype, sub_type)
    return Writer


@dataclass
class GGUFExport:
    path: Path  # OUT/model.gguf
    family: str  # HF model_type; ARCHS[family] is its GGUF architecture
    gguf_type: str
    fallback: dict[str, str]  # a quantized type: matrix -> the type it is kept in, as its rows are
    # no multiple of the type's block: a 256-block type's 32-block fallback (FALLBACK), else f16
    unreadable: str  # why transformers' GGUF reader cannot build the model; "" when it can
    load_kwargs: dict[str, object] | None  # HF config fields that reader does not take from the file;
    # None when it cannot build the model


def write_gguf(model, tok, out_dir: str | Path, family: str = "auto", gguf_type: str = "f16",
               chat: bool = False) -> GGUFExport:
    """Write `model` (our GPT) and `tok` as OUT_DIR/model.gguf. Everything is checked and converted
    first; the file is written in a temporary directory beside OUT_DIR, renamed to OUT_DIR once complete."""
    try:
        import gguf
    except ImportError:
        raise ValueError("--format gguf needs the gguf package: pip install 'gguf>=0.19,<0.20'") from None
    cfg = model.config
    family = choose_gguf_family(cfg, family)
    tensors = gguf_tensors(to_hf(model, family, bos_token_id=tok.eot, eos_token_id=tok.eot), family, cfg)
    intended = intended_types(tensors, gguf_type, cfg)
    encoded = {name: stored(array, intended[name]) for name, array in tensors.items()}
    fallback = {n: q.name.lower() for n, (_, q) in encoded.items() if q.name != intended[n]}

    out = Path(out_dir)
    with staged_dir(out, f"OUT_DIR {out}") as staging:
        arch = ARCHS[family]
        w = _writer_class()(staging / FILE_NAME, arch.name or gguf.MODEL_ARCH_NAMES[gguf.MODEL_ARCH[arch.arch]])
        w.add_name("gpt-ladder")
        w.add_file_type(gguf.LlamaFileType[FILE_TYPES[gguf_type][0]])
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        arch.hparams(w, cfg)
        tokenizer_metadata(w, tok, cfg.vocab_size, chat)
        for name, (data, qtype) in encoded.items():
            w.add_tensor(name, data, raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
    unreadable = ARCHS[family].unreadable(cfg)
    return GGUFExport(out / FILE_NAME, family, gguf_type, fallback, unreadable,
                      None if unreadable else ARCHS[family].unread(cfg))
