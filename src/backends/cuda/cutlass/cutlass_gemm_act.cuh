// The CUTLASS GEMM + bias + activation kernels (cutlass_gemm.h), one translation unit per activation and element
// type so that the slow CUTLASS compiles run in parallel: cutlass_gemm_{gelu,silu}_{f16,bf16}.cu include this.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>

#include "cute/tensor.hpp"
#include "cutlass/cutlass.h"
#include "cutlass/version.h"
#include "cutlass/epilogue/collective/collective_builder.hpp"
#include "cutlass/epilogue/fusion/operations.hpp"
#include "cutlass/epilogue/thread/activation.h"
#include "cutlass/gemm/collective/collective_builder.hpp"
#include "cutlass/gemm/device/gemm_universal_adapter.h"
#include "cutlass/gemm/kernel/gemm_universal.hpp"
#include "cutlass/util/packed_stride.hpp"

#include "backends/cuda/cutlass_gemm.h"
#include "backends/cuda/gelu_sigmoid.h"
#include "backends/cuda/pdl.cuh"

namespace kiln::cuda::cutlass_impl {

// What every kernel here shares: row-major A, C and D with 16-byte aligned rows, fp32 accumulation.
inline constexpr int kRowAlign = 8;  // elements of T in 16 bytes
using RowMajor = cutlass::layout::RowMajor;

// The TMA epilogue of `Fusion` storing D (T) and reading C (ElementC; void: none).
template <typename T, class TileShape, class ClusterShape, class ElementC, class EpilogueSchedule, class Fusion>
using EpilogueOf = typename cutlass::epilogue::collective::CollectiveBuilder<
    cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, TileShape, ClusterShape,
    cutlass::epilogue::collective::EpilogueTileAuto, float, float, ElementC, RowMajor, kRowAlign, T, RowMajor,
    kRowAlign, EpilogueSchedule, Fusion>::CollectiveOp;

// The kernel around an epilogue: the mainloop (TMA loads of A and of B in LayoutB, WGMMA) in as many shared-memory
// stages as the epilogue leaves room for, and its device adapter.
template <typename T, class LayoutB, class TileShape, class ClusterShape, class KernelSchedule, class Epilogue>
struct GemmOf {
  using Mainloop = typename cutlass::gemm::collective::CollectiveBuilder<
      cutlass::arch::Sm90, cutlass::arch::OpClassTensorOp, T, RowMajor, kRowAlign, T, LayoutB, kRowAlign, float,
      TileShape, ClusterShape,
      cutlass::gemm::collective::StageCountAutoCarveout<static_cast<int>(sizeof(typename Epilogue::SharedStorage))>,
      KernelSchedule>::CollectiveOp;
  using Kernel = cutlass::gemm::kernel::GemmUniversal<cute::Shape<int, int, int, int>, Mainloop, Epilogue>;
  using Gemm = cutlass::gemm::device::GemmUniversalAdapter<Kernel>;
};

// D = act(alpha * A B + beta * C + bias[col]), row-major A [M, K], C and D [M, N], B [K, N] row-major
// (LayoutB RowMajor) or stored [N, K] (ColumnMajor: trans_b), fp32 accumulation. ElementC void: no C (beta 0);
// T: C is the layer's residual, read by the epilogue (beta 1).
template <typename T, template <class> class Act, class LayoutB, class TileShape, class KernelSchedule,
          class EpilogueSchedule, class ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>,
          class ElementC = void>
struct ActGemm {
  static constexpr bool kHasC = !std::is_void_v<ElementC>;
  static constexpr bool kHasBias = true;
  static constexpr bool kNorm = false;
  using Fusion = cutlass::epilogue::fusion::LinCombPerColBiasEltAct<Act, T, float, T, T, float>;
  using Epilogue = EpilogueOf<T, TileShape, ClusterShape, ElementC, EpilogueSchedule, Fusion>;
  using Gemm = typename GemmOf<T, LayoutB, TileShape, ClusterShape, KernelSchedule, Epilogue>::Gemm;
};

// D = act(rstd[m] (A B + neg_mean[m] colsum[n]) + bias[n]) with B [K, N] (a LayerNorm folded into the GEMM:
// fold_layernorm_into_matmul; the statistics pass writes neg_mean and rstd, alpha folded into rstd): an epilogue
// visitor tree of two fused multiply-adds over the accumulators, per-row terms broadcast along N (loaded by each
// thread for its own rows) and per-column terms along M (staged in shared memory), then the activation.
template <typename T, template <class> class Act, class TileShape, class KernelSchedule, class EpilogueSchedule,
          class ClusterShape = cute::Shape<cute::_1, cute::_1, cute::_1>>
struct NormGemm {
  static constexpr bool kHasC = false;
  static constexpr bool kHasBias = true;
  static constexpr bool kNorm = true;
  static constexpr auto kRound = cutlass::FloatRoundStyle::round_to_nearest;
  template <class E>
  using PerRow = cutlass::epilogue::fusion::Sm90ColBroadcast<0, TileShape, E, float>;
  template <class E>
  using PerCol = cutlass::epilogue::fusion::Sm90RowBroadcast<0, TileShape, E, float>;
  template <template <class> class Fn, class Out>
  using Op = cutlass::epilogue::fusion::Sm90Compute<Fn, Out, float, kRound>;
  template <class Node, class... Children>
  using Tree = cutlass::epilogue::fusion::Sm90EVT<Node, Children...>;
  using Fma = Op<cutlass::homogeneous_multiply_add, float>;
  using Centered = Tree<Fma, PerRow<float>, PerCol<float>, cutlass::epilogue::fusion::Sm90AccFetch>;  // acc + nm c
  using Scaled = Tree<Fma, PerRow<float>, Centered, PerCol<T>>;                                       // rstd t + b
  using Fusion = Tree<Op<Act, T>, Scaled>;
  using Epilogue = EpilogueOf<T, TileShape, ClusterShape, void, EpilogueSchedule, Fusion>;
  using Gemm = typename GemmOf<T, RowMajor, TileShape, ClusterShape, KernelSchedule, Epilogue>::Gemm;

