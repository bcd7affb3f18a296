"""Benchmarks of Sluiceway against the consumers users would pick instead (`python -m bench`)."""
