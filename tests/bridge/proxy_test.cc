// Cloud connections through real proxies: tinyproxy (HTTP CONNECT) and
// microsocks (SOCKS5), both with a user and password. Enrollment (JITR),
// the bridge and `check` go through them; a proxy that is away, refuses the
// login or forbids the tunnel is named in status with what to fix.
#include <sys/stat.h>

#include <cstdio>
#include <fstream>

#include "bridge_harness.h"
#include "proxy_server.h"

namespace ga::testing {
namespace {

using Clock = std::chrono::steady_clock;

std::filesystem::path WritePasswordFile(AgentHarness& h, const std::string& password) {
  auto file = h.dir() / "proxy.pass";
  std::ofstream(file, std::ios::trunc) << password << "\n";
  chmod(file.c_str(), 0600);
  return file;
}

void UseProxy(AgentHarness& h, const std::string& url, const std::filesystem::path& password) {
  h.RewriteConfig([&](std::string& text) {
    std::string keys = "proxy = \"" + url + "\"\n";
    if (!password.empty()) keys += "proxy_password_file = \"" + password.string() + "\"\n";
    text.replace(text.find("[aws]\n"), 6, "[aws]\n" + keys);
  });
}

// The status JSON holds `text` (in an identity's problem or last error).
bool StatusSays(AgentHarness& h, const std::string& text, std::chrono::seconds timeout,
                std::string* last) {
  return h.WaitForStatus([&](const std::string& s) { return s.find(text) != std::string::npos; },
                         timeout, last);
}

bool NoProblems(AgentHarness& h, const std::vector<std::string>& names,
                std::chrono::seconds timeout) {
  return h.WaitForStatus(
      [&](const std::string& s) {
        for (const auto& n : names) {
          Json id = StatusOf(s, n);
          if (Str(id, "state") != "ACTIVE" || !Str(id, "problem").empty()) return false;
        }
        return true;
      },
      timeout);
}

double Since(Clock::time_point t) {
  return std::chrono::duration<double>(Clock::now() - t).count();
}

// Enrolls, bridges, survives the proxy going away (named in status) and
// coming back, with nothing lost.
void EnrollBridgeAndOutlive(ProxyServerOptions::Kind kind, const char* label) {
  HarnessOptions o;
  o.sensors = 1;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ProxyServerOptions po;
  po.kind = kind;
  po.user = "gw";
  po.password = "pr0xy-secret";
  po.allowed_port = (*h)->sim().mqtt_port();
  auto proxy = ProxyServer::Start(po);
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  UseProxy(**h, (*proxy)->Url(), WritePasswordFile(**h, po.password));

  auto check = (*h)->Cli({"check"});
  EXPECT_NE(check.output.find("tunnel to " + (*h)->sim().endpoint()), std::string::npos)
      << check.output;

  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 2, 90s)) << Log(**h) << (*proxy)->Log();
  ASSERT_TRUE(WaitForSimClients((*h)->sim(), {"gw-test", "gw-test:s1"}, 30s)) << Log(**h);
  LocalClient sensor((*h)->broker().port(), std::string("proxy-") + label);
  for (int n = 0; n < 10; ++n) sensor.Publish("sensors/s1/seq", std::to_string(n));
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 10, 30s, nullptr)) << Log(**h);

  // The proxy goes away: its tunnels close with it; status names it.
  (*proxy)->Stop();
  auto stopped = Clock::now();
  for (int n = 10; n < 20; ++n) sensor.Publish("sensors/s1/seq", std::to_string(n));
  ASSERT_TRUE(sensor.WaitAcked(20, 20s));
  std::string last;
  const std::string away = "proxy " + (*proxy)->Url() + " unreachable";
  ASSERT_TRUE(StatusSays(**h, away, 30s, &last)) << last << Log(**h);
  double shown = Since(stopped);

  ASSERT_TRUE((*proxy)->Relaunch().ok());
  auto relaunched = Clock::now();
  ASSERT_TRUE(NoProblems(**h, {"gateway", "s1"}, 60s)) << (*h)->StatusJson() << Log(**h);
  double back = Since(relaunched);
  ASSERT_TRUE(WaitForCloudCount((*h)->sim(), 20, 60s, nullptr)) << Log(**h);
  // Each identity's JITR connects and bridge connection went through it.
  EXPECT_GE((*proxy)->Tunnels(), 4) << (*proxy)->Log();
  std::printf(
      "[ figures  ] %s proxy: %d tunnels; stopped -> shown in status after %.1f s; "
      "back -> clear after %.1f s\n",
      label, (*proxy)->Tunnels(), shown, back);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