  // The tree's arguments: children first, then the node's own (none).
  static typename Fusion::Arguments fusion_args(const CutlassRowNorm& r, const T* bias) {
    return {{{r.rstd}, {{r.neg_mean}, {r.colsum}, {}, {}}, {bias}, {}}, {}};
  }
};

// The epilogue of the odd-width GEMM (OddGemm): D = alpha * acc into rows of any number of elements, which no TMA
// store takes (gpt2's lm_head: 50257 halves). The tile goes through shared memory in kStageM x kStageN blocks,
// converted, every row shifted right by its own misalignment in global memory (where its first element sits in a
// 16-byte piece), so that the staged row's 16-byte pieces fall on the output row's. Then 16 lanes store a row: one
// 16-byte store each, and the partial first and last pieces (8 elements in all) one element per lane; the tile
// that N cuts takes element stores past the whole pieces. Measured (bench/NOTES.md, gpt2 b32, the ping-pong c4,
// against 0.47 + 0.27 ms for the padded GEMM and the Unpad): CUTLASS's no-shared-memory epilogue (16-byte pieces of
// eight rows per warp store, half filled) 1.32 ms; its SIMT shared-memory one (an element per thread) 0.78 ms; this
// one with the edge elements stored by one lane in a loop 1.02 ms, with every value tested against every staging
// block 0.74 ms, as it is 0.58 ms (the cooperative c1: 0.57, where the epilogue does not overlap). kThreads: the
// threads that run the epilogue together (the ping-pong kernel's one warp group at a time, which CUTLASS orders, so
// the two share the buffer; the cooperative kernel's two).
template <typename T, int kTileM, int kTileN, int kThreads>
class OddRowEpilogue {
 public:
  using ThreadEpilogueOp = cutlass::epilogue::thread::LinearCombination<
      T, 1, float, float, cutlass::epilogue::thread::ScaleType::OnlyAlphaScaling,
      cutlass::FloatRoundStyle::round_to_nearest, T>;
  using ElementOutput = T;
  using ElementAccumulator = float;
  using ElementCompute = float;
  using ElementScalar = float;
  using ElementC = T;
  using ElementD = T;
  using StrideC = cutlass::detail::TagToStrideC_t<cutlass::layout::RowMajor>;
  using StrideD = StrideC;
  using GmemTiledCopyC = void;
  using GmemTiledCopyD = void;
  static constexpr int kStageN = 128;                            // 16 pieces of 8: 16 lanes a row
  static constexpr int kStageM = kThreads == 128 ? 64 : kTileM;  // 35 KB at 128 x 128
  static constexpr int kPitch = kStageN + 8;                     // room for a shift of up to 7; 16-byte rows
  static_assert(kTileM % kStageM == 0 && kTileN % kStageN == 0, "whole staging blocks");

