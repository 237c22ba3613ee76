// Ops on integer inputs: ConvInteger and MatMulInteger (zero points, int32 results) and TfIdfVectorizer (n-gram
// counts over integer token ids).
#include <algorithm>
#include <map>

#include "ops/window_util.h"

namespace kiln::ops {
namespace {

bool is_8bit(DataType t) { return t == DataType::kUINT8 || t == DataType::kINT8; }

Status check_8bit(const std::string& op, const TensorInfo& t, const char* what) {
  if (!is_8bit(t.dtype))
    return invalid_model(op + ": " + what + " must be uint8 or int8 but is " + dtype_name(t.dtype));
  return Status::Ok();
}

// A zero point must share its data operand's type (the spec ties them to one type variable).
Status check_zero_point(InferContext& ctx, const std::string& op, int data, int zp, const char* what) {
  if (ctx.has_input(zp) && ctx.input(zp).dtype != ctx.input(data).dtype)
    return invalid_model(op + ": " + what + " must have the type of its operand (" + dtype_name(ctx.input(data).dtype) +
                         ") but is " + dtype_name(ctx.input(zp).dtype));
  return Status::Ok();
}

// Zero points widened to int32 and read per index; a scalar (or absent) zero point serves every index.
struct ZeroPoint {
  std::vector<int32_t> v;
  int32_t at(int64_t i) const { return v.size() == 1 ? v[0] : v[static_cast<size_t>(i)]; }
};

Result<ZeroPoint> read_zero_point(const std::string& op, const ComputeContext& ctx, int idx, int64_t per_count,
                                  const char* what, const char* per_what) {
  ZeroPoint z;
  if (!ctx.has_input(idx) || ctx.input(idx).numel() == 0) {
    z.v = {0};
    return z;
  }
  const Tensor& t = ctx.input(idx);
  if (t.numel() != 1 && t.numel() != per_count)
    return invalid_argument(op + ": " + what + " must be a scalar or have " + std::to_string(per_count) +
                            " elements (" + per_what + "), got shape " + dims_to_string(t.shape()));
  for (int64_t i = 0; i < t.numel(); ++i) z.v.push_back(static_cast<int32_t>(t.get_i64(i)));
  return z;
}

// Both 8-bit types widened once, so the inner loops are type-free.
std::vector<int32_t> widen(const Tensor& t) {
  std::vector<int32_t> out(static_cast<size_t>(t.numel()));
  if (t.dtype() == DataType::kUINT8) std::copy_n(t.data<uint8_t>(), t.numel(), out.begin());
  else std::copy_n(t.data<int8_t>(), t.numel(), out.begin());
  return out;
}

Status infer_matmul_like(InferContext& ctx, const std::string& op) {
  TensorInfo& o = ctx.output(0);
  o.dtype = DataType::kINT32;
  const TensorInfo &a = ctx.input(0), &b = ctx.input(1);
  if (!a.rank_known || !b.rank_known) { o.rank_known = false; return Status::Ok(); }
  if (a.shape.empty() || b.shape.empty()) return invalid_model(op + ": inputs must have rank >= 1");
  Shape a2 = a.shape, b2 = b.shape;
  if (a2.size() == 1) a2.insert(a2.begin(), Dim(1));
  if (b2.size() == 1) b2.push_back(Dim(1));
  const Dim &ka = a2.back(), &kb = b2[b2.size() - 2];
  if (ka.is_static() && kb.is_static() && ka.value != kb.value)
    return invalid_model(op + ": inner dimensions differ: " + shape_to_string(a.shape) + " x " + shape_to_string(b.shape));
  ctx.require_equal(ka, kb);
  KILN_ASSIGN_OR_RETURN(o.shape,
                        broadcast_shapes({Shape(a2.begin(), a2.end() - 2), Shape(b2.begin(), b2.end() - 2)}, &ctx));
  if (a.shape.size() > 1) o.shape.push_back(a2[a2.size() - 2]);
  if (b.shape.size() > 1) o.shape.push_back(b2.back());
  return Status::Ok();
}

}  // namespace

KILN_REGISTER_OP(MatMulInteger) {
  OpSchema s;
  s.name = "MatMulInteger";
  s.since_opset = 10;
  s.min_inputs = 2;
  s.max_inputs = 4;  // A, B, a_zero_point, b_zero_point
  s.dtypes = {DataType::kUINT8, DataType::kINT8};
  s.infer = [](InferContext& ctx) -> Status {
    const std::string op = "MatMulInteger";
    KILN_RETURN_IF_ERROR(check_8bit(op, ctx.input(0), "A"));
    KILN_RETURN_IF_ERROR(check_8bit(op, ctx.input(1), "B"));
    KILN_RETURN_IF_ERROR(check_zero_point(ctx, op, 0, 2, "a_zero_point"));
    KILN_RETURN_IF_ERROR(check_zero_point(ctx, op, 1, 3, "b_zero_point"));
    return infer_matmul_like(ctx, op);
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "MatMulInteger";
    const Tensor &a = ctx.input(0), &b = ctx.input(1);
    if (a.rank() < 1 || b.rank() < 1) return invalid_argument(op + ": inputs must have rank >= 1");
    std::vector<int64_t> as = a.shape(), bs = b.shape();
    if (as.size() == 1) as.insert(as.begin(), 1);
    if (bs.size() == 1) bs.push_back(1);
    const int64_t m = as[as.size() - 2], k = as.back(), n = bs.back();
    if (bs[bs.size() - 2] != k)
      return invalid_argument(op + ": inner dimensions differ: " + dims_to_string(a.shape()) + " x " +
                              dims_to_string(b.shape()));
    // Per-row zero points of A follow its M axis, per-column ones of B its N axis.
    KILN_ASSIGN_OR_RETURN(ZeroPoint za, read_zero_point(op, ctx, 2, m, "a_zero_point", "one per row of A"));
    KILN_ASSIGN_OR_RETURN(ZeroPoint zb, read_zero_point(op, ctx, 3, n, "b_zero_point", "one per column of B"));
    std::vector<int64_t> ab(as.begin(), as.end() - 2), bb(bs.begin(), bs.end() - 2);
    KILN_ASSIGN_OR_RETURN(auto batch, broadcast_dims({ab, bb}));
    const auto ast = broadcast_strides(ab, batch), bst = broadcast_strides(bb, batch);
    std::vector<int64_t> out_shape = batch;
    if (a.rank() > 1) out_shape.push_back(m);
    if (b.rank() > 1) out_shape.push_back(n);
    const std::vector<int32_t> av = widen(a), bv = widen(b);
    Tensor& y = ctx.allocate_output(0, DataType::kINT32, out_shape);
    int32_t* yp = y.data<int32_t>();
    const int64_t nb = product(batch);
    std::vector<int32_t> arow(static_cast<size_t>(k));
    for (int64_t bi = 0; bi < nb; ++bi) {
      int64_t aoff = 0, boff = 0;
      for (int64_t d = static_cast<int64_t>(batch.size()) - 1, rem = bi; d >= 0; --d) {
        const int64_t c = rem % batch[d];
        rem /= batch[d];
        aoff += c * ast[d];
        boff += c * bst[d];
      }
      const int32_t* ap = av.data() + aoff * m * k;
      const int32_t* bp = bv.data() + boff * k * n;
      for (int64_t r = 0; r < m; ++r) {
        for (int64_t t = 0; t < k; ++t) arow[t] = ap[r * k + t] - za.at(r);
        int32_t* yr = yp + (bi * m + r) * n;
        std::fill_n(yr, n, 0);
        for (int64_t t = 0; t < k; ++t) {
          const int32_t x = arow[t];
          for (int64_t c = 0; c < n; ++c) yr[c] += x * (bp[t * n + c] - zb.at(c));
        }
      }
    }
    return Status::Ok();
  };
  return s;
}

KILN_REGISTER_OP(ConvInteger) {
  OpSchema s;
  s.name = "ConvInteger";
  s.since_opset = 10;
  s.min_inputs = 2;
  s.max_inputs = 4;  // x, w, x_zero_point, w_zero_point
  s.attrs = {{"auto_pad", AttrType::kSTRING}, {"dilations", AttrType::kINTS}, {"group", AttrType::kINT},
             {"kernel_shape", AttrType::kINTS}, {"pads", AttrType::kINTS}, {"strides", AttrType::kINTS}};
  s.dtypes = {DataType::kUINT8, DataType::kINT8};
  s.infer = [](InferContext& ctx) -> Status {
    const std::string op = "ConvInteger";
    const TensorInfo &x = ctx.input(0), &w = ctx.input(1);
    KILN_RETURN_IF_ERROR(check_8bit(op, x, "x"));
    KILN_RETURN_IF_ERROR(check_8bit(op, w, "w"));
    KILN_RETURN_IF_ERROR(check_zero_point(ctx, op, 0, 2, "x_zero_point"));
    KILN_RETURN_IF_ERROR(check_zero_point(ctx, op, 1, 3, "w_zero_point"));
    TensorInfo& o = ctx.output(0);
    o.dtype = DataType::kINT32;
    if (!x.rank_known || !w.rank_known) { o.rank_known = false; return Status::Ok(); }
    if (x.shape.size() < 3 || w.shape.size() != x.shape.size())
      return invalid_model(op + ": x " + shape_to_string(x.shape) + " and w " + shape_to_string(w.shape) +
                           " must have the same rank >= 3");
    const int nsp = static_cast<int>(x.shape.size()) - 2;
    const std::vector<int64_t> w_sp = static_dims(Shape(w.shape.begin() + 2, w.shape.end()));
    const bool kernel_known = ctx.attrs().has("kernel_shape") ||
                              std::none_of(w_sp.begin(), w_sp.end(), [](int64_t d) { return d < 0; });
    if (!kernel_known) {
      o.shape = {x.shape[0], w.shape[0]};
      for (int i = 0; i < nsp; ++i) o.shape.push_back(ctx.fresh_dim());
      return Status::Ok();
    }
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window(op, ctx.attrs(), nsp, &w_sp));
    KILN_ASSIGN_OR_RETURN(o.shape, window_out_shape(op, ctx, p, x.shape, w.shape[0]));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "ConvInteger";
    const Tensor &x = ctx.input(0), &w = ctx.input(1);
    if (x.rank() < 3 || w.rank() != x.rank())
      return invalid_argument(op + ": x " + dims_to_string(x.shape()) + " and w " + dims_to_string(w.shape()) +
                              " must have the same rank >= 3");
    KILN_ASSIGN_OR_RETURN(int64_t group, ctx.attrs().get_int("group", 1));
    const int64_t n = x.dim(0), c = x.dim(1), m = w.dim(0), cg = w.dim(1);
    if (group <= 0 || c != cg * group || m % group != 0)
      return invalid_argument(op + ": " + std::to_string(c) + " input channels and weights " + dims_to_string(w.shape()) +
                              " do not fit group " + std::to_string(group));
    const int nsp = x.rank() - 2;
    const std::vector<int64_t> in_sp(x.shape().begin() + 2, x.shape().end()), w_sp(w.shape().begin() + 2, w.shape().end());
    KILN_ASSIGN_OR_RETURN(WindowParams p, parse_window(op, ctx.attrs(), nsp, &w_sp));
    if (p.kernel != w_sp)
      return invalid_argument(op + ": kernel_shape " + dims_to_string(p.kernel) + " does not match the weights' " +
                              dims_to_string(w_sp));
    std::vector<int64_t> out_sp(nsp);
    for (int i = 0; i < nsp; ++i) {
      KILN_ASSIGN_OR_RETURN(out_sp[i], window_out_size(op, p, i, in_sp[i]));
    }
    KILN_ASSIGN_OR_RETURN(ZeroPoint zx, read_zero_point(op, ctx, 2, 1, "x_zero_point", "per tensor only"));
    KILN_ASSIGN_OR_RETURN(ZeroPoint zw, read_zero_point(op, ctx, 3, m, "w_zero_point", "one per output channel"));
    const std::vector<int32_t> xv = widen(x), wv = widen(w);
    std::vector<int64_t> out_shape = {n, m};
    out_shape.insert(out_shape.end(), out_sp.begin(), out_sp.end());
    Tensor& y = ctx.allocate_output(0, DataType::kINT32, out_shape);
    int32_t* yp = y.data<int32_t>();
    const int64_t out_vol = product(out_sp), k_vol = product(w_sp), in_vol = product(in_sp), mg = m / group;
    const int32_t xz = zx.at(0);
    // Input offset of every (output position, kernel tap), -1 where the tap lands in padding: padding holds
    // the zero point, i.e. real zero, so it contributes nothing.
    std::vector<int64_t> tap(static_cast<size_t>(out_vol * k_vol));
    std::vector<int64_t> opos(nsp), kpos(nsp);
    for (int64_t o = 0; o < out_vol; ++o) {
      for (int64_t d = nsp - 1, rem = o; d >= 0; --d) { opos[d] = rem % out_sp[d]; rem /= out_sp[d]; }
      for (int64_t kk = 0; kk < k_vol; ++kk) {
        for (int64_t d = nsp - 1, rem = kk; d >= 0; --d) { kpos[d] = rem % w_sp[d]; rem /= w_sp[d]; }
        int64_t off = 0;
        bool inside = true;
        for (int d = 0; d < nsp && inside; ++d) {
          const int64_t pos = opos[d] * p.strides[d] - p.pads[d] + kpos[d] * p.dilations[d];
          inside = pos >= 0 && pos < in_sp[d];
          off = off * in_sp[d] + pos;
        }
        tap[o * k_vol + kk] = inside ? off : -1;
      }
    }
    for (int64_t b = 0; b < n; ++b)
      for (int64_t oc = 0; oc < m; ++oc) {
        const int64_t grp = oc / mg;
        const int32_t wz = zw.at(oc);
        int32_t* yo = yp + (b * m + oc) * out_vol;
        for (int64_t kc = 0; kc < cg; ++kc) {
          const int32_t* xc = xv.data() + (b * c + grp * cg + kc) * in_vol;
          const int32_t* wc = wv.data() + (oc * cg + kc) * k_vol;
          for (int64_t o = 0; o < out_vol; ++o) {
            int32_t acc = 0;
            const int64_t* t = tap.data() + o * k_vol;
            for (int64_t kk = 0; kk < k_vol; ++kk)
              if (t[kk] >= 0) acc += (xc[t[kk]] - xz) * (wc[kk] - wz);
            yo[o] += acc;
          }
        }
      }
    return Status::Ok();
  };
  return s;
}

