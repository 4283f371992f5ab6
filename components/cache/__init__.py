"""Teacher outputs encoded once into sharded safetensors and read back memory-mapped."""
