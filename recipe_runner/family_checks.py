"""Which family a recipe belongs to, and the sections that family uses.

The teacher's type decides the family: a `t5_encoder` teacher is distilled through hidden states on aligned tokens
(embedding family), a `causal_lm` teacher through next-token distributions on shared tokens (logits family). A
section or loss of the other family would be silently ignored, or fail hours in: it is named here instead.
"""

from __future__ import annotations

from typing import get_args

from components.errors import UserFacingError
from recipe_runner.errors import Problem
from recipe_runner.loader import LoadedRecipe
from schemas import Recipe
from schemas.models import CausalLMStudent, HiddenStatesStudent
from schemas.stages import (
    DIVERGENCE_LOSSES,
    FEATURE_LOSSES,
    LOGIT_LOSSES,
    AttentionLoss,
    CrossEntropyLoss,
    HiddenStatesLoss,
    TierLoss,
    ULDLoss,
)

_VECTOR_NAMES = "huber, cosine, mse"
# What distils across two tokenizers, for messages that send a user there.
ACROSS_LOSSES = "and compare them with uld, or with forward_kl, reverse_kl or jsd over the tokens both share"
_LOGIT_NAMES = "forward_kl, reverse_kl, jsd, cross_entropy, hidden_states, attention, uld"


def _loss_problems(loaded: LoadedRecipe, wanted: tuple[type, ...], names: str, family: str) -> list[Problem]:
    problems = []
    for index, stage in enumerate(loaded.recipe.stages):
        for loss_index, loss in enumerate(stage.losses):
            if not isinstance(loss, wanted):
                problems.append(
                    loaded.problem(
                        ("stages", index, "losses", loss_index, "type"),
                        f"{loss.type!r} is not a loss of the {family} family; use one of {names}",
                    )
                )
    return problems


def _student_problems(loaded: LoadedRecipe, wanted: type, signal: str) -> list[Problem]:
    student, teacher = loaded.recipe.student, loaded.recipe.teacher
    if isinstance(student, wanted):
        return []
    needed = get_args(wanted.model_fields["type"].annotation)[0]
    message = f"a {teacher.type} teacher is distilled through {signal}: the student needs type: {needed}"
    return [loaded.problem(("student", "type"), f"{message}, not {student.type!r}")]


def _embedding_problems(loaded: LoadedRecipe) -> list[Problem]:
    recipe = loaded.recipe
    problems = _student_problems(loaded, HiddenStatesStudent, "hidden states")
    if recipe.alignment is None:
        problems.append(
            loaded.problem(
                ("alignment",),
                "the embedding family pairs student and teacher tokens: add `alignment: {type: cross_tokenizer}`",
            )
        )
    for index, stage in enumerate(recipe.stages):
        for setting in ("on_policy", "denoising"):
            if getattr(stage, setting) is not None:
                why = "it is scored by next-token logits, which a t5_encoder teacher has none of"
                problems.append(loaded.problem(("stages", index, setting), f"logits family only ({why}): remove it"))
    return problems + _loss_problems(loaded, (TierLoss,), _VECTOR_NAMES, "embedding")


def _logits_problems(loaded: LoadedRecipe) -> list[Problem]:
    recipe = loaded.recipe
    problems = _student_problems(loaded, CausalLMStudent, "its next-token logits")
    unused = {
        "bolt_on": "the student's own LM head produces the logits",
        "inference": "it sets how `recipe infer` renders images (embedding family)",
    }
    present = {
        "bolt_on": bool(recipe.bolt_on.layers) or recipe.bolt_on.skip is not None,
        "inference": recipe.inference is not None,
    }
    for section, why in unused.items():
        if present[section]:
            problems.append(loaded.problem((section,), f"not used by the logits family ({why}): remove it"))
    if (
        teacher_in_training(recipe)
        and recipe.alignment is None
        and recipe.teacher.max_length < recipe.student.max_length
    ):
        problems.append(
            loaded.problem(
                ("teacher", "max_length"),
                f"the teacher reads the student's tokens, up to student.max_length {recipe.student.max_length}; "
                f"raise this to at least that, or lower student.max_length",
            )
        )
    problems += _on_policy_problems(loaded)
    problems += _loss_problems(loaded, LOGIT_LOSSES, _LOGIT_NAMES, "logits")
    return problems + (
        _one_vocabulary_problems(loaded) if recipe.alignment is None else _two_vocabulary_problems(loaded)
    )


