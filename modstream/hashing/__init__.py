"""Stage 2: turn media bytes into signals (PDQ, pHash, MD5, SHA-256, ...)."""
