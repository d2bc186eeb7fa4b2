"""Stage 3a: banks of known content and the indexes that find near matches in them."""
