// One decode step of a Llama model for a single row: the decoder layers (and, for fp32 weights, the output
// layer) as one native call. See openft/serving/native_decode.py for why, what it covers and how it is built.
#include <torch/extension.h>

#include <ATen/Parallel.h>
#include <immintrin.h>

#include <algorithm>
#include <array>
#include <cmath>
#include <optional>
#include <unordered_map>
#include <vector>

namespace {

using at::Tensor;
using Bf16 = c10::BFloat16;

// y = x * rsqrt(mean(x^2) + eps) * w for one fp32 row, as F.rms_norm computes it in fp32: the scaled row
// rounded to fp32, then multiplied by the weight.
void rms_norm_row(const float* x, const float* w, int64_t n, float eps, float* out) {
  float squares = 0.f;
#pragma omp simd reduction(+ : squares)
  for (int64_t i = 0; i < n; ++i) squares += x[i] * x[i];
  const float inverse = 1.f / std::sqrt(squares / static_cast<float>(n) + eps);
  for (int64_t i = 0; i < n; ++i) out[i] = (x[i] * inverse) * w[i];
}

// a . b, fused multiply-adds as BLAS does. A function of its own: inlined into the lambda of an OpenMP
// parallel region, GCC vectorised the loop with gathers, at half the speed.
[[gnu::noinline]] float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  float sum = 0.f;
#pragma omp simd reduction(+ : sum)
  for (int64_t k = 0; k < n; ++k) sum = std::fma(a[k], b[k], sum);
  return sum;
}

// A projection of one row: y = x @ W.T for the weights of one or more layers side by side (q/k/v, gate/up).
// 4-bit: one stacked product through PyTorch's int4 kernel, which takes bf16 inputs (as the Python step
// does). fp32: a matrix-vector product over the parts' rows here, split between the threads: for one row
// it streams the weights at about twice the speed of MKL's sgemv on the 2-core AMD EPYC bench machine.
struct Projection {
  bool q4 = false;
  Tensor packed, scales;        // 4-bit: the stacked weight and its bf16 scales and zeros
  std::vector<Tensor> weights;  // fp32: [out_p, in] each, contiguous
  int64_t in = 0, out = 0;

  void run(const float* x, Tensor& bf16_scratch, float* y, int64_t group_size) const {
    if (q4) {
      Bf16* b = bf16_scratch.data_ptr<Bf16>();
      for (int64_t i = 0; i < in; ++i) b[i] = Bf16(x[i]);
      Tensor product = at::_weight_int4pack_mm_for_cpu(bf16_scratch.narrow(1, 0, in), packed, group_size, scales);
      const Bf16* p = product.data_ptr<Bf16>();
      for (int64_t i = 0; i < out; ++i) y[i] = static_cast<float>(p[i]);
      return;
    }
    matvec(weights, x, in, y);
  }

  static void matvec(const std::vector<Tensor>& parts, const float* x, int64_t in, float* y) {
    std::vector<const float*> starts;
    std::vector<int64_t> ends;  // each part's last output row + 1, counting across the parts
    int64_t rows = 0;
    for (const Tensor& w : parts) {
      starts.push_back(w.data_ptr<float>());
      rows += w.size(0);
      ends.push_back(rows);
    }
    at::parallel_for(0, rows, 64, [&](int64_t begin, int64_t end) {
      size_t part = 0;
      for (int64_t r = begin; r < end; ++r) {
        while (r >= ends[part]) ++part;
        y[r] = dot(starts[part] + (r - (ends[part] - parts[part].size(0))) * in, x, in);
      }
    });
  }
};

struct Layer {
  Tensor norm1, norm2;  // fp32 [D]
  Projection qkv, o, gate_up, down;
};

// One LoRA layer's update for one row, added to its part of a projection's output: y[offset + o] +=
// scale * ((x @ A) @ B)[o], with A [in, r] and B [r, out] views into BatchedLora's stacks (A stored as PEFT's
// [r, in], several adapters side by side or grouped; other strides take the plain loops).
struct Delta {
  Tensor a, b;
  float scale = 1.f;
  int64_t offset = 0;

  void add(const float* x, float* y, std::vector<float>& hidden, std::vector<float>& sums) const {
    const int64_t in = a.size(0), rank = a.size(1), out = b.size(1);
    const float* A = a.data_ptr<float>();
    const float* B = b.data_ptr<float>();
    const int64_t a0 = a.stride(0), a1 = a.stride(1), b0 = b.stride(0), b1 = b.stride(1);
    hidden.assign(rank, 0.f);
    if (a0 == 1) {  // each rank's column contiguous (every layout BatchedLora makes): a dot product per rank
      for (int64_t j = 0; j < rank; ++j) hidden[j] = dot(A + j * a1, x, in);
    } else {
      for (int64_t i = 0; i < in; ++i) {
        const float* row = A + i * a0;
        for (int64_t j = 0; j < rank; ++j) hidden[j] = std::fma(x[i], row[j * a1], hidden[j]);
      }
    }
    sums.assign(out, 0.f);
    if (b1 == 1) {  // each rank's row of B contiguous
      float* total = sums.data();
      for (int64_t j = 0; j < rank; ++j) {
        const float* row = B + j * b0;
        const float t = hidden[j];
#pragma omp simd
        for (int64_t o = 0; o < out; ++o) total[o] = std::fma(t, row[o], total[o]);
      }
    } else {
      for (int64_t o = 0; o < out; ++o) {
        float sum = 0.f;
        for (int64_t j = 0; j < rank; ++j) sum = std::fma(hidden[j], B[j * b0 + o * b1], sum);
        sums[o] = sum;
      }
    }
    float* target = y + offset;
    for (int64_t o = 0; o < out; ++o) target[o] = target[o] + scale * sums[o];
  }
};

// An adapter's updates for every layer: for each of its projections (qkv, o, gate_up, down), the LoRA
// layers' deltas.
using AdapterLayers = std::vector<std::array<std::vector<Delta>, 4>>;

