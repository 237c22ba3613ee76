// Status and Result<T>: how every Kiln API reports failure (no exceptions cross the library boundary).
#pragma once

#include <optional>
#include <string>
#include <utility>
#include <variant>

namespace kiln {

enum class ErrorCode {
  kOk = 0,
  kInvalidArgument,   // caller passed something wrong (shape, dtype, binding)
  kInvalidModel,      // the model or network is malformed
  kUnsupported,       // valid input Kiln does not handle (yet)
  kInvalidEngine,     // engine file truncated, corrupt, foreign or incompatible
  kIoError,           // file system
  kOutOfMemory,
  kInternal,
};

const char* error_code_name(ErrorCode code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}
  static Status Ok() { return Status(); }

  bool ok() const { return code_ == ErrorCode::kOk; }
  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: <message>"
  std::string to_string() const;

  // Prefix context ("while importing node 'conv1': ...") to an error; no-op on success.
  Status with_context(const std::string& context) const;

 private:
  ErrorCode code_ = ErrorCode::kOk;
  std::string message_;
};

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : value_(std::move(value)) {}  // NOLINT(google-explicit-constructor)
  Result(Status status) : status_(std::move(status)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return value_.has_value(); }
  const Status& status() const { return status_; }
  T& value() & { return *value_; }
  const T& value() const& { return *value_; }
  T&& value() && { return std::move(*value_); }
  T* operator->() { return &*value_; }
  const T* operator->() const { return &*value_; }
  T& operator*() & { return *value_; }

 private:
  std::optional<T> value_;
  Status status_;
};

inline Status invalid_argument(std::string m) { return Status(ErrorCode::kInvalidArgument, std::move(m)); }
inline Status invalid_model(std::string m) { return Status(ErrorCode::kInvalidModel, std::move(m)); }
inline Status unsupported(std::string m) { return Status(ErrorCode::kUnsupported, std::move(m)); }
inline Status invalid_engine(std::string m) { return Status(ErrorCode::kInvalidEngine, std::move(m)); }
inline Status io_error(std::string m) { return Status(ErrorCode::kIoError, std::move(m)); }
inline Status internal_error(std::string m) { return Status(ErrorCode::kInternal, std::move(m)); }

}  // namespace kiln

#define KILN_CONCAT_INNER(a, b) a##b
#define KILN_CONCAT(a, b) KILN_CONCAT_INNER(a, b)

#define KILN_RETURN_IF_ERROR(expr)          \
  do {                                      \
    ::kiln::Status _kiln_st = (expr);       \
    if (!_kiln_st.ok()) return _kiln_st;    \
  } while (0)

#define KILN_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                               \
  if (!tmp.ok()) return tmp.status();              \
  lhs = std::move(tmp).value()

#define KILN_ASSIGN_OR_RETURN(lhs, expr) \
  KILN_ASSIGN_OR_RETURN_IMPL(KILN_CONCAT(_kiln_res_, __LINE__), lhs, expr)

// Fails the enclosing function with InvalidArgument when cond is false; msg may use stream-free string concatenation.
#define KILN_CHECK_ARG(cond, msg)                                \
  do {                                                           \
    if (!(cond)) return ::kiln::invalid_argument(msg);           \
  } while (0)
