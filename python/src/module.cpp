// kiln._kiln: the C++ API as a Python extension. The kiln package (python/kiln) shapes it into TensorRT's Python API.
#include "common.h"

PYBIND11_MODULE(_kiln, m) {
  m.doc() = "Bindings of Kiln's C++ API; use the kiln package rather than this module.";
  namespace b = kiln::py_bind;
  b::bind_common(m);
  b::bind_logger(m);
  b::bind_network(m);
  b::bind_builder(m);
  b::bind_runtime(m);
}
