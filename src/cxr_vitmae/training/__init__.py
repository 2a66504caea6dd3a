"""Pieces shared by the Accelerate recipes (`recipes/pretrain.py`, `recipes/finetune.py`), one module per job:
arguments, data, models, optimiser and schedule (optim), set-up, the training loop, checkpointing and finishing."""
