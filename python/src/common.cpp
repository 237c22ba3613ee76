// Exceptions, enums (DataType, TensorIOMode, Backend) and small queries shared by the whole extension.
#include "common.h"

#include <optional>

#include "ops/op.h"
#include "ops/op_util.h"
#include "runtime/device_backend.h"

namespace kiln::py_bind {
namespace {

// Indexed by ErrorCode; filled once at import. Leaked on purpose: exception types live as long as the process.
PyObject* g_error_types[8] = {};

PyObject* new_error_type(py::module_& m, const char* name, const char* doc, std::initializer_list<PyObject*> bases) {
  py::tuple b(bases.size());
  size_t i = 0;
  for (PyObject* p : bases) b[i++] = py::reinterpret_borrow<py::object>(p);
  std::string qualified = std::string("kiln.") + name;
  PyObject* t = PyErr_NewExceptionWithDoc(qualified.c_str(), doc, b.ptr(), nullptr);
  if (!t) throw py::error_already_set();
  m.attr(name) = py::reinterpret_borrow<py::object>(t);
  return t;
}

void register_errors(py::module_& m) {
  PyObject* base = new_error_type(m, "KilnError", "Base of every error Kiln reports; .code names the C++ ErrorCode.",
                                  {PyExc_RuntimeError});
  auto& t = g_error_types;
  t[int(ErrorCode::kInvalidArgument)] =
      new_error_type(m, "InvalidArgumentError", "The caller passed something wrong (shape, dtype, name, binding).",
                     {base, PyExc_ValueError});
  t[int(ErrorCode::kInvalidModel)] =
      new_error_type(m, "InvalidModelError", "The model or network is malformed.", {base, PyExc_ValueError});
  t[int(ErrorCode::kUnsupported)] =
      new_error_type(m, "UnsupportedError", "Valid input that Kiln (or this backend) does not handle.",
                     {base, PyExc_NotImplementedError});
  t[int(ErrorCode::kInvalidEngine)] = new_error_type(
      m, "InvalidEngineError", "Engine bytes truncated, corrupt, foreign or incompatible.", {base, PyExc_ValueError});
  t[int(ErrorCode::kIoError)] =
      new_error_type(m, "KilnIOError", "A file could not be read or written.", {base, PyExc_OSError});
  t[int(ErrorCode::kOutOfMemory)] = new_error_type(m, "KilnMemoryError", "Out of memory.", {base, PyExc_MemoryError});
  t[int(ErrorCode::kInternal)] = new_error_type(m, "InternalError", "A Kiln bug: please report it.", {base});
  t[int(ErrorCode::kOk)] = base;

  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusError& e) {
      int code = static_cast<int>(e.status.code());
      PyObject* type = code >= 0 && code < 8 && g_error_types[code] ? g_error_types[code] : g_error_types[0];
      py::object exc = py::reinterpret_borrow<py::object>(type)(e.status.message());
      exc.attr("code") = error_code_name(e.status.code());
      PyErr_SetObject(type, exc.ptr());
    }
  });
}

}  // namespace

void bind_common(py::module_& m) {
  register_errors(m);

  // TensorRT's member names where it has the type; Kiln's other types follow the same style.
  py::enum_<DataType>(m, "DataType", "Element type of a tensor.")
      .value("FLOAT", DataType::kFLOAT)
      .value("HALF", DataType::kHALF)
      .value("BF16", DataType::kBF16)
      .value("INT8", DataType::kINT8)
      .value("UINT8", DataType::kUINT8)
      .value("INT32", DataType::kINT32)
      .value("INT64", DataType::kINT64)
      .value("BOOL", DataType::kBOOL)
      .value("DOUBLE", DataType::kDOUBLE)
      .value("INT16", DataType::kINT16)
      .value("UINT16", DataType::kUINT16)
      .value("UINT32", DataType::kUINT32)
      .value("UINT64", DataType::kUINT64)
      .value("FP8", DataType::kFP8E4M3FN)
      .value("FP8E4M3FNUZ", DataType::kFP8E4M3FNUZ)
      .value("FP8E5M2", DataType::kFP8E5M2)
      .value("FP8E5M2FNUZ", DataType::kFP8E5M2FNUZ)
      .value("UINT4", DataType::kUINT4)
      .value("INT4", DataType::kINT4)
      .value("FP4", DataType::kFP4E2M1)
      .value("E8M0", DataType::kFP8E8M0)
      .value("UINT2", DataType::kUINT2)
      .value("INT2", DataType::kINT2)
      // Kiln holds sub-byte types one element per byte, so itemsize is 1 for them.
      .def_property_readonly("itemsize", [](DataType t) { return dtype_size(t); })
      .def_property_readonly("type_name", [](DataType t) { return std::string(dtype_name(t)); });

  py::enum_<TensorIOMode>(m, "TensorIOMode")
      .value("NONE", TensorIOMode::kNONE)
      .value("INPUT", TensorIOMode::kINPUT)
      .value("OUTPUT", TensorIOMode::kOUTPUT);

  py::enum_<Backend>(m, "Backend", "Where an engine runs (Kiln-specific; TensorRT always targets the GPU).")
      .value("CPU", Backend::kCPU)
      .value("CUDA", Backend::kCUDA);

  m.def("onnx_type_code", [](DataType t) -> int {
    // Inverted from the one table the ops use, so Cast layers and the importer agree.
    for (int code = 0; code < 64; ++code) {
      DataType d;
      if (ops::dtype_from_onnx_code(code, &d) && d == t) return code;
    }
    throw StatusError{unsupported(std::string("data type ") + dtype_name(t) + " has no ONNX type code")};
  });
  m.def(
      "is_operator_supported",
      [](const std::string& op, const std::string& domain) {
        return ops::OpRegistry::instance().find(op, domain) != nullptr;
      },
      py::arg("op_type"), py::arg("domain") = "");
  m.def("cuda_device", []() -> std::optional<std::string> {
    // The CUDA backend library loads on first use; no library, no driver or no GPU all mean "none".
    Result<runtime::DeviceBackend*> backend = runtime::device_backend(Backend::kCUDA);
    if (!backend.ok()) return std::nullopt;
    Result<runtime::DeviceInfo> info = (*backend)->device_info();
    if (!info.ok()) return std::nullopt;
    return info->name;
  });
}

}  // namespace kiln::py_bind
