// Prints every operator in Kiln's registry as JSON (name, domain, since_opset, arity, attributes, dtypes) for the docs generator.
#include <iostream>

#include <nlohmann/json.hpp>

#include "ops/op.h"

int main() {
  nlohmann::json ops = nlohmann::json::array();
  for (const kiln::ops::OpSchema* s : kiln::ops::OpRegistry::instance().all()) {
    nlohmann::json dtypes = nlohmann::json::array(), attrs = nlohmann::json::array();
    for (auto t : s->dtypes) dtypes.push_back(kiln::dtype_name(t));
    for (const auto& a : s->attrs) attrs.push_back(a.name);
    ops.push_back({{"name", s->name},
                   {"domain", s->domain},
                   {"since_opset", s->since_opset},
                   {"inputs", {s->min_inputs, s->max_inputs}},
                   {"outputs", {s->min_outputs, s->max_outputs}},
                   {"attributes", attrs},
                   {"dtypes", dtypes},
                   {"backends", {"cpu"}}});
  }
  std::cout << ops.dump(2) << "\n";
  return 0;
}
