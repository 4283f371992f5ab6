"""The staged distillation trainer on accelerate."""
