"""What a `type:` in a recipe becomes: models, bolt-on layers, aligners, losses, data, cache, inference."""