Projection fp32_projection(std::vector<Tensor> parts) {
  Projection p;
  for (Tensor& w : parts) {
    TORCH_CHECK(w.scalar_type() == at::kFloat && w.dim() == 2 && w.is_contiguous(), "fp32 weights must be contiguous");
    p.out += w.size(0);
    p.in = w.size(1);
    p.weights.push_back(w);
  }
  return p;
}

Projection q4_projection(Tensor packed, Tensor scales, int64_t in, int64_t out) {
  Projection p;
  p.q4 = true;
  p.packed = packed;
  p.scales = scales;
  p.in = in;
  p.out = out;
  return p;
}

class Decoder {
 public:
  Decoder(Tensor final_norm, std::optional<Tensor> head, double eps, int64_t heads, int64_t kv_heads, int64_t head_dim,
          double scaling, int64_t group_size)
      : final_norm_(final_norm.contiguous()), head_(head.value_or(Tensor())), eps_(static_cast<float>(eps)), heads_(heads),
        kv_heads_(kv_heads), head_dim_(head_dim), scaling_(scaling), group_size_(group_size) {
    hidden_size_ = final_norm_.numel();
    if (head_.defined()) {
      TORCH_CHECK(head_.scalar_type() == at::kFloat && head_.is_contiguous() && head_.size(1) == hidden_size_,
                  "the output layer must be a contiguous fp32 [vocab, hidden]");
    }
  }

  // A layer with fp32 weights: q, k, v, o, gate, up, down (each [out, in]).
  void add_fp32_layer(Tensor norm1, Tensor norm2, std::vector<Tensor> w) {
    TORCH_CHECK(w.size() == 7, "a layer needs its 7 projections");
    add(norm1, norm2, fp32_projection({w[0], w[1], w[2]}), fp32_projection({w[3]}), fp32_projection({w[4], w[5]}),
        fp32_projection({w[6]}));
  }

  // A layer with 4-bit weights: q/k/v stacked, o, gate/up stacked, down (packed weight and scales each).
  void add_q4_layer(Tensor norm1, Tensor norm2, std::vector<Tensor> w, std::vector<int64_t> widths) {
    TORCH_CHECK(w.size() == 8 && widths.size() == 4, "a layer needs 4 packed products and their widths");
    const int64_t D = hidden_size_, q_width = heads_ * head_dim_, intermediate = widths[2] / 2;
    add(norm1, norm2, q4_projection(w[0], w[1], D, widths[0]), q4_projection(w[2], w[3], q_width, widths[1]),
        q4_projection(w[4], w[5], D, widths[2]), q4_projection(w[6], w[7], intermediate, widths[3]));
  }

  // Start (or restart) adapter `key` with no updates; add_adapter_delta then adds its LoRA layers.
  void begin_adapter(int64_t key) { adapters_[key] = AdapterLayers(layers_.size()); }

  // Register one LoRA layer of adapter `key` (begun): its update goes into projection `projection` (0 q/k/v, 1 o,
  // 2 gate/up, 3 down) of layer `layer` at output `offset`. The tensors are views, kept alive here.
  void add_adapter_delta(int64_t key, int64_t layer, int64_t projection, Tensor a, Tensor b, double scale,
                         int64_t offset) {
    TORCH_CHECK(layer >= 0 && layer < static_cast<int64_t>(layers_.size()) && projection >= 0 && projection < 4,
                "no such layer or projection");
    const Layer& L = layers_[layer];
    const Projection* target[] = {&L.qkv, &L.o, &L.gate_up, &L.down};
    TORCH_CHECK(a.scalar_type() == at::kFloat && b.scalar_type() == at::kFloat && a.dim() == 2 && b.dim() == 2 &&
                    a.size(0) == target[projection]->in && a.size(1) == b.size(0) && offset >= 0 &&
                    offset + b.size(1) <= target[projection]->out,
                "the LoRA update does not fit its projection");
    auto found = adapters_.find(key);
    TORCH_CHECK(found != adapters_.end(), "adapter ", key, " was not begun");
    found->second[layer][projection].push_back(Delta{a, b, static_cast<float>(scale), offset});
  }

  bool has_adapter(int64_t key) const { return adapters_.count(key) > 0; }
  void drop_adapters() { adapters_.clear(); }

