#include "gateway_agent/log.h"

#include <sys/stat.h>
#include <syslog.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <string>
#include <unordered_map>
#include <vector>

#include "gateway_agent/thread_annotations.h"

#define SD_JOURNAL_SUPPRESS_LOCATION
#include <systemd/sd-journal.h>

namespace ga::log {
namespace {

struct RepeatState {
  std::chrono::steady_clock::time_point window_start;
  int written = 0;
  long suppressed = 0;
};

struct Logger {
  Mutex mu;
  Level level GA_GUARDED_BY(mu) = Level::kInfo;
  Sink sink GA_GUARDED_BY(mu) = Sink::kAuto;
  Writer writer GA_GUARDED_BY(mu);
  std::unordered_map<std::string, RepeatState> repeats GA_GUARDED_BY(mu);
};

Logger& Get() {
  static Logger* logger = new Logger();  // never destroyed: usable from atexit paths
  return *logger;
}

// systemd sets JOURNAL_STREAM=<dev>:<inode> of the stream it connected to
// stderr; only when it still matches do we talk to journald directly.
bool StderrIsJournal() {
  const char* js = std::getenv("JOURNAL_STREAM");
  if (js == nullptr) return false;
  unsigned long long dev = 0, ino = 0;
  if (std::sscanf(js, "%llu:%llu", &dev, &ino) != 2) return false;
  struct stat st {};
  if (fstat(STDERR_FILENO, &st) != 0) return false;
  return st.st_dev == dev && st.st_ino == ino;
}

int Priority(Level level) {
  switch (level) {
    case Level::kDebug: return LOG_DEBUG;
    case Level::kInfo: return LOG_INFO;
    case Level::kWarning: return LOG_WARNING;
    case Level::kError: return LOG_ERR;
  }
  return LOG_INFO;
}

void WriteJournal(Level level, const std::string& line, std::initializer_list<Field> fields) {
  std::vector<std::string> strings;
  strings.reserve(fields.size() + 3);
  strings.push_back("MESSAGE=" + line);
  strings.push_back("PRIORITY=" + std::to_string(Priority(level)));
  strings.push_back("SYSLOG_IDENTIFIER=gateway-agent");
  for (const auto& [k, v] : fields) {
    std::string f(k);
    f += '=';
    f += v;
    strings.push_back(std::move(f));
  }
  std::vector<iovec> iov;
  for (auto& s : strings) iov.push_back({s.data(), s.size()});
  if (sd_journal_sendv(iov.data(), static_cast<int>(iov.size())) < 0) {
    std::fprintf(stderr, "%s\n", line.c_str());
  }
}

void WriteStderr(Level level, const std::string& line, std::initializer_list<Field> fields) {
  std::string out;
  char ts[32];
  std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  std::strftime(ts, sizeof ts, "%Y-%m-%dT%H:%M:%SZ", &tm);
  out += ts;
  out += ' ';
  out += LevelName(level);
  out += ' ';
  out += line;
  for (const auto& [k, v] : fields) {
    out += ' ';
    for (char c : k) out += static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    out += '=';
    out += v;
  }
  out += '\n';
  std::fwrite(out.data(), 1, out.size(), stderr);
}

}  // namespace

bool ParseLevel(std::string_view text, Level* out) {
  if (text == "debug")
    *out = Level::kDebug;
  else if (text == "info")
    *out = Level::kInfo;
  else if (text == "warning")
    *out = Level::kWarning;
  else if (text == "error")
    *out = Level::kError;
  else
    return false;
  return true;
}

std::string_view LevelName(Level level) {
  switch (level) {
    case Level::kDebug: return "debug";
    case Level::kInfo: return "info";
    case Level::kWarning: return "warning";
    case Level::kError: return "error";
  }
  return "info";
}

void SetLevel(Level level) {
  Logger& lg = Get();
  MutexLock lock(lg.mu);
  lg.level = level;
}

Level GetLevel() {
  Logger& lg = Get();
  MutexLock lock(lg.mu);
  return lg.level;
}

void SetSink(Sink sink) {
  Logger& lg = Get();
  MutexLock lock(lg.mu);
  lg.sink = sink;
}

void SetWriterForTest(Writer writer) {
  Logger& lg = Get();
  MutexLock lock(lg.mu);
  lg.writer = std::move(writer);
  lg.repeats.clear();
}

void Write(Level level, std::string_view message, std::initializer_list<Field> fields) {
  Logger& lg = Get();
  MutexLock lock(lg.mu);
  if (level < lg.level) return;

  std::string key(LevelName(level));
  key += '\0';
  key += message;
  auto now = std::chrono::steady_clock::now();
  RepeatState& rs = lg.repeats[key];
  if (rs.written == 0 || now - rs.window_start >= kWindow) {
    rs.window_start = now;
    rs.written = 0;
  }
  if (rs.written >= kBurst) {
    ++rs.suppressed;
    return;
  }
  ++rs.written;
  std::string line(message);
  if (rs.suppressed > 0) {
    line += " (suppressed " + std::to_string(rs.suppressed) + " identical messages)";
    rs.suppressed = 0;
  }
  // Bound the table: a stream of distinct messages must not grow memory.
  if (lg.repeats.size() > 4096) {
    for (auto it = lg.repeats.begin(); it != lg.repeats.end();) {
      if (now - it->second.window_start >= kWindow)
        it = lg.repeats.erase(it);
      else
        ++it;
    }
  }

  if (lg.writer) {
    lg.writer(level, line, fields);
    return;
  }
  // JOURNAL_STREAM is set once by systemd when it starts us: look once.
  static const bool stderr_is_journal = StderrIsJournal();
  bool journal = lg.sink == Sink::kJournal || (lg.sink == Sink::kAuto && stderr_is_journal);
  if (journal)
    WriteJournal(level, line, fields);
  else
    WriteStderr(level, line, fields);
}

std::string Printable(std::string_view text, size_t max_bytes) {
  std::string out;
  size_t used = 0;
  for (; used < text.size() && out.size() < max_bytes; ++used) {
    auto c = static_cast<unsigned char>(text[used]);
    if (c >= 0x20 && c < 0x7f && c != '\\') {
      out += static_cast<char>(c);
    } else {
      static constexpr char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 0xf];
    }
  }
  if (used < text.size()) out += "...(+" + std::to_string(text.size() - used) + " bytes)";
  return out;
}

}  // namespace ga::log
