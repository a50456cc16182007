# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# cython: initializedcheck=False
"""Compiled hot loops of the context-modelling binary range coder (``use = "arith"``).

The bitstream and the model are specified in docs/coders.md. Only :func:`encode` and
:func:`decode` are public; both run without the GIL and touch no Python object per sample.
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcpy

import numpy as np

include "_bits.pxi"

cdef enum:
    # Magnitude-bucket contexts: two per octave of the running mean (2 * 65).
    NB = 130
    # Segment classes of the zero flag: 0 when the caller gives no segments, else 1 for the
    # last segment, 2 for the one before, ..., LV - 1 for it and all earlier ones.
    LV = 8
    # Contexts from the class of the previous magnitude relative to the expected class.
    LB = 4
    # Scale groups of the class model: two per octave of the running mean for means below
    # 2**(GLEV - 2); larger means share two groups (the shape is scale-invariant there).
    GLEV = 10
    NG = 2 * GLEV + 2
    # Unary class steps are modelled relative to the expected class e; steps further than
    # TAIL from e share the outermost node.
    TAIL = 12
    # Class-coding nodes per context: 2 * TAIL + 1 steps, then the "c >= e" node.
    NODES = 2 * TAIL + 2
    GE = 2 * TAIL + 1
    # Confidence of the initial class probabilities, in observations.
    PRIOR_N = 6
    # Bypass bits are sent in chunks of at most this many.
    CHUNK = 16
    # Counter states with their own adaptation rate before the rate settles at its floor.
    NSTATES = 255
    TOP = 1 << 24
    # Error codes returned from the nogil loops.
    OK = 0
    E_MEMORY = 1
    E_BYPASS = 2
    E_RANGE = 3
    E_TAIL = 4

# Slack kept free in the output buffer before each sample: every decision emits at most
# 2 bytes (16 bits of information plus renormalisation), a sample makes at most
# 1 + 1 + 65 + 2 decisions and 4 bypass chunks.
cdef Py_ssize_t SAMPLE_SLACK = 2 * (1 + 1 + 65 + 2 + 4) + 16


cdef struct Bit:
    uint16_t p   # probability of a 0, out of 65536 (always in [1, 65535])
    uint16_t n   # observations so far, capped; selects the adaptation rate


cdef struct Model:
    uint16_t rate[NSTATES + 1]
    Bit zero[LV][NB][3]
    Bit sign[27]
    Bit cls[NG][LB][NODES]
    Bit man1[64][3]
    Bit man2[64][2]


# Initial P(0) of the class nodes, by the bit below the leading one of the running mean
# (f) and node (steps -12..12 from e, then "c >= e"): what an exponential magnitude density
# with mean 1.25 * 2**e (f = 0) or 1.75 * 2**e (f = 1) gives, clamped to [0.01, 0.99].
# Starting there instead of at 1/2 saves most of the learning cost of a short block.
cdef uint16_t CLASS_PRIOR[2][NODES]
CLASS_PRIOR[0][:] = [
    32765, 32762, 32755, 32742, 32717, 32666, 32563, 32358, 31949, 31131, 29502, 26300, 36089,
    52305, 62865, 64881, 64881, 64881, 64881, 64881, 64881, 64881, 64881, 64881, 64881, 36089]
CLASS_PRIOR[1][:] = [
    32766, 32763, 32759, 32750, 32731, 32695, 32622, 32475, 32183, 31598, 30431, 28118, 28527,
    44636, 58871, 64858, 64881, 64881, 64881, 64881, 64881, 64881, 64881, 64881, 64881, 28527]


cdef void model_init(Model* m, int rate_shift) noexcept nogil:
    # Counters start at p = 1/2 and adapt at rate 1/(n + 1.5) (close to the KT estimator)
    # until that falls to 2**-rate_shift.
    cdef int i
    cdef uint32_t r, floor_ = <uint32_t>65536 >> rate_shift
    cdef Bit* flat
    cdef Py_ssize_t count, j
    for i in range(NSTATES + 1):
        r = <uint32_t>((<uint64_t>2 * 65536) // <uint64_t>(2 * i + 3))
        m.rate[i] = <uint16_t>(r if r > floor_ else floor_)
    flat = &m.zero[0][0][0]
    count = (sizeof(Model) - (<char*>flat - <char*>m)) // sizeof(Bit)
    for j in range(count):
        flat[j].p = 32768
        flat[j].n = 0
    cdef int g, lb, t
    for g in range(NG):
        for lb in range(LB):
            for t in range(NODES):
                m.cls[g][lb][t].p = CLASS_PRIOR[g & 1][t]
                m.cls[g][lb][t].n = PRIOR_N


cdef inline void adapt_bit(Bit* b, int bit, const uint16_t* rate) noexcept nogil:
    # Both updates are computed and one is kept by a mask, not a branch: the coded bit is
    # data, so a branch on it is mispredicted about as often as the model is uncertain.
    cdef uint32_t r = rate[b.n], p = b.p
    cdef uint32_t mask = <uint32_t>0 - <uint32_t>bit  # bit is 0 or 1
    cdef uint32_t one = p - ((p * r) >> 16)
    cdef uint32_t zero = p + (((<uint32_t>65536 - p) * r) >> 16)
    b.p = <uint16_t>(zero ^ ((zero ^ one) & mask))
    b.n += b.n < NSTATES


# ---------------------------------------------------------------------------------------------
# Range encoder: 32-bit range, 64-bit low with a cached byte and a count of pending 0xFF bytes
# for carry propagation.

cdef struct Encoder:
    uint8_t* buf
    Py_ssize_t pos
    Py_ssize_t cap
    uint64_t low
    uint32_t range_
    uint32_t cache
    uint64_t pending   # bytes waiting for a possible carry: the cache byte and 0xFF bytes


cdef inline void shift_low(Encoder* e) noexcept nogil:
    cdef uint32_t carry
    if e.low < <uint64_t>0xFF000000 or e.low >= (<uint64_t>1 << 32):
        carry = <uint32_t>(e.low >> 32)
        e.buf[e.pos] = <uint8_t>(e.cache + carry)
        e.pos += 1
        while e.pending > 1:
            e.buf[e.pos] = <uint8_t>(0xFF + carry)
            e.pos += 1
            e.pending -= 1
        e.pending = 0
        e.cache = <uint32_t>((e.low >> 24) & 0xFF)
    e.pending += 1
    e.low = (e.low & <uint64_t>0x00FFFFFF) << 8


cdef inline void enc_bit(Encoder* e, Bit* b, int bit, const uint16_t* rate) noexcept nogil:
    cdef uint32_t bound = (e.range_ >> 16) * b.p
    cdef uint32_t mask = <uint32_t>0 - <uint32_t>bit  # bit is 0 or 1: no branch on data
    e.low += bound & mask
    e.range_ = bound ^ ((bound ^ (e.range_ - bound)) & mask)
    while e.range_ < TOP:
        e.range_ <<= 8
        shift_low(e)
    adapt_bit(b, bit, rate)


cdef inline void enc_direct(Encoder* e, uint64_t v, int nb) noexcept nogil:
    # nb <= CHUNK equiprobable bits.
    e.range_ >>= nb
    e.low += v * e.range_
    while e.range_ < TOP:
        e.range_ <<= 8
        shift_low(e)


cdef inline int reserve(Encoder* e, Py_ssize_t need) noexcept nogil:
    cdef Py_ssize_t cap
    cdef uint8_t* grown
    if e.pos + e.pending + need <= e.cap:
        return OK
    cap = 2 * e.cap + need + e.pending
    grown = <uint8_t*>realloc(e.buf, cap)
    if grown == NULL:
        return E_MEMORY
    e.buf = grown
    e.cap = cap
    return OK


cdef bytes finished_bytes(Encoder* e):
    """A finished stream's bytes. The first byte is the integer part of the code value, always
    0: not stored."""
    if e.pos == 0:
        return b""
    if e.buf[0] != 0:
        raise AssertionError("arith coder: carry into the leading byte")
    return (<char*>e.buf)[1:e.pos]


cdef int enc_finish(Encoder* e) noexcept nogil:
    # Pick the value in [low, low + range) with the most trailing zero bits, flush it, and
    # drop trailing zero bytes: the decoder reads zeros past the end.
    cdef int bits
    cdef uint64_t mask, v
    bits = 32
    while bits >= 0:
        mask = (<uint64_t>1 << bits) - 1
        v = (e.low + mask) & ~mask
        if v < e.low + e.range_:
            e.low = v
            break
        bits -= 8
    if reserve(e, 8):
        return E_MEMORY
    for bits in range(5):
        shift_low(e)
    while e.pos > 0 and e.buf[e.pos - 1] == 0:
        e.pos -= 1
    return OK


# ---------------------------------------------------------------------------------------------
# Range decoder.

cdef struct Decoder:
    const uint8_t* buf
    Py_ssize_t pos
    Py_ssize_t size
    uint32_t range_
    uint32_t code


cdef inline uint32_t next_byte(Decoder* d) noexcept nogil:
    cdef uint32_t v = 0
    if d.pos < d.size:
        v = d.buf[d.pos]
    d.pos += 1
    return v


cdef inline int dec_bit(Decoder* d, Bit* b, const uint16_t* rate) noexcept nogil:
    cdef uint32_t bound = (d.range_ >> 16) * b.p
    cdef int bit = d.code >= bound
    cdef uint32_t mask = <uint32_t>0 - <uint32_t>bit
    d.code -= bound & mask
    d.range_ = bound ^ ((bound ^ (d.range_ - bound)) & mask)
    while d.range_ < TOP:
        d.range_ <<= 8
        d.code = (d.code << 8) | next_byte(d)
    adapt_bit(b, bit, rate)
    return bit


cdef inline int dec_direct(Decoder* d, int nb, uint64_t* out) noexcept nogil:
    cdef uint32_t v
    d.range_ >>= nb
    v = d.code // d.range_
    if v >> nb:
        return E_BYPASS
    d.code -= v * d.range_
    while d.range_ < TOP:
        d.range_ <<= 8
        d.code = (d.code << 8) | next_byte(d)
    out[0] = v
    return OK


# ---------------------------------------------------------------------------------------------
# The model's state between samples.

cdef struct State:
    uint64_t mean_acc   # running mean of |r|, times 2**shift
    int lg              # bit length of mean_acc
    int kb              # magnitude bucket: 2 * lg + the bit below the leading one
    int e               # expected class: floor(log2(mean)) clamped to [0, 63]
    int g               # scale group of the class model
    int last_cls        # class of the previous magnitude, -1 for a zero
    int zeros           # zeros among the previous two residuals (0..2)
    int signs           # signs of the previous three residuals, base 3 (0 zero, 1 +, 2 -)


cdef inline void state_init(State* s, int shift) noexcept nogil:
    s.mean_acc = 0
    s.last_cls = -1
    s.zeros = 0
    s.signs = 0
    state_derive(s, shift)


cdef inline void state_derive(State* s, int shift) noexcept nogil:
    cdef int lg = qres_bitlen64(s.mean_acc)
    s.lg = lg
    s.kb = 2 * lg + (<int>(s.mean_acc >> (lg - 2)) & 1 if lg >= 2 else 0)
    s.e = lg - shift - 1
    if s.e < 0:
        s.e = 0
    elif s.e > 63:
        s.e = 63
    # g = 2 * (floor(log2(mean)) + 2) + f: means below 1/4 share group 0 (f = 0 there).
    s.g = s.kb - 2 * (shift - 1)
    if s.g < 0:
        s.g = 0
    elif s.g >= 2 * GLEV:
        s.g = 2 * GLEV + (s.kb & 1)


cdef inline int last_bin(const State* s) noexcept nogil:
    if s.last_cls < 0:
        return 0
    if s.last_cls < s.e:
        return 1
    if s.last_cls == s.e:
        return 2
    return 3


cdef inline void state_update(State* s, uint64_t mag, int cls, int sign, int shift) noexcept nogil:
    cdef uint64_t clamp = <uint64_t>1 << (63 - shift)
    s.mean_acc = s.mean_acc - (s.mean_acc >> shift) + (mag if mag < clamp else clamp)
    s.zeros = (s.zeros >> 1) + (2 if mag == 0 else 0)
    s.last_cls = cls
    s.signs = (s.signs * 3 + sign) % 27
    state_derive(s, shift)


cdef inline int step(int j, int e) noexcept nogil:
    # Node of the unary step at class j, relative to the expected class e.
    j -= e
    if j < -TAIL:
        j = -TAIL
    elif j > TAIL:
        j = TAIL
    return j + TAIL


cdef inline int zero_ctx(const State* s) noexcept nogil:
    # 0, 1 or 2 zeros among the previous two residuals.
    return (s.zeros >> 1) + (s.zeros & 1)


# ---------------------------------------------------------------------------------------------

cdef struct Segments:
    # Walks the caller's segment lengths. ``start`` is the index of the sample where the zero
    # flag's context set changes next (never reached without segments), so the per-sample
    # cost is one comparison; ``zb`` points at the current set.
    const int64_t* len_
    Py_ssize_t count
    Py_ssize_t next
    Py_ssize_t start
    Bit* zb


cdef inline void seg_init(Segments* g, const int64_t[::1] seg, Model* m) noexcept nogil:
    g.count = seg.shape[0]
    g.len_ = &seg[0] if g.count else NULL
    g.next = 0
    g.start = 0 if g.count else -1
    g.zb = &m.zero[0][0][0]


cdef inline void seg_enter(Segments* g, Model* m, Py_ssize_t i) noexcept nogil:
    # Sample i starts the next non-empty segment (the lengths add up to the sample count).
    cdef int lvl
    while g.next < g.count and g.len_[g.next] == 0:
        g.next += 1
    if g.next >= g.count:
        g.start = -1
        return
    lvl = <int>(g.count - g.next) if g.count - g.next < LV - 1 else LV - 1
    g.zb = &m.zero[lvl][0][0]
    g.start = i + <Py_ssize_t>g.len_[g.next]
    g.next += 1


cdef int encode_loop(const int64_t[::1] res, Encoder* coder, Model* m, int shift,
                     const int64_t[::1] seg, State* state) noexcept nogil:
    # Code ``res`` on from the coder and model state given, and leave them as the next sample
    # finds them (the stream open: :func:`encode` finishes it, :class:`Resumable` may go on).
    # The registers are copied in and out, so that they stay in machine registers here.
    cdef Encoder coder_ = coder[0]
    cdef Encoder* e = &coder_
    cdef State s = state[0]
    cdef Py_ssize_t n = res.shape[0], i
    cdef Segments g
    cdef int64_t r
    cdef uint64_t mag, low
    cdef int c, j, lb, sign, nb
    cdef Bit* node
    cdef const uint16_t* rate = m.rate
    seg_init(&g, seg, m)
    for i in range(n):
        if reserve(e, SAMPLE_SLACK):
            coder[0] = coder_  # the buffer may have moved: the caller frees it
            return E_MEMORY
        r = res[i]
        if i == g.start:
            seg_enter(&g, m, i)
        if r == 0:
            enc_bit(e, &g.zb[3 * s.kb + zero_ctx(&s)], 0, rate)
            state_update(&s, 0, -1, 0, shift)
            continue
        enc_bit(e, &g.zb[3 * s.kb + zero_ctx(&s)], 1, rate)
        sign = 2 if r < 0 else 1
        enc_bit(e, &m.sign[s.signs], sign - 1, rate)
        mag = <uint64_t>0 - <uint64_t>r if r < 0 else <uint64_t>r
        c = qres_bitlen64(mag) - 1
        # Class: first "c >= e", then unary steps away from e.
        lb = last_bin(&s)
        node = &m.cls[s.g][lb][0]
        if c >= s.e:
            enc_bit(e, &node[GE], 1, rate)
            j = s.e
            while j < 63:
                enc_bit(e, &node[step(j, s.e)], c > j, rate)
                if c == j:
                    break
                j += 1
        else:
            enc_bit(e, &node[GE], 0, rate)
            j = s.e - 1
            while j > 0:
                enc_bit(e, &node[step(j, s.e)], c < j, rate)
                if c == j:
                    break
                j -= 1
        # Mantissa: the two bits below the leading one are modelled, the rest sent as is.
        if c >= 1:
            enc_bit(e, &m.man1[c][lb if lb < 3 else 2], <int>(mag >> (c - 1)) & 1, rate)
        if c >= 2:
            enc_bit(e, &m.man2[c][<int>(mag >> (c - 1)) & 1], <int>(mag >> (c - 2)) & 1, rate)
            nb = c - 2
            low = mag & ((<uint64_t>1 << nb) - 1)
            while nb > CHUNK:
                nb -= CHUNK
                enc_direct(e, (low >> nb) & ((1 << CHUNK) - 1), CHUNK)
            if nb:
                enc_direct(e, low & ((<uint64_t>1 << nb) - 1), nb)
        state_update(&s, mag, c, sign, shift)
    coder[0] = coder_
    state[0] = s
    return OK


def encode(const int64_t[::1] res, int shift, int rate_shift, const int64_t[::1] seg):
    """Range-code ``res``; ``shift`` sets the running-mean speed, ``rate_shift`` the counters'.

    ``seg`` holds the lengths of consecutive segments of ``res`` (adding up to its length) whose
    zero flags get their own contexts, or is empty."""
    cdef Py_ssize_t n = res.shape[0]
    cdef Encoder e
    cdef Model* m = <Model*>malloc(sizeof(Model))
    cdef int err = OK
    cdef State fresh
    e.cap = n // 2 + 4096
    e.buf = <uint8_t*>malloc(e.cap)
    if m == NULL or e.buf == NULL:
        free(m)
        free(e.buf)
        raise MemoryError("arith coder: cannot allocate the model and output buffer")
    e.pos = 0
    e.low = 0
    e.range_ = 0xFFFFFFFF
    e.cache = 0
    e.pending = 1
    try:
        with nogil:
            model_init(m, rate_shift)
            state_init(&fresh, shift)
            err = encode_loop(res, &e, m, shift, seg, &fresh)
            if not err:
                err = enc_finish(&e)
        if err:
            raise MemoryError("arith coder: cannot grow the output buffer")
        return finished_bytes(&e)
    finally:
        free(m)
        free(e.buf)


cdef int64_t[::1] NO_SEGMENTS = np.zeros(0, dtype=np.int64)


cdef class Resumable:
    """A stream coded without segments, kept open after its last sample: :meth:`finished` gives
    the bytes :func:`encode` makes of the samples coded so far, and :meth:`extend` codes more
    after them, so a row whose prefix was coded alone is coded whole without coding that
    prefix again (the same bytes as one :func:`encode` of the whole row)."""

    cdef Encoder e
    cdef Model* m
    cdef State s
    cdef int shift
    cdef readonly Py_ssize_t count

    def __cinit__(self, int shift, int rate_shift):
        self.m = <Model*>malloc(sizeof(Model))
        self.e.cap = 4096
        self.e.buf = <uint8_t*>malloc(self.e.cap)
        if self.m == NULL or self.e.buf == NULL:
            raise MemoryError("arith coder: cannot allocate the model and output buffer")
        self.e.pos = 0
        self.e.low = 0
        self.e.range_ = 0xFFFFFFFF
        self.e.cache = 0
        self.e.pending = 1
        self.shift = shift
        self.count = 0
        model_init(self.m, rate_shift)
        state_init(&self.s, shift)

    def __dealloc__(self):
        free(self.m)
        free(self.e.buf)

    def extend(self, const int64_t[::1] res):
        """Code ``res`` after the samples coded so far."""
        cdef int err
        with nogil:
            err = encode_loop(res, &self.e, self.m, self.shift, NO_SEGMENTS, &self.s)
        if err:
            raise MemoryError("arith coder: cannot grow the output buffer")
        self.count += res.shape[0]

    def copy(self):
        """Another open stream, coded as far as this one, that goes on apart from it."""
        cdef Resumable twin = Resumable(self.shift, 8)
        cdef uint8_t* buf = <uint8_t*>realloc(twin.e.buf, self.e.cap)
        if buf == NULL:
            raise MemoryError("arith coder: cannot allocate the output buffer")
        memcpy(twin.m, self.m, sizeof(Model))
        memcpy(buf, self.e.buf, self.e.pos)
        twin.e = self.e
        twin.e.buf = buf
        twin.s = self.s
        twin.count = self.count
        return twin

    def finished(self):
        """The bytes of the samples coded so far, as :func:`encode` gives them (the stream
        stays open: its end is written by a copy of the coder's registers)."""
        cdef Encoder end
        # Room for the end first, so that finishing the copy never moves the shared buffer.
        if reserve(&self.e, 16):
            raise MemoryError("arith coder: cannot grow the output buffer")
        end = self.e
        if enc_finish(&end):
            raise MemoryError("arith coder: cannot grow the output buffer")
        return finished_bytes(&end)


cdef int decode_loop(Decoder* d, int64_t[::1] out, Model* m, int shift,
                     const int64_t[::1] seg) noexcept nogil:
    cdef Py_ssize_t n = out.shape[0], i
    cdef State s
    cdef Segments g
    cdef uint64_t mag, chunk
    cdef int c, j, lb, sign, nb, bit, err
    cdef Bit* node
    cdef const uint16_t* rate = m.rate
    state_init(&s, shift)
    seg_init(&g, seg, m)
    for i in range(n):
        if i == g.start:
            seg_enter(&g, m, i)
        if not dec_bit(d, &g.zb[3 * s.kb + zero_ctx(&s)], rate):
            out[i] = 0
            state_update(&s, 0, -1, 0, shift)
            continue
        sign = dec_bit(d, &m.sign[s.signs], rate) + 1
        lb = last_bin(&s)
        node = &m.cls[s.g][lb][0]
        if dec_bit(d, &node[GE], rate):
            c = s.e
            while c < 63:
                if not dec_bit(d, &node[step(c, s.e)], rate):
                    break
                c += 1
        else:
            c = s.e - 1
            while c > 0:
                if not dec_bit(d, &node[step(c, s.e)], rate):
                    break
                c -= 1
            if c < 0:
                return E_RANGE  # "c < e" decoded while e == 0
        mag = <uint64_t>1 << c
        if c >= 1:
            bit = dec_bit(d, &m.man1[c][lb if lb < 3 else 2], rate)
            mag |= <uint64_t>bit << (c - 1)
        if c >= 2:
            mag |= <uint64_t>dec_bit(d, &m.man2[c][bit], rate) << (c - 2)
            nb = c - 2
            while nb > CHUNK:
                nb -= CHUNK
                err = dec_direct(d, CHUNK, &chunk)
                if err:
                    return err
                mag |= chunk << nb
            if nb:
                err = dec_direct(d, nb, &chunk)
                if err:
                    return err
                mag |= chunk
        # |r| <= 2**63, and 2**63 only as INT64_MIN.
        if c == 63 and (mag != (<uint64_t>1 << 63) or sign == 1):
            return E_RANGE
        out[i] = <int64_t>(<uint64_t>0 - mag) if sign == 2 else <int64_t>mag
        state_update(&s, mag, c, sign, shift)
    return OK


#: Bytes of the context model (counters and rate table) and of the coder and model state.
MODEL_BYTES = sizeof(Model)
STATE_BYTES = sizeof(Encoder) + sizeof(State)


cdef int canonical_end(Decoder* d) noexcept nogil:
    # The encoder ends on the value of the final interval with the most trailing zero bits
    # (enc_finish); any other tail is damage. The last four bytes read are the window that
    # lines up with the encoder's low register, so low = window - code there.
    cdef uint32_t window = 0, low, off
    cdef Py_ssize_t t
    cdef int bits = 32
    cdef uint64_t mask
    for t in range(d.pos - 4, d.pos):
        window = (window << 8) | (d.buf[t] if t < d.size else 0)
    low = window - d.code
    while bits >= 0:
        mask = (<uint64_t>1 << bits) - 1
        off = <uint32_t>((<uint64_t>0 - low) & mask)
        if off < d.range_:
            return off == d.code
        bits -= 8
    return 0


_ERRORS = {
    E_MEMORY: "out of memory",
    E_BYPASS: "a raw bit field decodes out of range",
    E_RANGE: "a decoded value is out of the int64 range",
    E_TAIL: "the stream does not end where its last sample does",
}


def decode(const uint8_t[::1] data, Py_ssize_t n, int shift, int rate_shift,
           const int64_t[::1] seg):
    """Decode ``n`` residuals; ``(array, None)`` or ``(None, reason)`` when the data is bad.

    ``seg``: the segment lengths the encoder was given (checked by the caller)."""
    cdef Decoder d
    cdef Model* m
    cdef int err = OK, k
    out = np.empty(n, dtype=np.int64)
    cdef int64_t[::1] view = out
    if data.shape[0] and data[data.shape[0] - 1] == 0:
        return None, "the stream ends in a zero byte, which the encoder never writes"
    m = <Model*>malloc(sizeof(Model))
    if m == NULL:
        raise MemoryError("arith coder: cannot allocate the model")
    d.buf = &data[0] if data.shape[0] else NULL
    d.size = data.shape[0]
    d.pos = 0
    d.range_ = 0xFFFFFFFF
    d.code = 0
    try:
        with nogil:
            for k in range(4):
                d.code = (d.code << 8) | next_byte(&d)
            if d.code == <uint32_t>0xFFFFFFFF:
                err = E_RANGE
            else:
                model_init(m, rate_shift)
                err = decode_loop(&d, view, m, shift, seg)
            if not err and (d.pos < d.size or not canonical_end(&d)):
                err = E_TAIL
    finally:
        free(m)
    if err:
        return None, _ERRORS[err]
    return out, None
