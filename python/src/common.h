// Shared pieces of the kiln._kiln extension: Status -> Python exception, Dims <-> tuples, per-file bind entry points.
#pragma once

#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>
#include <utility>

#include "kiln/status.h"
#include "kiln/types.h"

namespace kiln::py_bind {

namespace py = pybind11;

// Thrown by binding code on a failed Status; the registered translator turns it into the kiln exception class
// of its ErrorCode (InvalidArgumentError, UnsupportedError, ...) carrying the C++ message unchanged.
struct StatusError {
  Status status;
};

inline void check(const Status& st) {
  if (!st.ok()) throw StatusError{st};
}

template <typename T>
T take(Result<T> r) {
  if (!r.ok()) throw StatusError{r.status()};
  return std::move(r).value();
}

inline py::tuple dims_to_tuple(const Dims& d) {
  py::tuple t(d.size());
  for (size_t i = 0; i < d.size(); ++i) t[i] = py::int_(d[i]);
  return t;
}

void bind_common(py::module_& m);
void bind_logger(py::module_& m);
void bind_network(py::module_& m);
void bind_builder(py::module_& m);
void bind_runtime(py::module_& m);

}  // namespace kiln::py_bind
