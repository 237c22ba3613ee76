// The CUTLASS GEMM + bias + activation kernels (cutlass_gemm.h), one translation unit per activation and element
// type so that the slow CUTLASS compiles run in parallel: cutlass_gemm_{gelu,silu}_{f16,bf16}.cu include this.
#pragma once

#include <cuda_runtime.h>

#include <memory>
#include <string>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/version.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/collective/sm70_epilogue_vectorized.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "backends/cuda/cutlass_gemm.h"
#include "backends/cuda/gelu_erfc.h"

namespace kiln::cuda::cutlass_impl {

// D = act(alpha * A B + beta * C + bias[col]), row-major A [M, K], C and D [M, N], B [K, N] row-major
// (LayoutB RowMajor) or stored [N, K] (ColumnMajor: trans_b), fp32 accumulation. ElementC void: no C (beta 0);
// T: C is the layer's residual, read by the epilogue (beta 1).
template <typename T, template <class> class Act, class LayoutB, class TileShape, class KernelSchedule,
          class EpilogueSchedule, class ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>,
          class ElementC = void>
struct ActGemm {
  using Layout = cutlass::layout::RowMajor;
  static constexpr int kAlign = 8;  // elements per 16 bytes
  static constexpr bool kHasC = !std::is_void_v<ElementC>;
  static constexpr bool kHasBias = true;
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<Act, T, float, T, T, float>;
  using Epilogue = typename cutlass::epilogue::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
      cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementC, Layout, kAlign, T, Layout, kAlign,
      EpilogueSchedule, Fusion>::CollectiveOp;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, Layout, kAlign, T, LayoutB, kAlign, float, TileShape,
      ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// D = alpha * A B with D's rows of any number of elements (gpt2's lm_head: 50257 halves, no whole number of 16-byte
// vectors, so no TMA store): B stored [N, K] (its rows of K are aligned whatever N is, so the mainloop keeps TMA).
// The epilogue stages each warp group's 64-row half tile in shared memory as floats (rows padded by 8 floats, so
// the accumulator fragments' stores spread over the banks), then each of the 128 threads takes one column: a warp
// stores 32 consecutive elements of one row, 64 contiguous bytes, under a bounds predicate. CUTLASS's
// no-shared-memory epilogue stored from the accumulator fragments directly, 16-byte pieces of eight rows per
// instruction: 1.32 ms at gpt2 b32 against 0.47 for the padded GEMM (bench/NOTES.md). Ping-pong 128x128 only: one
// warp group's epilogue overlaps the other's main loop, and the two take turns in the staging buffer. No bias, no C.
// It replaces pad_gemm_width's padded GEMM and the Unpad's read and second write of the output (KILN_ODD_GEMM=1).
template <typename T, class TileShape, class KernelSchedule>
struct OddGemm {
  static_assert(std::is_same_v<KernelSchedule, cutlass::gemm::KernelTmaWarpSpecializedPingpong>,
                "the staging buffer holds one warp group's 64 rows: ping-pong only");
  using Layout = cutlass::layout::RowMajor;
  using Stride = cutlass::detail::TagToStrideC_t<Layout>;
  static constexpr int kAlign = 8;  // A's and B's rows of K
  static constexpr bool kHasC = false;
  static constexpr bool kHasBias = false;
  static constexpr int kTileN = cute::size<1>(TileShape{});
  using ThreadOp = cutlass::epilogue::thread::LinearCombination<T, 1, float, float,
                                                                cutlass::epilogue::thread::ScaleType::OnlyAlphaScaling,
                                                                cutlass::FloatRoundStyle::round_to_nearest, T>;
  using SmemLayout = cute::Layout<cute::Shape<cute::_64, cute::Int<kTileN>>, cute::Stride<cute::Int<kTileN + 8>, cute::_1>>;
  using CopyR2S = cute::Copy_Atom<cute::AutoVectorizingCopyWithAssumedAlignment<64>, float>;
  using TiledCopyS2R = decltype(cute::make_tiled_copy(cute::Copy_Atom<cute::UniversalCopy<float>, float>{},
                                                      cute::Layout<cute::Shape<cute::_1, cute::_128>>{},
                                                      cute::Layout<cute::Shape<cute::_1, cute::_1>>{}));
  using CopyR2G = cute::Copy_Atom<cute::UniversalCopy<T>, T>;
  using Epilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<
      cutlass::epilogue::collective::Epilogue<Stride, Stride, ThreadOp, SmemLayout, CopyR2S, TiledCopyS2R, CopyR2G,
                                              cutlass::epilogue::EpilogueSimtVectorized>>;
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, Layout, kAlign, T, cutlass::layout::ColumnMajor, kAlign,
      float, TileShape, cute::Shape<cute::_1, cute::_1, cute::_1>,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

template <class Tag, typename T>
class Impl final : public CutlassGemm {
  using G = typename Tag::Gemm;
  using ElementC = typename G::GemmKernel::CollectiveEpilogue::ElementC;  // void without C

