"""Model definitions: SQA heads, teacher, students, baselines, checkpoints."""
