// The project's one error type.
//
// A Status says what failed, where (file, key, handle, topic, identity) and why
// (the underlying library's own text). Context is prepended as the error
// travels up: "loading sensor table: open /var/lib/x/state.db: Permission denied".
// Result<T> holds either a value or a non-OK Status.
#pragma once

#include <cassert>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace ga {

enum class Code {
  kOk = 0,
  kInvalidArgument,     // bad input from a user, a file or a peer
  kNotFound,            // a file, key, handle or identity that does not exist
  kAlreadyExists,       // refusing to overwrite
  kPermissionDenied,    // file modes, peer credentials, TPM authorization
  kFailedPrecondition,  // the system is not in a state that allows this
  kUnavailable,         // a peer (TPM, broker, cloud) cannot be reached: retry
  kTimeout,             // a bounded wait ran out
  kIo,                  // a file system or socket error
  kTpm,                 // the TPM said no (Tss2_RC_Decode text in the message)
  kCrypto,              // OpenSSL said no (its error queue in the message)
  kMqtt,                // libmosquitto said no (mosquitto_strerror in the message)
  kInternal,            // a bug: an invariant did not hold
};

std::string_view CodeName(Code code);

class [[nodiscard]] Status {
 public:
  Status() = default;
  Status(Code code, std::string message) : code_(code), message_(std::move(message)) {}

  static Status Ok() { return {}; }

  bool ok() const { return code_ == Code::kOk; }
  Code code() const { return code_; }
  const std::string& message() const { return message_; }

  // Prepends "context: " to the message; returns *this for chaining.
  Status& With(std::string_view context) &;
  Status&& With(std::string_view context) &&;

  // "NotFound: open /x: No such file or directory"
  std::string ToString() const;

  // Marks a Status as deliberately unused.
  void IgnoreError() const {}

 private:
  Code code_ = Code::kOk;
  std::string message_;
};

inline Status InvalidArgument(std::string m) {
  return {Code::kInvalidArgument, std::move(m)};
}
inline Status NotFound(std::string m) {
  return {Code::kNotFound, std::move(m)};
}
inline Status FailedPrecondition(std::string m) {
  return {Code::kFailedPrecondition, std::move(m)};
}
inline Status PermissionDenied(std::string m) {
  return {Code::kPermissionDenied, std::move(m)};
}
inline Status Unavailable(std::string m) {
  return {Code::kUnavailable, std::move(m)};
}
inline Status Internal(std::string m) {
  return {Code::kInternal, std::move(m)};
}

// A Status from errno (captured by the caller before anything else runs):
// "<what>: <strerror(err)>", with the code derived from err.
Status ErrnoStatus(std::string_view what, int err);

template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    assert(!std::get<Status>(v_).ok() && "Result built from an OK Status");
    if (std::get<Status>(v_).ok()) v_ = Status(Code::kInternal, "Result built from an OK Status");
  }

  bool ok() const { return std::holds_alternative<T>(v_); }
  const Status& status() const {
    static const Status kOk;
    return ok() ? kOk : std::get<Status>(v_);
  }
  Status take_status() && { return ok() ? Status() : std::move(std::get<Status>(v_)); }

  T& value() & { return std::get<T>(v_); }
  const T& value() const& { return std::get<T>(v_); }
  T&& value() && { return std::get<T>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  Result& With(std::string_view context) & {
    if (!ok()) std::get<Status>(v_).With(context);
    return *this;
  }
  Result&& With(std::string_view context) && {
    if (!ok()) std::get<Status>(v_).With(context);
    return std::move(*this);
  }

 private:
  std::variant<T, Status> v_;
};

}  // namespace ga

#define GA_CONCAT_INNER(a, b) a##b
#define GA_CONCAT(a, b) GA_CONCAT_INNER(a, b)

// Returns the Status of `expr` from the calling function when it is not OK.
#define GA_RETURN_IF_ERROR(expr)             \
  do {                                       \
    ::ga::Status ga_status_ = (expr);        \
    if (!ga_status_.ok()) return ga_status_; \
  } while (0)

// `lhs` = the value of Result `rexpr`, or returns its Status.
#define GA_ASSIGN_OR_RETURN(lhs, rexpr) \
  GA_ASSIGN_OR_RETURN_IMPL(GA_CONCAT(ga_result_, __LINE__), lhs, rexpr)
#define GA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, rexpr)     \
  auto tmp = (rexpr);                                 \
  if (!tmp.ok()) return std::move(tmp).take_status(); \
  lhs = std::move(tmp).value()
