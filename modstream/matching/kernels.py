"""Compiled inner loops of the Hamming index (numba): slot keys, bucket builds, searches.

Codes are ``(n, words)`` arrays of big-endian uint64 words: bit 0 of a hash is the top bit of
word 0. Every kernel is ``nogil``, so searches and background merges run on threads beside
the event loop, and ``cache=True``, so a worker compiles them once per machine.

Numba turns mixed ``uint64``/``int64`` arithmetic into floats, so every bit operation here
keeps both sides ``uint64`` explicitly.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

ONE = np.uint64(1)
ZERO = np.uint64(0)


@intrinsic
def popcount(typingctx, value):
    """The CPU's popcount instruction (``llvm.ctpop``) on one uint64."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):
        return builder.ctpop(args[0])

    return sig, codegen


@intrinsic
def prefetch(typingctx, array, index):
    """Ask the CPU to start loading ``array[index]`` (``llvm.prefetch``): hides memory latency
    when the address is known well before the value is needed."""
    sig = types.void(array, index)

    def codegen(context, builder, signature, args):
        array_type = signature.args[0]
        view = context.make_array(array_type)(context, builder, args[0])
        pointer = cgutils.get_item_pointer(
            context, builder, array_type, view, [args[1]], wraparound=False
        )
        i32, byte_pointer = ir.IntType(32), ir.IntType(8).as_pointer()
        fnty = ir.FunctionType(ir.VoidType(), [byte_pointer, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        address = builder.bitcast(pointer, byte_pointer)
        # read, keep in all cache levels, data cache
        builder.call(fn, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(nogil=True, cache=True, inline="always")
def slot_key(code, start, length):
    """Bits ``start .. start+length`` (length <= 32) of one code, as an integer."""
    word = start // 64
    offset = start % 64
    mask = (ONE << np.uint64(length)) - ONE
    if offset + length <= 64:
        return (code[word] >> np.uint64(64 - offset - length)) & mask
    high_bits = 64 - offset
    low_bits = length - high_bits
    high = code[word] & ((ONE << np.uint64(high_bits)) - ONE)
    return (high << np.uint64(low_bits)) | (code[word + 1] >> np.uint64(64 - low_bits))


@njit(nogil=True, cache=True, inline="always")
def distance(query, codes, pos):
    """Hamming distance between ``query`` and row ``pos`` of ``codes``."""
    words = query.shape[0]
    if words == 4:  # PDQ: unrolled
        return (
            popcount(query[0] ^ codes[pos, 0])
            + popcount(query[1] ^ codes[pos, 1])
            + popcount(query[2] ^ codes[pos, 2])
            + popcount(query[3] ^ codes[pos, 3])
        )
    total = ZERO
    for w in range(words):
        total += popcount(query[w] ^ codes[pos, w])
    return total


@njit(nogil=True, cache=True)
def build_slot(codes, start, length, offsets, ids):
    """Counting sort of entry positions by one slot's key: ``ids[offsets[k]:offsets[k+1]]``."""
    n = codes.shape[0]
    keys = np.empty(n, dtype=np.uint32)
    offsets[:] = 0
    for i in range(n):
        key = slot_key(codes[i], start, length)
        keys[i] = key
    for i in range(n):
        if i + 16 < n:
            prefetch(offsets, keys[i + 16] + ONE)
        offsets[keys[i] + ONE] += 1
    for k in range(1, offsets.shape[0]):
        offsets[k] += offsets[k - 1]
    cursor = offsets[:-1].copy()
    for i in range(n):
        if i + 16 < n:
            prefetch(cursor, keys[i + 16])
        key = keys[i]
        ids[cursor[key]] = i
        cursor[key] += 1


@njit(nogil=True, cache=True)
def gather_rows(codes, ids, out):
    """``out[j] = codes[ids[j]]``: a slot's codes in bucket order."""
    flat = codes.reshape(-1)
    words = codes.shape[1]
    n = ids.shape[0]
    for j in range(n):
        if j + 16 < n:
            prefetch(flat, np.int64(ids[j + 16]) * words)
        for w in range(words):
            out[j, w] = codes[ids[j], w]


@njit(nogil=True, cache=True)
def _grow(buffer, size):
    bigger = np.empty(max(16, 2 * buffer.shape[0]), dtype=buffer.dtype)
    bigger[:size] = buffer[:size]
    return bigger


GROUP = 4  # queries whose memory loads are interleaved


@njit(nogil=True, cache=True, inline="always")
def _bucket_bounds(
    queries, first, group, slot_starts, slot_lengths, offsets, offset_bases, masks, mask_starts,
    query_keys, bucket_lo, bucket_hi,
):  # fmt: skip
    """Bounds of every bucket a group of queries probes: all keys first, each bucket's offset
    prefetched, then the bounds read, so the misses overlap."""
    slots = slot_starts.shape[0]
    probes = mask_starts[slots]
    for g in range(group):
        for s in range(slots):
            query_keys[g, s] = slot_key(queries[first + g], slot_starts[s], slot_lengths[s])
            base = offset_bases[s]
            for m in range(mask_starts[s], mask_starts[s + 1]):
                key = base + np.int64(query_keys[g, s] ^ masks[m])
                bucket_lo[g * probes + m] = key
                prefetch(offsets, key)
    for m in range(group * probes):
        key = bucket_lo[m]
        bucket_lo[m] = offsets[key]
        bucket_hi[m] = offsets[key + 1]


@njit(nogil=True, cache=True, inline="always")
def _found_earlier(code, s, slot_starts, slot_lengths, slot_radii, query_keys, g):
    """Whether a slot before ``s`` also probes this code: then that slot reports it."""
    for e in range(s):
        if slot_radii[e] >= 0:
            key = slot_key(code, slot_starts[e], slot_lengths[e])
            if popcount(key ^ query_keys[g, e]) <= np.uint64(slot_radii[e]):
                return True
    return False


@njit(nogil=True, cache=True)
def _hit_buffers():
    """Query number, position and distance of each hit; grown by ``_append``."""
    return np.empty(64, dtype=np.int64), np.empty(64, dtype=np.int64), np.empty(64, dtype=np.int64)


@njit(nogil=True, cache=True)
def _probe_buffers(slots, probes):
    """Bucket bounds of a group of queries, and each query's key in every slot."""
    bucket_lo = np.empty(GROUP * probes, dtype=np.int64)
    bucket_hi = np.empty(GROUP * probes, dtype=np.int64)
    return bucket_lo, bucket_hi, np.empty((GROUP, slots), dtype=np.uint64)


@njit(nogil=True, cache=True)
def _append(hit_query, hit_pos, hit_dist, hits, q, pos, d):
    if hits == hit_query.shape[0]:
        hit_query, hit_pos, hit_dist = (
            _grow(hit_query, hits),
            _grow(hit_pos, hits),
            _grow(hit_dist, hits),
        )
    hit_query[hits] = q
    hit_pos[hits] = pos
    hit_dist[hits] = d
    return hit_query, hit_pos, hit_dist


@njit(nogil=True, cache=True)
def search_buckets(
    codes, deleted, slot_starts, slot_lengths, offsets, offset_bases, ids,
    slot_radii, masks, mask_starts, queries, radius,
):  # fmt: skip
    """Multi-index hashing: probe each slot's buckets within its radius, verify, deduplicate.

    ``masks[mask_starts[s]:mask_starts[s + 1]]`` are the key flips within ``slot_radii[s]``.
    The search is bound by memory latency, so a group of queries goes through passes (bucket
    bounds, candidate ids, verification) whose loads are independent and prefetched a pass
    ahead: many cache misses stay in flight instead of one at a time.
    A candidate found in slot ``i`` is reported only if no earlier slot would have found it,
    so every hit appears once without a per-entry "seen" array.
    """
    slots = slot_starts.shape[0]
    probes = mask_starts[slots]
    bucket_lo, bucket_hi, query_keys = _probe_buffers(slots, probes)
    candidates = np.empty(4096, dtype=np.int64)
    candidate_tag = np.empty(4096, dtype=np.int64)  # query in group * slots + slot
    hit_query, hit_pos, hit_dist = _hit_buffers()
    hits = 0
    flat_codes = codes.reshape(-1)
    words = codes.shape[1]
    for first in range(0, queries.shape[0], GROUP):
        group = min(GROUP, queries.shape[0] - first)
        _bucket_bounds(
            queries, first, group, slot_starts, slot_lengths, offsets, offset_bases, masks,
            mask_starts, query_keys, bucket_lo, bucket_hi,
        )  # fmt: skip
        for g in range(group):
            for s in range(slots):
                for m in range(g * probes + mask_starts[s], g * probes + mask_starts[s + 1]):
                    if bucket_hi[m] > bucket_lo[m]:
                        prefetch(ids[s], bucket_lo[m])
        # Candidate positions, prefetching each candidate's code.
        found = 0
        for g in range(group):
            for s in range(slots):
                for m in range(g * probes + mask_starts[s], g * probes + mask_starts[s + 1]):
                    for j in range(bucket_lo[m], bucket_hi[m]):
                        if found == candidates.shape[0]:
                            candidates = _grow(candidates, found)
                            candidate_tag = _grow(candidate_tag, found)
                        pos = np.int64(ids[s, j])
                        prefetch(flat_codes, pos * words)
                        candidates[found] = pos
                        candidate_tag[found] = g * slots + s
                        found += 1
        # Verify with the full distance.
        for c in range(found):
            pos = candidates[c]
            g, s = divmod(candidate_tag[c], slots)
            d = distance(queries[first + g], codes, pos)
            if d > radius or deleted[pos]:
                continue
            if _found_earlier(codes[pos], s, slot_starts, slot_lengths, slot_radii, query_keys, g):
                continue
            hit_query, hit_pos, hit_dist = _append(
                hit_query, hit_pos, hit_dist, hits, first + g, pos, d
            )
            hits += 1
    return hit_query[:hits], hit_pos[:hits], hit_dist[:hits]


@njit(nogil=True, cache=True)
def search_bucket_codes(
    deleted, slot_starts, slot_lengths, offsets, offset_bases, ids, bucket_codes,
    slot_radii, masks, mask_starts, queries, radius,
):  # fmt: skip
    """``search_buckets`` for the layout that keeps each bucket's codes beside its ids
    (``bucket_codes[s, j]`` is the code of ``ids[s, j]``): a bucket is verified by one
    sequential read, and an entry's id is looked up only when it is a hit."""
    slots = slot_starts.shape[0]
    probes = mask_starts[slots]
    bucket_lo, bucket_hi, query_keys = _probe_buffers(slots, probes)
    hit_query, hit_pos, hit_dist = _hit_buffers()
    hits = 0
    words = bucket_codes.shape[2]
    for first in range(0, queries.shape[0], GROUP):
        group = min(GROUP, queries.shape[0] - first)
        _bucket_bounds(
            queries, first, group, slot_starts, slot_lengths, offsets, offset_bases, masks,
            mask_starts, query_keys, bucket_lo, bucket_hi,
        )  # fmt: skip
        for g in range(group):
            for s in range(slots):
                flat = bucket_codes[s].reshape(-1)
                for m in range(g * probes + mask_starts[s], g * probes + mask_starts[s + 1]):
                    if bucket_hi[m] > bucket_lo[m]:
                        prefetch(flat, bucket_lo[m] * words)
        for g in range(group):
            query = queries[first + g]
            for s in range(slots):
                codes = bucket_codes[s]
                for m in range(g * probes + mask_starts[s], g * probes + mask_starts[s + 1]):
                    for j in range(bucket_lo[m], bucket_hi[m]):
                        d = distance(query, codes, j)
                        if d > radius:
                            continue
                        pos = np.int64(ids[s, j])
                        if deleted[pos] or _found_earlier(
                            codes[j], s, slot_starts, slot_lengths, slot_radii, query_keys, g
                        ):
                            continue
                        hit_query, hit_pos, hit_dist = _append(
                            hit_query, hit_pos, hit_dist, hits, first + g, pos, d
                        )
                        hits += 1
    return hit_query[:hits], hit_pos[:hits], hit_dist[:hits]


@njit(nogil=True, cache=True)
def search_scan(codes, deleted, queries, radius):
    """Exact search by scanning every entry: small deltas, or radii where probing costs more."""
    hit_query, hit_pos, hit_dist = _hit_buffers()
    hits = 0
    for q in range(queries.shape[0]):
        query = queries[q]
        for pos in range(codes.shape[0]):
            if deleted[pos]:
                continue
            d = distance(query, codes, pos)
            if d > radius:
                continue
            hit_query, hit_pos, hit_dist = _append(hit_query, hit_pos, hit_dist, hits, q, pos, d)
            hits += 1
    return hit_query[:hits], hit_pos[:hits], hit_dist[:hits]
