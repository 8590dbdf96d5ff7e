/* Dropout for LoRA training on a CPU (training/fast_dropout.py loads this with ctypes).
 *
 * Draws are SplitMix64's outputs for the counters seed + 1*gamma, seed + 2*gamma, ..., each split into four
 * 16-bit numbers: element i is kept when the i-th 16-bit number, read as signed, is at or above `threshold`.
 * Counter-based, so the loop has no dependence from one word to the next and the compiler vectorises it,
 * and the same seed gives the same mask again: backward applies it to the gradient by calling the same
 * function with the same seed instead of keeping the mask. A kept element is copied bit for bit, a dropped
 * one written as 0; the 1 / (1 - p) scale is the caller's (LoRA folds it into its scaling). */
#include <stdint.h>

static inline uint64_t splitmix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define GAMMA 0x9E3779B97F4A7C15ull

/* All ones where the 16-bit number BITS (read as signed) keeps its element, else 0: the copy is a bitwise and,
 * which the compiler vectorises (a `keep ? in : 0` select it left as a branch per element: ~8x slower). */
#define KEEP(BITS, THRESHOLD, ELEMENT) ((ELEMENT) - (ELEMENT)((int16_t)(uint16_t)(BITS) >= (THRESHOLD)))

/* One function per element width: openft_dropout16 (bf16, fp16) and openft_dropout32 (fp32). */
#define DROPOUT(NAME, ELEMENT)                                                                             \
    void NAME(const ELEMENT *restrict in, ELEMENT *restrict out, int64_t count, uint64_t seed,             \
              int16_t threshold) {                                                                         \
        int64_t words = count / 4;                                                                         \
        for (int64_t w = 0; w < words; ++w) {                                                              \
            uint64_t z = splitmix64(seed + (uint64_t)(w + 1) * GAMMA);                                     \
            for (int j = 0; j < 4; ++j)                                                                    \
                out[4 * w + j] = in[4 * w + j] & KEEP(z >> (16 * j), threshold, ELEMENT);                  \
        }                                                                                                  \
        if (words * 4 < count) { /* the last 1-3 elements take the first numbers of one more draw */       \
            uint64_t z = splitmix64(seed + (uint64_t)(words + 1) * GAMMA);                                 \
            for (int64_t i = words * 4; i < count; ++i)                                                    \
                out[i] = in[i] & KEEP(z >> (16 * (i - words * 4)), threshold, ELEMENT);                    \
        }                                                                                                  \
    }

DROPOUT(openft_dropout16, uint16_t)
DROPOUT(openft_dropout32, uint32_t)