 public:
  Impl(int m, int n, int k, bool bias, float alpha) : m_(m), n_(n), k_(k), bias_(bias), alpha_(alpha) {
    // The persistent grid's SM count, once: left at 0, CUTLASS asks the device at every initialization.
    if (cudaGetDevice(&device_) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device_) != cudaSuccess)
      sms_ = 0;
  }

  typename G::Arguments arguments(const void* a, const void* b, const void* bias, const void* c, void* d) const {
    using K = typename G::GemmKernel;
    const auto sa = cutlass::make_cute_packed_stride(typename K::StrideA{}, cute::make_shape(m_, k_, 1));
    const auto sb = cutlass::make_cute_packed_stride(typename K::StrideB{}, cute::make_shape(n_, k_, 1));
    const auto sc = cutlass::make_cute_packed_stride(typename K::StrideC{}, cute::make_shape(m_, n_, 1));
    const auto sd = cutlass::make_cute_packed_stride(typename K::StrideD{}, cute::make_shape(m_, n_, 1));
    typename G::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                               {m_, n_, k_, 1},
                               {static_cast<const T*>(a), sa, static_cast<const T*>(b), sb},
                               {{}, static_cast<const ElementC*>(c), sc, static_cast<T*>(d), sd}};
    args.epilogue.thread.alpha = alpha_;
    args.epilogue.thread.beta = Tag::kHasC ? 1.f : 0.f;
    args.hw_info.device_id = device_;
    args.hw_info.sm_count = sms_;
    if constexpr (Tag::kHasBias) args.epilogue.thread.bias_ptr = bias_ ? static_cast<const T*>(bias) : nullptr;
    return args;
  }

  // Whether CUTLASS can run this problem (alignment, sizes), checked once when the tactic is made.
  Status check() const {
    // Any 16-byte aligned pointers stand for the real ones here: can_implement looks at sizes and strides.
    alignas(16) static T dummy[8];
    auto args = arguments(dummy, dummy, dummy, Tag::kHasC ? dummy : nullptr, dummy);
    if (G::can_implement(args) != cutlass::Status::kSuccess)
      return unsupported("CUTLASS cannot implement this GEMM (" + std::to_string(m_) + "x" + std::to_string(n_) + "x" +
                         std::to_string(k_) + ")");
    return Status::Ok();
  }

  Status run(const void* a, const void* b, const void* bias, const void* c, void* d, void* workspace,
             size_t workspace_bytes, cudaStream_t stream) override {
    if (Tag::kHasC != (c != nullptr))
      return invalid_argument(Tag::kHasC ? "the CUTLASS GEMM adds a residual, and none was given"
                                         : "the CUTLASS GEMM takes no residual, and one was given");
    if (!ready_ || a != a_ || b != b_ || bias != bias_ptr_ || c != c_ || d != d_ || workspace != ws_) {
      args_ = arguments(a, b, bias, c, d);
      need_ = G::get_workspace_size(args_);
      if (need_ > workspace_bytes)
        return unsupported("the CUTLASS GEMM needs " + std::to_string(need_) + " bytes of workspace, " +
                           std::to_string(workspace_bytes) + " are there");
      if (gemm_.initialize(args_, workspace, stream) != cutlass::Status::kSuccess)
        return internal_error("CUTLASS GEMM: initialize failed");
      a_ = a, b_ = b, bias_ptr_ = bias, c_ = c, d_ = d, ws_ = workspace;
      ready_ = true;
    } else if (need_ > 0) {
      // A kernel that keeps state in the workspace (a stream-K scheduler's partial sums and flags; none of the
      // configurations built now) finds it overwritten by other layers between runs: it is initialized again
      // before each launch (on the stream, captured into CUDA graphs like the launch).
      if (G::GemmKernel::initialize_workspace(args_, workspace, stream) != cutlass::Status::kSuccess)
        return internal_error("CUTLASS GEMM: workspace initialization failed");
    }
    if (gemm_.run(stream) != cutlass::Status::kSuccess) return internal_error("CUTLASS GEMM: launch failed");
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return internal_error(std::string("CUTLASS GEMM: ") + cudaGetErrorString(e));
    return Status::Ok();
  }

 private:
  int m_, n_, k_;
  bool bias_;
  float alpha_;
  int device_ = 0, sms_ = 0;
  G gemm_;
  typename G::Arguments args_{};
  size_t need_ = 0;  // workspace bytes (stream-K: partial sums and flags)
  bool ready_ = false;
  const void *a_ = nullptr, *b_ = nullptr, *bias_ptr_ = nullptr, *c_ = nullptr;
  void *d_ = nullptr, *ws_ = nullptr;
};

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PingEpi = cutlass::epilogue::TmaWarpSpecialized;

// Erf GELU for the epilogue from erfc's scaled form (gelu_erfc.h): fewer operations than erff's, and more exact
// below x = -1 (bench/NOTES.md has the figures).
template <typename T>
struct GeluErfFast {
  static const bool kIsHeavy = true;
  CUTLASS_DEVICE T operator()(T const& value) const {
    return static_cast<T>(gelu_erfc_form(static_cast<float>(value)));
  }
};

template <typename T, int N>
struct GeluErfFast<cutlass::Array<T, N>> {
  static const bool kIsHeavy = true;
  CUTLASS_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& v) const {
    cutlass::Array<T, N> y;
    GeluErfFast<T> op;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) y[i] = op(v[i]);
    return y;
  }
};