  struct SharedStorage {
    alignas(16) T rows[kStageM * kPitch];
  };
  using TensorStorage = SharedStorage;

  struct Arguments {
    typename ThreadEpilogueOp::Params thread{};
    ElementC const* ptr_C = nullptr;
    StrideC dC{};
    ElementD* ptr_D = nullptr;
    StrideD dD{};
  };
  using Params = Arguments;

  template <class ProblemShape>
  static constexpr Params to_underlying_arguments(ProblemShape const&, Arguments const& args, void*) {
    return args;
  }
  template <class ProblemShape>
  static size_t get_workspace_size(ProblemShape const&, Arguments const&) {
    return 0;
  }
  template <class ProblemShape>
  static cutlass::Status initialize_workspace(ProblemShape const&, Arguments const&, void*, cudaStream_t,
                                              cutlass::CudaHostAdapter* = nullptr) {
    return cutlass::Status::kSuccess;
  }
  template <class ProblemShape>
  static bool can_implement(ProblemShape const& problem, Arguments const& args) {
    // Row-major D (unit column stride), one matrix.
    return cute::get<1>(args.dD) == 1 && cute::get<3>(problem) == 1;
  }

  CUTLASS_HOST_DEVICE explicit OddRowEpilogue(Params const& params) : params_(params) {}
  CUTLASS_DEVICE bool is_source_needed() { return false; }

