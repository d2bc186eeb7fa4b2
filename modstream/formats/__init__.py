"""Formats: hex bit strings, Meta's vPDQ text, text normalisation. Pure, no I/O."""