def _one_vocabulary_problems(loaded: LoadedRecipe) -> list[Problem]:
    """Without alignment both models read one token sequence: ULD, the loss across vocabularies, has no pairs."""
    problems = []
    for index, stage in enumerate(loaded.recipe.stages):
        for loss_index, loss in enumerate(stage.losses):
            if isinstance(loss, ULDLoss):
                problems.append(
                    loaded.problem(
                        ("stages", index, "losses", loss_index, "type"),
                        "uld compares two vocabularies at aligned positions: add `alignment: {type: "
                        "cross_tokenizer}` for a teacher with another tokenizer, or use forward_kl",
                    )
                )
    return problems


def _two_vocabulary_problems(loaded: LoadedRecipe) -> list[Problem]:
    """With alignment, teacher and student read their own tokens: they are compared at aligned positions, by ULD
    or by the divergences over the tokens both vocabularies share, and the student's cross-entropy needs neither."""
    recipe = loaded.recipe
    problems = []
    if "matched" not in recipe.alignment.tiers:
        message = "across two vocabularies the logits are compared at the positions before matched tokens: add matched"
        problems.append(loaded.problem(("alignment", "tiers"), message))
    across = (ULDLoss, *DIVERGENCE_LOSSES)
    for index, stage in enumerate(recipe.stages):
        here = ("stages", index)
        for loss_index, loss in enumerate(stage.losses):
            if isinstance(loss, FEATURE_LOSSES):
                problems.append(
                    loaded.problem(
                        here + ("losses", loss_index, "type"),
                        f"{loss.type} compares the models token by token, which needs one tokenizer on both sides; "
                        "with `alignment` (two vocabularies) use uld, forward_kl, reverse_kl, jsd and cross_entropy, "
                        "or remove alignment if the tokenizers are the same",
                    )
                )
        if not any(isinstance(loss, across) for loss in stage.losses):
            message = (
                "with `alignment` the teacher teaches through uld, or forward_kl, reverse_kl or jsd over the tokens "
                "both vocabularies share: add one"
            )
            problems.append(loaded.problem(here + ("losses",), message))
        spec = stage.on_policy
        if spec is not None and spec.max_new_tokens >= recipe.teacher.max_length:
            message = (
                f"{spec.max_new_tokens} leaves no room for the prompt in teacher.max_length "
                f"{recipe.teacher.max_length}, where the teacher reads prompt + the student's sample: lower it, or "
                "raise teacher.max_length"
            )
            problems.append(loaded.problem(here + ("on_policy", "max_new_tokens"), message))
    return problems


def _on_policy_problems(loaded: LoadedRecipe) -> list[Problem]:
    problems = []
    length = loaded.recipe.student.max_length
    for index, stage in enumerate(loaded.recipe.stages):
        spec = stage.on_policy
        if spec is None:
            continue
        here = ("stages", index, "on_policy")
        if spec.max_new_tokens >= length:
            message = f"{spec.max_new_tokens} leaves no room for the text in student.max_length {length}; lower it"
            problems.append(loaded.problem(here + ("max_new_tokens",), message))
        if all(isinstance(loss, CrossEntropyLoss) for loss in stage.losses):
            problems.append(
                loaded.problem(
                    here,
                    "the stage has only cross_entropy, which is not applied to the student's samples: add a "
                    "forward_kl, reverse_kl or jsd loss (GKD uses jsd), or remove on_policy",
                )
            )
    return problems


def teacher_in_training(recipe: Recipe) -> bool:
    """Whether training reads the teacher: not when it only wrote answers and every loss is cross-entropy."""
    only_text = all(isinstance(loss, CrossEntropyLoss) for stage in recipe.stages for loss in stage.losses)
    return not (recipe.family == "logits" and recipe.teacher.answers is not None and only_text)


def _answers_problems(loaded: LoadedRecipe) -> list[Problem]:
    recipe = loaded.recipe
    if recipe.family != "logits" or recipe.teacher.answers is None:
        return []
    problems = []
    spec = recipe.teacher.answers
    if recipe.alignment is not None and spec.max_new_tokens >= recipe.teacher.max_length:
        problems.append(
            loaded.problem(
                ("teacher", "answers", "max_new_tokens"),
                f"{spec.max_new_tokens} leaves no room for the prompt in teacher.max_length "
                f"{recipe.teacher.max_length}, where the teacher reads prompt + answer beside the student: lower it, "
                "or raise teacher.max_length",
            )
        )
    if spec.max_new_tokens >= recipe.student.max_length:
        problems.append(
            loaded.problem(
                ("teacher", "answers", "max_new_tokens"),
                f"{spec.max_new_tokens} leaves no room for the prompt in student.max_length "
                f"{recipe.student.max_length}, where the student reads prompt + answer: lower it, or raise "
                "student.max_length",
            )
        )
    return problems


