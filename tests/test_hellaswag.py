"""scripts/hellaswag.py on a few HellaSwag-format items written here and a tiny random HF GPT-2:
the completion style against cross-entropies computed on the HF model's own logits, the harness
style's preprocessing against strings written by hand and, with the `eval` extra, against
lm-evaluation-harness's own hellaswag task; bad input. Offline: no file or weights downloaded."""

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from tiny_run import GPT2_RANKS, cli, error_line, load_script, needs_gpt2_ranks, randomize_
from train.evals.hellaswag import harness_query, parse_row, preprocess
from train.hf_tokenizer import save_hf_tokenizer
from train.tokenizer import get_tokenizer

def row(activity: str, ctx_a: str, ctx_b: str, endings: list[str], label, ctx: str | None = None) -> dict:
    """A line as rowanz/hellaswag writes it: ctx is ctx_a, then a space and ctx_b when there is one."""
    ctx = ctx if ctx is not None else (f"{ctx_a} {ctx_b}" if ctx_b else ctx_a)
    return {"ind": 0, "activity_label": activity, "ctx_a": ctx_a, "ctx_b": ctx_b, "ctx": ctx, "split": "val",
            "split_type": "indomain", "label": label, "endings": endings, "source_id": "test"}


ITEMS = [
    row("Washing dishes", "A woman stands at a kitchen sink.", "she",
        ["rinses a plate and sets it on the rack.", "flies.", "is a sink.",
         "turns the water on and scrubs a large pan with a green sponge until the bottom of it shines."], 0),
    # capitalize() also lowercases the rest: "the boy and Max" -> "The boy and max"; a label given as a string
    row("Walking the dog", "Two kids walk down a street with a dog.", "the boy and Max",
        ["throw a ball.", "run after the dog, laughing, as it pulls the leash toward a small park.", "sleep.",
         "are dogs."], "1"),
    # WikiHow markup: " [title]" becomes ". ", other [tags] go, double spaces are halved once
    row("Home and Garden", "[header] How to water a cactus [title] Check the soil first. [step] Push a finger in.", "",
        ["[substeps] If it is dry, water it slowly. [title] Wait a week before watering again.",
         "Eat the cactus.", "[step] Water it every hour  of the   day.", "It is a plant."], 2),
    # characters and bytes differ: acc_norm and acc_bytes can part ways
    row("Making coffee", "A barista pours milk into a cup.", "he",
        ["draws a café crème leaf on the top.", "éé.", "drinks it.",
         "puts the naïve cup down beside the résumé."], 3),
    # a context ending in a space: llm.c encodes it as it is, the harness moves the space to the ending
    row("Cooking", "A chef slices an onion on a board. ", "",
        ["Then he chops a carrot.", "The onion sings.", "He.",
         "Next he adds both to a pan of hot oil and stirs."], 1),
    row("Playing piano", "A girl sits at a piano.", "she",
        ["plays a short song.", "is a piano.", "eats the keys.",
         "opens a book of music and begins to play slowly."], 3),
]


@pytest.fixture(scope="module")
def hf_gpt2(tmp_path_factory):
    """A tiny GPT-2 with every weight random, saved as an HF directory with GPT-2's tokenizer files."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("hf") / "gpt2-tiny"
    config = GPT2Config(vocab_size=50257, n_positions=96, n_embd=32, n_layer=2, n_head=2,
                        bos_token_id=50256, eos_token_id=50256)
    model = randomize_(GPT2LMHeadModel(config), ones="vectors")
    model.save_pretrained(str(path))
    save_hf_tokenizer(get_tokenizer("gpt2", GPT2_RANKS), path)
    return path, model


@pytest.fixture(scope="module")
def items_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("hellaswag") / "hellaswag_val.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in ITEMS), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def scored(hf_gpt2, items_file, tmp_path_factory):
    """The script's JSON record on the items (one run, shared)."""
    out = tmp_path_factory.mktemp("out") / "hellaswag.json"
    code = load_script("hellaswag").main([str(items_file), str(hf_gpt2[0]), "--device", "cpu", "--json", str(out)])
    assert code == 0
    return json.loads(out.read_text())


def test_the_harness_query_and_endings_are_preprocessed_as_written_by_hand():
    assert [harness_query(r) for r in ITEMS[:3]] == [
        "Washing dishes: A woman stands at a kitchen sink. She",
        "Walking the dog: Two kids walk down a street with a dog. The boy and max",
        "Home and Garden: How to water a cactus. Check the soil first. Push a finger in.",
    ]
    assert [preprocess(e) for e in ITEMS[2]["endings"]] == [
        " If it is dry, water it slowly.. Wait a week before watering again.",  # strip comes first
        "Eat the cactus.", " Water it every hour of the  day.", "It is a plant.",
    ]
    item = parse_row(ITEMS[1])
    assert item.completion.context == "Two kids walk down a street with a dog. the boy and Max"
    assert item.completion.choices == tuple(ITEMS[1]["endings"]) and item.completion.label == item.harness.label == 1