namespace {

enum class TfIdfMode { kTF, kIDF, kTFIDF };

// The n-gram pool of one TfIdfVectorizer node, decoded from its attributes.
struct NgramPool {
  int64_t min_gram = 1, max_gram = 1, max_skip = 0, out_size = 0;
  TfIdfMode mode = TfIdfMode::kTF;
  std::map<std::vector<int64_t>, int64_t> slot;  // n-gram -> output column
  std::vector<float> weights;                     // per output column; empty = all 1
};

Result<NgramPool> read_ngram_pool(const Attributes& at) {
  const std::string op = "TfIdfVectorizer";
  NgramPool p;
  if (at.has("pool_strings"))
    return unsupported(op + ": string n-gram pools (pool_strings) are not supported; only integer token ids are");
  KILN_ASSIGN_OR_RETURN(p.min_gram, at.get_int("min_gram_length"));
  KILN_ASSIGN_OR_RETURN(p.max_gram, at.get_int("max_gram_length"));
  KILN_ASSIGN_OR_RETURN(p.max_skip, at.get_int("max_skip_count"));
  if (p.min_gram < 1 || p.max_gram < p.min_gram || p.max_skip < 0)
    return invalid_model(op + ": need 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0, got " +
                         std::to_string(p.min_gram) + ", " + std::to_string(p.max_gram) + ", " + std::to_string(p.max_skip));
  KILN_ASSIGN_OR_RETURN(std::string mode, at.get_string("mode"));
  if (mode == "TF") p.mode = TfIdfMode::kTF;
  else if (mode == "IDF") p.mode = TfIdfMode::kIDF;
  else if (mode == "TFIDF") p.mode = TfIdfMode::kTFIDF;
  else return invalid_model(op + ": mode must be one of TF, IDF, TFIDF but is \"" + mode + "\"");
  KILN_ASSIGN_OR_RETURN(auto counts, at.get_ints("ngram_counts"));
  KILN_ASSIGN_OR_RETURN(auto indexes, at.get_ints("ngram_indexes"));
  KILN_ASSIGN_OR_RETURN(auto pool, at.get_ints("pool_int64s", {}));
  KILN_ASSIGN_OR_RETURN(p.weights, at.get_floats("weights", {}));
  for (int64_t ix : indexes) {
    if (ix < 0) return invalid_model(op + ": ngram_indexes must be >= 0, got " + std::to_string(ix));
    p.out_size = std::max(p.out_size, ix + 1);
  }
  // ngram_counts[i] is where the (i+1)-grams start in the pool; n-grams are numbered in pool order.
  size_t id = 0;
  const int64_t pool_size = static_cast<int64_t>(pool.size());
  for (size_t i = 0; i < counts.size(); ++i) {
    const int64_t len = static_cast<int64_t>(i) + 1;
    const int64_t begin = counts[i], end = i + 1 < counts.size() ? counts[i + 1] : pool_size;
    if (begin < 0 || end < begin || end > pool_size || (end - begin) % len != 0)
      return invalid_model(op + ": ngram_counts " + dims_to_string(counts) + " do not split a pool of " +
                           std::to_string(pool_size) + " ids into whole n-grams");
    for (int64_t g = begin; g < end; g += len, ++id) {
      if (id >= indexes.size())
        return invalid_model(op + ": ngram_indexes has " + std::to_string(indexes.size()) +
                             " entries but the pool holds more n-grams");
      p.slot[std::vector<int64_t>(pool.begin() + g, pool.begin() + g + len)] = indexes[id];
    }
  }
  if (!p.weights.empty() && static_cast<int64_t>(p.weights.size()) < p.out_size)
    return invalid_model(op + ": weights has " + std::to_string(p.weights.size()) + " entries for " +
                         std::to_string(p.out_size) + " output columns");
  return p;
}

// Counts the pooled n-grams of one row. Every skip distance from 1 to max_skip+1 is tried, but unigrams do not
// depend on it, so they are counted on the first pass only.
void count_ngrams(const NgramPool& p, const int64_t* row, int64_t len, float* out) {
  std::vector<int64_t> gram;
  int64_t first_size = p.min_gram;
  for (int64_t dist = 1; dist <= p.max_skip + 1; ++dist) {
    for (int64_t start = 0; start < len; ++start) {
      gram.clear();
      for (int64_t n = 1; n <= p.max_gram; ++n) {
        const int64_t at = start + (n - 1) * dist;
        if (at >= len) break;
        gram.push_back(row[at]);
        if (n < first_size) continue;
        auto it = p.slot.find(gram);
        if (it != p.slot.end()) out[it->second] += 1.0f;
      }
    }
    if (first_size == 1 && ++first_size > p.max_gram) break;
  }
}

}  // namespace

