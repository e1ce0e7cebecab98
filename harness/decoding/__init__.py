"""Token-by-token decoding with a preallocated KV cache (rollouts and greedy evaluation)."""