  template <class ProblemShapeMNKL, class BlockShapeMNK, class BlockCoordMNKL, class FrgEngine, class FrgLayout,
            class TiledMma, class ResidueMNK>
  CUTLASS_DEVICE void operator()(ProblemShapeMNKL problem, BlockShapeMNK blk_shape, BlockCoordMNKL blk_coord,
                                 cute::Tensor<FrgEngine, FrgLayout> const& acc, TiledMma tiled_mma, ResidueMNK,
                                 int thread_idx, char* smem_buf) {
    using namespace cute;
    static_assert(size<0>(BlockShapeMNK{}) == kTileM && size<1>(BlockShapeMNK{}) == kTileN, "the tile's shape");
    const int m_total = get<0>(problem), n_total = get<1>(problem);
    const int64_t ld = get<0>(params_.dD);
    const int ld8 = static_cast<int>(ld % 8);
    const int m0 = static_cast<int>(get<0>(blk_coord)) * kTileM;
    const int n0 = static_cast<int>(get<1>(blk_coord)) * kTileN;
    const float alpha = params_.thread.alpha;
    T* stage = reinterpret_cast<SharedStorage*>(smem_buf)->rows;
    T* d = params_.ptr_D;
    // Each accumulator element's (row, column) in the tile, partitioned as the accumulators are: Hopper's MMA
    // fragment ((2, 2, kTileN / 8), MMA_M, 1), value (v0, v1, j) of 64-row block mi in column 8 j + [0, 8) of that
    // block's rows. So which elements go into which staging block is known at compile time, with no test each.
    Tensor coords = tiled_mma.get_slice(thread_idx).partition_C(make_identity_tensor(take<0, 2>(blk_shape)));
    static_assert(decltype(rank<0>(acc))::value == 3 && decltype(size<0, 0>(acc))::value == 2 &&
                      decltype(size<0, 1>(acc))::value == 2 && decltype(size<0, 2>(acc))::value * 8 == kTileN &&
                      decltype(size<2>(acc))::value == 1,
                  "the SM90 MMA accumulator fragment");
    constexpr int kMmaM = decltype(size<1>(acc))::value;  // ping-pong: 2 blocks of 64 rows; cooperative: 1
    constexpr int kMmaPerStage = kMmaM * kStageM / kTileM;
    const int team = thread_idx / 16, lane = thread_idx % 16;
    CUTLASS_PRAGMA_UNROLL
    for (int sm = 0; sm < kTileM / kStageM; ++sm) {
      CUTLASS_PRAGMA_UNROLL
      for (int sn = 0; sn < kTileN / kStageN; ++sn) {
        const int r0 = sm * kStageM, c0 = sn * kStageN;
        // Where element n0 + c0 of row m0 + r0 sits in its 16-byte piece; row r's is that + r * ld, mod 8.
        const auto first = reinterpret_cast<uintptr_t>(d + (m0 + r0) * ld + n0 + c0);
        const int shift0 = static_cast<int>(first / sizeof(T) % 8);
        CUTLASS_PRAGMA_UNROLL
        for (int mi = sm * kMmaPerStage; mi < (sm + 1) * kMmaPerStage; ++mi) {
          CUTLASS_PRAGMA_UNROLL
          for (int j = c0 / 8; j < (c0 + kStageN) / 8; ++j) {
            CUTLASS_PRAGMA_UNROLL
            for (int v1 = 0; v1 < 2; ++v1) {
              CUTLASS_PRAGMA_UNROLL
              for (int v0 = 0; v0 < 2; ++v0) {
                const auto at = make_coord(make_coord(v0, v1, j), mi, 0);
                const int r = get<0>(coords(at)) - r0, c = get<1>(coords(at)) - c0;
                stage[r * kPitch + c + ((shift0 + r * ld8) & 7)] = static_cast<T>(alpha * acc(at));
              }
            }
          }
        }
        cutlass::arch::NamedBarrier::sync(kThreads, cutlass::arch::ReservedNamedBarriers::EpilogueBarrier);
        const int cols = n_total - n0 - c0 < kStageN ? n_total - n0 - c0 : kStageN;
        for (int r = team; r < kStageM; r += kThreads / 16) {
          const int row = m0 + r0 + r;
          if (row >= m_total || cols <= 0) break;
          const int shift = (shift0 + r * ld8) & 7;
          T* out = d + row * ld + n0 + c0 - shift;  // 16-byte aligned: piece p is out[8p, 8p + 8)
          const T* in = stage + r * kPitch;
          if (cols == kStageN) {
            // Pieces 1-15 whole, piece 0 whole unless shifted; then the shifted row's 8 edge elements: piece 0's
            // last 8 - shift and piece 16's first shift.
            if (lane > 0 || shift == 0)
              *reinterpret_cast<uint4*>(out + 8 * lane) = *reinterpret_cast<const uint4*>(in + 8 * lane);
            if (shift > 0 && lane < 8) {
              const int e = lane < 8 - shift ? shift + lane : kStageN + lane - (8 - shift);
              out[e] = in[e];
            }
          } else {
            // N ends inside this block: whole pieces where they fit, elements past them.
            for (int p = lane; p <= kStageN / 8; p += 16) {
              const int lo = 8 * p > shift ? 8 * p : shift;
              const int hi = 8 * p + 8 < shift + cols ? 8 * p + 8 : shift + cols;
              if (lo >= hi) continue;
              if (lo == 8 * p && hi == 8 * p + 8) {
                *reinterpret_cast<uint4*>(out + 8 * p) = *reinterpret_cast<const uint4*>(in + 8 * p);
              } else {
                for (int e = lo; e < hi; ++e) out[e] = in[e];
              }
            }
          }
        }
        cutlass::arch::NamedBarrier::sync(kThreads, cutlass::arch::ReservedNamedBarriers::EpilogueBarrier);
      }
    }
  }

