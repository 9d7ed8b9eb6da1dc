#include <cstdlib>

#include "gateway_agent/agent/cli.h"

int main(int argc, char** argv) {
  // The TSS libraries log expected conditions (an SRK not yet created, a
  // retried command) to stderr on their own; failures reach the operator
  // through our error messages, which carry Tss2_RC_Decode text.
  setenv("TSS2_LOG", "all+none", 0);
  return ga::RunCli(argc, argv);
}
