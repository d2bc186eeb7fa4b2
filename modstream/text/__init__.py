"""Stage 3b: score the text of a post (is it propaganda, or talk about it?)."""
