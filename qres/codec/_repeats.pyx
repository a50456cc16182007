# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled loops of the repetition stage (``qres.codec.repeats``): the greedy match parse of a
channel's integer samples and the rebuild of a channel from its literals and matches.

The plain-Python references they must match exactly are ``repeats.reference_parse`` and
``repeats.reference_rebuild`` (checked by hypothesis in tests/test_repeats.py).
"""

import numpy as np

from libc.stdint cimport int32_t, int64_t, uint64_t

cdef enum:
    HASH_BITS = 16
    HASH_SAMPLES = 4  # a match candidate shares its first 4 samples with the current position


cdef inline uint64_t mix(const int64_t* x) noexcept nogil:
    """A hash of 4 consecutive samples: their bit patterns times four odd constants, summed
    (independent products), the top HASH_BITS bits of the sum."""
    cdef uint64_t h = (<uint64_t>x[0] * 0x9E3779B97F4A7C15ULL
                       + <uint64_t>x[1] * 0xBF58476D1CE4E5B9ULL
                       + <uint64_t>x[2] * 0x94D049BB133111EBULL
                       + <uint64_t>x[3] * 0xD6E8FEB86659FD93ULL)
    return h >> (64 - HASH_BITS)


def parse(const int64_t[::1] x, int min_length, int depth, Py_ssize_t start=0):
    """Greedy parse of ``x[start:]`` into literals and matches: at each position, the longest
    earlier copy (its first sample at most ``depth`` hash-chain steps back; the nearest wins
    ties) is taken if it is at least ``min_length`` samples long (which must be >= 4), else
    the sample is a literal. ``x[:start]`` is history (other channels' samples the decoder
    already holds): it enters the hash chains first and copies may start in it. Returns
    ``(literals, runs, lengths, distances)``: the literal samples in order and, per match, the
    literals before it, its length and its distance back."""
    cdef Py_ssize_t n = x.shape[0], i = start, p, best_len, best_dist, length, j, nlit = 0
    cdef Py_ssize_t nmatch = 0, run = 0
    cdef int steps
    cdef uint64_t h
    if min_length < HASH_SAMPLES:
        raise ValueError("min_length must be at least 4")
    if n >= (1 << 31) - 1:
        raise ValueError("parse takes fewer than 2**31 samples")
    if start < 0 or start > n:
        raise ValueError("start must be within the samples")
    heads_arr = np.full(1 << HASH_BITS, -1, dtype=np.int32)
    chain_arr = np.full(max(n, 1), -1, dtype=np.int32)
    lits_arr = np.empty(n - start, dtype=np.int64)
    runs_arr = np.empty((n - start) // min_length + 1, dtype=np.int64)
    lens_arr = np.empty((n - start) // min_length + 1, dtype=np.int64)
    dists_arr = np.empty((n - start) // min_length + 1, dtype=np.int64)
    cdef int32_t[::1] heads = heads_arr, chain = chain_arr
    cdef int64_t[::1] lits = lits_arr
    cdef int64_t[::1] runs = runs_arr, lens = lens_arr, dists = dists_arr
    with nogil:
        for j in range(start):
            if j + HASH_SAMPLES <= n:
                h = mix(&x[j])
                chain[j] = heads[h]
                heads[h] = <int32_t>j
        while i < n:
            best_len = 0
            best_dist = 0
            if i + min_length <= n:
                h = mix(&x[i])
                p = heads[h]
                steps = 0
                while p >= 0 and steps < depth:
                    length = 0
                    while i + length < n and x[p + length] == x[i + length]:
                        length += 1
                    if length > best_len:
                        best_len = length
                        best_dist = i - p
                    p = chain[p]
                    steps += 1
            if best_len >= min_length:
                runs[nmatch] = run
                lens[nmatch] = best_len
                dists[nmatch] = best_dist
                nmatch += 1
                run = 0
                j = i
                i += best_len
            else:
                lits[nlit] = x[i]
                nlit += 1
                run += 1
                j = i
                i += 1
            # Every position passed over enters the hash chains (matched ones too: a later
            # repeat of a repeat finds the nearest copy).
            while j < i:
                if j + HASH_SAMPLES <= n:
                    h = mix(&x[j])
                    chain[j] = heads[h]
                    heads[h] = <int32_t>j
                j += 1
    return lits_arr[:nlit].copy(), runs_arr[:nmatch].copy(), lens_arr[:nmatch].copy(), \
        dists_arr[:nmatch].copy()


def rebuild(const int64_t[::1] literals, const int64_t[::1] runs, const int64_t[::1] lengths,
            const int64_t[::1] distances, Py_ssize_t n, history=None):
    """The ``n`` samples whose parse is ``(literals, runs, lengths, distances)``: each match's
    run of literals, then its copy (sample by sample, so a copy may overlap itself), then the
    remaining literals; copies may start in ``history`` (the samples before them, int64). The
    caller has checked that the parse describes exactly ``n`` samples and that every
    distance reaches back no further than the start of the history."""
    cdef Py_ssize_t start = 0 if history is None else len(history)
    out_arr = np.empty(start + n, dtype=np.int64)
    if start:
        out_arr[:start] = history
    cdef int64_t[::1] out = out_arr
    cdef Py_ssize_t m, k, pos = start, lit = 0, d
    n += start
    with nogil:
        for m in range(runs.shape[0]):
            for k in range(runs[m]):
                out[pos] = literals[lit]
                pos += 1
                lit += 1
            d = distances[m]
            for k in range(lengths[m]):
                out[pos] = out[pos - d]
                pos += 1
        while pos < n:
            out[pos] = literals[lit]
            pos += 1
            lit += 1
    return out_arr[start:]


def hash4(values):
    """The parse's hash of 4 samples (for the plain-Python reference)."""
    cdef int64_t[::1] x = np.ascontiguousarray(values, dtype=np.int64)
    if x.shape[0] != HASH_SAMPLES:
        raise ValueError("hash4 takes 4 samples")
    return int(mix(&x[0]))
