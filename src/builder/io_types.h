// Engine binding types that differ from the network's (NetworkDefinition::set_io_type, the CLI's
// --inputIOFormats/--outputIOFormats): the builder's copy of the network gets a Cast at each such boundary.
#pragma once

#include <map>
#include <string>

#include "ir/graph.h"
#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::builder {

// For each network input or output named in `types` (a float type for a float tensor), the binding carries that
// type: an input takes it and a Cast gives its readers the network's type; an output's value is renamed and a
// Cast to the binding type writes the output under its name. The optimization passes then cancel the Casts
// against the layers' own (precision lowering's) conversions where they meet (remove_identity's Cast chains).
Status apply_io_types(ir::Graph& g, const std::map<std::string, DataType>& types);

}  // namespace kiln::builder
