"""Helpers every package shares: atomic files and the cache dir, process groups, polls with a deadline."""