 private:
  Params params_;
};

// D = alpha * A B with D's rows of any number of elements (OddRowEpilogue): B stored [N, K] (its rows of K are
// aligned whatever N is, so the mainloop keeps TMA). No bias, no C. It replaces pad_gemm_width's padded GEMM and
// the Unpad's read and second write of the output (KILN_ODD_GEMM=1).
template <typename T, class TileShape, class KernelSchedule>
struct OddGemm {
  static constexpr bool kPingpong = std::is_same_v<KernelSchedule, cutlass::gemm::KernelTmaWarpSpecializedPingpong>;
  static constexpr bool kHasC = false;
  static constexpr bool kHasBias = false;
  static constexpr bool kNorm = false;
  using Epilogue = cutlass::epilogue::collective::detail::Sm90TmaWarpSpecializedAdapter<
      OddRowEpilogue<T, cute::size<0>(TileShape{}), cute::size<1>(TileShape{}), kPingpong ? 128 : 256>>;
  using Gemm = typename GemmOf<T, cutlass::layout::ColumnMajor, TileShape, cute::Shape<cute::_1, cute::_1, cute::_1>,
                               KernelSchedule, Epilogue>::Gemm;
};

template <class Tag, typename T>
class Impl final : public CutlassGemm {
  using G = typename Tag::Gemm;
  using ElementC = typename G::GemmKernel::CollectiveEpilogue::ElementC;  // void without C

 public:
  Impl(int m, int n, int k, bool bias, float alpha)
      : m_(m), n_(n), k_(k), bias_(bias), alpha_(alpha), pdl_(pdl_gemm_enabled()) {
    // The persistent grid's SM count, once: left at 0, CUTLASS asks the device at every initialization.
    if (cudaGetDevice(&device_) != cudaSuccess ||
        cudaDeviceGetAttribute(&sms_, cudaDevAttrMultiProcessorCount, device_) != cudaSuccess)
      sms_ = 0;
  }

  typename G::Arguments arguments(const void* a, const void* b, const void* bias, const void* c, void* d,
                                  const CutlassRowNorm& norm = {}) const {
    using K = typename G::GemmKernel;
    const auto sa = cutlass::make_cute_packed_stride(typename K::StrideA{}, cute::make_shape(m_, k_, 1));
    const auto sb = cutlass::make_cute_packed_stride(typename K::StrideB{}, cute::make_shape(n_, k_, 1));
    const auto sc = cutlass::make_cute_packed_stride(typename K::StrideC{}, cute::make_shape(m_, n_, 1));
    const auto sd = cutlass::make_cute_packed_stride(typename K::StrideD{}, cute::make_shape(m_, n_, 1));
    typename G::Arguments args{cutlass::gemm::GemmUniversalMode::kGemm,
                               {m_, n_, k_, 1},
                               {static_cast<const T*>(a), sa, static_cast<const T*>(b), sb},
                               {{}, static_cast<const ElementC*>(c), sc, static_cast<T*>(d), sd}};
    if constexpr (Tag::kNorm) {
      args.epilogue.thread = Tag::fusion_args(norm, bias_ ? static_cast<const T*>(bias) : nullptr);
    } else {
      args.epilogue.thread.alpha = alpha_;
      args.epilogue.thread.beta = Tag::kHasC ? 1.f : 0.f;
      if constexpr (Tag::kHasBias) args.epilogue.thread.bias_ptr = bias_ ? static_cast<const T*>(bias) : nullptr;
    }
    args.hw_info.device_id = device_;
    args.hw_info.sm_count = sms_;
    return args;
  }

