"""lm-eval-harness against the server (`local-completions`: batched token-id prompts, echo + logprobs)
on a tiny multiple-choice task written here, and the same task through the offline LLM."""
from __future__ import annotations

import json
import math

import pytest

lm_eval = pytest.importorskip("lm_eval")
pytestmark = pytest.mark.slow

QUESTIONS = [
    ("The capital of France is", ["Paris", "Tokyo", "Cairo", "Lima"], 0),
    ("The capital of Japan is", ["Berlin", "Tokyo", "Madrid", "Oslo"], 1),
    ("The capital of Italy is", ["Nairobi", "Ottawa", "Rome", "Seoul"], 2),
    ("The capital of Germany is", ["Quito", "Hanoi", "Dakar", "Berlin"], 3),
    ("The capital of Spain is", ["Madrid", "Canberra", "Lusaka", "Riga"], 0),
    ("The capital of England is", ["Bogota", "London", "Tunis", "Sofia"], 1),
    ("The sky on a clear day is", ["green", "purple", "blue", "brown"], 2),
    ("Grass is usually", ["red", "orange", "black", "green"], 3),
    ("Snow is", ["white", "black", "red", "blue"], 0),
    ("One plus one equals", ["seven", "two", "ten", "zero"], 1),
    ("A week has seven", ["apples", "rivers", "days", "chairs"], 2),
    ("Cats like to drink", ["petrol", "ink", "paint", "milk"], 3),
    ("The sun rises in the", ["east", "cupboard", "ocean floor", "basement"], 0),
    ("Water freezes at zero degrees", ["Kelvin", "Celsius", "Pascal", "Newton"], 1),
    ("Bees make", ["steel", "glass", "honey", "plastic"], 2),
    ("A baby cat is called a", ["puppy", "calf", "foal", "kitten"], 3),
    ("The opposite of hot is", ["cold", "loud", "tall", "fast"], 0),
    ("Fish live in", ["deserts", "water", "clouds", "volcanoes"], 1),
    ("We see with our", ["knees", "elbows", "eyes", "toes"], 2),
    ("The largest planet in the solar system is", ["Pluto", "Mercury", "Mars", "Jupiter"], 3),
]
TASK = "sliceserve_tiny_mc"


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lm_eval_task")
    with open(d / "data.jsonl", "w") as f:
        for q, choices, gold in QUESTIONS:
            f.write(json.dumps({"question": q, "choices": choices, "gold": gold}) + "\n")
    (d / f"{TASK}.yaml").write_text(f"""task: {TASK}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {d / 'data.jsonl'}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: gold
target_delimiter: " "
metric_list:
  - metric: acc
""")
    return d


def _run(task_dir, model: str, model_args: str | dict) -> dict:
    from lm_eval.tasks import TaskManager

    res = lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=[TASK], log_samples=True,
                                  task_manager=TaskManager(include_path=str(task_dir)), random_seed=0,
                                  numpy_random_seed=0, torch_random_seed=0, fewshot_random_seed=0)
    return res


def test_lm_eval_via_completions_matches_offline_llm(server, task_dir, monkeypatch):
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    from sliceserve.model.cache import gguf_tokenizer_dir
    from sliceserve.model.loader import default_model_path

    tok_dir = gguf_tokenizer_dir(default_model_path())
    api = _run(task_dir, "local-completions",
               f"base_url={server.url}/v1/completions,model=smol,tokenizer={tok_dir},"
               "tokenizer_backend=huggingface,tokenized_requests=True,batch_size=16,num_concurrent=1,max_retries=1")
    acc_api = api["results"][TASK]["acc,none"]
    assert acc_api > 0.25 + 0.2, acc_api            # chance is 0.25 with four choices

    import sliceserve.integrations.lm_eval  # noqa: F401 - registers the `sliceserve` model
    from sliceserve.engine.llm import LLM

    llm = LLM(dtype="float32", max_model_len=1024, kv_cache_memory_bytes=96 << 20, num_threads=1)   # as the server
    offline = _run(task_dir, "sliceserve", {"llm": llm})
    print(f"lm-eval acc: /v1/completions {acc_api:.3f}, offline LLM {offline['results'][TASK]['acc,none']:.3f}")
    assert offline["results"][TASK]["acc,none"] == acc_api
    # Per choice, the loglikelihoods agree to float noise (batching differs between the two runs).
    by_doc = lambda r: {s["doc_id"]: [x[0][0] for x in s["resps"]] for s in r["samples"][TASK]}  # noqa: E731
    a, b = by_doc(api), by_doc(offline)
    assert a.keys() == b.keys() and len(a) == len(QUESTIONS)
    for k in a:
        for x, y in zip(a[k], b[k]):
            assert math.isclose(float(x), float(y), abs_tol=1e-3, rel_tol=1e-4), (k, x, y)