TEST(HttpProxy, EnrollsAndBridgesThroughItAndNamesItWhileItIsAway) {
  EnrollBridgeAndOutlive(ProxyServerOptions::Kind::kHttp, "HTTP");
}

TEST(Socks5Proxy, EnrollsAndBridgesThroughItAndNamesItWhileItIsAway) {
  EnrollBridgeAndOutlive(ProxyServerOptions::Kind::kSocks5, "SOCKS5");
}

// 407 and 403 (and a SOCKS5 login refused) are shown with what to fix; a
// corrected password file is used without a restart.
TEST(HttpProxy, RefusalsAreShownWithWhatToFix) {
  HarnessOptions o;
  o.sensors = 0;
  auto h = AgentHarness::Start(o);
  ASSERT_TRUE(h.ok()) << h.status().ToString();
  ProxyServerOptions po;
  po.user = "gw";
  po.password = "right";
  po.allowed_port = (*h)->sim().mqtt_port();
  auto proxy = ProxyServer::Start(po);
  ASSERT_TRUE(proxy.ok()) << proxy.status().ToString();
  // No user at all: 407.
  std::string url = (*proxy)->Url();
  UseProxy(**h, url.replace(url.find("gw@"), 3, ""), "");
  ASSERT_TRUE((*h)->StartAgent().ok());
  std::string last;
  ASSERT_TRUE(StatusSays(**h, "407 Proxy Authentication Required", 60s, &last)) << last;
  EXPECT_NE(last.find("give the user in aws.proxy"), std::string::npos) << last;
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());

  // The wrong password.
  auto password_file = WritePasswordFile(**h, "wrong");
  (*h)->RewriteConfig([&](std::string& text) {
    std::string from = "proxy = \"" + url + "\"\n";
    text.replace(text.find(from), from.size(),
                 "proxy = \"" + (*proxy)->Url() + "\"\nproxy_password_file = \"" +
                     password_file.string() + "\"\n");
  });
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE(StatusSays(**h, "the proxy refused the user or password", 60s, &last)) << last;
  EXPECT_NE(last.find("check the user in aws.proxy and the password in aws.proxy_password_file"),
            std::string::npos)
      << last;

  WritePasswordFile(**h, "right");
  ASSERT_TRUE((*h)->WaitForState("ACTIVE", 1, 60s)) << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());

  // A proxy whose rules allow another port only.
  ProxyServerOptions other = po;
  other.allowed_port = 1;
  auto strict = ProxyServer::Start(other);
  ASSERT_TRUE(strict.ok()) << strict.status().ToString();
  (*h)->RewriteConfig([&](std::string& text) {
    std::string from = (*proxy)->Url();
    text.replace(text.find(from), from.size(), (*strict)->Url());
  });
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE(StatusSays(**h, "the proxy refused the tunnel (403", 60s, &last)) << last << Log(**h);
  EXPECT_NE(last.find("must allow CONNECT to " + (*h)->sim().endpoint()), std::string::npos)
      << last;
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());

  // SOCKS5: the login refused.
  ProxyServerOptions socks = po;
  socks.kind = ProxyServerOptions::Kind::kSocks5;
  auto socks_proxy = ProxyServer::Start(socks);
  ASSERT_TRUE(socks_proxy.ok()) << socks_proxy.status().ToString();
  (*h)->RewriteConfig([&](std::string& text) {
    std::string from = (*strict)->Url();
    text.replace(text.find(from), from.size(), (*socks_proxy)->Url());
  });
  WritePasswordFile(**h, "wrong");
  ASSERT_TRUE((*h)->StartAgent().ok());
  ASSERT_TRUE(StatusSays(**h, "the proxy refused the login", 60s, &last)) << last << Log(**h);
  ASSERT_TRUE((*h)->agent().Signal(SIGTERM, 20s).has_value());
  ExpectNoViolations(**h);
}

}  // namespace
}  // namespace ga::testing
