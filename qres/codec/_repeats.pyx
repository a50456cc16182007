# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled loops of the repetition stage (``qres.codec.repeats``): the hash chains of a block's
samples, the greedy match parse of a channel's integer samples on them, the gather of the
samples its matches supply, and the rebuild of a channel from its literals and matches.

The plain-Python references they must match exactly are ``repeats.reference_parse`` and
``repeats.reference_rebuild`` (checked by hypothesis in tests/test_channel_stages.py).
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


def links(const int64_t[::1] x):
    """The hash chains of every parse of a stretch of ``x``, built once: per position ``j``
    the nearest earlier position whose 4 samples hash alike (-1 for none; -1 for the last 3
    positions, which have no 4 samples). A parse that entered every position before ``i``
    into its chains, in order (the greedy parse enters every position it passes, matched or
    not), has ``links[i]`` at the head of ``i``'s chain and ``links[p]`` after each ``p``; a
    parse whose history starts at ``lo`` stops where the chain passes below ``lo``. So the
    samples are hashed once per block, however many channels, windows of history and
    shortest matches are parsed."""
    cdef Py_ssize_t n = x.shape[0], j
    cdef uint64_t h
    if n >= (1 << 31) - 1:
        raise ValueError("links take fewer than 2**31 samples")
    heads_arr = np.full(1 << HASH_BITS, -1, dtype=np.int32)
    prev_arr = np.full(n, -1, dtype=np.int32)
    cdef int32_t[::1] heads = heads_arr, prev = prev_arr
    with nogil:
        for j in range(n - HASH_SAMPLES + 1):
            h = mix(&x[j])
            prev[j] = heads[h]
            heads[h] = <int32_t>j
    return prev_arr


def parse(const int64_t[::1] x, const int32_t[::1] prev, Py_ssize_t lo, Py_ssize_t start,
          Py_ssize_t end, int min_length, int depth):
    """Greedy parse of ``x[start:end]`` into literals and matches: at each position, the
    longest earlier copy (its first sample at most ``depth`` hash-chain steps back and at or
    after ``lo``; the nearest wins ties) is taken if it is at least ``min_length`` samples
    long (which must be >= 4), else the sample is a literal. ``x[lo:start]`` is history (other
    channels' samples the decoder already holds): copies may start in it. ``prev`` is
    :func:`links` of ``x`` (the chains of every position; a copy never reads past ``end``).
    Returns ``(literals, runs, lengths, distances)``: the literal samples in order and, per
    match, the literals before it, its length and its distance back."""
    cdef Py_ssize_t n = x.shape[0], i = start, p, best_len, best_dist, length, nlit = 0
    cdef Py_ssize_t nmatch = 0, run = 0, size = end - start
    cdef int steps
    if min_length < HASH_SAMPLES:
        raise ValueError("min_length must be at least 4")
    if prev.shape[0] != n:
        raise ValueError("prev must be the links of x")
    if not 0 <= lo <= start <= end <= n:
        raise ValueError("lo <= start <= end must lie within the samples")
    lits_arr = np.empty(size, dtype=np.int64)
    runs_arr = np.empty(size // min_length + 1, dtype=np.int64)
    lens_arr = np.empty(size // min_length + 1, dtype=np.int64)
    dists_arr = np.empty(size // min_length + 1, dtype=np.int64)
    cdef int64_t[::1] lits = lits_arr
    cdef int64_t[::1] runs = runs_arr, lens = lens_arr, dists = dists_arr
    with nogil:
        while i < end:
            best_len = 0
            best_dist = 0
            if i + min_length <= end:
                p = prev[i]
                steps = 0
                # A chain only goes back (p < i; links(x) builds it so, and a bad one stops).
                # No candidate is longer than the samples left; one that differs from the
                # position at best_len cannot be longer than the best (the nearest keeps ties).
                while lo <= p < i and steps < depth and best_len < end - i:
                    if x[p + best_len] == x[i + best_len]:
                        length = 0
                        while i + length < end and x[p + length] == x[i + length]:
                            length += 1
                        if length > best_len:
                            best_len = length
                            best_dist = i - p
                    p = prev[p]
                    steps += 1
            if best_len >= min_length:
                runs[nmatch] = run
                lens[nmatch] = best_len
                dists[nmatch] = best_dist
                nmatch += 1
                run = 0
                i += best_len
            else:
                lits[nlit] = x[i]
                nlit += 1
                run += 1
                i += 1
    return lits_arr[:nlit].copy(), runs_arr[:nmatch].copy(), lens_arr[:nmatch].copy(), \
        dists_arr[:nmatch].copy()


def copied(const int64_t[::1] values, const int64_t[::1] runs, const int64_t[::1] lengths):
    """The entries of ``values`` (one per sample of a channel) at the samples a parse's matches
    supply, in order: per match, its ``runs`` literals are passed over and its ``lengths``
    samples taken. The plain-Python reference is ``repeats.copied_mask``."""
    cdef Py_ssize_t m, pos = 0, at = 0, k, n = values.shape[0], total = 0
    if runs.shape[0] != lengths.shape[0]:
        raise ValueError("runs and lengths must have one entry per match")
    for m in range(runs.shape[0]):
        if not (0 <= runs[m] <= n - pos and 0 <= lengths[m] <= n - pos - runs[m]):
            raise ValueError("the matches reach past the values")
        pos += runs[m] + lengths[m]
        total += lengths[m]
    out_arr = np.empty(total, dtype=np.int64)
    cdef int64_t[::1] out = out_arr
    pos = 0
    with nogil:
        for m in range(runs.shape[0]):
            pos += runs[m]
            for k in range(lengths[m]):
                out[at] = values[pos]
                at += 1
                pos += 1
    return out_arr


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