  // hidden: fp32 [D] (the token's embedding), updated in place through the layers; cos, sin_signed: fp32
  // [head_dim] (sin with rotate_half's sign folded in); keys/values: each layer's cache buffer, fp32
  // [1, kv_heads, capacity, head_dim], written at position `length`. Returns the logits [vocab] when the
  // decoder has the output layer, else the final-normed hidden state [D].
  // `adapter`: a registered adapter's key for the row, or -1 for the base model.
  Tensor step(Tensor hidden, Tensor cos, Tensor sin_signed, const std::vector<Tensor>& keys,
              const std::vector<Tensor>& values, int64_t length, int64_t adapter) {
    const AdapterLayers* deltas = nullptr;
    if (adapter >= 0) {
      auto found = adapters_.find(adapter);
      TORCH_CHECK(found != adapters_.end(), "adapter ", adapter, " is not registered");
      deltas = &found->second;
    }
    std::vector<float> lora_hidden, lora_sums;
    auto add_deltas = [&](size_t layer, int projection, const float* x, float* y) {
      if (deltas == nullptr) return;
      for (const Delta& d : (*deltas)[layer][projection]) d.add(x, y, lora_hidden, lora_sums);
    };
    TORCH_CHECK(keys.size() == layers_.size() && values.size() == layers_.size(), "one cache buffer per layer");
    const int64_t D = hidden_size_, hd = head_dim_, half = hd / 2, groups = heads_ / kv_heads_;
    const int64_t q_width = heads_ * hd, kv_width = kv_heads_ * hd;
    TORCH_CHECK(hidden.scalar_type() == at::kFloat && hidden.is_contiguous() && hidden.numel() == D,
                "hidden must be one contiguous fp32 row");
    TORCH_CHECK(cos.is_contiguous() && cos.numel() == hd && sin_signed.is_contiguous() && sin_signed.numel() == hd,
                "cos and sin must be one contiguous head_dim each");
    float* h = hidden.data_ptr<float>();
    const float* c = cos.data_ptr<float>();
    const float* s = sin_signed.data_ptr<float>();
    auto f32 = hidden.options();
    Tensor normed = at::empty({D}, f32);
    Tensor scratch = at::empty({1, widest_input_}, f32.dtype(at::kBFloat16));
    Tensor projected = at::empty({widest_output_}, f32);
    Tensor activated = at::empty({widest_output_ / 2}, f32);
    Tensor queries = at::empty({1, kv_heads_, groups, hd}, f32);
    float* nrm = normed.data_ptr<float>();
    float* y = projected.data_ptr<float>();
    float* a = activated.data_ptr<float>();
    float* q = queries.data_ptr<float>();
    for (size_t index = 0; index < layers_.size(); ++index) {
      const Layer& L = layers_[index];
      const Tensor& key_buffer = keys[index];
      const Tensor& value_buffer = values[index];
      const int64_t capacity = key_buffer.size(2);
      // The loops below write through raw pointers: the buffers must be exactly what they assume.
      for (const Tensor* buffer : {&key_buffer, &value_buffer}) {
        TORCH_CHECK(buffer->scalar_type() == at::kFloat && buffer->dim() == 4 && buffer->size(0) == 1 &&
                        buffer->size(1) == kv_heads_ && buffer->size(2) == capacity && buffer->size(3) == hd &&
                        buffer->is_contiguous(),
                    "a cache buffer must be a contiguous fp32 [1, kv_heads, capacity, head_dim]");
      }
      TORCH_CHECK(length >= 0 && length < capacity, "no room in the cache for one more position");
      float* kb = key_buffer.data_ptr<float>();
      float* vb = value_buffer.data_ptr<float>();

      rms_norm_row(h, L.norm1.data_ptr<float>(), D, eps_, nrm);
      L.qkv.run(nrm, scratch, y, group_size_);
      add_deltas(index, 0, nrm, y);
      // Rotate queries and keys: x * cos + roll(x, half) * sin'; queries to their buffer, keys to the cache.
      for (int64_t head = 0; head < heads_ + kv_heads_; ++head) {
        const float* x = y + head * hd;
        float* dst = head < heads_ ? q + head * hd : kb + ((head - heads_) * capacity + length) * hd;
        for (int64_t i = 0; i < hd; ++i) dst[i] = x[i] * c[i] + x[(i + half) % hd] * s[i];
      }
      for (int64_t head = 0; head < kv_heads_; ++head) {
        const float* x = y + q_width + kv_width + head * hd;
        std::copy(x, x + hd, vb + (head * capacity + length) * hd);
      }
      Tensor k = key_buffer.narrow(2, 0, length + 1);
      Tensor v = value_buffer.narrow(2, 0, length + 1);
      Tensor attended = at::scaled_dot_product_attention(queries, k, v, {}, 0.0, false, scaling_).contiguous();
      L.o.run(attended.data_ptr<float>(), scratch, y, group_size_);
      add_deltas(index, 1, attended.data_ptr<float>(), y);
      for (int64_t i = 0; i < D; ++i) h[i] = h[i] + y[i];

      rms_norm_row(h, L.norm2.data_ptr<float>(), D, eps_, nrm);
      L.gate_up.run(nrm, scratch, y, group_size_);
      add_deltas(index, 2, nrm, y);
      const int64_t width = L.gate_up.out / 2;
      for (int64_t i = 0; i < width; ++i) {
        const float gate = y[i];
        a[i] = (gate / (1.f + std::exp(-gate))) * y[width + i];
      }
      L.down.run(a, scratch, y, group_size_);
      add_deltas(index, 3, a, y);
      for (int64_t i = 0; i < D; ++i) h[i] = h[i] + y[i];
    }
    rms_norm_row(h, final_norm_.data_ptr<float>(), D, eps_, nrm);
    if (!head_.defined()) return normed;
    Tensor logits = at::empty({head_.size(0)}, f32);
    Projection::matvec({head_}, nrm, D, logits.data_ptr<float>());
    return logits;
  }

 private:
  void add(Tensor norm1, Tensor norm2, Projection qkv, Projection o, Projection gate_up, Projection down) {
    const int64_t D = hidden_size_, q_width = heads_ * head_dim_, kv_width = kv_heads_ * head_dim_;
    TORCH_CHECK(norm1.numel() == D && norm2.numel() == D, "a norm weight per hidden unit");
    TORCH_CHECK(qkv.in == D && qkv.out == q_width + 2 * kv_width && o.in == q_width && o.out == D &&
                    gate_up.in == D && gate_up.out % 2 == 0 && down.in == gate_up.out / 2 && down.out == D,
                "the layer's projections do not fit the model's shape");
    for (const Projection* p : {&qkv, &o, &gate_up, &down}) {
      widest_input_ = std::max(widest_input_, p->in);
      widest_output_ = std::max(widest_output_, p->out);
    }
    layers_.push_back(Layer{norm1.contiguous(), norm2.contiguous(), qkv, o, gate_up, down});
  }

  std::vector<Layer> layers_;
  std::unordered_map<int64_t, AdapterLayers> adapters_;
  Tensor final_norm_, head_;
  float eps_;
  int64_t hidden_size_ = 0, heads_, kv_heads_, head_dim_;
  int64_t widest_input_ = 0, widest_output_ = 0;
  double scaling_;
  int64_t group_size_;
};


