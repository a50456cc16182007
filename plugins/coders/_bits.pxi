# Bit tricks shared by the compiled coders (portable count-leading-zeros, zigzag);
# included textually by _rice.pyx and _arith.pyx.

cdef extern from *:
    """
    #if defined(_MSC_VER)
    #include <intrin.h>
    static inline int qres_clz64(unsigned long long x) {
        unsigned long i;
        return _BitScanReverse64(&i, x) ? 63 - (int)i : 64;
    }
    #else
    static inline int qres_clz64(unsigned long long x) {
        return x ? __builtin_clzll(x) : 64;
    }
    #endif
    static inline int qres_bitlen64(unsigned long long x) { return 64 - qres_clz64(x); }
    """
    int qres_clz64(unsigned long long x) nogil
    int qres_bitlen64(unsigned long long x) nogil


cdef inline uint64_t zigzag(int64_t r) noexcept nogil:
    # 0, -1, 1, -2, 2 ... -> 0, 1, 2, 3, 4 ...; total over all int64 (INT64_MIN -> 2**64-1)
    return (<uint64_t>r << 1) ^ (<uint64_t>0 - (<uint64_t>r >> 63))


cdef inline int64_t unzigzag(uint64_t u) noexcept nogil:
    return <int64_t>((u >> 1) ^ (<uint64_t>0 - (u & 1)))