  // Whether CUTLASS can run this problem (alignment, sizes), checked once when the tactic is made.
  Status check() const {
    // Any 16-byte aligned pointers stand for the real ones here: can_implement looks at sizes and strides.
    alignas(16) static T dummy[8];
    alignas(16) static float fdummy[4];
    auto args = arguments(dummy, dummy, dummy, Tag::kHasC ? dummy : nullptr, dummy, {fdummy, fdummy, fdummy});
    if (G::can_implement(args) != cutlass::Status::kSuccess)
      return unsupported("CUTLASS cannot implement this GEMM (" + std::to_string(m_) + "x" + std::to_string(n_) + "x" +
                         std::to_string(k_) + ")");
    return Status::Ok();
  }

  Status run(const void* a, const void* b, const void* bias, const void* c, void* d, void* workspace,
             size_t workspace_bytes, cudaStream_t stream, const CutlassRowNorm* norm) override {
    if (Tag::kHasC != (c != nullptr))
      return invalid_argument(Tag::kHasC ? "the CUTLASS GEMM adds a residual, and none was given"
                                         : "the CUTLASS GEMM takes no residual, and one was given");
    if (Tag::kNorm != (norm != nullptr && norm->neg_mean && norm->rstd && norm->colsum))
      return invalid_argument(Tag::kNorm ? "the CUTLASS GEMM standardizes A's rows, and their statistics were not given"
                                         : "the CUTLASS GEMM takes no row statistics, and they were given");
    const CutlassRowNorm rn = norm ? *norm : CutlassRowNorm{};
    if (!ready_ || a != a_ || b != b_ || bias != bias_ptr_ || c != c_ || d != d_ || workspace != ws_ ||
        rn.neg_mean != norm_.neg_mean || rn.rstd != norm_.rstd || rn.colsum != norm_.colsum) {
      args_ = arguments(a, b, bias, c, d, rn);
      need_ = G::get_workspace_size(args_);
      if (need_ > workspace_bytes)
        return unsupported("the CUTLASS GEMM needs " + std::to_string(need_) + " bytes of workspace, " +
                           std::to_string(workspace_bytes) + " are there");
      if (gemm_.initialize(args_, workspace, stream) != cutlass::Status::kSuccess)
        return internal_error("CUTLASS GEMM: initialize failed");
      a_ = a, b_ = b, bias_ptr_ = bias, c_ = c, d_ = d, ws_ = workspace, norm_ = rn;
      ready_ = true;
    } else if (need_ > 0) {
      // A kernel that keeps state in the workspace (a stream-K scheduler's partial sums and flags; none of the
      // configurations built now) finds it overwritten by other layers between runs: it is initialized again
      // before each launch (on the stream, captured into CUDA graphs like the launch).
      if (G::GemmKernel::initialize_workspace(args_, workspace, stream) != cutlass::Status::kSuccess)
        return internal_error("CUTLASS GEMM: workspace initialization failed");
    }
    // Programmatic dependent launch (pdl.cuh) with KILN_PDL=1: the kernels wait for the previous kernel before their
    // first load and let the next one launch when they start their last tile (CUTLASS_ENABLE_GDC_FOR_SM90).
    if (gemm_.run(stream, nullptr, pdl_) != cutlass::Status::kSuccess)
      return internal_error("CUTLASS GEMM: launch failed");
    const cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return internal_error(std::string("CUTLASS GEMM: ") + cudaGetErrorString(e));
    return Status::Ok();
  }

