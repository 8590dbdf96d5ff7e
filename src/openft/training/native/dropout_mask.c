/* Dropout keep-masks for LoRA training on a CPU (training/fast_dropout.py loads this with ctypes).
 *
 * Draws are SplitMix64's outputs for the counters seed + 1*gamma, seed + 2*gamma, ..., each split into four
 * 16-bit numbers: element i keeps its input when the i-th 16-bit number, read as signed, is at or above
 * `threshold`. Counter-based, so the loop has no dependence from one word to the next and the compiler
 * vectorises it; the mask is written straight in the training dtype as `one` (1.0's bits) or 0. */
#include <stdint.h>

static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define GAMMA 0x9E3779B97F4A7C15ull

/* One function per element width: openft_keep_mask16 (bf16, fp16) and openft_keep_mask32 (fp32). */
#define KEEP_MASK(NAME, ELEMENT)                                                                          \
    void NAME(ELEMENT *restrict keep, int64_t count, uint64_t seed, int16_t threshold, ELEMENT one) {     \
        int64_t words = count / 4;                                                                        \
        for (int64_t w = 0; w < words; ++w) {                                                             \
            uint64_t z = splitmix64(seed + (uint64_t)(w + 1) * GAMMA);                                    \
            for (int j = 0; j < 4; ++j)                                                                   \
                keep[4 * w + j] = (int16_t)(uint16_t)(z >> (16 * j)) >= threshold ? one : 0;             \
        }                                                                                                 \
        if (words * 4 < count) { /* the last 1-3 elements take the first numbers of one more draw */    \
            uint64_t z = splitmix64(seed + (uint64_t)(words + 1) * GAMMA);                                \
            for (int64_t i = words * 4; i < count; ++i)                                                   \
                keep[i] = (int16_t)(uint16_t)(z >> (16 * (i - words * 4))) >= threshold ? one : 0;       \
        }                                                                                                 \
    }

KEEP_MASK(openft_keep_mask16, uint16_t)
KEEP_MASK(openft_keep_mask32, uint32_t)
