// The passwords of the sensors' own clients on the local broker
// (local.manage_clients): random, one file per sensor in
// <state_dir>/local-clients/<id> (0600, the directory 0700), made on first
// use, never logged. The bridge gives the broker the same password.
#pragma once

#include <filesystem>
#include <string>

#include "gateway_agent/status.h"

namespace ga {

class LocalCredentials {
 public:
  explicit LocalCredentials(std::filesystem::path state_dir)
      : dir_(std::move(state_dir) / "local-clients") {}

  // The sensor's password; a new one when it has none yet.
  Result<std::string> PasswordOf(const std::string& sensor);
  // The password kept for `name`, without making one (NotFound if none).
  Result<std::string> Existing(const std::string& name) const;
  // A new password for the sensor (the old one stops working once the bridge
  // has given it to the broker).
  Result<std::string> Rotate(const std::string& sensor);
  // The sensor is gone: so is its password.
  void Forget(const std::string& sensor);

 private:
  Result<std::string> Create(const std::string& sensor);
  std::filesystem::path dir_;
};

}  // namespace ga