 private:
  int m_, n_, k_;
  bool bias_;
  float alpha_;
  bool pdl_;  // launched with programmatic dependent launch (pdl_gemm_enabled() when made)
  int device_ = 0, sms_ = 0;
  G gemm_;
  typename G::Arguments args_{};
  size_t need_ = 0;  // workspace bytes (stream-K: partial sums and flags)
  bool ready_ = false;
  const void *a_ = nullptr, *b_ = nullptr, *bias_ptr_ = nullptr, *c_ = nullptr;
  void *d_ = nullptr, *ws_ = nullptr;
  CutlassRowNorm norm_{};
};

using Coop = cutlass::gemm::KernelTmaWarpSpecializedCooperative;
using CoopEpi = cutlass::epilogue::TmaWarpSpecializedCooperative;
using Ping = cutlass::gemm::KernelTmaWarpSpecializedPingpong;
using PingEpi = cutlass::epilogue::TmaWarpSpecialized;

// Erf GELU for the epilogue as x sigma(L(x)) (gelu_sigmoid.h): an exp2, a reciprocal and seven other operations,
// which the ping-pong kernels hide under the other warp group's main loop.
template <typename T>
struct GeluFast {
  static const bool kIsHeavy = true;
  CUTLASS_DEVICE T operator()(T const& value) const {
    return static_cast<T>(gelu_sigmoid_form(static_cast<float>(value)));
  }
};

template <typename T, int N>
struct GeluFast<cutlass::Array<T, N>> {
  static const bool kIsHeavy = true;
  CUTLASS_DEVICE cutlass::Array<T, N> operator()(cutlass::Array<T, N> const& v) const {
    cutlass::Array<T, N> y;
    GeluFast<T> op;
    CUTLASS_PRAGMA_UNROLL
    for (int i = 0; i < N; ++i) y[i] = op(v[i]);
    return y;
  }
};

template <typename T, class Tile, class KS, class ES, class Cluster = cute::Shape<cute::_1, cute::_1, cute::_1>>
using GeluGemm = ActGemm<T, GeluFast, cutlass::layout::RowMajor, Tile, KS, ES, Cluster>;
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
    case 8: return build<GeluGemm<T, Shape<_128, _192, _64>, Ping, PingEpi>, T>(m, n, k, bias, alpha);
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

// D's rows of any width (OddGemm, B stored [N, K]): configurations 1 (cooperative 128x256: the large tile of the
// padded route's fastest cuBLASLt kernels) and 4 (ping-pong 128x128: one warp group's epilogue under the other's main
// loop).
template <typename T>
Result<std::unique_ptr<CutlassGemm>> make_odd(int config, int m, int n, int k, bool bias, float alpha) {
  using namespace cute;
  if (bias) return unsupported("the CUTLASS odd-width GEMM adds no bias");
  switch (config) {
    case 1: return build<OddGemm<T, Shape<_128, _256, _64>, Coop>, T>(m, n, k, false, alpha);
    case 4: return build<OddGemm<T, Shape<_128, _128, _64>, Ping>, T>(m, n, k, false, alpha);
    default: return unsupported("no CUTLASS odd-width GEMM configuration " + std::to_string(config));
  }
}

// A's rows standardized (a folded LayerNorm), bias, no activation or erf GELU, B [K, N]: configurations 0, 1, 3.
template <typename T, template <class> class Act>
Result<std::unique_ptr<CutlassGemm>> make_norm(int config, int m, int n, int k, bool bias) {
  using namespace cute;
  switch (config) {
    case 0: return build<NormGemm<T, Act, Shape<_128, _128, _64>, Coop, CoopEpi>, T>(m, n, k, bias, 1.f);
    case 1: return build<NormGemm<T, Act, Shape<_128, _256, _64>, Coop, CoopEpi>, T>(m, n, k, bias, 1.f);
    case 3:
      return build<NormGemm<T, Act, Shape<_256, _128, _64>, Coop, CoopEpi, Shape<_2, _1, _1>>, T>(m, n, k, bias, 1.f);
    default: return unsupported("no CUTLASS folded-LayerNorm GEMM configuration " + std::to_string(config));
  }
}

}  // namespace kiln::cuda::cutlass_impl
