"""Training: per-sample loss, sampler, Trainer glue and distributed helpers."""
