/* Cross-entropy over a vocabulary for CPU training, straight from the LM head's bf16 (or fp32) logits
 * (training/native_cross_entropy.py loads this with ctypes and splits the rows between threads).
 *
 * Forward, per row: the largest logit and the first position holding it (the prediction), then
 * lse = max + log(sum(exp(x - max))) in fp32 and loss = lse - x[target]. Backward, per row:
 * grad = (exp(x - lse) - [j == target]) * row_grad, written in the logits' dtype. That is what PyTorch's
 * log_softmax and nll_loss compute from an fp32 copy of the logits, in two passes over the row forward and
 * one backward instead of ~8 over an fp32 copy (the copy, log_softmax's three, the gradient's zero fill and
 * scatter, log_softmax's backward, the cast back to bf16).
 *
 * exp is Cephes' single-precision polynomial (within ~1 ulp of expf on the range used here, x <= 0) so the
 * compiler vectorises the loops without -ffast-math, which would also drop NaN and infinity handling. */
#include <math.h>
#include <stdint.h>
#include <string.h>

static inline uint32_t bits_of(float value) {
    uint32_t bits;
    memcpy(&bits, &value, sizeof bits);
    return bits;
}

static inline float from_bits(uint32_t bits) {
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline float widen16(uint16_t bits) { return from_bits((uint32_t)bits << 16); }

static inline uint16_t narrow16(float value) { /* round to nearest even, as PyTorch's bf16 casts do */
    uint32_t bits = bits_of(value);
    uint32_t rounded = (bits + 0x7FFFu + ((bits >> 16) & 1u)) >> 16;
    uint32_t quiet = (bits >> 16) | 0x40u; /* NaN stays NaN */
    return (uint16_t)((bits & 0x7FFFFFFFu) > 0x7F800000u ? quiet : rounded);
}

static inline float widen32(float value) { return value; }
static inline float narrow32(float value) { return value; }

#define MINUS_87 0xC2AE0000u /* -87.0f; among negative floats, a larger bit pattern is a larger magnitude */

/* exp(x) for x <= 0 (Cephes expf): x = k ln2 + r with |r| <= ln2 / 2, exp(r) by a degree-6 polynomial.
 * Below -87 (also -inf) the result is 0 (it would be ~1e-38 or less; a row's sum is at least 1), NaN gives
 * NaN. The clamp and both special cases work on the bits with masks rather than float comparisons, which
 * GCC turns into branches that stop it vectorising the loops. */
static inline float exp_nonpositive(float x) {
    uint32_t bits = bits_of(x);
    float clamped = from_bits(bits > MINUS_87 ? MINUS_87 : bits);
    int32_t k = (int32_t)(clamped * 1.44269504088896341f - 0.5f); /* clamped <= 0: truncation rounds */
    float kf = (float)k;
    float r = clamped - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    uint32_t result = bits_of(p * from_bits((uint32_t)(k + 127) << 23));
    result &= -(uint32_t)(bits <= MINUS_87);
    result |= -(uint32_t)((bits & 0x7FFFFFFFu) > 0x7F800000u) & 0x7FC00000u;
    return from_bits(result);
}

/* The first j with x[j] == top (0 if none): 64 elements at a time, vectorised, then the element inside. */
#define FIRST_INDEX_OF(NAME, ELEMENT, WIDEN)                                                               \
    static int64_t NAME(const ELEMENT *x, int64_t vocab, float top) {                                      \
        for (int64_t start = 0; start < vocab; start += 64) {                                              \
            int64_t end = vocab - start < 64 ? vocab : start + 64;                                         \
            int hit = 0;                                                                                   \
            _Pragma("omp simd reduction(| : hit)") for (int64_t j = start; j < end; ++j)                   \
                hit |= WIDEN(x[j]) == top;                                                                 \
            if (hit)                                                                                       \
                for (int64_t j = start; j < end; ++j)                                                      \
                    if (WIDEN(x[j]) == top)                                                                \
                        return j;                                                                          \
        }                                                                                                  \
        return 0;                                                                                          \
    }

FIRST_INDEX_OF(first_index_of16, uint16_t, widen16)
FIRST_INDEX_OF(first_index_of32, float, widen32)

/* openft_ce_forward16 / 32: rows [first, last) of `logits` (rows x vocab, contiguous). Writes each row's
 * log-sum-exp, loss and prediction (the first index of its largest logit, as torch.max's indices; in a
 * row holding NaN, whose loss is NaN, the prediction is the largest other logit's). The
 * `omp simd` reductions (compiled with -fopenmp-simd: no OpenMP runtime) let the compiler keep partial
 * maxima and sums in vector lanes, a reordering it may not make itself without -ffast-math. */
#define CE_FORWARD(NAME, ELEMENT, WIDEN, FIRST_INDEX_OF)                                                   \
    void NAME(const ELEMENT *logits, int64_t vocab, const int64_t *targets, int64_t first, int64_t last,   \
              float *lse, float *loss, int64_t *prediction) {                                              \
        for (int64_t row = first; row < last; ++row) {                                                     \
            const ELEMENT *x = logits + row * vocab;                                                       \
            float top = -INFINITY;                                                                         \
            _Pragma("omp simd reduction(max : top)") for (int64_t j = 0; j < vocab; ++j) {                 \
                float v = WIDEN(x[j]);                                                                     \
                top = v > top ? v : top;                                                                   \
            }                                                                                              \
            int64_t best = FIRST_INDEX_OF(x, vocab, top);                                                  \
            float shift = top == -INFINITY ? 0.0f : top; /* +inf or NaN: the loss is NaN, as PyTorch's */  \
            float sum = 0.0f;                                                                              \
            _Pragma("omp simd reduction(+ : sum)") for (int64_t j = 0; j < vocab; ++j)                     \
                sum += exp_nonpositive(WIDEN(x[j]) - shift);                                               \
            lse[row] = shift + logf(sum);                                                                  \
            loss[row] = lse[row] - WIDEN(x[targets[row]]);                                                 \
            prediction[row] = best;                                                                        \
        }                                                                                                  \
    }

/* openft_ce_backward16 / 32: d loss[row] / d logits, times row_grad[row], for rows [first, last). `grad` may
 * be `logits` itself (the caller's logits are spent by then): each element is read before it is written, and
 * the target's logit is read before the row is. */
#define CE_BACKWARD(NAME, ELEMENT, WIDEN, NARROW)                                                          \
    void NAME(const ELEMENT *logits, int64_t vocab, const int64_t *targets, int64_t first, int64_t last,   \
              const float *lse, const float *row_grad, ELEMENT *grad) {                                    \
        for (int64_t row = first; row < last; ++row) {                                                     \
            const ELEMENT *x = logits + row * vocab;                                                       \
            ELEMENT *out = grad + row * vocab;                                                             \
            float norm = lse[row], scale = row_grad[row];                                                  \
            int64_t target = targets[row];                                                                 \
            float target_logit = WIDEN(x[target]);                                                         \
            _Pragma("omp simd") for (int64_t j = 0; j < vocab; ++j)                                        \
                out[j] = NARROW(exp_nonpositive(WIDEN(x[j]) - norm) * scale);                              \
            out[target] = NARROW((exp_nonpositive(target_logit - norm) - 1.0f) * scale);                   \
        }                                                                                                  \
    }

CE_FORWARD(openft_ce_forward16, uint16_t, widen16, first_index_of16)
CE_FORWARD(openft_ce_forward32, float, widen32, first_index_of32)
CE_BACKWARD(openft_ce_backward16, uint16_t, widen16, narrow16)
CE_BACKWARD(openft_ce_backward32, float, widen32, narrow32)
