"""Pure compute on media: decoding, PDQ, pHash, digests, video sampling. No registry, no I/O
beyond reading the media it is given."""
