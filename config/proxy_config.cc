// aws.proxy and its password file.
#include <sys/stat.h>

#include <cerrno>
#include <cstdio>

#include "gateway_agent/config.h"
#include "gateway_agent/files.h"

namespace ga {

std::string ProxySettingProblem(const AwsConfig& aws) {
  if (aws.proxy.empty()) {
    return aws.proxy_password_file.empty()
               ? ""
               : "is not set, but aws.proxy_password_file is: name the proxy, or remove the file";
  }
  auto proxy = ParseProxyUrl(aws.proxy);
  if (!proxy.ok()) return "\"" + aws.proxy + "\" " + proxy.status().message();
  if (proxy->user.empty() && !aws.proxy_password_file.empty()) {
    return "\"" + aws.proxy + "\" names no user for the password in aws.proxy_password_file: " +
           "write it as scheme://user@host:port";
  }
  if (!proxy->user.empty() && aws.proxy_password_file.empty()) {
    return "\"" + aws.proxy + "\" names a user: its password goes in the file named by " +
           "aws.proxy_password_file (mode 0600)";
  }
  return "";
}

Result<std::optional<ProxyEndpoint>> CloudProxy(const AwsConfig& aws) {
  if (aws.proxy.empty()) return std::optional<ProxyEndpoint>();
  GA_ASSIGN_OR_RETURN(ProxyEndpoint proxy, ParseProxyUrl(aws.proxy).With("aws.proxy"));
  if (aws.proxy_password_file.empty()) return std::optional<ProxyEndpoint>(std::move(proxy));
  const std::string file = aws.proxy_password_file.string();
  struct stat st {};
  if (stat(file.c_str(), &st) != 0) return ErrnoStatus("proxy password file " + file, errno);
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return PermissionDenied("proxy password file " + file +
                            " is accessible by group or others (mode " + mode +
                            "); run chmod 600 " + file);
  }
  GA_ASSIGN_OR_RETURN(proxy.password,
                      ReadSecretFile(aws.proxy_password_file, 4096).With("proxy password file"));
  return std::optional<ProxyEndpoint>(std::move(proxy));
}

}  // namespace ga
