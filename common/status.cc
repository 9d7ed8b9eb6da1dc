#include "gateway_agent/status.h"

#include <cerrno>
#include <cstring>

namespace ga {

std::string_view CodeName(Code code) {
  switch (code) {
    case Code::kOk: return "OK";
    case Code::kInvalidArgument: return "InvalidArgument";
    case Code::kNotFound: return "NotFound";
    case Code::kAlreadyExists: return "AlreadyExists";
    case Code::kPermissionDenied: return "PermissionDenied";
    case Code::kFailedPrecondition: return "FailedPrecondition";
    case Code::kUnavailable: return "Unavailable";
    case Code::kTimeout: return "Timeout";
    case Code::kIo: return "IoError";
    case Code::kTpm: return "TpmError";
    case Code::kCrypto: return "CryptoError";
    case Code::kMqtt: return "MqttError";
    case Code::kInternal: return "Internal";
  }
  return "Unknown";
}

Status& Status::With(std::string_view context) & {
  if (!ok() && !context.empty()) {
    std::string m(context);
    m += ": ";
    m += message_;
    message_ = std::move(m);
  }
  return *this;
}

Status&& Status::With(std::string_view context) && {
  With(context);
  return std::move(*this);
}

std::string Status::ToString() const {
  if (ok()) return "OK";
  std::string s(CodeName(code_));
  s += ": ";
  s += message_;
  return s;
}

Status ErrnoStatus(std::string_view what, int err) {
  Code code = Code::kIo;
  switch (err) {
    case ENOENT: code = Code::kNotFound; break;
    case EACCES:
    case EPERM: code = Code::kPermissionDenied; break;
    case EEXIST: code = Code::kAlreadyExists; break;
    case EINVAL: code = Code::kInvalidArgument; break;
    case ETIMEDOUT: code = Code::kTimeout; break;
    case ECONNREFUSED:
    case EHOSTUNREACH:
    case ENETUNREACH:
    case ECONNRESET: code = Code::kUnavailable; break;
    default: break;
  }
  std::string m(what);
  m += ": ";
  m += std::strerror(err);
  return {code, std::move(m)};
}

}  // namespace ga
