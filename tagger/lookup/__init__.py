"""lookup stage."""
