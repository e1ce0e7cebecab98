"""Shared pieces of the self-distillation methods: rollouts, teacher management, divergences, the fused loss."""
