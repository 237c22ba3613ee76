// Model-level checks before graph construction: opset range, per-node operator versions, the ONNX checker,
// ONNX shape inference and the node rules that libonnx's inference functions assume without checking.
//
// Kiln's op definitions read each node's own opset, so models from opset 7 to the newest opset of the generated
// version table (onnx_op_versions.inc, from the newest onnx release) import as they are, as long as each node's
// operator version is one Kiln implements (OpSchema::max_version). Older models (opset 1-6, 2017-era exporters)
// go through the ONNX version converter to opset 7 first; when it cannot convert them, the error carries the
// converter's reason next to the opset rule. The linked ONNX 1.12 library knows opsets up to 17 only, so its
// checker and shape inference run on models up to that opset; newer ones rely on Kiln's own checks.
#include <algorithm>
#include <cstdint>
#include <functional>
#include <limits>
#include <map>
#include <mutex>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "onnx/checker.h"
#include "onnx/defs/schema.h"
#include "onnx/importer.h"
#include "onnx/shape_inference/implementation.h"
#include "onnx/version_converter/convert.h"
#include "ops/onnx_versions.h"
#include "ops/op.h"
#include "ops/op_util.h"

namespace kiln::onnx_import {

int newest_known_onnx_opset() {
  auto& map = onnx::OpSchemaRegistry::DomainToVersionRange::Instance().Map();
  auto it = map.find(onnx::ONNX_DOMAIN);
  return it == map.end() ? kMinOnnxOpset : it->second.second;
}

static int default_domain_opset(const onnx::ModelProto& model) {
  for (auto& imp : model.opset_import())
    if (normalize_domain(imp.domain()).empty())
      return imp.version() < 0 || imp.version() > INT32_MAX ? -1 : static_cast<int>(imp.version());
  return -1;
}

// Before opset 7, PRelu's slope [C] applied along X's channel axis (axis 1); from opset 7 it broadcasts
// numpy-style, aligned to X's last axis. The version converter only bumps PRelu's version, which would change
// what the node computes (or make it invalid), so the slope gets an explicit Unsqueeze to [C,1,...,1] first.
// Needs X's rank, hence runs after shape inference; a PRelu whose ranks stay unknown is left as it is.
static void unsqueeze_legacy_prelu_slopes(onnx::ModelProto& model) {
  auto* g = model.mutable_graph();
  std::unordered_map<std::string, std::vector<int64_t>> shapes;  // -1 for a dim without a value
  auto note = [&](const onnx::ValueInfoProto& v) {
    if (!v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return;
    std::vector<int64_t> dims;
    for (const auto& d : v.type().tensor_type().shape().dim()) dims.push_back(d.has_dim_value() ? d.dim_value() : -1);
    shapes[v.name()] = std::move(dims);
  };
  for (const auto& v : g->input()) note(v);
  for (const auto& v : g->value_info()) note(v);
  for (const auto& v : g->output()) note(v);
  for (const auto& t : g->initializer()) shapes[t.name()] = {t.dims().begin(), t.dims().end()};
  std::vector<onnx::NodeProto> nodes(g->node().begin(), g->node().end());
  g->clear_node();
  int added = 0;
  for (auto& n : nodes) {
    if (n.op_type() == "PRelu" && normalize_domain(n.domain()).empty() && n.input_size() == 2) {
      auto x = shapes.find(n.input(0));
      auto slope = shapes.find(n.input(1));
      if (x != shapes.end() && slope != shapes.end() && x->second.size() >= 3 && slope->second.size() == 1 &&
          slope->second[0] != 1) {
        onnx::NodeProto* u = g->add_node();
        u->set_op_type("Unsqueeze");
        const std::string out = n.input(1) + "_kiln_channel_slope_" + std::to_string(added++);
        u->set_name(out);
        u->add_input(n.input(1));
        u->add_output(out);
        auto* axes = u->add_attribute();
        axes->set_name("axes");
        axes->set_type(onnx::AttributeProto::INTS);
        for (size_t a = 1; a + 1 < x->second.size(); ++a) axes->add_ints(static_cast<int64_t>(a));
        n.set_input(1, out);
      }
    }
    *g->add_node() = std::move(n);
  }
}

// Declared dims of the values in scope (-1 for a dim without a value), outer graphs' too.
using DeclaredDims = std::unordered_map<std::string, std::vector<int64_t>>;
static bool window_attributes_valid(const onnx::GraphProto& g, int opset, const std::string& prefix, Diagnostics& diag,
                                    DeclaredDims dims = {});
static void guard_libonnx_inference();
static bool safe_for_libonnx_inference(const onnx::GraphProto& g, std::unordered_set<std::string> scope);

void upgrade_old_opset(onnx::ModelProto& model, Diagnostics& diag) {
  const int opset = default_domain_opset(model);
  if (opset < 1 || opset >= kMinOnnxOpset) return;
  // The converter runs libonnx's shape inference too; run_shape_inference reports the bad attributes.
  Diagnostics scratch(nullptr);
  if (!window_attributes_valid(model.graph(), opset, "", scratch) || !safe_for_libonnx_inference(model.graph(), {})) return;
  guard_libonnx_inference();
  try {
    // The converter's adapters (broadcast Add/Gemm among them) need every input's shape; onnx's Python
    // convert_version infers shapes first for this reason, so a copy gets the same treatment here.
    onnx::ModelProto inferred = model;
    try {
      onnx::shape_inference::InferShapes(inferred);
    } catch (const std::exception&) {
      inferred = model;  // the converter then reports what it lacks
    }
    unsqueeze_legacy_prelu_slopes(inferred);
    model = onnx::version_conversion::ConvertVersion(inferred, kMinOnnxOpset);
    diag.warning("model uses ai.onnx opset " + std::to_string(opset) + "; upgraded to opset " +
                 std::to_string(kMinOnnxOpset) + " with the ONNX version converter");
  } catch (const std::exception& e) {
    // check_opsets reports the opset rule; this adds why the upgrade did not help.
    diag.warning("the ONNX version converter could not upgrade opset " + std::to_string(opset) + " to " +
                 std::to_string(kMinOnnxOpset) + ": " + e.what());
  }
}

// Each ai.onnx node's operator version (its largest since_version <= the opset) must exist and be one Kiln
// implements; false when the opset itself is beyond the version table.
static bool check_op_versions(const onnx::ModelProto& model, int opset, Diagnostics& diag);

bool check_opsets(const onnx::ModelProto& model, std::unordered_map<std::string, int>* opsets, Diagnostics& diag) {
  opsets->clear();
  for (auto& imp : model.opset_import()) {
    std::string d = normalize_domain(imp.domain());
    if (opsets->count(d)) {
      diag.model_error(ErrorCode::kInvalidModel,
                       "opset_import lists domain '" + (d.empty() ? "ai.onnx" : d) + "' more than once");
      return false;
    }
    if (imp.version() < 0 || imp.version() > INT32_MAX) {  // an int would wrap it into a plausible number
      diag.model_error(ErrorCode::kInvalidModel, "opset_import version " + std::to_string(imp.version()) +
                                                     " for domain '" + (d.empty() ? "ai.onnx" : d) + "' is out of range");
      return false;
    }
    (*opsets)[d] = static_cast<int>(imp.version());
  }
  auto it = opsets->find("");
  if (it == opsets->end()) {
    // A graph of other domains only (e.g. ai.onnx.preview.training) needs no ai.onnx opset; its nodes are
    // judged one by one against Kiln's registry.
    bool uses_default_domain = false;
    for (auto& n : model.graph().node()) uses_default_domain |= normalize_domain(n.domain()).empty();
    if (!uses_default_domain) {
      (*opsets)[""] = newest_known_onnx_opset();
      return true;
    }
    // IR version 1/2 models had no opset_import; they are also far older than opset 7.
    diag.model_error(ErrorCode::kInvalidModel,
                     "model does not import the ai.onnx opset (opset_import has no entry for domain '' or "
                     "'ai.onnx'); Kiln needs opset " +
                         std::to_string(kMinOnnxOpset) + " or newer");
    return false;
  }
  if (it->second < kMinOnnxOpset) {
    diag.model_error(ErrorCode::kUnsupported, "model uses ai.onnx opset " + std::to_string(it->second) +
                                                  ", older than the oldest Kiln supports (" +
                                                  std::to_string(kMinOnnxOpset) +
                                                  ") and the ONNX version converter could not upgrade it; "
                                                  "re-export it with a newer opset");
    return false;
  }
  return check_op_versions(model, it->second, diag);
}

static NodeRef node_ref(const onnx::NodeProto& n, int index, int opset) {
  return NodeRef{n.name().empty() ? n.op_type() + "_" + std::to_string(index) : n.name(), index, n.op_type(),
                 normalize_domain(n.domain()), opset};
}

static bool check_op_versions(const onnx::ModelProto& model, int opset, Diagnostics& diag) {
  const auto& g = model.graph();
  const int newest = ops::onnx_table_newest_opset();
  if (opset > newest) {
    // Nothing about such a model can be judged: every ai.onnx node may mean something Kiln has never seen.
    const std::string why = "ai.onnx opset " + std::to_string(opset) + " is newer than the newest Kiln knows (" +
                            std::to_string(newest) + ", onnx " + ops::onnx_table_release() +
                            "); re-export the model with opset <= " + std::to_string(newest);
    bool named = false;
    for (int i = 0; i < g.node_size(); ++i)
      if (normalize_domain(g.node(i).domain()).empty()) {
        diag.node_error(ErrorCode::kUnsupported, node_ref(g.node(i), i, opset), why);
        named = true;
      }
    if (!named) diag.model_error(ErrorCode::kUnsupported, "model uses " + why);
    return false;
  }
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    if (!normalize_domain(n.domain()).empty()) continue;
    // Operators Kiln has no definition of are reported by the graph builder with the rest of the unsupported list.
    const ops::OpSchema* schema = ops::OpRegistry::instance().find(n.op_type(), "");
    auto versions = ops::onnx_op_versions(n.op_type());
    if (!schema || schema->max_version == 0 || versions.empty()) continue;
    const int version = ops::onnx_op_version_at(n.op_type(), opset);
    if (version == 0) {
      diag.node_error(ErrorCode::kInvalidModel, node_ref(n, i, opset),
                      n.op_type() + " does not exist in ai.onnx opset " + std::to_string(opset) +
                          " (it was introduced in opset " + std::to_string(versions.front()) + ")");
    } else if (version > schema->max_version) {
      diag.node_error(ErrorCode::kUnsupported, node_ref(n, i, opset),
                      n.op_type() + " version " + std::to_string(version) + " (opset " + std::to_string(opset) +
                          ") is newer than Kiln implements (" + std::to_string(schema->max_version) + ")");
    }
  }
  return true;
}

// ONNX 1.12's schemas stop at opset 17; past it its checker and shape inference would judge nodes by the wrong
// (or no) definition.
static bool onnx_library_knows(int opset, Diagnostics& diag, const char* what) {
  if (opset <= newest_known_onnx_opset()) return true;
  diag.verbose(std::string("skipping ") + what + ": ai.onnx opset " + std::to_string(opset) +
               " is newer than the linked ONNX library knows (" + std::to_string(newest_known_onnx_opset()) +
               "); Kiln's own checks and shape inference apply");
  return false;
}

// The checker's messages span lines ("...\n\n==> Context: ..."); one line reads better inside Kiln's list.
static std::string one_line(std::string s) {
  std::replace(s.begin(), s.end(), '\n', ' ');
  std::string r;
  for (char c : s)
    if (!(c == ' ' && !r.empty() && r.back() == ' ')) r += c;
  while (!r.empty() && r.back() == ' ') r.pop_back();
  return r;
}

static bool contains(const std::string& s, const char* part) { return s.find(part) != std::string::npos; }

// What Kiln does with the checker's complaints, and why:
//  - Node-level complaints (schema, arity, attributes) are collected by checking every node on its own, so
//    one bad node does not hide the next. Nodes Kiln already rejected (unsupported op, bad attribute) are
//    skipped: Kiln's message about them is the more useful one. "No Op registered" is left to Kiln's own
//    unsupported-node list, since Kiln's registry decides what can run.
//  - Graph-level complaints about node order ("must be topologically sorted") are tolerated: Kiln sorts the
//    graph itself and reports dangling inputs and cycles with the node that has them.
//  - An ir_version newer than the checker's, an empty graph name and a graph input/output without a shape are
//    logged: none changes how Kiln reads the graph (a shapeless input gets its shape set before building; output
//    shapes are inferred), and exporters newer than ONNX 1.12 routinely produce the first and the last.
//  - External-data complaints are left to Kiln's tensor loader, which resolves files against the model's
//    directory (the checker sees only the in-memory proto) and reports the tensor by name.
//  - Everything else (malformed value_info, model-local functions, ...) is an error.
// check_model stops at its first complaint, so a tolerated one ends its graph-level checking early; what it then
// skips (SSA, initializer contents, node order) Kiln checks itself while building the graph.
void run_onnx_checker(const onnx::ModelProto& model, const std::unordered_map<std::string, int>& opsets,
                      Diagnostics& diag) {
  if (auto it = opsets.find(""); it != opsets.end() && !onnx_library_knows(it->second, diag, "the ONNX checker"))
    return;
  onnx::checker::CheckerContext ctx;
  ctx.set_ir_version(static_cast<int>(model.ir_version()));
  std::unordered_map<std::string, int> imports;
  for (auto& [d, v] : opsets) imports[d] = v;
  ctx.set_opset_imports(imports);
  onnx::checker::LexicalScopeContext lex;
  const auto& g = model.graph();
  // Subgraph bodies may read outer names. Every name of the graph is in scope, not only earlier ones: Kiln
  // sorts nodes itself, so it accepts graphs that are not listed in order.
  for (auto& vi : g.input()) lex.add(vi.name());
  for (auto& t : g.initializer()) lex.add(t.name());
  for (auto& n : g.node())
    for (auto& o : n.output()) lex.add(o);
  for (int i = 0; i < g.node_size(); ++i) {
    if (diag.node_has_error(i)) continue;
    const auto& n = g.node(i);
    if (n.op_type() == "Constant" && normalize_domain(n.domain()).empty()) continue;  // folded and checked by Kiln
    try {
      onnx::checker::check_node(n, ctx, lex);
    } catch (const std::exception& e) {
      std::string msg = one_line(e.what());
      if (contains(msg, "No Op registered for") || contains(msg, "No opset import for domain")) {
        diag.verbose("ONNX checker (left to Kiln's registry): " + msg);
        continue;
      }
      auto it = opsets.find(normalize_domain(n.domain()));
      NodeRef ref{n.name().empty() ? n.op_type() + "_" + std::to_string(i) : n.name(), i, n.op_type(),
                  normalize_domain(n.domain()), it == opsets.end() ? 0 : it->second};
      diag.node_error(ErrorCode::kInvalidModel, ref, "ONNX checker: " + msg);
    }
  }
  try {
    onnx::checker::check_model(model);
  } catch (const std::exception& e) {
    std::string msg = one_line(e.what());
    if (contains(msg, "Bad node spec") || contains(msg, "No Op registered for") ||
        contains(msg, "topologically sorted") || contains(msg, "No opset import for domain") ||
        contains(msg, "should be stored in") || contains(msg, "external data") || contains(msg, "External data")) {
      diag.verbose("ONNX checker (handled by Kiln): " + msg);
    } else if (contains(msg, "higher than the checker's") || contains(msg, "'name' of 'graph'") ||
               contains(msg, "Field 'shape' of 'type'")) {
      diag.warning("ONNX checker (ignored): " + msg);
    } else {
      diag.model_error(ErrorCode::kInvalidModel, "ONNX checker: " + msg);
    }
  }
}

// Window attributes the linked ONNX library's shape inference divides by or sizes loops with, unchecked
// (stride 0 is a division by zero inside libonnx, which no try/catch stops). Kiln rejects such nodes first, in
// subgraphs too, naming the node and the attribute.
// Likewise libonnx makes one output dim per entry of a shape input: a declared int64[2^40] exhausts memory.
static bool shape_input_lengths_valid(const onnx::NodeProto& n, const NodeRef& ref, const DeclaredDims& dims,
                                      Diagnostics& diag) {
  int shape_input = n.op_type() == "Reshape" || n.op_type() == "Expand" ? 1 : n.op_type() == "ConstantOfShape" ? 0 : -1;
  if (!normalize_domain(n.domain()).empty() || shape_input < 0 || shape_input >= n.input_size()) return true;
  auto it = dims.find(n.input(shape_input));
  if (it == dims.end() || it->second.size() != 1 || it->second[0] <= ops::kMaxRank) return true;
  diag.node_error(ErrorCode::kInvalidModel, ref,
                  "shape input '" + n.input(shape_input) + "' is declared with " + std::to_string(it->second[0]) +
                      " entries; Kiln supports at most " + std::to_string(ops::kMaxRank) + " dims");
  return false;
}

// What libonnx's inference functions assume of a node without checking, as far as the ranks of its inputs are
// known. The same rules run twice: before inference on the declared ranks (Kiln's errors, every node at once),
// and inside libonnx's inference on the ranks it has inferred (guard_libonnx_inference), since an input made by
// another node has no rank before inference runs.
struct NodeView {
  std::function<bool(int)> present;             // input i given (not absent or "")
  std::function<int(int)> rank;                 // its rank, -1 when not known
  std::function<std::string(int)> input_name;   // for messages
  std::function<const onnx::AttributeProto*(const std::string&)> attr;
  int num_inputs = 0, num_outputs = 0;  // as the node lists them, "" included
  int version = 0;                      // the operator's since_version the node selects
  // Inside libonnx's inference an unknown rank is final: libonnx reads the shape it has, which is empty.
  bool inside_libonnx = false;
};

// The conv/pool family: libonnx takes the number of spatial dims from X but the kernel from W's dims (or
// kernel_shape), then indexes one with the other's count (a W of another rank than X reads past its vectors and
// X's dims), and trusts the attribute lengths.
struct WindowOp {
  const char* op;
  int weight;      // W's input index, -1 for pools
  bool transpose;  // output_padding and output_shape apply
};
static constexpr WindowOp kWindowOps[] = {
    {"Conv", 1, false},    {"ConvInteger", 1, false}, {"QLinearConv", 3, false}, {"DeformConv", 1, false},
    {"ConvTranspose", 1, true}, {"MaxPool", -1, false}, {"AveragePool", -1, false}, {"LpPool", -1, false},
    {"MaxUnpool", -1, false}};

// Each window attribute's length, in spatial dims, and the least value it may hold (kernel_shape, strides and
// dilations of every op are range-checked in window_attributes_valid).
struct WindowAttr {
  const char* name;
  int per_dim;
  int64_t min;
  bool transpose_only;
};
static constexpr int64_t kAny = std::numeric_limits<int64_t>::min();
static constexpr WindowAttr kWindowAttrs[] = {{"kernel_shape", 1, kAny, false}, {"strides", 1, kAny, false},
                                              {"dilations", 1, kAny, false},    {"pads", 2, 0, false},
                                              {"output_padding", 1, 0, true},   {"output_shape", 1, 0, true}};

static const WindowOp* find_window_op(const std::string& op) {
  for (const auto& w : kWindowOps)
    if (op == w.op) return &w;
  return nullptr;
}

static std::vector<std::string> window_op_problems(const WindowOp& w, const NodeView& v) {
  std::vector<std::string> problems;
  const int x_rank = v.present(0) ? v.rank(0) : -1;
  const int w_rank = w.weight >= 0 && v.present(w.weight) ? v.rank(w.weight) : -1;
  // The spatial rank and where it comes from, for the messages.
  int nsp = -1;
  std::string from;
  if (x_rank >= 0) {
    if (x_rank < 3) problems.push_back("input " + v.input_name(0) + " has rank " + std::to_string(x_rank) +
                                       "; " + w.op + " needs [N, C, spatial...] (rank >= 3)");
    nsp = x_rank - 2;
    from = "input " + v.input_name(0) + " of rank " + std::to_string(x_rank);
  }
  if (w_rank >= 0) {
    if (x_rank >= 0 && w_rank != x_rank)
      problems.push_back("weight " + v.input_name(w.weight) + " has rank " + std::to_string(w_rank) + " but input " +
                         v.input_name(0) + " has rank " + std::to_string(x_rank) + "; they must be equal");
    else if (x_rank < 0 && w_rank < 3)
      problems.push_back("weight " + v.input_name(w.weight) + " has rank " + std::to_string(w_rank) + "; " + w.op +
                         " needs [M, C/group, kernel...] (rank >= 3)");
    if (nsp < 0) {
      nsp = w_rank - 2;
      from = "weight " + v.input_name(w.weight) + " of rank " + std::to_string(w_rank);
    }
  }
  for (const auto& a : kWindowAttrs) {
    if (a.transpose_only && !w.transpose) continue;
    const onnx::AttributeProto* p = v.attr(a.name);
    if (!p || p->type() != onnx::AttributeProto::INTS) continue;
    if (nsp < 0 && p->ints_size() % a.per_dim == 0) {  // the first window attribute sets it when no rank is known
      nsp = p->ints_size() / a.per_dim;
      from = std::string("attribute '") + a.name + "'";
    }
    if (nsp >= 0 && p->ints_size() != a.per_dim * nsp)
      problems.push_back(std::string("attribute '") + a.name + "' has " + std::to_string(p->ints_size()) +
                         " values; " + std::to_string(nsp) + " spatial dims (" + from + ") need " +
                         std::to_string(a.per_dim * nsp));
    for (int64_t x : p->ints())
      if (x < a.min) {
        problems.push_back(std::string("attribute '") + a.name + "' has value " + std::to_string(x) +
                           "; each must be >= " + std::to_string(a.min));
        break;
      }
  }
  return problems;
}

// STFT: libonnx reads the signal's dims 0 and 1 without checking its rank, and the frame length from whichever
// of the optional window / frame_length inputs is given.
static std::vector<std::string> stft_problems(const NodeView& v) {
  std::vector<std::string> problems;
  if (v.present(0) && v.rank(0) >= 0 && v.rank(0) != 3)
    problems.push_back("signal " + v.input_name(0) + " has rank " + std::to_string(v.rank(0)) +
                       "; STFT needs [batch, length, 1 or 2]");
  if (!v.present(2) && !v.present(3))
    problems.push_back("neither the optional 'window' (input 2) nor 'frame_length' (input 3) is given; STFT needs "
                       "one of them for the frame length");
  if (v.present(2) && v.rank(2) >= 0 && v.rank(2) != 1)
    problems.push_back("window " + v.input_name(2) + " has rank " + std::to_string(v.rank(2)) + "; it must be 1-D");
  return problems;
}

// MaxUnpool without its output_shape input takes the channel count from dim 1 of the indices I, unchecked.
static std::vector<std::string> max_unpool_problems(const NodeView& v) {
  if (!v.present(1) || v.present(2) || !v.present(0) || v.rank(0) < 0) return {};
  if (v.rank(1) >= 0 ? v.rank(1) != v.rank(0) : v.inside_libonnx)
    return {"indices " + v.input_name(1) + " have rank " + std::to_string(v.rank(1)) + " but input " + v.input_name(0) +
            " has rank " + std::to_string(v.rank(0)) + "; they must have X's shape"};
  return {};
}

// Scan: libonnx subtracts num_scan_inputs from the input count (and the state count from the output count) in
// size_t and sizes vectors with the results: a num_scan_inputs past the inputs asked for 2^43 bytes.
static std::vector<std::string> scan_problems(const NodeView& v) {
  const onnx::AttributeProto* a = v.attr("num_scan_inputs");
  if (!a || a->type() != onnx::AttributeProto::INT) return {};  // reported as a missing attribute
  const int scannable = v.num_inputs - (v.version >= 9 ? 0 : 1);  // Scan-8 takes sequence_lens first
  if (a->i() < 1 || a->i() > scannable)
    return {"attribute 'num_scan_inputs' is " + std::to_string(a->i()) + "; the node has " + std::to_string(scannable) +
            " state and scan inputs, so it must be in [1, " + std::to_string(scannable) + "]"};
  const int64_t states = scannable - a->i();
  if (states > v.num_outputs)
    return {std::to_string(states) + " loop state inputs but only " + std::to_string(v.num_outputs) +
            " outputs; each state needs its final value as an output"};
  return {};
}

// An 'axis' attribute refers to input 0's dims in every ai.onnx operator that has one; no valid axis lies outside
// [-r, r] (OneHot's, which counts the new output axis, [-r-1, r]). libonnx's LayerNormalization adds r to a
// negative axis, casts it to int and indexes the output dims with it unchecked (axis 2^63-3, or -1 on a scalar:
// SIGSEGV).
static std::vector<std::string> axis_problems(const std::string& op, const NodeView& v) {
  const onnx::AttributeProto* a = v.attr("axis");
  if (a && a->type() != onnx::AttributeProto::INT) return {};
  if (!v.present(0) || v.rank(0) < 0 || (!a && op != "LayerNormalization")) return {};
  const int64_t axis = a ? a->i() : -1;  // LayerNormalization's default, which a scalar X does not have either
  const int64_t r = v.rank(0), lowest = op == "OneHot" ? -r - 1 : -r;
  if (axis >= lowest && axis <= r) return {};
  return {"attribute 'axis' is " + std::to_string(axis) + (a ? "" : " (the default)") + " but input " +
          v.input_name(0) + " has rank " + std::to_string(r) + "; it must be in [" + std::to_string(lowest) + ", " +
          std::to_string(r) + "]"};
}

static std::vector<std::string> libonnx_inference_problems(const std::string& op, const NodeView& v) {
  std::vector<std::string> problems = axis_problems(op, v);
  if (op == "Scan")
    for (auto& p : scan_problems(v)) problems.push_back(std::move(p));
  if (const WindowOp* w = find_window_op(op))
    for (auto& p : window_op_problems(*w, v)) problems.push_back(std::move(p));
  if (op == "STFT")
    for (auto& p : stft_problems(v)) problems.push_back(std::move(p));
  if (op == "MaxUnpool")
    for (auto& p : max_unpool_problems(v)) problems.push_back(std::move(p));
  return problems;
}

// The inputs libonnx's schema marks required (Single): its inference functions read their types without a
// null check (MaxUnpool's I given as "": SIGSEGV).
static std::vector<int> required_inputs(const onnx::OpSchema& schema) {
  std::vector<int> r;
  for (size_t i = 0; i < schema.inputs().size(); ++i)
    if (schema.inputs()[i].GetOption() == onnx::OpSchema::Single) r.push_back(static_cast<int>(i));
  return r;
}

// "" stands for an omitted optional input only; at a required or variadic position it leaves a hole that
// libonnx's inference (MaxUnpool's I) and Kiln's op definitions (Max/Min/Sum/Mean, Einsum: the inputs are read
// without a presence check) take for a value. ONNX's formal parameters say which positions are optional; the
// linked ONNX library's schema is used at any opset where the op's version is still the one it knows.
static void check_empty_inputs(const onnx::NodeProto& n, int opset, const NodeRef& ref, Diagnostics& diag, bool& ok) {
  const int newest = newest_known_onnx_opset();
  const onnx::OpSchema* schema = onnx::OpSchemaRegistry::Schema(n.op_type(), std::min(opset, newest), "");
  if (!schema || (opset > newest && ops::onnx_op_version_at(n.op_type(), opset) != schema->SinceVersion())) return;
  const auto& params = schema->inputs();
  for (int k = 0; k < n.input_size() && !params.empty(); ++k) {
    const auto& param = params[std::min<size_t>(k, params.size() - 1)];
    if (!n.input(k).empty() || param.GetOption() == onnx::OpSchema::Optional) continue;
    if (k >= static_cast<int>(params.size()) && param.GetOption() != onnx::OpSchema::Variadic) continue;  // arity: Kiln's
    diag.node_error(ErrorCode::kInvalidModel, ref,
                    std::string(param.GetOption() == onnx::OpSchema::Variadic ? "variadic" : "required") + " input '" +
                        param.GetName() + "' (input " + std::to_string(k) + ") is empty");
    ok = false;
  }
}

static bool window_attributes_valid(const onnx::GraphProto& g, int opset, const std::string& prefix, Diagnostics& diag,
                                    DeclaredDims dims) {
  constexpr int64_t kMaxWindow = int64_t{1} << 31;
  bool ok = true;
  auto note = [&](const onnx::ValueInfoProto& v) {
    if (!v.type().has_tensor_type() || !v.type().tensor_type().has_shape()) return;
    std::vector<int64_t>& d = dims[v.name()];
    d.clear();
    for (const auto& dim : v.type().tensor_type().shape().dim()) d.push_back(dim.has_dim_value() ? dim.dim_value() : -1);
  };
  for (const auto& v : g.input()) note(v);
  for (const auto& v : g.value_info()) note(v);
  for (const auto& v : g.output()) note(v);
  for (const auto& t : g.initializer()) dims[t.name()] = {t.dims().begin(), t.dims().end()};
  for (const auto& n : g.node())
    if (n.op_type() == "Constant" && normalize_domain(n.domain()).empty() && n.output_size() == 1)
      for (const auto& a : n.attribute())
        if (a.name() == "value" && a.type() == onnx::AttributeProto::TENSOR)
          dims[n.output(0)] = {a.t().dims().begin(), a.t().dims().end()};
  for (int i = 0; i < g.node_size(); ++i) {
    const auto& n = g.node(i);
    NodeRef ref = node_ref(n, i, opset);
    ref.name = prefix + ref.name;
    ok &= shape_input_lengths_valid(n, ref, dims, diag);
    if (normalize_domain(n.domain()).empty()) {
      NodeView view;
      view.present = [&](int k) { return k < n.input_size() && !n.input(k).empty(); };
      view.rank = [&](int k) {
        auto it = dims.find(n.input(k));
        return it == dims.end() ? -1 : static_cast<int>(it->second.size());
      };
      view.input_name = [&](int k) { return "'" + n.input(k) + "'"; };
      view.num_inputs = n.input_size();
      view.num_outputs = n.output_size();
      view.version = ops::onnx_op_version_at(n.op_type(), opset);
      view.attr = [&](const std::string& name) -> const onnx::AttributeProto* {
        for (const auto& a : n.attribute())
          if (a.name() == name) return &a;
        return nullptr;
      };
      for (const std::string& p : libonnx_inference_problems(n.op_type(), view)) {
        diag.node_error(ErrorCode::kInvalidModel, ref, p);
        ok = false;
      }
      check_empty_inputs(n, opset, ref, diag, ok);
    }
    for (const auto& a : n.attribute()) {
      if (a.type() == onnx::AttributeProto::GRAPH)
        ok &= window_attributes_valid(a.g(), opset, ref.name + "/" + a.name() + "/", diag, dims);
      for (const auto& sub : a.graphs())
        ok &= window_attributes_valid(sub, opset, ref.name + "/" + a.name() + "/", diag, dims);
      const std::string& name = a.name();
      const bool positive_ints = name == "strides" || name == "dilations" || name == "kernel_shape";
      if (positive_ints) {
        for (int64_t v : a.ints())
          if (v < 1 || v > kMaxWindow) {
            diag.node_error(ErrorCode::kInvalidModel, ref,
                            "attribute '" + name + "' has value " + std::to_string(v) + "; each must be in [1, 2^31]");
            ok = false;
            break;
          }
      } else if ((name == "group" || name == "blocksize") && a.type() == onnx::AttributeProto::INT &&
                 (a.i() < 1 || a.i() > kMaxWindow)) {
        // DepthToSpace divides by blocksize * blocksize, which wraps to 0 from 2^32 (SIGFPE inside libonnx).
        diag.node_error(ErrorCode::kInvalidModel, ref,
                        "attribute '" + name + "' is " + std::to_string(a.i()) + "; it must be in [1, 2^31]");
        ok = false;
      }
    }
  }
  return ok;
}

// The same rules inside libonnx's inference, where the ranks it inferred are known: each schema's inference
// function first checks them and fails the node (an InferenceError, which lenient inference records and moves
// past; Kiln's own inference then reports the node) instead of reading past a vector or through a null type. A
// required input without a type (given as "", or made by a node whose inference failed) is one such case for
// every operator. Installed once into the process-wide schema registry, for every version of every operator.
// STFT's onesided defaults to 1 (ONNX's own node test test_stft expects floor(n/2)+1 bins without the attribute),
// but libonnx's inference (1.12 here, 1.23 too) reads a missing onesided as 0 and gives n bins, which Kiln then
// took for a declared shape its own inference contradicts: a valid model refused. For a real signal (last dim 1)
// without the attribute, the bins are corrected to the operator's default.
static void one_sided_by_default(onnx::InferenceContext& ctx) {
  if (ctx.getAttribute("onesided") || ctx.getNumOutputs() < 1 || ctx.getNumInputs() < 1) return;
  const onnx::TypeProto* signal = ctx.getInputType(0);
  if (!signal || !signal->has_tensor_type() || !signal->tensor_type().has_shape()) return;
  const auto& in = signal->tensor_type().shape();
  if (in.dim_size() != 3 || !in.dim(2).has_dim_value() || in.dim(2).dim_value() != 1) return;
  onnx::TypeProto* out = ctx.getOutputType(0);
  if (!out || !out->has_tensor_type() || !out->tensor_type().has_shape() || out->tensor_type().shape().dim_size() != 4)
    return;
  auto* bins = out->mutable_tensor_type()->mutable_shape()->mutable_dim(2);
  if (bins->has_dim_value()) bins->set_dim_value(bins->dim_value() / 2 + 1);
}

static void guard_libonnx_inference() {
  static std::once_flag once;
  std::call_once(once, [] {
    for (const onnx::OpSchema& copy : onnx::OpSchemaRegistry::get_all_schemas_with_history()) {
      auto* schema =
          const_cast<onnx::OpSchema*>(onnx::OpSchemaRegistry::Schema(copy.Name(), copy.SinceVersion(), copy.domain()));
      if (!schema || schema->SinceVersion() != copy.SinceVersion() || !schema->has_type_and_shape_inference_function())
        continue;
      const std::string op = schema->domain().empty() ? schema->Name() : "";  // the rules are ai.onnx's
      onnx::InferenceFunction inner = schema->GetTypeAndShapeInferenceFunction();
      const int version = schema->SinceVersion();
      schema->TypeAndShapeInferenceFunction([op, version, inner, required = required_inputs(*schema)](
                                                onnx::InferenceContext& ctx) {
        for (int k : required)
          if (static_cast<size_t>(k) >= ctx.getNumInputs() || !ctx.getInputType(k))
            fail_shape_inference("(guarded by Kiln) required input ", k, " has no type");
        NodeView view;
        view.present = [&](int k) { return static_cast<size_t>(k) < ctx.getNumInputs() && ctx.getInputType(k) != nullptr; };
        view.rank = [&](int k) {
          const onnx::TypeProto* t = ctx.getInputType(k);
          return t && t->has_tensor_type() && t->tensor_type().has_shape() ? t->tensor_type().shape().dim_size() : -1;
        };
        view.input_name = [](int k) { return std::to_string(k); };
        view.attr = [&](const std::string& name) { return ctx.getAttribute(name); };
        view.num_inputs = static_cast<int>(ctx.getNumInputs());
        view.num_outputs = static_cast<int>(ctx.getNumOutputs());
        view.version = version;
        view.inside_libonnx = true;
        std::vector<std::string> problems = libonnx_inference_problems(op, view);
        if (!problems.empty()) fail_shape_inference(op, " (guarded by Kiln): ", problems.front());
        inner(ctx);
        if (op == "STFT") one_sided_by_default(ctx);
      });
    }
  });
}

// libonnx's inference dereferences what a valid model always has: a producer for every input name (data
// propagation reads its type) and the attributes an operator requires (Scan's num_scan_inputs). A graph lacking
// them is reported by build_graph, naming the node; libonnx must not see it first.
static bool safe_for_libonnx_inference(const onnx::GraphProto& g, std::unordered_set<std::string> scope) {
  for (const auto& v : g.input()) scope.insert(v.name());
  for (const auto& t : g.initializer()) scope.insert(t.name());
  for (const auto& n : g.node())
    for (const auto& o : n.output()) scope.insert(o);
  static const std::map<AttrType, int> kProtoType = {
      {AttrType::kINT, onnx::AttributeProto::INT},         {AttrType::kFLOAT, onnx::AttributeProto::FLOAT},
      {AttrType::kSTRING, onnx::AttributeProto::STRING},   {AttrType::kINTS, onnx::AttributeProto::INTS},
      {AttrType::kFLOATS, onnx::AttributeProto::FLOATS},   {AttrType::kSTRINGS, onnx::AttributeProto::STRINGS},
      {AttrType::kTENSOR, onnx::AttributeProto::TENSOR},   {AttrType::kGRAPH, onnx::AttributeProto::GRAPH}};
  // A graph output nothing defines: the version converter's graph import writes its type through null (also in a
  // graph without nodes, which the node loop below never visits).
  for (const auto& o : g.output())
    if (!scope.count(o.name())) return false;
  for (const auto& n : g.node()) {
    for (const auto& i : n.input())
      if (!i.empty() && !scope.count(i)) return false;
    if (const ops::OpSchema* schema = ops::OpRegistry::instance().find(n.op_type(), normalize_domain(n.domain()))) {
      if (!ops::check_arity(*schema, n.input_size(), n.output_size()).ok()) return false;
      for (const auto& spec : schema->attrs) {
        const onnx::AttributeProto* found = nullptr;
        for (const auto& a : n.attribute())
          if (a.name() == spec.name) found = &a;
        if (!found ? spec.req == ops::AttrRequirement::kRequired : found->type() != kProtoType.at(spec.type)) return false;
      }
    }
    for (const auto& a : n.attribute()) {
      if (a.type() == onnx::AttributeProto::GRAPH && !safe_for_libonnx_inference(a.g(), scope)) return false;
      for (const auto& sub : a.graphs())
        if (!safe_for_libonnx_inference(sub, scope)) return false;
    }
  }
  return true;
}

void run_shape_inference(onnx::ModelProto& model, Diagnostics& diag) {
  if (!window_attributes_valid(model.graph(), default_domain_opset(model), "", diag)) return;
  if (!safe_for_libonnx_inference(model.graph(), {})) {
    diag.verbose("ONNX shape inference skipped: the graph has undefined inputs or missing attributes (reported below)");
    return;
  }
  guard_libonnx_inference();
  if (const int opset = default_domain_opset(model); opset > 0 && !onnx_library_knows(opset, diag, "ONNX shape inference"))
    return;
  // Lenient mode (error_mode 0): a node ONNX cannot infer leaves its outputs without a declared shape, and
  // Kiln's own inference fills them later. Data propagation lets Shape->Gather->Reshape chains resolve.
  onnx::ShapeInferenceOptions options(/*check_type=*/false, /*error_mode=*/0, /*data_prop=*/true);
  try {
    onnx::shape_inference::InferShapes(model, onnx::OpSchemaRegistry::Instance(), options);
  } catch (const std::exception& e) {
    diag.warning("ONNX shape inference failed; continuing with the shapes the model declares: " + one_line(e.what()));
  }
}

}  // namespace kiln::onnx_import
