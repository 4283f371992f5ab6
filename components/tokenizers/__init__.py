"""Tiny tokenizers and prompt files shipped with the repo, rebuilt deterministically."""
