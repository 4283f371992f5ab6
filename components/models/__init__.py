"""Teacher and student models: architecture configs (offline), weights, tokenizers."""

from components.models.known_architectures import known_config_dict, known_hub_ids
from components.models.loading import build_model, final_norm, freeze, hidden_width
from components.models.lora import lora_parameter_count, lora_target_problem, lora_targets
from components.models.source import ModelSourceError, remote_code_refusal, resolve_config
from components.models.tokenizer import load_tokenizer, pad_id

__all__ = [
    "ModelSourceError",
    "build_model",
    "final_norm",
    "freeze",
    "hidden_width",
    "known_config_dict",
    "known_hub_ids",
    "load_tokenizer",
    "lora_parameter_count",
    "lora_target_problem",
    "lora_targets",
    "pad_id",
    "remote_code_refusal",
    "resolve_config",
]
