// ONNX TopK on the GPU for rows of up to kTopKMaxLen: one block per row sorts (value, index) pairs in shared memory
// with a bitonic network, best first, and writes the first k.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <cmath>
#include <cstdint>

#include "backends/cuda/cuda_kernel.h"
#include "backends/cuda/float_convert.cuh"
#include "backends/cuda/reduce_kernels.h"

namespace kiln::cuda {
namespace {

constexpr int kThreads = 256;

// a before b: the better value (larger or smaller), equal values by the lower index. Padding carries index
// INT32_MAX and the worst value, so it sorts after every element.
__device__ __forceinline__ bool before(float va, int ia, float vb, int ib, bool largest) {
  if (va != vb) return largest ? va > vb : va < vb;
  return ia < ib;
}

template <typename T>
__global__ void __launch_bounds__(kThreads) topk_kernel(const T* __restrict__ x, T* __restrict__ vals,
                                                         int64_t* __restrict__ idx, int64_t len, int64_t inner,
                                                         int64_t k, int p2, bool largest) {
  extern __shared__ unsigned char smem[];
  float* key = reinterpret_cast<float*>(smem);
  int* id = reinterpret_cast<int*>(key + p2);
  const int64_t row = blockIdx.x;  // over outer * inner
  const int64_t o = row / inner, i = row % inner;
  const T* src = x + o * len * inner + i;
  const float worst = largest ? -INFINITY : INFINITY;
  for (int j = threadIdx.x; j < p2; j += kThreads) {
    const bool in = j < len;
    key[j] = in ? to_f(src[static_cast<int64_t>(j) * inner]) : worst;
    id[j] = in ? j : INT32_MAX;
  }
  for (int size = 2; size <= p2; size <<= 1) {
    for (int stride = size / 2; stride > 0; stride >>= 1) {
      __syncthreads();
      for (int t = threadIdx.x; t < p2 / 2; t += kThreads) {
        const int a = 2 * t - (t & (stride - 1)), b = a + stride;
        // Segments whose bit `size` is clear end best first; the others the reverse, so each merge step sees a
        // bitonic sequence; the last size (p2) sorts the whole row best first.
        const bool best_first = (a & size) == 0;
        const bool swap = best_first ? before(key[b], id[b], key[a], id[a], largest)
                                     : before(key[a], id[a], key[b], id[b], largest);
        if (swap) {
          const float tk = key[a];
          key[a] = key[b];
          key[b] = tk;
          const int ti = id[a];
          id[a] = id[b];
          id[b] = ti;
        }
      }
    }
  }
  __syncthreads();
  for (int64_t j = threadIdx.x; j < k; j += kThreads) {
    const int64_t dst = (o * k + j) * inner + i;
    vals[dst] = src[static_cast<int64_t>(id[j]) * inner];  // the element itself (no round trip through float)
    idx[dst] = id[j];
  }
}

template <typename T>
Status launch(const void* x, void* values, int64_t* indices, int64_t outer, int64_t len, int64_t inner, int64_t k,
              bool largest, cudaStream_t stream) {
  int p2 = 1;
  while (p2 < len) p2 <<= 1;
  if (p2 < 2) p2 = 2;
  const size_t smem = static_cast<size_t>(p2) * (sizeof(float) + sizeof(int));
  const int64_t rows = outer * inner;
  if (rows > 0x7fffffff) return unsupported("TopK: more than 2^31 rows");
  topk_kernel<T><<<static_cast<unsigned>(rows), kThreads, smem, stream>>>(
      static_cast<const T*>(x), static_cast<T*>(values), indices, len, inner, k, p2, largest);
  KILN_CUDA_LAUNCH_CHECK();
  return Status::Ok();
}

}  // namespace

Status launch_topk(DataType dt, const void* x, void* values, int64_t* indices, int64_t outer, int64_t len,
                   int64_t inner, int64_t k, bool largest, cudaStream_t stream) {
  if (outer * inner * k == 0) return Status::Ok();
  if (len < 1 || len > kTopKMaxLen || k > len)
    return unsupported("TopK: the GPU kernel takes rows of 1 to " + std::to_string(kTopKMaxLen) + " and k <= the row");
  switch (dt) {
    case DataType::kFLOAT: return launch<float>(x, values, indices, outer, len, inner, k, largest, stream);
    case DataType::kHALF: return launch<__half>(x, values, indices, outer, len, inner, k, largest, stream);
    case DataType::kBF16: return launch<__nv_bfloat16>(x, values, indices, outer, len, inner, k, largest, stream);
    default: return unsupported(std::string("TopK: no GPU kernel for ") + dtype_name(dt));
  }
}

}  // namespace kiln::cuda
