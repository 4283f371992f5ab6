"""Cache identity differences in words: no digests, no None for an unset value, no echo of the teacher change."""

from __future__ import annotations

from components.cache.manifest import mismatches

IDENTITY = {
    "format": 1,
    "teacher": "local:c0ffee",
    "teacher_path": "/models/t5",
    "weights": "content:aaaa",
    "revision": None,
    "teacher_dtype": "bfloat16",
    "tokenizer": "1234",
    "max_length": 512,
    "chroma_mask": True,
    "cache_dtype": "bfloat16",
    "seed": None,
}


def _cached(**changes) -> dict:
    return {"identity": {**IDENTITY, **changes}}


def test_the_same_identity_matches():
    assert mismatches(_cached(), IDENTITY) == []


def test_a_manifest_without_a_weights_fingerprint_is_still_accepted():
    """Caches written before the fingerprint existed: unknown is not a mismatch."""
    old = _cached()
    del old["identity"]["weights"]
    assert mismatches(old, IDENTITY) == []
    assert mismatches(_cached(), {**IDENTITY, "weights": None}) == [], "weights that cannot be read now: unknown"


def test_new_weights_at_the_same_path_are_named():
    assert mismatches(_cached(weights="content:bbbb"), IDENTITY) == [
        "the teacher's weights in /models/t5 changed since the cache was written "
        "(a weight file or config.json differs in name, size or contents)"
    ]


def test_a_manifest_whose_fingerprint_was_taken_from_file_times_is_still_accepted():
    """Written before contents were sampled: its digest cannot be compared with one of contents."""
    assert mismatches(_cached(weights="3f2a9c0d1e4b5a6c"), IDENTITY) == []
    assert mismatches(_cached(teacher="/models/t5", weights="3f2a9c0d1e4b5a6c"), IDENTITY) == [], "same folder"
    moved = mismatches(_cached(teacher="/elsewhere/t5", weights="3f2a9c0d1e4b5a6c"), IDENTITY)
    assert moved and "the teacher differs" in moved[0]


def test_a_value_the_recipe_does_not_set_is_said_in_words():
    assert mismatches(_cached(revision="v1"), IDENTITY) == [
        "teacher.revision is not set in the recipe but was 'v1' when the cache was written"
    ]


def test_another_teacher_is_one_difference_without_its_consequences():
    inline = _cached(teacher="inline:abcd", weights=None, seed=0, tokenizer="9999")
    assert mismatches(inline, IDENTITY) == [
        "the teacher differs: the cache was made with an inline config (random weights), the recipe has the folder "
        "'/models/t5'"
    ]
    other_inline = {**IDENTITY, "teacher": "inline:ef01", "weights": None, "seed": 0}
    assert mismatches(inline, other_inline) == [
        "the teacher's inline config differs from the one the cache was made with"
    ]


def test_a_local_teacher_that_moved_keeps_its_cache_and_one_that_changed_does_not():
    assert mismatches(_cached(teacher_path="/elsewhere/t5"), IDENTITY) == [], "named by its config, not its path"
    legacy = _cached(teacher="/old/place/t5")  # manifests before: the path, with the same weights fingerprint
    assert mismatches(legacy, IDENTITY) == []
    assert mismatches(_cached(teacher="/old/place/t5", weights="content:bbbb"), IDENTITY) == [
        "the teacher differs: the cache was made with '/old/place/t5', the recipe has the folder '/models/t5'"
    ]
    assert mismatches(_cached(teacher="local:d00d"), IDENTITY) == [
        "the teacher's config.json differs from the one the cache was made with"
    ]


def test_no_digest_is_shown():
    messages = mismatches(_cached(tokenizer="5678", format=0), IDENTITY)
    assert messages == [
        "the cache was written in format 0, this version reads format 1",
        "the teacher tokenizer differs from the one the cache was made with",
    ]


def test_other_special_tokens_are_named_and_a_manifest_written_before_they_were_recorded_is_accepted():
    """The pad token is in tokenizer_config.json, not tokenizer.json, and its id is in every Chroma-masked row."""
    now = {**IDENTITY, "special_tokens": "5678"}
    assert mismatches(_cached(special_tokens="9999"), now) == [
        "the teacher tokenizer's special tokens (tokenizer_config.json, special_tokens_map.json: the pad token, "
        "say) differ from those the cache was made with"
    ]
    assert mismatches(_cached(), now) == [], "written before special tokens were recorded"


def test_a_pad_token_changed_in_a_local_tokenizer_changes_the_identity(tmp_path):
    import json
    import shutil
    from pathlib import Path

    from components.cache.manifest import teacher_identity
    from recipe_runner.loader import load_recipe

    root = Path(__file__).parents[3]
    tokenizer = tmp_path / "tok"
    shutil.copytree(root / "data" / "tokenizers" / "tiny_t5", tokenizer)
    recipe = root / "recipes" / "examples" / "t5_to_qwen_tiny.yaml"

    def identity():
        return teacher_identity(load_recipe(recipe, [f"teacher.tokenizer={tokenizer}"], check=False).recipe)

    before = identity()
    config = tokenizer / "tokenizer_config.json"
    settings = json.loads(config.read_text())
    config.write_text(json.dumps({**settings, "pad_token": "<unk>"}))
    assert identity()["special_tokens"] != before["special_tokens"]
    assert identity()["tokenizer"] == before["tokenizer"]