@needs_gpt2_ranks
@torch.no_grad()
def test_completion_style_equals_cross_entropy_on_the_hf_models_own_logits(hf_gpt2, scored):
    """llm.c's way, computed here on the HF model: ctx and " " + ending tokenized apart (tiktoken),
    the loss of every ending token; acc = argmin of the sum, acc_norm = argmin of the mean."""
    _, hf = hf_gpt2
    enc = get_tokenizer("gpt2", GPT2_RANKS)
    ours = scored["completion"]
    assert ours["n"] == len(ITEMS) and ours["skipped"] == ours["truncated"] == 0
    hits, hits_norm, parted = 0, 0, 0
    for r, mine in zip(ITEMS, ours["items"]):
        ctx = enc.encode(r["ctx"])
        sums, means, lengths = [], [], []
        for ending in r["endings"]:
            end = enc.encode(" " + ending)
            ids = torch.tensor([ctx + end])
            losses = F.cross_entropy(hf(ids).logits[0, :-1], ids[0, 1:], reduction="none")[len(ctx) - 1:]
            sums.append(losses.sum().item())
            means.append(losses.mean().item())
            lengths.append(len(end))
        assert mine["tokens"] == lengths
        # the mean loss per token (what acc_norm ranks) to 1e-5; the sums, ~-10.8 per token for a
        # 50257-way guess, to 1e-6 relative: their fp32 ulp is ~1.5e-5 at -200
        assert [-ll / n for ll, n in zip(mine["loglikelihoods"], lengths)] == pytest.approx(means, abs=1e-5)
        assert mine["loglikelihoods"] == pytest.approx([-s for s in sums], rel=1e-6)
        pred, pred_norm = min(range(4), key=sums.__getitem__), min(range(4), key=means.__getitem__)
        assert mine["pred"] == pred
        hits += pred == int(r["label"])
        hits_norm += pred_norm == int(r["label"])
        parted += pred != pred_norm
    assert (ours["acc"], ours["acc_norm"]) == (hits / len(ITEMS), hits_norm / len(ITEMS))
    assert parted >= 1  # the items tell acc from acc_norm


@needs_gpt2_ranks
def test_limit_and_the_ranks_file_in_place_of_the_directorys_tokenizer(hf_gpt2, items_file, scored, capsys, tmp_path):
    """--limit 2 scores the first two items; --tokenizer_path reads them with tiktoken instead of the
    HF tokenizer files, to the same tokens."""
    out = tmp_path / "two.json"
    code, stdout, err = cli(capsys, items_file, hf_gpt2[0], "--device", "cpu", "--limit", "2",
                            "--tokenizer_path", GPT2_RANKS, "--json", out, entry=load_script("hellaswag").main)
    assert code == 0, err
    lines = stdout.splitlines()
    assert "2 items" in lines[0] and "HF model" in lines[0] and "(cpu, fp32)" in lines[0]
    assert lines[1].startswith("completion n 2: acc ") and "0.2955" in lines[1]
    assert lines[2].startswith("harness    n 2: acc ") and "acc_bytes" in lines[2] and "0.3114" in lines[2]
    two = json.loads(out.read_text())
    for style in ("completion", "harness"):
        for mine, before in zip(two[style]["items"], scored[style]["items"][:2], strict=True):
            assert (mine["tokens"], mine["pred"]) == (before["tokens"], before["pred"])
            assert mine["loglikelihoods"] == pytest.approx(before["loglikelihoods"], rel=1e-6)


