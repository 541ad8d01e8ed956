"""Tasks, loaders, tokenisation: everything between a task name and batches of token ids."""
