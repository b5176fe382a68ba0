"""A trained run exported with `python -m train.export` loads in transformers with no extra
arguments and generates what ours generates; every preset exports to its HF family."""

import json

import pytest
import torch

from model import GPT
from model.hf import to_hf
from tiny_run import GPT2_RANKS, ROOT, TINY, cli, error_line, files_at_most, needs_gpt2_ranks
from train import export
from train.config import ConfigError, load_config
from train.export import choose_family
from train.hf_tokenizer import gpt2_vocab_and_merges, hf_tokenizer
from train.run import load_run
from train.sample import sample
from train.tokenizer import get_tokenizer
from train.trainer import Trainer

RUNGS = {  # tiny models of three families, trained for a few steps (dropout 0: HF Llama has none)
    "gpt2": [],
    "llama": ["--model.pos=rope", "--model.norm=rmsnorm", "--model.mlp=swiglu", "--model.bias=false",
              "--model.n_kv_head=1", "--model.tie_embeddings=false", "--model.dropout=0.0"],
    "gemma2": ["--model.pos=rope", "--model.norm=rmsnorm", "--model.norm_unit_offset=true",
               "--model.norm_placement=sandwich", "--model.mlp=geglu", "--model.window=8",
               "--model.global_every=2", "--model.attn_scale=0.25",  # = head_dim^-0.5, spelled out
               "--model.attn_softcap=50.0", "--model.final_softcap=30.0", "--model.embed_scale=true",
               "--model.bias=false", "--model.n_kv_head=1", "--model.norm_eps=1e-6",
               "--model.dropout=0.0"],
}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, corpus):
    root = tmp_path_factory.mktemp("export-runs")
    for family, rungs in RUNGS.items():
        Trainer(load_config(None, [*TINY, *corpus, *rungs, f"--train.out_dir={root / family}",
                                   "--train.max_steps=3", "--train.eval_interval=0"])).fit()
    return root


@pytest.mark.parametrize("family", list(RUNGS))
def test_exported_run_loads_in_transformers_and_generates_our_tokens(runs, family, tmp_path, capsys):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "hf"
    code, stdout, err = cli(capsys, runs / family, out, entry=export.main)
    assert code == 0, err
    assert f"(HF {family}, fp32)" in stdout  # chosen automatically
    config = json.loads((out / "config.json").read_text())
    assert config["model_type"] == family and config["eos_token_id"] == config["bos_token_id"] == 256
    hf = AutoModelForCausalLM.from_pretrained(out).eval()
    hf_tok = AutoTokenizer.from_pretrained(out)
    ours = load_run(runs / family).model
    prompt = "def f1_2(x):\n    return"
    ids = hf_tok.encode(prompt, add_special_tokens=False)
    assert ids == list(prompt.encode())  # the byte tokenizer, as HF reads it
    x = torch.tensor([ids])
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=1e-4, rtol=1e-4)
    n_new = ours.config.block_size - len(ids)
    expected = sample(ours, x, n_new, dict(temperature=0.0), stop=256)[0]
    got = hf.generate(x, max_new_tokens=n_new, do_sample=False)[0].tolist()
    assert got == expected  # HF stops at eos too, and pads nothing for a single row
    assert hf_tok.decode(got) == get_tokenizer("byte").decode(got)


