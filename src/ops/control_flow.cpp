// Control flow with subgraph bodies: If, Loop and Scan (Scan 8's batched form and Scan 9+'s axes).
#include <algorithm>
#include <cstring>
#include <limits>

#include "ops/op_util.h"

namespace kiln::ops {
namespace {

// Unknown dims of a body's port are fresh in the enclosing graph: each run may give a different size. The
// tensors of a sequence or optional may differ from one another, so theirs stay unknown.
TensorInfo port_info(const GraphPort& p, InferContext& ctx) {
  TensorInfo t;
  t.kind = p.kind;
  t.dtype = p.dtype;
  t.rank_known = p.rank_known;
  for (int64_t d : p.dims) t.shape.push_back(d >= 0 ? Dim(d) : p.kind == ValueKind::kTENSOR ? ctx.fresh_dim() : Dim());
  return t;
}

// What holds for both of two values (If's branches; a Loop-carried value before and after an iteration). The kind
// is b's: the body output's, which is what a loop-carried value is once the body ran (see coerce_kind).
TensorInfo merge_infos(const TensorInfo& a, const TensorInfo& b, InferContext& ctx) {
  TensorInfo t;
  t.kind = b.kind;
  t.dtype = a.dtype;
  t.rank_known = a.rank_known && b.rank_known && a.shape.size() == b.shape.size();
  if (!t.rank_known) return t;
  for (size_t i = 0; i < a.shape.size(); ++i)
    t.shape.push_back(a.shape[i] == b.shape[i] ? a.shape[i] : a.kind == ValueKind::kTENSOR ? ctx.fresh_dim() : Dim());
  return t;
}

// A body output stacked over iterations along `axis` (counted in the result's rank).
Result<TensorInfo> stacked_info(const GraphPort& p, int64_t axis, Dim count, InferContext& ctx) {
  if (p.kind != ValueKind::kTENSOR)
    return unsupported("body output '" + p.name + "' is " + a_kind(p.kind) +
                       "; scan outputs stack tensors only");
  TensorInfo t = port_info(p, ctx);
  if (!t.rank_known) return t;
  KILN_ASSIGN_OR_RETURN(int64_t a, normalize_axis(axis, static_cast<int64_t>(t.shape.size()) + 1, "scan output axis"));
  t.shape.insert(t.shape.begin() + a, count);
  return t;
}

bool truthy(const Tensor& t) { return t.numel() > 0 && t.get_f64(0) != 0; }

bool is_optional(ValueKind k) { return k == ValueKind::kOPTIONAL_TENSOR || k == ValueKind::kOPTIONAL_SEQUENCE; }

// ONNX lets a loop-carried value pass between optional and plain form (a body may take optional(seq) and return
// seq): wraps or unwraps v into the kind its receiver declares. An empty optional has no plain form.
Result<Tensor> coerce_kind(Tensor v, ValueKind want, const std::string& what) {
  if (v.kind() == want) return v;
  auto plain = [](ValueKind k) { return k == ValueKind::kOPTIONAL_SEQUENCE ? ValueKind::kSEQUENCE : ValueKind::kTENSOR; };
  if (is_optional(want) && !is_optional(v.kind()) && plain(want) == v.kind()) {
    DataType dt = v.dtype();
    return Tensor::optional(want, dt, std::move(v));
  }
  if (!is_optional(want) && is_optional(v.kind()) && plain(v.kind()) == want) {
    if (v.items().empty()) return invalid_argument(what + " is an empty optional but must be " + a_kind(want));
    return v.items()[0];
  }
  return invalid_argument(what + " is " + a_kind(v.kind()) + " but must be " + a_kind(want));
}

// The slice t[..., index, ...] along axis, with that axis removed.
Tensor take_slice(const Tensor& t, int axis, int64_t index) {
  std::vector<int64_t> shape = t.shape();
  int64_t len = shape[axis];
  shape.erase(shape.begin() + axis);
  Tensor out(t.dtype(), shape);
  size_t inner = static_cast<size_t>(product(t.shape(), axis + 1)) * dtype_size(t.dtype());
  int64_t outer = product(t.shape(), 0, axis);
  auto* dst = static_cast<uint8_t*>(out.raw());
  auto* src = static_cast<const uint8_t*>(t.raw());
  for (int64_t o = 0; o < outer; ++o) std::memcpy(dst + o * inner, src + (o * len + index) * inner, inner);
  return out;
}

// Stacks equally shaped parts along a new axis; `empty_part` gives the part shape when there are none.
Result<Tensor> stack(const std::vector<Tensor>& parts, int64_t axis, DataType dtype, std::vector<int64_t> empty_part) {
  std::vector<int64_t> part = parts.empty() ? std::move(empty_part) : parts[0].shape();
  KILN_ASSIGN_OR_RETURN(int64_t a, normalize_axis(axis, static_cast<int64_t>(part.size()) + 1, "scan output axis"));
  for (auto& p : parts)
    if (p.shape() != part || p.dtype() != parts[0].dtype())
      return invalid_argument("iterations produced scan output slices of different shapes or types (" +
                              dims_to_string(part) + " and " + dims_to_string(p.shape()) + ")");
  if (!parts.empty()) dtype = parts[0].dtype();
  std::vector<int64_t> shape = part;
  shape.insert(shape.begin() + a, static_cast<int64_t>(parts.size()));
  Tensor out(dtype, shape);
  size_t inner = static_cast<size_t>(product(part, a)) * dtype_size(dtype);
  int64_t outer = product(part, 0, a), n = static_cast<int64_t>(parts.size());
  auto* dst = static_cast<uint8_t*>(out.raw());
  for (int64_t o = 0; o < outer; ++o)
    for (int64_t k = 0; k < n; ++k)
      std::memcpy(dst + (o * n + k) * inner, static_cast<const uint8_t*>(parts[k].raw()) + o * inner, inner);
  return out;
}

// Part shape for a scan output that no iteration produced: the body's declared dims, unknown ones as 0.
std::vector<int64_t> empty_part_shape(const GraphPort& p) {
  std::vector<int64_t> d;
  for (int64_t x : p.dims) d.push_back(x >= 0 ? x : 0);
  return d;
}

Result<std::vector<GraphPort>> body_outputs(const Attributes& attrs, const std::string& name, size_t expected) {
  KILN_ASSIGN_OR_RETURN(auto g, attrs.get_graph(name));
  auto ports = g->output_ports();
  if (ports.size() != expected)
    return invalid_model("subgraph '" + name + "' has " + std::to_string(ports.size()) + " outputs but the node needs " +
                         std::to_string(expected));
  return ports;
}

// ---- If ----

Status if_infer(InferContext& ctx) {
  KILN_ASSIGN_OR_RETURN(auto then_ports, body_outputs(ctx.attrs(), "then_branch", ctx.num_outputs()));
  KILN_ASSIGN_OR_RETURN(auto else_ports, body_outputs(ctx.attrs(), "else_branch", ctx.num_outputs()));
  for (int k = 0; k < ctx.num_outputs(); ++k) {
    if (then_ports[k].kind != else_ports[k].kind)
      return invalid_model("output " + std::to_string(k) + " is " + a_kind(then_ports[k].kind) +
                           " in then_branch but " + a_kind(else_ports[k].kind) + " in else_branch");
    if (then_ports[k].dtype != else_ports[k].dtype)
      return invalid_model("output " + std::to_string(k) + " is " + dtype_name(then_ports[k].dtype) +
                           " in then_branch but " + dtype_name(else_ports[k].dtype) + " in else_branch");
    ctx.output(k) = merge_infos(port_info(then_ports[k], ctx), port_info(else_ports[k], ctx), ctx);
  }
  return Status::Ok();
}

Status if_compute(ComputeContext& ctx) {
  if (ctx.input(0).numel() != 1)
    return invalid_argument("cond must hold one element, found shape " + dims_to_string(ctx.input(0).shape()));
  const char* branch = truthy(ctx.input(0)) ? "then_branch" : "else_branch";
  KILN_ASSIGN_OR_RETURN(auto outs, ctx.run_subgraph(branch, {}));
  if (static_cast<int>(outs.size()) != ctx.num_outputs())
    return invalid_model(std::string(branch) + " produced " + std::to_string(outs.size()) + " outputs, expected " +
                         std::to_string(ctx.num_outputs()));
  for (int k = 0; k < ctx.num_outputs(); ++k) ctx.set_output(k, std::move(outs[k]));
  return Status::Ok();
}

// ---- Loop: inputs (M, cond, v_initial...), body (iter, cond, v...) -> (cond, v..., scan...) ----

Status loop_infer(InferContext& ctx) {
  const int n = ctx.num_inputs() - 2;
  if (n < 0 || n > ctx.num_outputs())
    return invalid_model("Loop has " + std::to_string(n) + " loop-carried inputs but " +
                         std::to_string(ctx.num_outputs()) + " outputs");
  KILN_ASSIGN_OR_RETURN(auto ports, body_outputs(ctx.attrs(), "body", 1 + ctx.num_outputs()));
  for (int k = 0; k < n; ++k) {
    if (!ctx.has_input(2 + k)) return invalid_model("loop-carried input " + std::to_string(k) + " is omitted");
    ctx.output(k) = merge_infos(ctx.input(2 + k), port_info(ports[1 + k], ctx), ctx);
  }
  for (int k = n; k < ctx.num_outputs(); ++k) {
    KILN_ASSIGN_OR_RETURN(ctx.output(k), stacked_info(ports[1 + k], 0, ctx.fresh_dim(), ctx));
  }
  return Status::Ok();
}

Status loop_compute(ComputeContext& ctx) {
  const int n = ctx.num_inputs() - 2, k_scan = ctx.num_outputs() - n;
  int64_t max_trip = std::numeric_limits<int64_t>::max();
  if (ctx.has_input(0)) {
    if (ctx.input(0).numel() != 1) return invalid_argument("M must hold one element");
    max_trip = ctx.input(0).get_i64(0);
  }
  Tensor cond = Tensor::from_vector<bool>({}, {true});
  if (ctx.has_input(1)) {
    if (ctx.input(1).numel() != 1) return invalid_argument("cond must hold one element");
    cond = ctx.input(1);
  }
  std::vector<Tensor> carried;
  for (int k = 0; k < n; ++k) carried.push_back(ctx.input(2 + k));
  KILN_ASSIGN_OR_RETURN(auto body, ctx.attrs().get_graph("body"));
  const std::vector<GraphPort> in_ports = body->input_ports();
  KILN_ASSIGN_OR_RETURN(auto out_ports, body_outputs(ctx.attrs(), "body", 1 + n + k_scan));
  std::vector<std::vector<Tensor>> scans(k_scan);
  for (int64_t i = 0; i < max_trip && truthy(cond); ++i) {
    std::vector<Tensor> in = {Tensor::scalar_i64(i), cond};
    for (int k = 0; k < n; ++k) {
      if (static_cast<int>(in_ports.size()) != 2 + n) {
        in.push_back(carried[k]);
        continue;
      }
      KILN_ASSIGN_OR_RETURN(Tensor v, coerce_kind(carried[k], in_ports[2 + k].kind, "loop-carried value " + std::to_string(k)));
      in.push_back(std::move(v));
    }
    KILN_ASSIGN_OR_RETURN(auto outs, ctx.run_subgraph("body", std::move(in)));
    if (static_cast<int>(outs.size()) != 1 + n + k_scan)
      return invalid_model("body produced " + std::to_string(outs.size()) + " outputs, expected " +
                           std::to_string(1 + n + k_scan));
    cond = outs[0];
    for (int k = 0; k < n; ++k) carried[k] = std::move(outs[1 + k]);
    for (int k = 0; k < k_scan; ++k) scans[k].push_back(std::move(outs[1 + n + k]));
  }
  for (int k = 0; k < n; ++k) {
    KILN_ASSIGN_OR_RETURN(Tensor v, coerce_kind(std::move(carried[k]), out_ports[1 + k].kind,
                                                "loop-carried value " + std::to_string(k)));
    ctx.set_output(k, std::move(v));
  }
  for (int k = 0; k < k_scan; ++k) {
    const GraphPort& p = out_ports[1 + n + k];
    KILN_ASSIGN_OR_RETURN(Tensor t, stack(scans[k], 0, p.dtype, empty_part_shape(p)));
    ctx.set_output(n + k, std::move(t));
  }
  return Status::Ok();
}

// ---- Scan ----

struct ScanAttrs {
  int64_t num_scan_inputs = 0;
  std::vector<int64_t> in_dirs, out_dirs, in_axes, out_axes;  // one entry per scan input / scan output
};

// Scan 8 has `directions` and a leading batch axis; Scan 9 replaced both with per-input/output directions
// and axes. `num_scan_outputs` sizes the defaults.
Result<ScanAttrs> scan_attrs(const Attributes& attrs, int opset, int num_scan_outputs) {
  ScanAttrs s;
  KILN_ASSIGN_OR_RETURN(s.num_scan_inputs, attrs.get_int("num_scan_inputs"));
  if (s.num_scan_inputs < 1) return invalid_model("num_scan_inputs must be at least 1");
  const auto m = static_cast<size_t>(s.num_scan_inputs), k = static_cast<size_t>(num_scan_outputs);
  if (opset < 9) {
    KILN_ASSIGN_OR_RETURN(s.in_dirs, attrs.get_ints("directions", std::vector<int64_t>(m, 0)));
    s.in_axes.assign(m, 0);
    s.out_dirs.assign(k, 0);
    s.out_axes.assign(k, 0);
  } else {
    KILN_ASSIGN_OR_RETURN(s.in_dirs, attrs.get_ints("scan_input_directions", std::vector<int64_t>(m, 0)));
    KILN_ASSIGN_OR_RETURN(s.out_dirs, attrs.get_ints("scan_output_directions", std::vector<int64_t>(k, 0)));
    KILN_ASSIGN_OR_RETURN(s.in_axes, attrs.get_ints("scan_input_axes", std::vector<int64_t>(m, 0)));
    KILN_ASSIGN_OR_RETURN(s.out_axes, attrs.get_ints("scan_output_axes", std::vector<int64_t>(k, 0)));
  }
  if (s.in_dirs.size() != m || s.in_axes.size() != m)
    return invalid_model("scan input directions/axes need " + std::to_string(m) + " entries");
  if (s.out_dirs.size() != k || s.out_axes.size() != k)
    return invalid_model("scan output directions/axes need " + std::to_string(k) + " entries");
  return s;
}

// Scan 8 takes sequence_lens first; Scan 9 has no such input.
int scan_first_state(int opset) { return opset < 9 ? 1 : 0; }

Status scan_infer(InferContext& ctx) {
  const int first = scan_first_state(ctx.opset());
  KILN_ASSIGN_OR_RETURN(int64_t m, ctx.attrs().get_int("num_scan_inputs"));
  const int n = ctx.num_inputs() - first - static_cast<int>(m);
  if (n < 0 || n > ctx.num_outputs()) return invalid_model("Scan has fewer inputs than num_scan_inputs needs");
  const int k_scan = ctx.num_outputs() - n;
  for (int i = first; i < ctx.num_inputs(); ++i)
    if (!ctx.has_input(i)) return invalid_model("input " + std::to_string(i) + " is omitted, but only sequence_lens may be");
  KILN_ASSIGN_OR_RETURN(ScanAttrs sa, scan_attrs(ctx.attrs(), ctx.opset(), k_scan));
  KILN_ASSIGN_OR_RETURN(auto ports, body_outputs(ctx.attrs(), "body", ctx.num_outputs()));
  for (int k = 0; k < n; ++k) {
    const TensorInfo& in = ctx.input(first + k);
    ctx.output(k) = make_info(in.dtype, in.shape);
    ctx.output(k).rank_known = in.rank_known;
  }
  const TensorInfo& scan0 = ctx.input(first + n);
  Dim len = ctx.fresh_dim(), batch = ctx.fresh_dim();
  if (scan0.rank_known) {
    const int64_t rank = static_cast<int64_t>(scan0.shape.size());
    if (first) {
      if (rank < 2) return invalid_model("Scan 8 inputs need a batch and a sequence axis");
      batch = scan0.shape[0];
      len = scan0.shape[1];
    } else {
      KILN_ASSIGN_OR_RETURN(int64_t a, normalize_axis(sa.in_axes[0], rank, "scan input axis"));
      len = scan0.shape[a];
    }
  }
  for (int k = 0; k < k_scan; ++k) {
    KILN_ASSIGN_OR_RETURN(TensorInfo t, stacked_info(ports[n + k], sa.out_axes[k], len, ctx));
    if (first && t.rank_known) t.shape.insert(t.shape.begin(), batch);
    ctx.output(n + k) = std::move(t);
  }
  return Status::Ok();
}

// One scan over unbatched tensors: the final states, then each scan output.
Result<std::vector<Tensor>> run_scan(const ComputeContext& ctx, const ScanAttrs& sa, std::vector<Tensor> states,
                                     const std::vector<Tensor>& scan_in, const std::vector<GraphPort>& ports) {
  const size_t n = states.size(), k_scan = sa.out_dirs.size();
  std::vector<int> axes;
  int64_t len = -1;
  for (size_t j = 0; j < scan_in.size(); ++j) {
    KILN_ASSIGN_OR_RETURN(int64_t a, normalize_axis(sa.in_axes[j], scan_in[j].rank(), "scan input axis"));
    axes.push_back(static_cast<int>(a));
    if (len >= 0 && scan_in[j].dim(a) != len)
      return invalid_argument("scan inputs have different sequence lengths (" + std::to_string(len) + " and " +
                              std::to_string(scan_in[j].dim(a)) + ")");
    len = scan_in[j].dim(a);
  }
  std::vector<std::vector<Tensor>> parts(k_scan);
  for (int64_t t = 0; t < len; ++t) {
    std::vector<Tensor> in = states;
    for (size_t j = 0; j < scan_in.size(); ++j)
      in.push_back(take_slice(scan_in[j], axes[j], sa.in_dirs[j] ? len - 1 - t : t));
    KILN_ASSIGN_OR_RETURN(auto outs, ctx.run_subgraph("body", std::move(in)));
    if (outs.size() != n + k_scan)
      return invalid_model("body produced " + std::to_string(outs.size()) + " outputs, expected " +
                           std::to_string(n + k_scan));
    for (size_t k = 0; k < n; ++k) states[k] = std::move(outs[k]);
    for (size_t k = 0; k < k_scan; ++k) parts[k].push_back(std::move(outs[n + k]));
  }
  for (size_t k = 0; k < k_scan; ++k) {
    if (sa.out_dirs[k]) std::reverse(parts[k].begin(), parts[k].end());
    const GraphPort& p = ports[n + k];
    KILN_ASSIGN_OR_RETURN(Tensor s, stack(parts[k], sa.out_axes[k], p.dtype, empty_part_shape(p)));
    states.push_back(std::move(s));
  }
  return states;
}

Status scan_compute(ComputeContext& ctx) {
  // Scan slices and stacks tensors; only values its body captures may be sequences or optionals.
  for (int i = 0; i < ctx.num_inputs(); ++i)
    if (ctx.has_input(i) && !ctx.input(i).is_tensor())
      return invalid_argument("input " + std::to_string(i) + " is " + a_kind(ctx.input(i).kind()) +
                              "; Scan states and scan inputs are tensors");
  const int first = scan_first_state(ctx.opset());
  KILN_ASSIGN_OR_RETURN(int64_t m, ctx.attrs().get_int("num_scan_inputs"));
  const int n = ctx.num_inputs() - first - static_cast<int>(m);
  if (n < 0 || n > ctx.num_outputs()) return invalid_model("Scan has fewer inputs than num_scan_inputs needs");
  KILN_ASSIGN_OR_RETURN(ScanAttrs sa, scan_attrs(ctx.attrs(), ctx.opset(), ctx.num_outputs() - n));
  KILN_ASSIGN_OR_RETURN(auto ports, body_outputs(ctx.attrs(), "body", ctx.num_outputs()));
  std::vector<Tensor> states, scan_in;
  for (int k = 0; k < n; ++k) states.push_back(ctx.input(first + k));
  for (int j = 0; j < m; ++j) scan_in.push_back(ctx.input(first + n + j));
  if (!first) {
    KILN_ASSIGN_OR_RETURN(auto outs, run_scan(ctx, sa, std::move(states), scan_in, ports));
    for (int k = 0; k < ctx.num_outputs(); ++k) ctx.set_output(k, std::move(outs[k]));
    return Status::Ok();
  }
  // Scan 8: every input has a leading batch axis; each batch entry is an independent scan.
  const Tensor& ref = scan_in[0];
  if (ref.rank() < 2) return invalid_argument("Scan 8 inputs need a batch and a sequence axis");
  const int64_t batch = ref.dim(0);
  if (ctx.has_input(0)) {
    auto lens = ctx.input(0).to_i64_vector();
    for (int64_t l : lens)
      if (l != ref.dim(1))
        return unsupported("sequence_lens shorter than the sequence axis (" + std::to_string(l) + " < " +
                           std::to_string(ref.dim(1)) + ") are not supported");
  }
  std::vector<std::vector<Tensor>> per_batch(ctx.num_outputs());
  for (int64_t b = 0; b < batch; ++b) {
    std::vector<Tensor> st, sc;
    for (auto& s : states) st.push_back(take_slice(s, 0, b));
    for (auto& s : scan_in) sc.push_back(take_slice(s, 0, b));
    KILN_ASSIGN_OR_RETURN(auto outs, run_scan(ctx, sa, std::move(st), sc, ports));
    for (int k = 0; k < ctx.num_outputs(); ++k) per_batch[k].push_back(std::move(outs[k]));
  }
  for (int k = 0; k < ctx.num_outputs(); ++k) {
    DataType dt = k < n ? states[k].dtype() : ports[k].dtype;
    std::vector<int64_t> part = k < n ? std::vector<int64_t>(states[k].shape().begin() + 1, states[k].shape().end())
                                      : empty_part_shape(ports[k]);
    if (k >= n) part.insert(part.begin(), ref.dim(1));
    KILN_ASSIGN_OR_RETURN(Tensor t, stack(per_batch[k], 0, dt, part));
    ctx.set_output(k, std::move(t));
  }
  return Status::Ok();
}

}  // namespace

// Captured outer values follow a node's own inputs, so every control-flow op takes any number of inputs.
KILN_REGISTER_OP(If) {
  OpSchema s;
  s.name = "If";
  s.min_inputs = 1;
  s.max_inputs = -1;
  s.min_outputs = 1;
  s.max_outputs = -1;
  s.attrs = {{"then_branch", AttrType::kGRAPH, AttrRequirement::kRequired},
             {"else_branch", AttrType::kGRAPH, AttrRequirement::kRequired}};
  s.dtypes = all_types();
  s.takes_non_tensors = true;
  s.infer = if_infer;
  s.compute = if_compute;
  return s;
}

KILN_REGISTER_OP(Loop) {
  OpSchema s;
  s.name = "Loop";
  s.min_inputs = 0;  // M and cond may both be omitted; loop_infer checks that their positions are there
  s.max_inputs = -1;
  s.min_outputs = 0;
  s.max_outputs = -1;
  s.attrs = {{"body", AttrType::kGRAPH, AttrRequirement::kRequired}};
  s.dtypes = all_types();
  s.takes_non_tensors = true;
  s.infer = loop_infer;
  s.compute = loop_compute;
  return s;
}

KILN_REGISTER_OP(Scan) {
  OpSchema s;
  s.name = "Scan";
  s.min_inputs = 0;  // Scan 8's sequence_lens comes first and is optional
  s.max_inputs = -1;
  s.min_outputs = 1;
  s.max_outputs = -1;
  s.attrs = {{"body", AttrType::kGRAPH, AttrRequirement::kRequired},
             {"num_scan_inputs", AttrType::kINT, AttrRequirement::kRequired},
             {"directions", AttrType::kINTS},
             {"scan_input_directions", AttrType::kINTS},
             {"scan_output_directions", AttrType::kINTS},
             {"scan_input_axes", AttrType::kINTS},
             {"scan_output_axes", AttrType::kINTS}};
  s.dtypes = all_types();
  s.takes_non_tensors = true;  // for captured values; scan_compute checks its own inputs
  s.infer = scan_infer;
  s.compute = scan_compute;
  return s;
}

}  // namespace kiln::ops
