// Attribute variant printing and the typed getters of Attributes.
#include "common/attribute.h"

#include <sstream>

namespace kiln {

const char* attr_type_name(AttrType t) {
  switch (t) {
    case AttrType::kINT: return "int";
    case AttrType::kFLOAT: return "float";
    case AttrType::kSTRING: return "string";
    case AttrType::kINTS: return "ints";
    case AttrType::kFLOATS: return "floats";
    case AttrType::kSTRINGS: return "strings";
    case AttrType::kTENSOR: return "tensor";
    case AttrType::kGRAPH: return "graph";
  }
  return "invalid";
}

template <typename T>
static std::string join(const std::vector<T>& v) {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < v.size(); ++i) os << (i ? "," : "") << v[i];
  os << "]";
  return os.str();
}

std::string Attribute::to_string() const {
  switch (type()) {
    case AttrType::kINT: return std::to_string(i());
    case AttrType::kFLOAT: { std::ostringstream os; os << f(); return os.str(); }
    case AttrType::kSTRING: return "\"" + s() + "\"";
    case AttrType::kINTS: return join(ints());
    case AttrType::kFLOATS: return join(floats());
    case AttrType::kSTRINGS: return join(strings());
    case AttrType::kTENSOR: return t().debug_string(4);
    case AttrType::kGRAPH: return g() ? g()->describe() : "graph(null)";
  }
  return "?";
}

template <typename T>
static Result<T> get_typed(const std::map<std::string, Attribute>& m, const std::string& name, AttrType want,
                           const T* def) {
  auto it = m.find(name);
  if (it == m.end()) {
    if (def) return *def;
    return invalid_model("required attribute '" + name + "' is missing");
  }
  if (it->second.type() != want) {
    // ONNX exporters sometimes write a single int where a float is expected; accept that widening only.
    if constexpr (std::is_same_v<T, float>) {
      if (it->second.type() == AttrType::kINT) return static_cast<float>(it->second.i());
    }
    return invalid_model("attribute '" + name + "' must be of type " + attr_type_name(want) + " but is " +
                         attr_type_name(it->second.type()));
  }
  return std::get<T>(it->second.value());
}

Result<int64_t> Attributes::get_int(const std::string& n) const { return get_typed<int64_t>(map_, n, AttrType::kINT, nullptr); }
Result<int64_t> Attributes::get_int(const std::string& n, int64_t d) const { return get_typed<int64_t>(map_, n, AttrType::kINT, &d); }
Result<float> Attributes::get_float(const std::string& n) const { return get_typed<float>(map_, n, AttrType::kFLOAT, nullptr); }
Result<float> Attributes::get_float(const std::string& n, float d) const { return get_typed<float>(map_, n, AttrType::kFLOAT, &d); }
Result<std::string> Attributes::get_string(const std::string& n) const { return get_typed<std::string>(map_, n, AttrType::kSTRING, nullptr); }
Result<std::string> Attributes::get_string(const std::string& n, const std::string& d) const { return get_typed<std::string>(map_, n, AttrType::kSTRING, &d); }
Result<std::vector<int64_t>> Attributes::get_ints(const std::string& n) const { return get_typed<std::vector<int64_t>>(map_, n, AttrType::kINTS, nullptr); }
Result<std::vector<int64_t>> Attributes::get_ints(const std::string& n, const std::vector<int64_t>& d) const { return get_typed<std::vector<int64_t>>(map_, n, AttrType::kINTS, &d); }
Result<std::vector<float>> Attributes::get_floats(const std::string& n) const { return get_typed<std::vector<float>>(map_, n, AttrType::kFLOATS, nullptr); }
Result<std::vector<float>> Attributes::get_floats(const std::string& n, const std::vector<float>& d) const { return get_typed<std::vector<float>>(map_, n, AttrType::kFLOATS, &d); }
Result<Tensor> Attributes::get_tensor(const std::string& n) const { return get_typed<Tensor>(map_, n, AttrType::kTENSOR, nullptr); }
Result<std::shared_ptr<const Subgraph>> Attributes::get_graph(const std::string& n) const {
  KILN_ASSIGN_OR_RETURN(auto g, (get_typed<std::shared_ptr<const Subgraph>>(map_, n, AttrType::kGRAPH, nullptr)));
  if (!g) return invalid_model("graph attribute '" + n + "' is empty");
  return g;
}
bool Attributes::has_graph() const {
  for (auto& [name, a] : map_)
    if (a.type() == AttrType::kGRAPH) return true;
  return false;
}

}  // namespace kiln