def _denoising_problems(loaded: LoadedRecipe) -> list[Problem]:
    """A bidirectional student sees the token it would predict unless it is masked: it trains by denoising only,
    and denoising is for it alone."""
    recipe = loaded.recipe
    bidirectional = isinstance(recipe.student, CausalLMStudent) and recipe.student.bidirectional
    problems = []
    for index, stage in enumerate(recipe.stages):
        here = ("stages", index)
        if bidirectional and stage.denoising is None:
            message = "student.bidirectional sees each token it would predict: give this stage `denoising: {}`"
            problems.append(loaded.problem(here, message))
        if stage.denoising is None:
            continue
        if not bidirectional:
            message = "denoising trains an encoder: set student.bidirectional: true, so it reads past masked spans"
            problems.append(loaded.problem(here + ("denoising",), message))
        if stage.on_policy is not None:
            message = (
                "denoising trains a bidirectional student, which sees the whole text at once and so cannot write "
                "its own continuation: remove on_policy, or denoising (on_policy trains a causal student)"
            )
            problems.append(loaded.problem(here + ("on_policy",), message))
        for loss_index, loss in enumerate(stage.losses):
            if isinstance(loss, AttentionLoss):
                message = (
                    "an attention loss compares the bidirectional student's maps with the causal teacher's, which "
                    "put no weight on later tokens: it trains the student back to attending one way; remove it "
                    "(hidden_states and the divergences train an encoder)"
                )
                problems.append(loaded.problem(here + ("losses", loss_index), message))
        clashes = {
            "alignment": recipe.alignment is not None,
            "teacher.answers": recipe.teacher.answers is not None,
        }
        for name in (name for name, present in clashes.items() if present):
            message = f"denoising with {name} is not supported yet: remove one of them"
            problems.append(loaded.problem(here + ("denoising",), message))
    return problems


def family_problems(loaded: LoadedRecipe) -> list[Problem]:
    """Sections, student type and losses that do not belong to the family the teacher's type chose."""
    if loaded.recipe.family == "embedding":
        return _embedding_problems(loaded)
    return _logits_problems(loaded) + _answers_problems(loaded) + _denoising_problems(loaded)


def shared_tokenizer_problem(loaded: LoadedRecipe, tokenizers: dict[str, object]) -> Problem | None:
    """The logits family compares distributions over one vocabulary: both sides must map text to the same ids."""
    recipe = loaded.recipe
    if recipe.family != "logits" or recipe.alignment is not None or len(tokenizers) != 2:
        return None
    if not teacher_in_training(recipe):  # the student reads the teacher's answers as text, in its own tokens
        return None
    teacher, student = tokenizers["teacher"], tokenizers["student"]
    if teacher.get_vocab() == student.get_vocab():
        return None
    field = ("teacher", "tokenizer") if loaded.recipe.teacher.tokenizer is not None else ("teacher", "model")
    return loaded.problem(
        field,
        f"the teacher's tokenizer ({len(teacher)} tokens) is not the student's ({len(student)} tokens): to "
        f"distil across vocabularies add `alignment: {{type: cross_tokenizer}}` {ACROSS_LOSSES}, or give both "
        "models the same tokenizer",
    )


def no_shared_tokens_problems(loaded: LoadedRecipe, tokenizers: dict[str, object]) -> list[Problem]:
    """Divergences across two vocabularies compare the tokens both share: tokenizers sharing none leave nothing."""
    from recipe_runner.trainer.logit_parts import needs_vocab_map

    recipe = loaded.recipe
    if recipe.family != "logits" or recipe.alignment is None or len(tokenizers) != 2 or not needs_vocab_map(recipe):
        return []
    from components.losses.vocab_map import build_vocab_map

    if build_vocab_map(tokenizers["student"], tokenizers["teacher"]).shared:
        return []
    return [
        loaded.problem(
            ("stages", index, "losses", loss_index, "type"),
            f"{loss.type} across two vocabularies compares the tokens both share, and these tokenizers share none: "
            "use uld, which needs no shared tokens",
        )
        for index, stage in enumerate(recipe.stages)
        for loss_index, loss in enumerate(stage.losses)
        if isinstance(loss, DIVERGENCE_LOSSES)
    ]


class NotForThisFamily(UserFacingError):
    """A command that only has a meaning for the other family of recipes."""


