#include "gateway_agent/cli.h"

int main(int argc, char** argv) {
  return ga::RunCli(argc, argv);
}