KILN_REGISTER_OP(TfIdfVectorizer) {
  OpSchema s;
  s.name = "TfIdfVectorizer";
  s.since_opset = 9;
  s.min_inputs = s.max_inputs = 1;
  s.attrs = {{"max_gram_length", AttrType::kINT, AttrRequirement::kRequired},
             {"max_skip_count", AttrType::kINT, AttrRequirement::kRequired},
             {"min_gram_length", AttrType::kINT, AttrRequirement::kRequired},
             {"mode", AttrType::kSTRING, AttrRequirement::kRequired},
             {"ngram_counts", AttrType::kINTS, AttrRequirement::kRequired},
             {"ngram_indexes", AttrType::kINTS, AttrRequirement::kRequired},
             {"pool_int64s", AttrType::kINTS},
             {"pool_strings", AttrType::kSTRINGS},
             {"weights", AttrType::kFLOATS}};
  s.dtypes = {DataType::kINT32, DataType::kINT64};
  s.infer = [](InferContext& ctx) -> Status {
    const std::string op = "TfIdfVectorizer";
    KILN_ASSIGN_OR_RETURN(NgramPool p, read_ngram_pool(ctx.attrs()));
    const TensorInfo& x = ctx.input(0);
    if (x.dtype != DataType::kINT32 && x.dtype != DataType::kINT64)
      return unsupported(op + ": input type " + dtype_name(x.dtype) + " is not supported (int32 and int64 are; "
                         "string inputs are not)");
    TensorInfo& o = ctx.output(0);
    o.dtype = DataType::kFLOAT;
    if (!x.rank_known) { o.rank_known = false; return Status::Ok(); }
    if (x.shape.size() == 1) o.shape = {Dim(p.out_size)};
    else if (x.shape.size() == 2) o.shape = {x.shape[0], Dim(p.out_size)};
    else return invalid_model(op + ": input must have rank 1 [C] or 2 [N, C], got " + shape_to_string(x.shape));
    return Status::Ok();
  };
  s.compute = [](ComputeContext& ctx) -> Status {
    const std::string op = "TfIdfVectorizer";
    KILN_ASSIGN_OR_RETURN(NgramPool p, read_ngram_pool(ctx.attrs()));
    const Tensor& x = ctx.input(0);
    if (x.dtype() != DataType::kINT32 && x.dtype() != DataType::kINT64)
      return unsupported(op + ": input type " + dtype_name(x.dtype()) + " is not supported (int32 and int64 are)");
    if (x.rank() != 1 && x.rank() != 2)
      return invalid_argument(op + ": input must have rank 1 [C] or 2 [N, C], got " + dims_to_string(x.shape()));
    const int64_t rows = x.rank() == 2 ? x.dim(0) : 1, len = x.dim(-1);
    const std::vector<int64_t> ids = x.to_i64_vector();
    std::vector<int64_t> out_shape = {p.out_size};
    if (x.rank() == 2) out_shape.insert(out_shape.begin(), rows);
    Tensor& y = ctx.allocate_output(0, DataType::kFLOAT, out_shape);
    float* yp = y.data<float>();
    for (int64_t r = 0; r < rows; ++r) {
      float* out = yp + r * p.out_size;
      count_ngrams(p, ids.data() + r * len, len, out);
      // Weights are per output column, as the ONNX reference and onnxruntime index them.
      for (int64_t k = 0; k < p.out_size; ++k) {
        const float w = p.weights.empty() ? 1.0f : p.weights[k];
        if (p.mode == TfIdfMode::kIDF) out[k] = out[k] > 0 ? w : 0.0f;
        else if (p.mode == TfIdfMode::kTFIDF) out[k] *= w;
      }
    }
    return Status::Ok();
  };
  return s;
}

}  // namespace kiln::ops
