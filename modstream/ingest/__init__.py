"""Stage 1: validate upload events and get the bytes of their media from where they are."""
