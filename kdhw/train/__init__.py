"""Training: data, teacher, student, losses, recipe, distillation.  Nothing here imports hardware."""
