// Logging: levels, stderr by default, journald with structured fields when the
// process runs under systemd (JOURNAL_STREAM names our stderr).
//
// Identical messages (same level and text) are rate-limited: at most
// kBurst per kWindow are written; the next one written after a window closes
// carries "(suppressed N identical messages)". An offline gateway retrying
// every few seconds must not fill its disk with the same line.
//
// Thread-safe. Never log a secret (keys, passwords, registration codes).
#pragma once

#include <chrono>
#include <functional>
#include <initializer_list>
#include <string>
#include <string_view>
#include <utility>

namespace ga::log {

enum class Level { kDebug = 0, kInfo, kWarning, kError };

// Structured fields, journald style: {"IDENTITY", "sensor-7"}, {"THING", "gw-1-7"}.
using Field = std::pair<std::string_view, std::string_view>;

inline constexpr int kBurst = 5;
inline constexpr std::chrono::seconds kWindow{60};

// Parses "debug" | "info" | "warning" | "error".
bool ParseLevel(std::string_view text, Level* out);
std::string_view LevelName(Level level);

void SetLevel(Level level);
Level GetLevel();

enum class Sink { kAuto, kStderr, kJournal };
// kAuto: journald when JOURNAL_STREAM matches stderr, else stderr.
void SetSink(Sink sink);

// Replaces where lines go (tests). The function receives the formatted line
// (without fields) and the fields; pass nullptr to restore the default.
using Writer = std::function<void(Level, std::string_view line, std::initializer_list<Field>)>;
void SetWriterForTest(Writer writer);

void Write(Level level, std::string_view message, std::initializer_list<Field> fields = {});

inline void Debug(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kDebug, m, f);
}
inline void Info(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kInfo, m, f);
}
inline void Warning(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kWarning, m, f);
}
inline void Error(std::string_view m, std::initializer_list<Field> f = {}) {
  Write(Level::kError, m, f);
}

// Text from outside (a topic, an id a LAN client chose) made safe for a log
// line: control characters and bytes over 0x7e escaped (\x00), and cut to
// about `max_bytes` with how much was left out ("...(+29936 bytes)").
std::string Printable(std::string_view text, size_t max_bytes = 128);

}  // namespace ga::log
