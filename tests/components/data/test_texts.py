"""A text batch: both models read the same ids, and each real position is labelled with the token after it."""

from __future__ import annotations

from pathlib import Path

import torch

from components.data.texts import TextCollator
from components.losses.logit_losses import IGNORED


def test_labels_are_the_next_tokens_of_each_row_and_ignored_where_the_text_ends() -> None:
    batch = TextCollator(pad_id=0)([{"index": 0, "student_ids": [5, 6, 7]}, {"index": 1, "student_ids": [8]}])
    assert batch.student_ids.tolist() == [[5, 6, 7], [8, 0, 0]]
    assert batch.student_mask.tolist() == [[True, True, True], [True, False, False]]
    # One label per real token, in the order logits[mask] gives them.
    assert batch.labels.tolist() == [6, 7, IGNORED, IGNORED]
    assert batch.student_tokens == 4
    assert batch.indices.tolist() == [0, 1]
    assert batch.to(torch.device("cpu")).labels.tolist() == batch.labels.tolist()


def test_a_prompt_before_its_answer_and_a_prompt_to_continue_have_no_end_of_text_after_them() -> None:
    """The shipped tokenizers append end-of-text to every text: the answer followed it, as a new document."""
    from components.data.prompt_ids import prompt_ids, writes_end
    from components.data.texts import TextSamples
    from components.models import load_tokenizer
    from schemas.models import CausalLMStudent

    shipped = str(Path(__file__).resolve().parents[3] / "data" / "tokenizers" / "tiny_qwen")
    tokenizer = load_tokenizer(CausalLMStudent(type="causal_lm", config={"model_type": "qwen3"}, tokenizer=shipped))
    eos = tokenizer.eos_token_id
    assert writes_end(tokenizer) and tokenizer("a red fox")["input_ids"][-1] == eos
    plain = tokenizer("a red fox", add_special_tokens=False)["input_ids"]
    assert prompt_ids(tokenizer, ["a red fox"]) == [plain]
    assert prompt_ids(tokenizer, ["a red fox"], max_length=2) == [plain[:2]]
    samples = TextSamples(["a red fox"], tokenizer, 64, answers=["runs"])
    item = samples[0]
    answer = tokenizer("runs", add_special_tokens=False)["input_ids"]
    assert item["student_ids"] == plain + answer + [eos] and item["answer_start"] == len(plain)
    assert samples.token_lengths() == [len(item["student_ids"])]
