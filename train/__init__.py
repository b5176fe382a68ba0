"""gpt-ladder training: config, data, optimizer, loop, checkpoints, sampling."""
