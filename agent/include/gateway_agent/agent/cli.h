// The `gateway-agent` command line.
#pragma once

namespace ga {

// Parses argv and runs the chosen command. Returns the process exit code:
// 0 success, 1 failure, 2 invalid configuration or usage.
int RunCli(int argc, char** argv);

}  // namespace ga
