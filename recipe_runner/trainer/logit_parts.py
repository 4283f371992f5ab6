"""What a logits-family run trains and reads: a causal LM student, a frozen causal LM teacher, one tokenizer."""

from __future__ import annotations

import torch
from torch import nn

from components.data.texts import TextCollator, TextSamples
from components.models import build_model, freeze, load_tokenizer, pad_id
from components.models.checkpointing import StudentCheckpointing
from schemas import Recipe


class LogitsModel(nn.Module):
    """The student alone, shaped as the embedding family's DistillModel (a `student` and an empty `bolt_on`), so
    that stages, LoRA, the optimizer's parts and checkpoints treat both families alike."""

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        if getattr(student.config, "use_cache", None):
            student.config.use_cache = False  # a KV cache is for generation; in training it only costs memory
        self.student = student
        self.bolt_on = nn.ModuleList()

    def forward(self, input_ids: torch.Tensor, mask: torch.Tensor, packing: object = None) -> torch.Tensor:
        """[B, L] ids and bool mask -> logits of the real tokens, [tokens, vocabulary], in the mask's order."""
        return self.student(input_ids=input_ids, attention_mask=mask.long()).logits[mask]


@torch.no_grad()
def teacher_logits(teacher: nn.Module, input_ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The teacher's logits of the real tokens, in the order LogitsModel gives the student's."""
    return teacher(input_ids=input_ids, attention_mask=mask.long(), use_cache=False).logits[mask]


def teacher_seed(recipe: Recipe) -> int:
    """An inline teacher of the student's architecture must not start as its twin: it gets the next seed."""
    return recipe.hardware.seed + 1


def build_logits_model(recipe: Recipe, device: torch.device | str) -> LogitsModel:
    """The student as training builds it (the export rebuilds from a checkpoint with it)."""
    from recipe_runner.trainer.parts import set_trained_dtype

    hw = recipe.hardware
    student = build_model(
        recipe.student, "student", device=device, attention=hw.attention, seed=hw.seed, fused_kernels=hw.fused_kernels
    )
    return set_trained_dtype(LogitsModel(student), recipe)


def build_logit_parts(recipe: Recipe, device: torch.device):
    """Real weights (or seeded random ones for inline configs); the teacher always runs online, beside the student."""
    from recipe_runner.trainer.parts import RunParts, RunSetupError, split_prompts

    hw = recipe.hardware
    tokenizer, teacher_tokenizer = load_tokenizer(recipe.student), load_tokenizer(recipe.teacher)
    if tokenizer.get_vocab() != teacher_tokenizer.get_vocab():  # `validate` says so too, where both load offline
        raise RunSetupError(
            "the teacher's tokenizer is not the student's: logit distillation across vocabularies is not supported "
            "yet; give both models the same tokenizer"
        )
    train_texts, eval_texts = split_prompts(recipe)
    teacher = build_model(
        recipe.teacher,
        "teacher",
        device=device,
        attention=hw.attention,
        seed=teacher_seed(recipe),
        fused_kernels=hw.fused_kernels,
    )
    model = build_logits_model(recipe, device)
    length = recipe.student.max_length
    return RunParts(
        model=model,
        checkpointing=StudentCheckpointing(model.student, hw.gradient_checkpointing, hw.checkpoint_min_tokens),
        teacher=freeze(teacher),
        student_tokenizer=tokenizer,
        teacher_tokenizer=teacher_tokenizer,
        train=TextSamples(train_texts, tokenizer, length),
        eval=TextSamples(eval_texts, tokenizer, length) if eval_texts else None,
        collate=TextCollator(pad_id(tokenizer)),
    )
