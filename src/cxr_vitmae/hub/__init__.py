"""Getting weights in and out: the paper's and stock checkpoints, native transformers exports, the Hub."""