@needs_gpt2_ranks
def test_gpt2_tokenizer_files_from_the_ranks_file_encode_like_tiktoken(tmp_path):
    from transformers import AutoTokenizer

    ours = get_tokenizer("gpt2", GPT2_RANKS)
    hf_tokenizer(ours).save_pretrained(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(tmp_path)
    assert hf.eos_token_id == hf.bos_token_id == 50256 and len(hf) == 50257
    for text in ["def f(x):\n    return x * 2  # é", "It's  two   spaces\n\n\ttabs 🤖 日本語", " lead"]:
        ids = ours.encode(text)
        assert hf.encode(text, add_special_tokens=False) == ids
        assert hf.decode(ids) == text
    vocab, merges = gpt2_vocab_and_merges(ours.ranks())
    assert len(vocab) == 50257 and len(merges) == 50000  # GPT-2's published sizes
    assert merges[0] == ("Ġ", "t")  # its first merge: space + t


def test_byte_tokenizer_round_trips_any_text(tmp_path):
    from transformers import AutoTokenizer

    hf_tokenizer(get_tokenizer("byte")).save_pretrained(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(tmp_path)
    text = "tab\t é 日本 🤖 \x00 end"
    assert hf.encode(text, add_special_tokens=False) == list(text.encode())
    assert hf.decode(list(text.encode())) == text and hf.eos_token_id == 256


def test_the_byte_alphabet_is_gpt2s_and_every_byte_round_trips(tmp_path):
    """bytes_to_unicode is transformers' own GPT-2 table (which HF's ByteLevel pre-tokenizer and GGUF
    readers assume), so the byte tokenizer maps every character below U+0800 (the bytes 0x00-0xBF and
    the lead bytes 0xC2-0xDF) to its UTF-8 bytes and back."""
    from transformers import AutoTokenizer
    from transformers.convert_slow_tokenizer import bytes_to_unicode as reference

    from train.hf_tokenizer import bytes_to_unicode

    assert bytes_to_unicode() == reference()
    hf_tokenizer(get_tokenizer("byte")).save_pretrained(str(tmp_path))
    hf = AutoTokenizer.from_pretrained(tmp_path)
    text = "".join(map(chr, range(0x800)))
    assert hf.encode(text, add_special_tokens=False) == list(text.encode())
    assert hf.decode(list(text.encode())) == text


def test_family_choice_names_the_blocking_settings(tmp_path, capsys, runs):
    assert choose_family(load_config(None, ["--model.pos=rope"]).model) == "gpt_neox"  # GPT-2 with RoPE
    cfg = load_config(None, ["--model.pos=rope", "--model.n_kv_head=2"]).model  # and GQA: no HF family has it
    with pytest.raises(ConfigError) as e:
        choose_family(cfg)
    assert "the closest, gpt_neox, cannot hold model.n_kv_head=2 (" in str(e.value) and "gpt2 2" in str(e.value)
    # the top of the ladder: a few lines at most, the closest family and what blocks it first
    with pytest.raises(ConfigError) as e:
        choose_family(load_config("configs/ladder/16-muon.toml").model)
    assert len(str(e.value)) < 600 and "the closest, " in str(e.value) and "model.attention='mla'" in str(e.value)
    with pytest.raises(ConfigError, match="cannot export as llama: .*model.norm='layernorm'"):
        choose_family(load_config(None, []).model, "llama")
    code, _, err = cli(capsys, runs / "gpt2", tmp_path / "o", "--family", "nope", entry=export.main)
    assert code == 2 and "--family must be auto or one of gpt2, gpt_neox, llama" in error_line(err)
    code, _, err = cli(capsys, runs / "gpt2", tmp_path / "o", "--dtype", "fp8", entry=export.main)
    assert code == 2 and "invalid choice: 'fp8'" in error_line(err)
    assert not (tmp_path / "o").exists()
    (tmp_path / "f").write_text("a file")
    code, _, err = cli(capsys, runs / "gpt2", tmp_path / "f" / "o", entry=export.main)
    assert code == 1 and f"OUT_DIR {tmp_path / 'f' / 'o'}: cannot create it" in error_line(err)


PRESET_FAMILY = {"deepseek-v3": "deepseek_v3", "deepseek-v3.2": "deepseek_v32", "gemma2": "gemma2",
                 "gemma3": "gemma3_text", "gpt-oss": "gpt_oss",
                 "llama3": "llama", "mistral": "mistral", "mixtral": "mixtral", "olmo2": "olmo2", "olmo3": "olmo3",
                 "qwen3": "qwen3", "qwen3-moe": "qwen3_moe", "qwen3.5": "qwen3_5_text",
                 "qwen3.5-moe": "qwen3_5_moe_text", "qwen3-next": "qwen3_next"}
NO_HF_CONVERSION_YET = {  # expected failures, each with its reason
    "gpt-oss-dense": "its dense SwiGLU stands in for gpt-oss's MoE, which HF gpt_oss always has",
}
PRESETS = sorted(p.stem for p in (ROOT / "configs" / "presets").glob("*.toml"))


def test_every_preset_is_listed_here():
    assert sorted([*PRESET_FAMILY, *NO_HF_CONVERSION_YET]) == PRESETS


@pytest.mark.parametrize("name", [
    pytest.param(n, marks=pytest.mark.xfail(raises=ConfigError, strict=True, reason=NO_HF_CONVERSION_YET[n]))
    if n in NO_HF_CONVERSION_YET else n for n in PRESETS])
def test_every_preset_exports_to_its_family(name):
    cfg = load_config(ROOT / "configs" / "presets" / f"{name}.toml").model
    family = choose_family(cfg)
    assert family == PRESET_FAMILY[name]
    torch.manual_seed(0)
    ours = GPT(cfg).eval()
    hf = to_hf(ours, family)
    x = torch.randint(0, cfg.vocab_size, (1, 12))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x), atol=1e-4, rtol=1e-4)


