// The checks of a configuration that span sections and keys: required keys,
// relations between keys, names and topics; run by ParseConfig after each
// key has been read on its own (type, range), so that `check-config` and
// `run` refuse the same files.
#pragma once

#include <toml++/toml.h>

#include <string>
#include <vector>

#include "gateway_agent/config.h"

namespace ga {

// Appends a problem for each thing wrong with `c`, read from `root` (the
// file `file`), each at its key's line and column in the file (a missing
// key: its section's; none when the file does not have it).
void CheckAcrossSections(const Config& c, const toml::table& root, const std::string& file,
                         std::vector<ConfigProblem>& problems);

}  // namespace ga
