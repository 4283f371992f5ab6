"""The T5 path reproduces ChromaPipeline's own T5 encoding and mask, with the mask kept boolean."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from components.inference import InferenceError, chroma_mask, encode_t5, encode_with_teacher
from components.models import build_model, freeze, load_tokenizer
from recipe_runner.loader import load_recipe

RECIPE = Path(__file__).parent / "assets" / "tiny_chroma.yaml"
PROMPTS = ["a red fox in the snow", "cat", "an old lighthouse at dusk"]


@pytest.fixture(scope="module")
def teacher_source():
    return load_recipe(RECIPE).recipe.teacher


@pytest.fixture(scope="module")
def teacher(teacher_source):
    return freeze(build_model(teacher_source, "teacher"))


@pytest.fixture(scope="module")
def tokenizer(teacher_source):
    return load_tokenizer(teacher_source)


def test_chroma_mask_keeps_exactly_one_padding_token():
    mask = chroma_mask(torch.tensor([2, 4, 5]), 5)
    assert mask.dtype == torch.bool
    assert mask.tolist() == [
        [True, True, True, False, False],
        [True, True, True, True, True],
        [True, True, True, True, True],
    ]


def test_matches_the_diffusers_chroma_t5_encoding(teacher, tokenizer):
    from diffusers import ChromaPipeline

    reference = ChromaPipeline(scheduler=None, vae=None, text_encoder=teacher, tokenizer=tokenizer, transformer=None)
    expected, expected_mask = reference._get_t5_prompt_embeds(PROMPTS, max_sequence_length=32, device="cpu")

    embeds, mask = encode_t5(teacher, tokenizer, PROMPTS, max_length=32)

    length = mask.shape[1]
    assert mask.dtype == torch.bool
    assert torch.equal(mask, expected_mask[:, :length].bool())
    assert not expected_mask[:, length:].any(), "nothing visible is cut off by padding to longest + 1"
    torch.testing.assert_close(embeds[mask], expected[:, :length][mask].float(), atol=1e-5, rtol=1e-5)
    lengths = [len(ids) for ids in tokenizer(PROMPTS)["input_ids"]]
    assert mask.sum(dim=1).tolist() == [n + 1 for n in lengths]


def test_long_prompts_are_truncated_and_fully_visible(teacher, tokenizer):
    long_prompt = " ".join(["a red fox jumps over the lazy dog"] * 10)
    with pytest.warns(UserWarning, match="only the first 16 tokens are read"):
        embeds, mask = encode_t5(teacher, tokenizer, [long_prompt, "cat"], max_length=16)
    assert embeds.shape == (2, 16, 64)
    assert mask[0].all() and mask[1].sum() == len(tokenizer("cat")["input_ids"]) + 1


def test_empty_prompts(teacher, tokenizer):
    with pytest.raises(InferenceError, match="prompt 2 is empty"):
        encode_t5(teacher, tokenizer, ["cat", ""], max_length=32)
    with pytest.raises(InferenceError, match="no prompts"):
        encode_t5(teacher, tokenizer, [], max_length=32)
    _, mask = encode_t5(teacher, tokenizer, [""], max_length=32, allow_empty=True)
    assert mask.tolist() == [[True, True]], "</s> plus one padding token, as Chroma does for an empty negative"


def test_encode_with_teacher_gives_one_trimmed_conditioning_per_prompt(teacher_source, tokenizer):
    conditionings, negative = encode_with_teacher(teacher_source, PROMPTS, "", "cpu")
    assert len(conditionings) == 3
    for prompt, cond in zip(PROMPTS, conditionings, strict=True):
        length = len(tokenizer(prompt)["input_ids"]) + 1
        assert cond.embeds.shape == (1, length, 64) and cond.mask.shape == (1, length) and cond.mask.all()
    assert negative.mask.shape == (1, 2)
