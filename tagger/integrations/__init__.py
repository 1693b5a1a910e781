"""Drivers for the programs people already listen with: MPD (and, as they come, others)."""