constexpr int64_t kRows = 4;   // rows a LoRA update works on at once: their sums stay in registers
constexpr int64_t kLanes = 16;  // ranks or output columns summed at once (one AVX-512 register of fp32)
constexpr int64_t kRanks = 4;   // ranks a LoRA update's first product sums at once, for each of its kRows rows
constexpr int64_t kColumns = 64;  // output columns its second product sums at once
constexpr int64_t kTile = 4;     // weight rows by input rows a small batch's fp32 product sums at once
// A slot with more rows than this (a prefill pass's positions) is split between the threads by rows rather than
// by columns; decode steps of up to 64 rows keep the column split they were measured with.
constexpr int64_t kSplitRowsAbove = 64;
constexpr int64_t kAhead = 8;   // how many steps ahead its loops ask the cache for the weights they will read

// hidden[j, k] = scale * (x_j @ A)[k] for kRows rows, A [in, r] at `A` with row stride lda and column stride
// cda. BatchedLora keeps each rank's column contiguous (lda == 1): then dot products over the inputs, kRanks
// ranks by kRows rows at a time, so each load of x or A feeds several fused multiply-adds. W: fp32 or bf16
// weights (widened to fp32 as they are read; the sums are fp32 either way).
template <typename W>
void lora_down(const float* const* xs, int64_t in, const W* A, int64_t lda, int64_t cda, int64_t r, float scale,
               float* hidden) {
  int64_t k0 = 0;
  if (lda == 1) {
    const int64_t body = in - in % kLanes;
    for (; k0 + kRanks <= r; k0 += kRanks) {
      float acc[kRows][kRanks][kLanes] = {};
      const W* columns[kRanks];
      for (int64_t k = 0; k < kRanks; ++k) columns[k] = A + (k0 + k) * cda;
      for (int64_t i = 0; i < body; i += kLanes) {
        for (int64_t k = 0; k < kRanks; ++k) __builtin_prefetch(columns[k] + i + kAhead * kLanes);
        for (int64_t j = 0; j < kRows; ++j) {
          const float* x = xs[j] + i;
          for (int64_t k = 0; k < kRanks; ++k) {
            const W* a = columns[k] + i;
#pragma omp simd
            for (int64_t l = 0; l < kLanes; ++l) acc[j][k][l] = std::fma(x[l], float(a[l]), acc[j][k][l]);
          }
        }
      }
      for (int64_t j = 0; j < kRows; ++j) {
        for (int64_t k = 0; k < kRanks; ++k) {
          float sum = 0.f;
          for (int64_t l = 0; l < kLanes; ++l) sum += acc[j][k][l];
          for (int64_t i = body; i < in; ++i) sum = std::fma(xs[j][i], float(columns[k][i]), sum);
          hidden[j * r + k0 + k] = sum * scale;
        }
      }
    }
  }
  for (; k0 < r; ++k0) {  // the ranks left over, and any other layout
    const W* column = A + k0 * cda;
    for (int64_t j = 0; j < kRows; ++j) {
      float sum = 0.f;
      for (int64_t i = 0; i < in; ++i) sum = std::fma(float(column[i * lda]), xs[j][i], sum);
      hidden[j * r + k0] = sum * scale;
    }
  }
}

// ys[j][c] += (hidden_j @ B)[c] for columns c0..c1 of kRows rows (a null ys[j]: no such row), B [r, width]
// at `B` with row stride ldb and unit column stride, kColumns columns at a time. Each row's update is summed,
// then added, as addmm_ does.
template <typename W>
void lora_up(const float* hidden, int64_t r, const W* B, int64_t ldb, int64_t c0, int64_t c1, float* const* ys) {
  int64_t c = c0;
  for (; c + kColumns <= c1; c += kColumns) {
    float acc[kRows][kColumns] = {};
    for (int64_t k = 0; k < r; ++k) {
      const W* brow = B + k * ldb + c;
      for (int64_t p = 0; p < kColumns; p += 64 / sizeof(W)) __builtin_prefetch(brow + p + kAhead * kColumns);
      for (int64_t j = 0; j < kRows; ++j) {
        const float t = hidden[j * r + k];
#pragma omp simd
        for (int64_t l = 0; l < kColumns; ++l) acc[j][l] = std::fma(t, float(brow[l]), acc[j][l]);
      }
    }
    for (int64_t j = 0; j < kRows; ++j) {
      if (ys[j] == nullptr) continue;
      float* y = ys[j] + c;
#pragma omp simd
      for (int64_t l = 0; l < kColumns; ++l) y[l] = y[l] + acc[j][l];
    }
  }
  for (; c < c1; ++c) {
    for (int64_t j = 0; j < kRows; ++j) {
      if (ys[j] == nullptr) continue;
      float sum = 0.f;
      for (int64_t k = 0; k < r; ++k) sum = std::fma(hidden[j * r + k], float(B[k * ldb + c]), sum);
      ys[j][c] = ys[j][c] + sum;
    }
  }
}

#if defined(__AVX512BF16__)
// bf16 stacks (q4 engines' copies) on CPUs with AVX512-BF16: both products as `vdpbf16ps`, which multiplies
// pairs of bf16 numbers and adds both products to an fp32 sum, 32 products an instruction with no widening
// of the weights first. The inputs are rounded to bf16 as well (as the base layer's own bf16 product rounds
// them), and so is x @ A before the second product; the sums stay fp32. The widening loops above spend more
// time converting the weights than multiplying: 16 rows on 4 rank-16 adapters of the bundled model, q/k/v's
// 344 KB of adapters in cache, 25 -> 11 us a call (2-core AMD EPYC). lora_rows uses it where asked
// (`bf16_products`: BatchedLora asks for it in prefill passes and decode steps; docs/performance.md).

// x (n fp32) as bf16, rounded to nearest even as c10::BFloat16 rounds.
void to_bf16(const float* x, int64_t n, Bf16* out) {
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    const __m512bh pair = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + i + 16), _mm512_loadu_ps(x + i));
    _mm512_storeu_si512(out + i, (__m512i)pair);
  }
  for (; i < n; ++i) out[i] = Bf16(x[i]);
}