def require_embedding_family(recipe: Recipe, command: str, why: str) -> None:
    """`recipe cache`, `align-report` and `bench` measure or prepare what only the embedding family has."""
    if recipe.family != "embedding":
        raise NotForThisFamily(
            f"`recipe {command}` is for the embedding family (a t5_encoder teacher); recipe {recipe.recipe!r} "
            f"distils logits: {why}"
        )


def _layer_problem(role: str, layer: int, layers: int, attention: bool) -> str | None:
    """Hidden states are -(layers + 1) .. layers (0 the embeddings); attention maps -layers .. layers - 1."""
    low, high = (-layers, layers - 1) if attention else (-(layers + 1), layers)
    if low <= layer <= high:
        return None
    what = "attention map" if attention else "hidden state"
    zero = "0 the first layer" if attention else "0 the embeddings"
    return (
        f"{role} {what} {layer} does not exist: the {role} has {layers} layers, so its {what}s are "
        f"{low}..{high} ({zero}, -1 the last)"
    )


def _repeated_pairs(loss: HiddenStatesLoss | AttentionLoss, depth: dict) -> list[str]:
    """Two keys naming one layer pair (-1 and the last index, say) weigh it twice and train two projections."""
    count = {role: depth.get(role) for role in ("student", "teacher")}
    if not all(isinstance(layers, int) for layers in count.values()):
        return []
    attention = isinstance(loss, AttentionLoss)
    extra = 0 if attention else 1  # hidden states count the embeddings too
    seen: dict[tuple[int, int], tuple[int, int]] = {}
    problems = []
    for pair in loss.layers.items():
        if any(_layer_problem(role, layer, count[role], attention) for role, layer in zip(count, pair, strict=True)):
            continue  # said on its own
        same = (pair[0] % (count["student"] + extra), pair[1] % (count["teacher"] + extra))
        if same in seen:
            first = seen[same]
            problems.append(
                f"{pair[0]}: {pair[1]} is the same pair of layers as {first[0]}: {first[1]} (a negative index counts "
                "from the end): it would be weighed twice; keep one"
            )
        seen.setdefault(same, pair)
    return problems


def feature_layer_problems(loaded: LoadedRecipe, configs: dict) -> list[Problem]:
    """A hidden_states or attention loss's layer map must name layers both models have."""
    depth = {role: getattr(config, "num_hidden_layers", None) for role, config in configs.items()}
    problems = []
    for index, stage in enumerate(loaded.recipe.stages):
        for loss_index, loss in enumerate(stage.losses):
            if not isinstance(loss, FEATURE_LOSSES):
                continue
            here = ("stages", index, "losses", loss_index, "layers")
            problems += [loaded.problem(here, problem) for problem in _repeated_pairs(loss, depth)]
            for student_layer, teacher_layer in loss.layers.items():
                for role, layer in (("student", student_layer), ("teacher", teacher_layer)):
                    layers = depth.get(role)
                    problem = None
                    if isinstance(layers, int):
                        problem = _layer_problem(role, layer, layers, isinstance(loss, AttentionLoss))
                    if problem:
                        problems.append(loaded.problem(here, problem))
    return problems


def attention_problems(loaded: LoadedRecipe) -> list[Problem]:
    """An attention loss needs attention maps kept: only eager attention keeps them."""
    recipe = loaded.recipe
    uses = [
        (index, loss_index)
        for index, stage in enumerate(recipe.stages)
        for loss_index, loss in enumerate(stage.losses)
        if isinstance(loss, AttentionLoss)
    ]
    if not uses or recipe.hardware.attention == "eager":
        return []
    index, loss_index = uses[0]
    return [
        loaded.problem(
            ("hardware", "attention"),
            f"stages[{index}].losses[{loss_index}] matches attention maps, which only eager attention returns "
            f"({recipe.hardware.attention} computes them without keeping them): set hardware.attention: eager",
        )
    ]


def mask_token_problems(loaded: LoadedRecipe, tokenizers: dict[str, object]) -> list[Problem]:
    """A denoising stage's mask token must be one token of the student's tokenizer."""
    from recipe_runner.trainer.denoising import mask_token_id

    tokenizer = tokenizers.get("student")
    problems = []
    for index, stage in enumerate(loaded.recipe.stages):
        if stage.denoising is None or tokenizer is None:
            continue
        try:
            mask_token_id(tokenizer, stage.denoising)
        except ValueError as exc:
            problems.append(loaded.problem(("stages", index, "denoising", "mask_token"), str(exc)))
    return problems
