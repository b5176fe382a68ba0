"""Generation-time caches: what each layer keeps of past tokens."""
