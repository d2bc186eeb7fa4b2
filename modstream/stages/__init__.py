"""The pipeline's stages and what runs them: the hashing process pool."""
