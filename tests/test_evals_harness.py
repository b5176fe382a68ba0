"""lm-evaluation-harness as the peer: our multiple-choice scores of a tiny run equal the harness's
own `hf` model on the run exported with `python -m train.export`, item by item.

Needs the `eval` extra (`pip install -e ".[eval]"`); skipped without it. Offline: the task YAML
reads a local JSONL file through the `json` dataset builder."""

import json

import pytest

lm_eval = pytest.importorskip("lm_eval")
pytest.importorskip("accelerate")

from tiny_run import cli  # noqa: E402
from train import export  # noqa: E402
from train.data import DataConfig  # noqa: E402
from train.evals.items import ChoiceItem  # noqa: E402
from train.evals.multiple_choice import choice_metrics  # noqa: E402
from train.evals.suite import Settings, run_task  # noqa: E402
from train.evals.tasks import TaskEnv, build_task  # noqa: E402
from train.hardware import pick_device  # noqa: E402
from train.run import load_run  # noqa: E402
from train.tokenizer import for_run  # noqa: E402

ITEMS = [  # block_size 32: the longer ones are cut from the left
    {"context": "def f1_2(x):\n    return x *", "choices": ["2 + 1", "9 + 9", "x"], "label": 0},
    {"context": "def f3_4(x):\n    return x * 4 + 3  # ", "choices": ["é", "e", "ée"], "label": 0},  # ends in a space
    {"context": "", "choices": ["def", "return"], "label": 1},  # an empty context: eot comes first
    {"context": "x" * 40, "choices": ["return x * 7 + 1", "x"], "label": 1},
    {"context": "def f0_5(x):\n", "choices": ["    return x * 5 + 0", "def f0_6(x):", "# é"], "label": 0},
    {"context": "    return x *", "choices": ["11 + 2", "1", "é é"], "label": 2},
    # per character "x" wins, per byte "éééééé": acc_norm and acc_bytes part ways here
    {"context": "    return x * 5 + 0  #", "choices": ["éééééé", "x"], "label": 0},
    {"context": "    return x * 3 + 1  #", "choices": ["é", "ab"], "label": 0},
]

TASK_YAML = """task: ladder_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
  cache_dir: {cache}
test_split: test
output_type: multiple_choice
doc_to_text: context
doc_to_choice: choices
doc_to_target: label
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
"""


def test_our_loglikelihoods_acc_and_acc_norm_equal_the_harness(base, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps(item) + "\n" for item in ITEMS), encoding="utf-8")
    tasks = tmp_path / "tasks"
    tasks.mkdir()
    (tasks / "ladder_mc.yaml").write_text(TASK_YAML.format(data=data, cache=tmp_path / "hf-cache"))
    hf_dir = tmp_path / "hf"
    code, _, err = cli(capsys, base, hf_dir, entry=export.main)
    assert code == 0, err

    from lm_eval.tasks import TaskManager

    theirs = lm_eval.simple_evaluate(model="hf", model_args=f"pretrained={hf_dir},dtype=float32", tasks=["ladder_mc"],
                                     task_manager=TaskManager(include_path=str(tasks), include_defaults=False), num_fewshot=0, batch_size=4,
                                     device="cpu", log_samples=True, bootstrap_iters=0)
    by_doc = {s["doc_id"]: s for s in theirs["samples"]["ladder_mc"]}
    their_lls = [[ll for ll, _ in by_doc[i]["filtered_resps"]] for i in range(len(ITEMS))]

    run = load_run(base)
    env = TaskEnv(for_run(base), run.model.config.block_size, DataConfig())
    ours = run_task(build_task(str(data), env), run.model, env.tok, Settings(), pick_device("cpu"), "fp32")
    assert ours["n"] == len(ITEMS) and ours["truncated"] >= 2
    for i, (mine, their) in enumerate(zip(ours["items"], their_lls)):
        # 1e-6 relative: both sum fp32 log-probs, and an fp32 sum near -15.7 moves in steps of 1.9e-6
        # (batches of other shapes round the last bit differently; most items agree to the bit)
        assert mine["loglikelihoods"] == pytest.approx(their, abs=1e-6, rel=1e-6)
        item = ChoiceItem(ITEMS[i]["context"], tuple(ITEMS[i]["choices"]), ITEMS[i]["label"])
        per_item = choice_metrics([item], [mine["loglikelihoods"]])
        assert (per_item["acc"], per_item["acc_norm"]) == (by_doc[i]["acc"], by_doc[i]["acc_norm"]), i
    assert ours["metrics"]["acc_norm"] != ours["metrics"]["acc_bytes"]  # the items tell the two apart
    assert sum(by_doc[i]["acc"] != by_doc[i]["acc_norm"] for i in by_doc) >= 3  # and acc from acc_norm
    metrics = theirs["results"]["ladder_mc"]
    assert ours["metrics"]["acc"] == metrics["acc,none"]
    assert ours["metrics"]["acc_norm"] == metrics["acc_norm,none"]
