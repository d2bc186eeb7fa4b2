"""Stage 4: turn evidence into a verdict (pure functions, versioned)."""
