#include "command_ca.h"

#include <fcntl.h>
#include <openssl/x509v3.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>

#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/unique_fd.h"
#include "issuing.h"

namespace ga::pki::internal {
namespace {

std::string CommandLine(const std::vector<std::string>& argv) {
  std::string line;
  for (const std::string& a : argv) {
    if (!line.empty()) line += ' ';
    line += a;
  }
  return line;
}

std::string Trimmed(std::string s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.pop_back();
  return s;
}

// Reaps `pid` after killing its process group (kill first: while the leader
// is an unreaped zombie its pid, and so the group id, cannot be reused).
int KillGroupAndReap(pid_t pid) {
  kill(-pid, SIGKILL);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  return status;
}

// What the external CA chose must still work as an AWS IoT client
// certificate: not a CA, and TLS client authentication allowed.
Status CheckDeviceUsage(X509* cert) {
  uint32_t flags = X509_get_extension_flags(cert);
  if ((flags & EXFLAG_CA) != 0) {
    return InvalidArgument(
        "it issued a CA certificate (basicConstraints CA:TRUE), not a device "
        "certificate");
  }
  if ((flags & EXFLAG_KUSAGE) != 0 && (X509_get_key_usage(cert) & KU_DIGITAL_SIGNATURE) == 0) {
    return InvalidArgument("the certificate's keyUsage lacks digitalSignature");
  }
  if ((flags & EXFLAG_XKUSAGE) != 0 && (X509_get_extended_key_usage(cert) & XKU_SSL_CLIENT) == 0) {
    return InvalidArgument("the certificate's extendedKeyUsage lacks clientAuth");
  }
  return Status::Ok();
}

class CommandCa final : public LocalCa {
 public:
  CommandCa(const CaConfig& config, X509Ptr cert)
      : LocalCa(ValidityOf(config)),
        argv_(config.command),
        timeout_(config.command_timeout),
        cert_(std::move(cert)),
        cert_source_(config.cert.string()) {}

  std::string_view backend() const override { return "command"; }
  const X509* certificate() const override { return cert_.get(); }

 protected:
  Result<IssuedCertificate> Sign(const CertificateRequest& request) override {
    std::string what = "CA command \"" + CommandLine(argv_) + "\"";
    if (cert_) GA_RETURN_IF_ERROR(CheckCaCertificate(cert_.get(), cert_source_));
    GA_ASSIGN_OR_RETURN(std::string csr_pem, CsrToPem(request.csr));
    auto run = RunChild(argv_, csr_pem, timeout_);
    if (!run.ok()) return std::move(run).take_status().With(what);
    int ws = run->wait_status;
    std::string err = Trimmed(run->err);
    if (!WIFEXITED(ws) || WEXITSTATUS(ws) != 0) {
      std::string how = WIFEXITED(ws) ? "exited with status " + std::to_string(WEXITSTATUS(ws))
                                      : "was killed by signal " + std::to_string(WTERMSIG(ws));
      return Status(Code::kUnavailable,
                    what + " " + how + (err.empty() ? ": (no stderr)" : ": " + err));
    }
    auto certs = ParseCertificatesPem(run->out, "its output");
    if (!certs.ok()) return std::move(certs).take_status().With(what);
    X509* leaf = certs->front().get();
    EVP_PKEY* leaf_key = X509_get0_pubkey(leaf);
    if (leaf_key == nullptr || EVP_PKEY_eq(leaf_key, X509_REQ_get0_pubkey(request.csr)) != 1) {
      ClearOpenSslErrors();
      return InvalidArgument(what + ": the first certificate it printed is not for the CSR's key");
    }
    auto cn = CommonName(X509_get_subject_name(leaf));
    if (!cn.ok() || *cn != request.common_name) {
      return InvalidArgument(what + ": the certificate's CN \"" + (cn.ok() ? *cn : "?") +
                             "\" is not \"" + request.common_name + "\"");
    }
    if (request.profile == CertificateProfile::kDevice) {
      GA_RETURN_IF_ERROR(CheckDeviceUsage(leaf).With(what));
    }
    if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0 ||
        X509_cmp_current_time(X509_get0_notBefore(leaf)) > 0) {
      return InvalidArgument(what + ": the certificate is not valid now (" +
                             FormatTime(X509_get0_notBefore(leaf)) + " to " +
                             FormatTime(X509_get0_notAfter(leaf)) + ")");
    }
    if (cert_) {
      GA_RETURN_IF_ERROR(
          CheckIssuedBy(leaf, cert_.get()).With("its certificate and " + cert_source_).With(what));
    }
    IssuedCertificate issued;
    issued.cert = std::move(certs->front());
    for (size_t i = 1; i < certs->size(); ++i) issued.chain.push_back(std::move((*certs)[i]));
    if (issued.chain.empty() && cert_) {
      X509_up_ref(cert_.get());
      issued.chain.emplace_back(cert_.get());
    }
    if (issued.chain.empty()) {
      return InvalidArgument(what +
                             ": printed no CA certificate after the device certificate, and [ca] "
                             "cert does not exist");
    }
    return issued;
  }

 private:
  std::vector<std::string> argv_;
  std::chrono::milliseconds timeout_;
  X509Ptr cert_;
  std::string cert_source_;
};

}  // namespace

