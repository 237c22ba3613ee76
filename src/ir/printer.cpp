// ir::print: the text dump behind --dump-after and error reports, one line per input, constant, node, output.
#include <cstdio>
#include <sstream>

#include "ir/graph.h"

namespace kiln::ir {
namespace {

// Constants can number in the thousands (every weight); past this many only the count and size remain.
constexpr size_t kMaxListedConstants = 16;

std::string type_string(const Value& v) {
  std::string s = dtype_name(v.dtype);
  s += v.rank_known ? ops::shape_to_string(v.shape) : "[*]";
  switch (v.kind) {
    case ValueKind::kTENSOR: return s;
    case ValueKind::kSEQUENCE: return "seq(" + s + ")";
    case ValueKind::kOPTIONAL_TENSOR: return "optional(" + s + ")";
    case ValueKind::kOPTIONAL_SEQUENCE: return "optional(seq(" + s + "))";
  }
  return s;
}

// Printing must survive broken graphs: it is how a verifier failure gets explained.
std::string value_line(const Value* v) { return v ? "%" + v->name + ": " + type_string(*v) : "<null>"; }

std::string byte_size(size_t n) {
  char buf[32];
  if (n < 1024) std::snprintf(buf, sizeof buf, "%zu B", n);
  else if (n < (size_t{1} << 20)) std::snprintf(buf, sizeof buf, "%.1f KiB", n / 1024.0);
  else std::snprintf(buf, sizeof buf, "%.1f MiB", n / double(size_t{1} << 20));
  return buf;
}

std::string known_string(const Value& v) {
  if (!v.known || v.is_constant()) return "";
  std::string s = " known=[";
  for (size_t i = 0; i < v.known->size(); ++i) s += (i ? "," : "") + (*v.known)[i].to_string();
  return s + "]";
}

}  // namespace

std::string print(const Graph& g) {
  std::ostringstream os;
  os << "graph " << (g.name.empty() ? "<unnamed>" : g.name) << " (opset " << g.opset() << ", " << g.nodes().size()
     << " nodes)\n";
  os << "inputs:\n";
  for (const Value* v : g.inputs()) os << "  " << value_line(v) << "\n";

  std::vector<const Value*> constants;
  size_t total = 0;
  for (auto& v : g.values())
    if (v->is_constant()) {
      constants.push_back(v.get());
      total += v->constant->nbytes();
    }
  os << "constants: " << constants.size() << " (" << byte_size(total) << ")\n";
  for (size_t i = 0; i < constants.size() && i < kMaxListedConstants; ++i) {
    const Value& c = *constants[i];
    os << "  %" << c.name << ": " << type_string(c);
    if (c.constant->numel() <= 8) {
      std::string d = c.constant->debug_string(8);
      os << " = " << d.substr(d.find('{'));
    }
    else os << " (" << byte_size(c.constant->nbytes()) << ")";
    os << "\n";
  }
  if (constants.size() > kMaxListedConstants) os << "  ... " << constants.size() - kMaxListedConstants << " more\n";

  os << "nodes:\n";
  for (auto& n : g.nodes()) {
    os << "  ";
    for (size_t i = 0; i < n->outputs.size(); ++i)
      if (!n->outputs[i]) os << (i ? ", " : "") << "<null>";
      else os << (i ? ", " : "") << "%" << n->outputs[i]->name << ":" << type_string(*n->outputs[i])
              << known_string(*n->outputs[i]);
    os << " = " << (n->domain.empty() ? "" : n->domain + "::") << n->op_type << "(";
    for (size_t i = 0; i < n->inputs.size(); ++i) os << (i ? ", " : "") << (n->inputs[i] ? "%" + n->inputs[i]->name : "_");
    os << ")";
    if (!n->attrs.map().empty()) {
      os << " {";
      bool first = true;
      for (auto& [k, a] : n->attrs.map()) {
        os << (first ? "" : ", ") << k << "=" << a.to_string();
        first = false;
      }
      os << "}";
    }
    os << "  # " << n->name << "\n";
  }
  os << "outputs:\n";
  for (const Value* v : g.outputs()) os << "  " << value_line(v) << "\n";
  return os.str();
}

}  // namespace kiln::ir
