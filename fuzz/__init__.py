"""Coverage-guided fuzzing of xsmig's stream parser, restore and inspect (docs/reliability.md)."""