// hidden[j, k] = scale * (x_j @ A)[k] for kRows rows, x_j bf16 (`in` numbers), A's rank k at A + k * cda
// (each rank's column contiguous), K ranks by kRows rows at a time.
template <int K>
void lora_down_dp(const Bf16* const* xs, int64_t in, const Bf16* A, int64_t cda, int64_t k0, int64_t r, float scale,
                  float* hidden) {
  __m512 acc[kRows][K];
  for (int64_t j = 0; j < kRows; ++j)
    for (int k = 0; k < K; ++k) acc[j][k] = _mm512_setzero_ps();
  for (int64_t i = 0; i < in; i += 32) {
    // The last block of a row reads only its own numbers: the masked lanes are zero.
    const __mmask32 lanes = in - i >= 32 ? ~__mmask32(0) : (__mmask32(1) << (in - i)) - 1;
    __m512bh a[K];
    for (int k = 0; k < K; ++k) {
      const Bf16* column = A + (k0 + k) * cda + i;
      __builtin_prefetch(column + 32 * kAhead);
      a[k] = (__m512bh)_mm512_maskz_loadu_epi16(lanes, column);
    }
    for (int64_t j = 0; j < kRows; ++j) {
      const __m512bh x = (__m512bh)_mm512_maskz_loadu_epi16(lanes, xs[j] + i);
      for (int k = 0; k < K; ++k) acc[j][k] = _mm512_dpbf16_ps(acc[j][k], x, a[k]);
    }
  }
  for (int64_t j = 0; j < kRows; ++j)
    for (int k = 0; k < K; ++k) hidden[j * r + k0 + k] = _mm512_reduce_add_ps(acc[j][k]) * scale;
}

void lora_down_dp(const Bf16* const* xs, int64_t in, const Bf16* A, int64_t cda, int64_t r, float scale,
                  float* hidden) {
  int64_t k0 = 0;
  for (; k0 + kRanks <= r; k0 += kRanks) lora_down_dp<kRanks>(xs, in, A, cda, k0, r, scale, hidden);
  for (; k0 < r; ++k0) lora_down_dp<1>(xs, in, A, cda, k0, r, scale, hidden);
}

// ys[j][c] += (hidden_j @ B)[c] for columns c0..c1 of kRows rows (null ys[j]: no such row), B bf16 [r, width]
// with row stride ldb: each pair of B's rows interleaved in registers (column by column, as vdpbf16ps pairs
// them) and multiplied by the pair of the row's hidden values, 16 columns at a time, 4 blocks of them at once.
void lora_up_dp(const float* hidden, int64_t r, const Bf16* B, int64_t ldb, int64_t c0, int64_t c1,
                float* const* ys) {
  const int64_t pairs = (r + 1) / 2;
  // Each row's hidden values as bf16 pairs (rank 2p low, 2p + 1 high; an odd rank's last pair has a zero).
  uint32_t packed[kRows][32];  // ranks up to 64: lora_rows sends higher ones to the widening loops
  for (int64_t j = 0; j < kRows; ++j) {
    for (int64_t p = 0; p < pairs; ++p) {
      const uint32_t low = Bf16(hidden[j * r + 2 * p]).x;
      const uint32_t high = 2 * p + 1 < r ? Bf16(hidden[j * r + 2 * p + 1]).x : 0;
      packed[j][p] = low | (high << 16);
    }
  }
  // result[2l] = low[l], result[2l + 1] = high[l]: word indexes into (low, high) for permutex2var.
  alignas(64) uint16_t order[32];
  for (int l = 0; l < 16; ++l) {
    order[2 * l] = l;
    order[2 * l + 1] = 32 + l;
  }
  const __m512i interleave = _mm512_load_si512(order);
  constexpr int kBlocks = 4;  // 64 columns
  for (int64_t c = c0; c < c1; c += 16 * kBlocks) {
    __m512 acc[kRows][kBlocks];
    for (int64_t j = 0; j < kRows; ++j)
      for (int q = 0; q < kBlocks; ++q) acc[j][q] = _mm512_setzero_ps();
    __mmask16 lanes[kBlocks];
    for (int q = 0; q < kBlocks; ++q) {
      const int64_t left = c1 - c - 16 * q;
      lanes[q] = left >= 16 ? __mmask16(0xFFFF) : left <= 0 ? __mmask16(0) : __mmask16((1u << left) - 1);
    }
    for (int64_t p = 0; p < pairs; ++p) {
      const Bf16* low = B + 2 * p * ldb + c;
      const Bf16* high = 2 * p + 1 < r ? low + ldb : nullptr;
      for (int64_t ahead = 8; ahead < 10; ++ahead)  // four pairs on: both rows, both cache lines of 64 columns
        for (int64_t line = 0; line < 64; line += 32) __builtin_prefetch(low + ahead * ldb + line);
      __m512bh b[kBlocks];
      for (int q = 0; q < kBlocks; ++q) {
        const __m256i l = _mm256_maskz_loadu_epi16(lanes[q], low + 16 * q);
        const __m256i h = high ? _mm256_maskz_loadu_epi16(lanes[q], high + 16 * q) : _mm256_setzero_si256();
        b[q] = (__m512bh)_mm512_permutex2var_epi16(_mm512_castsi256_si512(l), interleave, _mm512_castsi256_si512(h));
      }
      for (int64_t j = 0; j < kRows; ++j) {
        const __m512bh h = (__m512bh)_mm512_set1_epi32(static_cast<int>(packed[j][p]));
        for (int q = 0; q < kBlocks; ++q) acc[j][q] = _mm512_dpbf16_ps(acc[j][q], b[q], h);
      }
    }
    for (int64_t j = 0; j < kRows; ++j) {
      if (ys[j] == nullptr) continue;
      for (int q = 0; q < kBlocks; ++q) {
        float* y = ys[j] + c + 16 * q;
        _mm512_mask_storeu_ps(y, lanes[q], _mm512_add_ps(_mm512_maskz_loadu_ps(lanes[q], y), acc[j][q]));
      }
    }
  }
}
#endif