def test_the_hf_tokenizer_has_endoftext_as_bos_eos_and_unk_and_a_chat_one_keeps_it_as_bos():
    byte = get_tokenizer("byte")
    hf = hf_tokenizer(byte)
    assert hf.bos_token == hf.eos_token == hf.unk_token == "<|endoftext|>"
    assert hf.bos_token_id == hf.eos_token_id == hf.unk_token_id == 256
    chat = hf_tokenizer(byte, chat=True)
    assert (chat.bos_token_id, chat.eos_token_id) == (256, 260)


def saved_tensors(out) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model.safetensors"))


def test_dtype_and_step_choose_what_is_written(base, tmp_path):
    """--dtype bf16 stores each fp32 tensor rounded to bf16; --step 2 stores the step-2 checkpoint
    (as to_hf converts it), not the newest (step 4)."""
    export.export(base, tmp_path / "fp32")
    export.export(base, tmp_path / "bf16", dtype="bf16")
    export.export(base, tmp_path / "step2", step=2)
    full, half, early = (saved_tensors(tmp_path / name) for name in ("fp32", "bf16", "step2"))
    assert full.keys() == half.keys() == early.keys()
    for name, tensor in full.items():
        assert tensor.dtype == torch.float32 and half[name].dtype == torch.bfloat16, name
        assert torch.equal(half[name], tensor.to(torch.bfloat16)), name
    want = to_hf(load_run(base, 2).model, "gpt2", bos_token_id=256, eos_token_id=256).state_dict()
    for name, tensor in early.items():
        assert torch.equal(tensor, want[name].contiguous()), name
    assert any(not torch.equal(early[name], full[name]) for name in full)


def test_a_refusal_names_six_blocking_settings_and_counts_the_rest():
    """The closest family's blocking settings, as config_to_hf lists them: the first six are named
    and the others counted."""
    from model.hf import Unrepresentable, config_to_hf

    cfg = load_config("configs/ladder/16-muon.toml").model
    with pytest.raises(ConfigError) as e:
        choose_family(cfg)
    closest = str(e.value).split("the closest, ")[1].split(",")[0]
    with pytest.raises(Unrepresentable) as blocked:
        config_to_hf(cfg, closest)
    fields = blocked.value.settings
    assert len(fields) > 6
    assert f"cannot hold {', '.join(fields[:6])} and {len(fields) - 6} more (" in str(e.value)


def test_an_export_that_cannot_be_written_leaves_no_out_dir(base, tmp_path, capsys):
    """A full disk (here a 50 kB limit per file, under the weights' 150 kB) fails in one line and
    leaves nothing in OUT_DIR's folder, so the retry is not refused as a non-empty OUT_DIR."""
    out = tmp_path / "exports" / "hf"
    with files_at_most(50_000):
        code, _, err = cli(capsys, base, out, entry=export.main)
    assert code == 1 and "could not write" in error_line(err) and list(out.parent.iterdir()) == []
    assert cli(capsys, base, out, entry=export.main)[0] == 0 and (out / "model.safetensors").is_file()
