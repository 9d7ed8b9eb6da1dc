// File helpers with the project's durability and permission rules.
#pragma once

#include <sys/types.h>

#include <filesystem>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"

namespace ga {

// What WriteFileAtomic does when `path` already exists.
enum class IfExists {
  kReplace,  // rename() over it
  kRefuse,   // AlreadyExists: link() refuses an existing target atomically
};

// Writes `data` to `path` atomically: a temporary file in the same directory
// (created with `mode`), fsync, rename (or link) to `path`, fsync of the
// directory. A reader sees either the old or the new content, never a torn
// file. On failure no temporary file is left behind.
Status WriteFileAtomic(const std::filesystem::path& path, std::string_view data, mode_t mode = 0600,
                       IfExists if_exists = IfExists::kReplace);

// Creates `path` (and missing parents) and ensures it has exactly `mode`.
Status EnsureDirectory(const std::filesystem::path& path, mode_t mode = 0700);

// The whole file. With `max_bytes`, only a regular file of at most that size
// (InvalidArgument otherwise): /dev/zero or a FIFO is refused, not read forever.
Result<std::string> ReadFile(const std::filesystem::path& path, size_t max_bytes = 0);

// A secret kept alone in a file (a password): ReadFile without the trailing
// newline(s) an editor or `echo` adds.
Result<std::string> ReadSecretFile(const std::filesystem::path& path, size_t max_bytes = 0);

}  // namespace ga