// [rows, width] or a decode step's [rows, 1, width] fp32 tensor with unit column stride: its width and row stride.
std::pair<int64_t, int64_t> rows_of(const Tensor& t, int64_t rows, const char* what) {
  const bool flat = t.dim() == 2 || (t.dim() == 3 && t.size(1) == 1);
  TORCH_CHECK(flat && t.scalar_type() == at::kFloat && t.size(0) == rows && t.stride(t.dim() - 1) == 1, what,
              " must be fp32 [rows, width] or [rows, 1, width] with unit column stride");
  return {t.size(t.dim() - 1), t.stride(0)};
}

// One LoRA layer's stack seen by one slot: where its A and B start (fp32, or bf16 where `bf16`), their
// strides, rank and scaling.
struct SlotWeights {
  const void* a;
  const void* b;
  int64_t lda, cda, ldb, rank;
  float scale;
  bool bf16;
};

// An A or B element's address: `offset` elements into a stack of fp32 or bf16.
const void* element(const Tensor& t, int64_t offset) {
  return static_cast<const char*>(t.data_ptr()) + offset * t.element_size();
}

// Decode rows on several adapters at once (BatchedLora's stacks; see lora_batch.py): each row's own adapter's
// update `scale * (x @ A) @ B` added to its output row, reading each adapter's A and B once for all its rows.
// PyTorch's way, one product of every row with every adapter's ranks and a mask, does slots-times the
// arithmetic in two MKL calls whose fixed cost is most of their time at these sizes. Several LoRA layers that
// read the same input (q/k/v, gate/up) go in one call: one parallel region instead of one each.
// x: [rows, in]; out: [rows, width], the layers' outputs side by side (any row stride), layer i's out_i
// columns from offsets[i] on. For each layer i: a masked stack as[i] [in, R], bs[i] [R, out_i] with the slots'
// ranks side by side (ranks[i][s] columns each, 0 where a slot has none), or a grouped stack [slots, in, r]
// and [slots, r, out_i]; scales[i] fp32 [slots]. row_slots: int64 [rows], each row's 1-based slot, 0 for the
// base model (no update). A and B are fp32, or bf16 (BatchedLora's copies for q4 engines: half the bytes;
// widened as they are read, summed in fp32). x may be a prefill pass's positions, each with its row's slot.
// `bf16_products`: bf16 stacks through vdpbf16ps instead, where the CPU has it (x and x @ A rounded to bf16 as
// well; lora_down_dp). BatchedLora asks for it in prefill passes, whose many rows an adapter find its weights
// in cache, and in decode steps: their adapters come from memory, but the widening loops' arithmetic was still
// about a quarter of their time (16 rows on 4 adapters of the bundled model: ~1 of ~4 ms a step saved).
void lora_rows(const Tensor& x, const Tensor& out, const std::vector<int64_t>& offsets, const std::vector<Tensor>& as,
               const std::vector<Tensor>& bs, const std::vector<Tensor>& ranks, const std::vector<Tensor>& scales,
               const Tensor& row_slots, bool bf16_products) {
  const size_t layers = offsets.size();
  TORCH_CHECK(as.size() == layers && bs.size() == layers && ranks.size() == layers && scales.size() == layers,
              "one A, B, ranks and scales per output offset");
  TORCH_CHECK(row_slots.scalar_type() == at::kLong && row_slots.is_contiguous() && row_slots.dim() == 1,
              "row slots must be contiguous int64");
  const int64_t rows = row_slots.numel(), slots = layers ? ranks[0].numel() : 0;
  const std::pair<int64_t, int64_t> x_shape = rows_of(x, rows, "x");
  const int64_t in = x_shape.first, ldx = x_shape.second;
  const auto [out_width, ldy] = rows_of(out, rows, "out");
  const int64_t* slot_of = row_slots.data_ptr<int64_t>();
  // Rows grouped by slot (a counting sort): slot s's rows are order[first[s] .. first[s + 1]).
  thread_local std::vector<int64_t> first, order;
  first.assign(slots + 2, 0);
  for (int64_t r = 0; r < rows; ++r) {
    TORCH_CHECK(slot_of[r] >= 0 && slot_of[r] <= slots, "row ", r, " names no slot of the stack");
    ++first[slot_of[r] + 1];
  }
  for (int64_t s = 1; s <= slots + 1; ++s) first[s] += first[s - 1];
  order.resize(rows);
  {
    thread_local std::vector<int64_t> next;
    next.assign(first.begin(), first.end());
    for (int64_t r = 0; r < rows; ++r) order[next[slot_of[r]]++] = r;
  }
  // first[0] .. first[1] are the base rows; slot s (0-based) has order[first[s + 1] .. first[s + 2]).
  thread_local std::vector<SlotWeights> weights;  // [layer * slots + slot]
  weights.assign(layers * slots, SlotWeights{});
  struct Target {
    float* y;
    int64_t width, ldy;
  };
  thread_local std::vector<Target> targets;
  targets.clear();
  for (size_t i = 0; i < layers; ++i) {
    const Tensor &a = as[i], &b = bs[i], &rank = ranks[i], &scale = scales[i];
    const int64_t width = b.dim() >= 2 ? b.size(b.dim() - 1) : 0;
    TORCH_CHECK(offsets[i] >= 0 && offsets[i] + width <= out_width, "layer ", i, "'s ", width,
                " output columns from ", offsets[i], " do not fit the output's ", out_width);
    targets.push_back({out.data_ptr<float>() + offsets[i], width, ldy});
    const bool bf16 = a.scalar_type() == at::kBFloat16;
    TORCH_CHECK((bf16 || a.scalar_type() == at::kFloat) && b.scalar_type() == a.scalar_type() &&
                    rank.scalar_type() == at::kLong && scale.scalar_type() == at::kFloat && rank.is_contiguous() &&
                    scale.is_contiguous() && rank.numel() == slots && scale.numel() == slots,
                "a stack must be fp32 or bf16 (A and B alike) with int64 ranks and fp32 scales, one per slot");
    const int64_t* r = rank.data_ptr<int64_t>();
    const float* sc = scale.data_ptr<float>();
    SlotWeights* w = weights.data() + i * slots;
    if (a.dim() == 3) {
      TORCH_CHECK(b.dim() == 3 && a.size(0) == slots && b.size(0) == slots && a.size(1) == in &&
                      a.size(2) == b.size(1) && b.stride(2) == 1,
                  "a grouped stack must be [slots, in, r] and [slots, r, out]");
      for (int64_t s = 0; s < slots; ++s) {
        TORCH_CHECK(r[s] == a.size(2), "every slot of a grouped stack has its rank");
        w[s] = {element(a, s * a.stride(0)), element(b, s * b.stride(0)), a.stride(1), a.stride(2), b.stride(1),
                r[s], sc[s], bf16};
      }
    } else {
      TORCH_CHECK(a.dim() == 2 && b.dim() == 2 && a.size(0) == in && a.size(1) == b.size(0) && b.stride(1) == 1,
                  "a masked stack must be [in, R] and [R, out]");
      int64_t start = 0;
      for (int64_t s = 0; s < slots; ++s) {
        TORCH_CHECK(r[s] >= 0, "ranks cannot be negative");
        w[s] = {element(a, start * a.stride(1)), element(b, start * b.stride(0)), a.stride(0), a.stride(1),
                b.stride(0), r[s], sc[s], bf16};
        start += r[s];
      }
      TORCH_CHECK(start == a.size(1), "the slots' ranks must add up to the stack's width");
    }
  }
  // Work items: each layer's slots that have rows and weights there, their output columns in `chunks` parts
  // so that both threads work when few are in use (each part recomputes its rows' x @ A: small next to B), or
  // their rows in parts where there are many (a prefill pass's positions).
  // An item's cost is the weights it reads (once per block of kRows rows).
  struct Item {
    int64_t layer, slot, c0, c1, j0, j1, cost;  // columns c0..c1 of the slot's rows j0..j1 (of its own)
  };
  thread_local std::vector<Item> items;
  items.clear();
  int64_t pairs = 0;
  for (size_t i = 0; i < layers; ++i)
    for (int64_t s = 0; s < slots; ++s) pairs += first[s + 2] > first[s + 1] && weights[i * slots + s].rank > 0;
  if (pairs == 0) return;
  const int64_t threads = at::get_num_threads(), chunks = std::max<int64_t>(1, (threads + pairs - 1) / pairs);
  for (size_t i = 0; i < layers; ++i) {
    const int64_t width = targets[i].width;
    const int64_t chunk_width = ((width + chunks * kColumns - 1) / (chunks * kColumns)) * kColumns;
    for (int64_t s = 0; s < slots; ++s) {
      if (first[s + 2] == first[s + 1] || weights[i * slots + s].rank == 0) continue;
      const int64_t r = weights[i * slots + s].rank, n = first[s + 2] - first[s + 1];
      const int64_t blocks = (n + kRows - 1) / kRows;
      if (chunks > 1 && n > kSplitRowsAbove) {
        // Many rows (a prefill pass): the parts take rows, each all the columns, so none repeats x @ A.
        const int64_t per_part = (blocks + chunks - 1) / chunks;
        for (int64_t b0 = 0; b0 < blocks; b0 += per_part) {
          const int64_t b1 = std::min(blocks, b0 + per_part);
          items.push_back({static_cast<int64_t>(i), s, 0, width, b0 * kRows, std::min(n, b1 * kRows),
                           (b1 - b0) * r * (in + width)});
        }
        continue;
      }
      for (int64_t c0 = 0; c0 < width; c0 += chunk_width) {
        const int64_t c1 = std::min(width, c0 + chunk_width);
        items.push_back({static_cast<int64_t>(i), s, c0, c1, 0, n, blocks * r * (in + c1 - c0)});
      }
    }
  }
  // Each thread a run of items of about equal cost (q/k/v's items differ in width: an equal count of items
  // left one thread waiting for the other): an item goes to the thread its cost's midpoint falls in.
  const int64_t count = static_cast<int64_t>(items.size());
  thread_local std::vector<int64_t> starts;  // thread t's items: starts[t] .. starts[t + 1]
  starts.assign(threads + 1, count);
  {
    int64_t total = 0, before = 0, assigned = 0;
    for (const Item& item : items) total += item.cost;
    for (int64_t index = 0; index < count; ++index) {
      const int64_t thread = std::min(threads - 1, (2 * before + items[index].cost) * threads / (2 * total));
      while (assigned <= thread) starts[assigned++] = index;
      before += items[index].cost;
    }
  }
  const float* X = x.data_ptr<float>();
  std::vector<float> zero_row(in, 0.f);  // stands in for the missing rows of a slot's last block of kRows
  // The other threads see their own thread_local buffers: hand them this thread's.
  const Item* all_items = items.data();
  const SlotWeights* all_weights = weights.data();
  const Target* all_targets = targets.data();
  const int64_t* all_first = first.data();
  const int64_t* all_order = order.data();
  const int64_t* all_starts = starts.data();
  at::parallel_for(0, threads, 1, [&](int64_t thread_begin, int64_t thread_end) {
    std::vector<float> hidden;
    std::vector<Bf16> x_bf16;
    for (int64_t index = all_starts[thread_begin]; index < all_starts[thread_end]; ++index) {
      const Item& item = all_items[index];
      const SlotWeights& w = all_weights[item.layer * slots + item.slot];
      const Target& target = all_targets[item.layer];
      const int64_t* mine = all_order + all_first[item.slot + 1] + item.j0;
      const int64_t n = item.j1 - item.j0, r = w.rank;
      hidden.assign(((n + kRows - 1) / kRows) * kRows * r, 0.f);
      for (int64_t j0 = 0; j0 < n; j0 += kRows) {
        const float* xs[kRows];
        float* ys[kRows];
        for (int64_t j = 0; j < kRows; ++j) {
          xs[j] = j0 + j < n ? X + mine[j0 + j] * ldx : zero_row.data();
          ys[j] = j0 + j < n ? target.y + mine[j0 + j] * target.ldy : nullptr;
        }
        float* h = hidden.data() + j0 * r;
#if defined(__AVX512BF16__)
        if (bf16_products && w.bf16 && r <= 64 && w.lda == 1) {
          // This block's rows as bf16, 32 numbers an instruction (missing rows: zeros from zero_row).
          x_bf16.resize(kRows * in);
          const Bf16* xb[kRows];
          for (int64_t j = 0; j < kRows; ++j) {
            Bf16* row = x_bf16.data() + j * in;
            to_bf16(xs[j], in, row);
            xb[j] = row;
          }
          lora_down_dp(xb, in, static_cast<const Bf16*>(w.a), w.cda, r, w.scale, h);
          lora_up_dp(h, r, static_cast<const Bf16*>(w.b), w.ldb, item.c0, item.c1, ys);
          continue;
        }
#endif
        if (w.bf16) {
          lora_down(xs, in, static_cast<const Bf16*>(w.a), w.lda, w.cda, r, w.scale, h);
          lora_up(h, r, static_cast<const Bf16*>(w.b), w.ldb, item.c0, item.c1, ys);
        } else {
          lora_down(xs, in, static_cast<const float*>(w.a), w.lda, w.cda, r, w.scale, h);
          lora_up(h, r, static_cast<const float*>(w.b), w.ldb, item.c0, item.c1, ys);
        }
      }
    }
  });
}

