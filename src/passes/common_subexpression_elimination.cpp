// common_subexpression_elimination pass: nodes that compute the same op, with the same attributes, on the same
// input values are computed once; readers of the duplicates read the first one's outputs. Exporters repeat shape
// computations (Shape -> Gather per use) and sometimes whole projections.
#include <cstring>
#include <set>
#include <sstream>
#include <unordered_map>

#include "passes/matcher.h"
#include "passes/pass.h"

namespace kiln::passes {
namespace {

// Ops whose result is not a function of their inputs alone: never merged.
bool is_random(const ir::Node& n) {
  static const std::set<std::string> ops = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                                            "Bernoulli", "Multinomial", "Dropout"};
  return n.domain.empty() && ops.count(n.op_type);
}

// Exact text of an attribute (floats by their bits); false for tensor and graph attributes, which are not compared.
bool attr_key(const Attribute& a, std::string* out) {
  std::ostringstream os;
  auto bits = [&](float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof(u));
    os << std::hex << u << std::dec << ",";
  };
  switch (a.type()) {
    case AttrType::kINT: os << a.i(); break;
    case AttrType::kFLOAT: bits(a.f()); break;
    case AttrType::kSTRING: os << a.s().size() << ":" << a.s(); break;
    case AttrType::kINTS: for (int64_t v : a.ints()) os << v << ","; break;
    case AttrType::kFLOATS: for (float v : a.floats()) bits(v); break;
    case AttrType::kSTRINGS: for (const auto& v : a.strings()) os << v.size() << ":" << v << ","; break;
    default: return false;
  }
  *out = os.str();
  return true;
}

// The node's identity, or empty when it must not be merged.
std::string node_key(const ir::Node& n) {
  if (is_random(n) || n.outputs.empty()) return {};
  std::ostringstream os;
  os << n.domain << "::" << n.op_type << "@" << n.opset << "|" << n.outputs.size() << "|";
  for (const ir::Value* v : n.inputs) os << static_cast<const void*>(v) << ",";
  os << "|";
  for (const auto& [name, a] : n.attrs.map()) {
    std::string text;
    if (!attr_key(a, &text)) return {};
    os << name << "=" << text << ";";
  }
  return os.str();
}

class CommonSubexpressionElimination final : public Pass {
 public:
  std::string_view name() const override { return "common_subexpression_elimination"; }

  Status apply(ir::Graph& g, PassContext& ctx) override {
    KILN_RETURN_IF_ERROR(g.topo_sort());
    g.rebuild_links();
    std::unordered_map<std::string, ir::Node*> first;
    std::vector<ir::Node*> order;
    for (auto& n : g.nodes()) order.push_back(n.get());
    int merged = 0;
    for (ir::Node* n : order) {
      // Keys name input values, and earlier merges already pointed this node's inputs at the kept values, so
      // whole duplicated chains collapse in one sweep.
      const std::string key = node_key(*n);
      if (key.empty()) continue;
      auto [it, fresh] = first.emplace(key, n);
      if (fresh) continue;
      ir::Node* keep = it->second;
      bool named_output = false;  // a network output keeps its own name: that node stays
      for (ir::Value* o : n->outputs) named_output |= o && match::is_graph_output(g, o);
      if (named_output) continue;
      for (size_t k = 0; k < n->outputs.size(); ++k)
        if (n->outputs[k] && keep->outputs[k]) g.replace_all_uses(n->outputs[k], keep->outputs[k]);
      ++merged;
    }
    // The duplicates now feed nothing; dead_code_elimination (next in the pipeline) removes them.
    ctx.changes += merged;
    if (merged) ctx.verbose("common_subexpression_elimination: " + std::to_string(merged) + " duplicate nodes");
    return Status::Ok();
  }
};

}  // namespace

std::unique_ptr<Pass> make_common_subexpression_elimination() {
  return std::make_unique<CommonSubexpressionElimination>();
}

}  // namespace kiln::passes
