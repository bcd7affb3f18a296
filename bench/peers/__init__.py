"""Peer consumers, each run as its own process against the same emulator and data."""
