"""Rendering with Chroma: pipelines without a text encoder, the T5 and distilled encoder paths, comparison grids."""

from components.inference.chroma import (
    Conditioning,
    InferenceError,
    build_chroma_pipeline,
    check_width,
    encode_with_export,
    joint_attention_dim,
    release_memory,
    render,
)
from components.inference.grid import compare_grid
from components.inference.image_files import FORMATS, check_image_path, free_name, numbered, save_image
from components.inference.t5_encoding import check_prompts, chroma_mask, encode_t5, encode_with_teacher

__all__ = [
    "FORMATS",
    "Conditioning",
    "InferenceError",
    "build_chroma_pipeline",
    "check_image_path",
    "check_prompts",
    "check_width",
    "chroma_mask",
    "compare_grid",
    "encode_t5",
    "encode_with_export",
    "encode_with_teacher",
    "free_name",
    "joint_attention_dim",
    "numbered",
    "release_memory",
    "render",
    "save_image",
]
