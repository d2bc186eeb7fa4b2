"""Indexes that find near values: Hamming (PDQ, pHash) with numba kernels, exact, text
shingles, video frames. They know refs and signals, not banks."""