template <typename T, class Tile, class KS, class ES, class Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>>
using GeluGemm = ActGemm<T, GeluErfFast, cutlass::layout::RowMajor, Tile, KS, ES, Cluster>;
template <typename T, class Tile, class KS, class ES>
using SiluGemm = ActGemm<T, cutlass::epilogue::thread::SiLu, cutlass::layout::ColumnMajor, Tile, KS, ES>;
template <typename T, class LayoutB, class Tile, class KS, class ES>
using ResGemm =
    ActGemm<T, cutlass::epilogue::thread::Identity, LayoutB, Tile, KS, ES, cute::Shape<cute::_1, cute::_1, cute::_1>, T>;

template <class Tag, typename T>
Result<std::unique_ptr<CutlassGemm>> build(int m, int n, int k, bool bias, float alpha) {
  auto impl = std::make_unique<Impl<Tag, T>>(m, n, k, bias, alpha);
  KILN_RETURN_IF_ERROR(impl->check());
  return std::unique_ptr<CutlassGemm>(std::move(impl));
}

// erf GELU, B [K, N] (a transformer's FFN1 from a MatMul): the configurations of cutlass_gemm.h.
template <typename T>
Result<std::unique_ptr<CutlassGemm>> make_gelu(int config, int m, int n, int k, bool bias, float alpha) {
  using namespace cute;
  switch (config) {
    case 0: return build<GeluGemm<T, Shape<_128, _128, _64>, Coop, CoopEpi>, T>(m, n, k, bias, alpha);
    case 1: return build<GeluGemm<T, Shape<_128, _256, _64>, Coop, CoopEpi>, T>(m, n, k, bias, alpha);
    case 2: return build<GeluGemm<T, Shape<_64, _128, _64>, Ping, PingEpi>, T>(m, n, k, bias, alpha);
    case 3: return build<GeluGemm<T, Shape<_256, _128, _64>, Coop, CoopEpi, Shape<_2, _1, _1>>, T>(m, n, k, bias, alpha);
    default: return unsupported("no CUTLASS GELU GEMM configuration " + std::to_string(config));
  }
}

// SiLU, B stored [N, K] (a 1x1 convolution run as a GEMM, conv1x1_as_gemm: efficientnet's expand layers):
// configurations 0 and 2.
template <typename T>
Result<std::unique_ptr<CutlassGemm>> make_silu(int config, int m, int n, int k, bool bias, float alpha) {
  using namespace cute;
  switch (config) {
    case 0: return build<SiluGemm<T, Shape<_128, _128, _64>, Coop, CoopEpi>, T>(m, n, k, bias, alpha);
    case 2: return build<SiluGemm<T, Shape<_64, _128, _64>, Ping, PingEpi>, T>(m, n, k, bias, alpha);
    default: return unsupported("no CUTLASS SiLU GEMM configuration " + std::to_string(config));
  }
}

// No activation, the residual as C (beta 1): a transformer's attention output projection (a Gemm: B stored
// [N, K]) and FFN2 (a MatMul: B [K, N]), whose N = 768 leaves 1.45 waves of 128x256 tiles on 132 SMs at bert's
// batch 64: configuration 4 (ping-pong 128x128).
template <typename T, class Tile, class KS, class ES>
Result<std::unique_ptr<CutlassGemm>> build_res(bool trans_b, int m, int n, int k, bool bias, float alpha) {
  if (trans_b) return build<ResGemm<T, cutlass::layout::ColumnMajor, Tile, KS, ES>, T>(m, n, k, bias, alpha);
  return build<ResGemm<T, cutlass::layout::RowMajor, Tile, KS, ES>, T>(m, n, k, bias, alpha);
}

template <typename T>
Result<std::unique_ptr<CutlassGemm>> make_res(int config, bool trans_b, int m, int n, int k, bool bias, float alpha) {
  using namespace cute;
  using T128 = Shape<_128, _128, _64>;
  switch (config) {
    case 4: return build_res<T, T128, Ping, PingEpi>(trans_b, m, n, k, bias, alpha);
    default: return unsupported("no CUTLASS residual GEMM configuration " + std::to_string(config));
  }
}

// D's rows of any width (OddGemm, B stored [N, K]): configuration 4 (ping-pong 128x128, rows staged in shared
// memory).
template <typename T>
Result<std::unique_ptr<CutlassGemm>> make_odd(int config, int m, int n, int k, bool bias, float alpha) {
  using namespace cute;
  if (bias) return unsupported("the CUTLASS odd-width GEMM adds no bias");
  switch (config) {
    case 4: return build<OddGemm<T, Shape<_128, _128, _64>, Ping>, T>(m, n, k, false, alpha);
    default: return unsupported("no CUTLASS odd-width GEMM configuration " + std::to_string(config));
  }
}

}  // namespace kiln::cuda::cutlass_impl