@needs_gpt2_ranks
def test_the_harness_style_equals_lm_evaluation_harness_hellaswag(hf_gpt2, items_file, scored, tmp_path, monkeypatch):
    """The harness's own hellaswag task (its process_docs and metrics) on the same file, through a
    local YAML that includes the installed one; its `hf` model runs the HF directory itself."""
    lm_eval = pytest.importorskip("lm_eval")
    pytest.importorskip("accelerate")
    from lm_eval.tasks import TaskManager

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    theirs_yaml = Path(lm_eval.__file__).parent / "tasks" / "hellaswag" / "hellaswag.yaml"
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ladder_hellaswag.yaml").write_text(
        f"include: {theirs_yaml}\ntask: ladder_hellaswag\ntag: []\ndataset_path: json\ndataset_kwargs:\n"
        f"  data_files:\n    validation: {items_file}\n  cache_dir: {tmp_path / 'hf-cache'}\ntraining_split: null\n")
    manager = TaskManager(include_path=str(tasks), include_defaults=False)  # the YAML names the one it includes
    theirs = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_gpt2[0]},dtype=float32",
                                     tasks=["ladder_hellaswag"], task_manager=manager, num_fewshot=0,
                                     batch_size=4, device="cpu", log_samples=True, bootstrap_iters=0)
    by_doc = {s["doc_id"]: s for s in theirs["samples"]["ladder_hellaswag"]}
    ours = scored["harness"]
    for i, mine in enumerate(ours["items"]):
        doc = by_doc[i]["doc"]
        item = parse_row(ITEMS[i]).harness
        assert (item.context, list(item.choices)) == (doc["query"], doc["choices"]), i
        their_lls = [ll for ll, _ in by_doc[i]["filtered_resps"]]
        assert mine["loglikelihoods"] == pytest.approx(their_lls, rel=1e-6), i  # fp32 sums near -200
    metrics = theirs["results"]["ladder_hellaswag"]
    assert (ours["acc"], ours["acc_norm"]) == (metrics["acc,none"], metrics["acc_norm,none"])


def test_a_training_run_is_scored_with_its_own_tokenizer(base, capsys, tmp_path):
    """The tiny run (bytes, block_size 32): contexts longer than the window are cut from the left."""
    path = tmp_path / "hellaswag_val.jsonl"
    rows = [row("Code", "def f1_2(x):\n    return x * 2 + 1  # the answer to", "it", ["is 3", "x"], 0),
            row("Code", "def f0_5(x):", "", ["return x * 5", "pass"], 1)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, stdout, err = cli(capsys, path, base, "--device", "cpu", entry=load_script("hellaswag").main)
    assert code == 0, err
    assert f"step_00000004 of {base}" in stdout
    assert "completion n 2: acc " in stdout and "1 cut from the left to fit the context" in stdout


@pytest.mark.parametrize("content, problem", [
    (None, "cannot read it"),
    ('{"ctx": "a", "endings": ["b", "c"], "label": 0, "activity_label": "x", "ctx_a": "a", "ctx_b": ""}\nnot json\n',
     "line 2: Expecting value"),
    ('{"ctx": "a", "endings": ["b", "c"], "label": 0}\n', 'line 1: needs "activity_label" as a string'),
    ('{"ctx": "a", "endings": ["b", "c"], "label": 5, "activity_label": "x", "ctx_a": "a", "ctx_b": ""}\n',
     "line 1: label 5 is out of range for 2 choices"),
    ("\n\n", "no items"),
])
def test_a_bad_file_is_one_line_and_exit_2(tmp_path, capsys, content, problem):
    path = tmp_path / "hellaswag_val.jsonl"
    if content is not None:
        path.write_text(content)
    code, _, err = cli(capsys, path, tmp_path, entry=load_script("hellaswag").main)
    assert code == 2 and problem in error_line(err)


@needs_gpt2_ranks
def test_bad_options_and_models_are_one_line_and_exit_2(hf_gpt2, items_file, tmp_path, capsys):
    main = load_script("hellaswag").main
    taken = tmp_path / "taken.json"
    taken.write_text("{}")
    for argv, problem in [
        ([tmp_path], "neither a training run (config.toml) nor an HF model directory (config.json)"),
        ([hf_gpt2[0], "--step", "2"], "--step picks a checkpoint of a training run"),
        ([hf_gpt2[0], "--limit", "0"], "--limit must be an integer >= 1"),
        ([hf_gpt2[0], "--json", taken], "already exists"),
        ([hf_gpt2[0], "--dtype", "fp64"], "invalid choice"),
        ([hf_gpt2[0], "--device", "tpu"], "is not a device"),
        ([hf_gpt2[0], "--tokenizer_path", tmp_path / "gpt2.tiktoken"], "no such file"),
    ]:
        code, _, err = cli(capsys, items_file, *argv, entry=main)
        assert code == 2 and problem in error_line(err), argv


def test_an_ending_that_preprocessing_empties_is_never_the_normalised_pick():
    """"[header]" preprocesses to "": its length normalisation divides by 0, which the harness's numpy
    makes -inf, so acc_norm and acc_bytes pick among the others while acc still compares sums."""
    from train.evals import multiple_choice as mc

    row = {"ctx": "a", "ctx_a": "a", "ctx_b": "b", "activity_label": "x", "endings": ["ok then", "[header]"],
           "label": 0}
    item = parse_row(row).harness
    assert item.choices == ("ok then", "")
    assert mc.choice_metrics([item], [[-5.0, -1.0]]) == {"acc": 0.0, "acc_norm": 1.0, "acc_bytes": 1.0}
