"""The exported distilled encoder: a directory that loads with one call and encodes prompts for Chroma."""

from components.export.distilled_encoder import (
    FORMAT_VERSION,
    DistilledEncoder,
    EncoderManifest,
    ExportError,
    build_manifest,
    check_export_target,
    export_encoder,
    read_manifest,
)

__all__ = [
    "FORMAT_VERSION",
    "DistilledEncoder",
    "EncoderManifest",
    "ExportError",
    "build_manifest",
    "check_export_target",
    "export_encoder",
    "read_manifest",
]