// y = x @ W.T for a few rows (a decode step of a small batch) with fp32 weights W [out, in]: each weight is
// read once for all the rows, kTile weight rows by kTile input rows at a time so each load feeds several fused
// multiply-adds. MKL's sgemm for 4-16 rows reached less than half this speed on the 2-core bench machines.
// x: [rows, in] or [rows, 1, in], unit column stride; y: the same for `out` columns (written, not added to).
void linear_rows(const Tensor& x, const Tensor& weight, const Tensor& y) {
  const int64_t rows = x.size(0);
  const std::pair<int64_t, int64_t> x_shape = rows_of(x, rows, "x"), y_shape = rows_of(y, rows, "y");
  const int64_t in = x_shape.first, ldx = x_shape.second, out = y_shape.first, ldy = y_shape.second;
  TORCH_CHECK(weight.scalar_type() == at::kFloat && weight.dim() == 2 && weight.is_contiguous() &&
                  weight.size(0) == out && weight.size(1) == in,
              "the weight must be a contiguous fp32 [out, in] that fits x and y");
  const float* X = x.data_ptr<float>();
  const float* W = weight.data_ptr<float>();
  float* Y = y.data_ptr<float>();
  const int64_t body = in - in % kLanes;
  std::vector<float> zero_row(in, 0.f);
  at::parallel_for(0, (out + kTile - 1) / kTile, 16, [&](int64_t begin, int64_t end) {
    for (int64_t block = begin; block < end; ++block) {
      const int64_t o0 = block * kTile;
      const float* ws[kTile];
      for (int64_t t = 0; t < kTile; ++t) ws[t] = o0 + t < out ? W + (o0 + t) * in : zero_row.data();
      for (int64_t j0 = 0; j0 < rows; j0 += kTile) {
        const float* xs[kTile];
        for (int64_t t = 0; t < kTile; ++t) xs[t] = j0 + t < rows ? X + (j0 + t) * ldx : zero_row.data();
        float acc[kTile][kTile][kLanes] = {};
        for (int64_t i = 0; i < body; i += kLanes) {
          for (int64_t t = 0; t < kTile; ++t) __builtin_prefetch(ws[t] + i + kAhead * kLanes);
          for (int64_t j = 0; j < kTile; ++j) {
            for (int64_t t = 0; t < kTile; ++t) {
#pragma omp simd
              for (int64_t l = 0; l < kLanes; ++l) acc[j][t][l] = std::fma(xs[j][i + l], ws[t][i + l], acc[j][t][l]);
            }
          }
        }
        for (int64_t j = 0; j < kTile && j0 + j < rows; ++j) {
          for (int64_t t = 0; t < kTile && o0 + t < out; ++t) {
            float sum = 0.f;
            for (int64_t l = 0; l < kLanes; ++l) sum += acc[j][t][l];
            for (int64_t i = body; i < in; ++i) sum = std::fma(xs[j][i], ws[t][i], sum);
            Y[(j0 + j) * ldy + o0 + t] = sum;
          }
        }
      }
    }
  });
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  pybind11::class_<Decoder>(m, "Decoder")
      .def(pybind11::init<Tensor, std::optional<Tensor>, double, int64_t, int64_t, int64_t, double, int64_t>())
      .def("add_fp32_layer", &Decoder::add_fp32_layer)
      .def("add_q4_layer", &Decoder::add_q4_layer)
      .def("begin_adapter", &Decoder::begin_adapter)
      .def("add_adapter_delta", &Decoder::add_adapter_delta)
      .def("has_adapter", &Decoder::has_adapter)
      .def("drop_adapters", &Decoder::drop_adapters)
      // The step touches no Python object: let the server's event loop run meanwhile, as PyTorch's own ops do.
      .def("step", &Decoder::step, pybind11::call_guard<pybind11::gil_scoped_release>());
  m.def("lora_rows", &lora_rows, pybind11::arg("x"), pybind11::arg("out"), pybind11::arg("offsets"),
        pybind11::arg("a_stacks"), pybind11::arg("b_stacks"), pybind11::arg("ranks"), pybind11::arg("scales"),
        pybind11::arg("row_slots"), pybind11::arg("bf16_products") = false);
  // Whether lora_rows' `bf16_products` multiplies bf16 stacks with vdpbf16ps (else it widens them, as without).
  m.def("lora_rows_has_bf16_products", [] {
#if defined(__AVX512BF16__)
    return true;
#else
    return false;
#endif
  });
  m.def("linear_rows", &linear_rows, pybind11::call_guard<pybind11::gil_scoped_release>());
}