Result<ChildOutput> RunChild(const std::vector<std::string>& argv, std::string_view input,
                             std::chrono::milliseconds timeout) {
  if (argv.empty() || argv[0].empty()) return InvalidArgument("no command");
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);

  // stdin is a socket so that writing to a command that ignores its input
  // gives EPIPE (MSG_NOSIGNAL) instead of SIGPIPE.
  int sv[2], out[2], err[2];
  if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
    return ErrnoStatus("socketpair", errno);
  }
  UniqueFd in_parent(sv[0]), in_child(sv[1]);
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  UniqueFd out_parent(out[0]), out_child(out[1]);
  if (pipe2(err, O_CLOEXEC) != 0) return ErrnoStatus("pipe", errno);
  UniqueFd err_parent(err[0]), err_child(err[1]);

  auto deadline = std::chrono::steady_clock::now() + timeout;
  pid_t pid = fork();
  if (pid < 0) return ErrnoStatus("fork", errno);
  if (pid == 0) {
    // Child: async-signal-safe calls only until exec.
    setpgid(0, 0);
    sigset_t all;
    sigemptyset(&all);
    sigprocmask(SIG_SETMASK, &all, nullptr);
    signal(SIGPIPE, SIG_DFL);
    if (dup2(in_child.get(), 0) < 0 || dup2(out_child.get(), 1) < 0 ||
        dup2(err_child.get(), 2) < 0) {
      _exit(127);
    }
    close_range(3, ~0u, 0);
    execvp(args[0], args.data());
    int e = errno;
    static constexpr char kMsg[] = "cannot execute ";
    (void)!write(2, kMsg, sizeof(kMsg) - 1);
    (void)!write(2, args[0], strlen(args[0]));
    (void)!write(2, ": ", 2);
    const char* why = strerror(e);
    (void)!write(2, why, strlen(why));
    _exit(127);
  }
  setpgid(pid, pid);  // also here: no race with the kill below
  in_child.reset();
  out_child.reset();
  err_child.reset();
  fcntl(out_parent.get(), F_SETFL, O_NONBLOCK);
  fcntl(err_parent.get(), F_SETFL, O_NONBLOCK);

  ChildOutput result;
  size_t written = 0;
  if (input.empty()) {
    shutdown(in_parent.get(), SHUT_WR);
    in_parent.reset();
  }
  bool out_open = true, err_open = true;
  while (out_open || err_open || in_parent.valid()) {
    auto left = std::chrono::duration_cast<std::chrono::milliseconds>(
        deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) {
      KillGroupAndReap(pid);
      return Status(Code::kTimeout,
                    "did not finish within " + std::to_string(timeout.count()) + " ms; killed");
    }
    pollfd fds[3];
    int n = 0;
    int in_idx = -1, out_idx = -1, err_idx = -1;
    if (in_parent.valid()) fds[in_idx = n++] = {in_parent.get(), POLLOUT, 0};
    if (out_open) fds[out_idx = n++] = {out_parent.get(), POLLIN, 0};
    if (err_open) fds[err_idx = n++] = {err_parent.get(), POLLIN, 0};
    int ready = poll(fds, n, static_cast<int>(std::min<int64_t>(left.count(), 1000)));
    if (ready < 0 && errno != EINTR) {
      int e = errno;
      KillGroupAndReap(pid);
      return ErrnoStatus("poll", e);
    }
    if (ready <= 0) continue;
    if (in_idx >= 0 && fds[in_idx].revents != 0) {
      ssize_t w = send(in_parent.get(), input.data() + written, input.size() - written,
                       MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w > 0) written += static_cast<size_t>(w);
      // A command that closes its stdin early just does not get the rest.
      if ((w < 0 && errno != EAGAIN && errno != EINTR) || written == input.size()) {
        shutdown(in_parent.get(), SHUT_WR);
        in_parent.reset();
      }
    }
    char buf[16384];
    if (out_idx >= 0 && fds[out_idx].revents != 0) {
      ssize_t r = read(out_parent.get(), buf, sizeof(buf));
      if (r > 0) {
        result.out.append(buf, static_cast<size_t>(r));
        if (result.out.size() > kMaxStdout) {
          KillGroupAndReap(pid);
          return InvalidArgument("printed more than " + std::to_string(kMaxStdout >> 20) +
                                 " MiB on stdout");
        }
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        out_open = false;
      }
    }
    if (err_idx >= 0 && fds[err_idx].revents != 0) {
      ssize_t r = read(err_parent.get(), buf, sizeof(buf));
      if (r > 0) {
        size_t room = kMaxStderr - std::min(kMaxStderr, result.err.size());
        result.err.append(buf, std::min(room, static_cast<size_t>(r)));
      } else if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
        err_open = false;
      }
    }
  }
  // Output closed: wait for the exit without reaping, then clear the group.
  for (;;) {
    siginfo_t info{};
    if (waitid(P_PID, static_cast<id_t>(pid), &info, WEXITED | WNOHANG | WNOWAIT) == 0 &&
        info.si_pid == pid) {
      break;
    }
    if (std::chrono::steady_clock::now() >= deadline) {
      KillGroupAndReap(pid);
      return Status(Code::kTimeout, "closed its output but did not exit within " +
                                        std::to_string(timeout.count()) + " ms; killed");
    }
    usleep(2000);
  }
  result.wait_status = KillGroupAndReap(pid);
  return result;
}

Result<std::unique_ptr<LocalCa>> OpenCommandCa(const CaConfig& config) {
  if (config.command.empty() || config.command[0].empty()) {
    return InvalidArgument("[ca] command is empty");
  }
  GA_RETURN_IF_ERROR(CheckValidity(config));
  X509Ptr cert;
  std::error_code ec;
  if (!config.cert.empty() && std::filesystem::exists(config.cert, ec)) {
    GA_ASSIGN_OR_RETURN(cert, ReadCertificateFile(config.cert));
    GA_RETURN_IF_ERROR(CheckCaCertificate(cert.get(), config.cert.string()));
  }
  return std::unique_ptr<LocalCa>(new CommandCa(config, std::move(cert)));
}

}  // namespace ga::pki::internal
