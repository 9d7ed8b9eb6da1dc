// Process-wide settings, owned by the daemon (the parts it runs only take
// what these return).
#pragma once

namespace ga {

// Raises the soft limit on open files to the hard limit: each cloud
// connection holds a socket, and 1,000 of them exceed the usual 1,024.
void RaiseOpenFileLimit();

// Installs a handler that does nothing, without SA_RESTART, for the signal
// the bridge sends to a thread in a blocking TCP connect when it stops (the
// connect then returns EINTR); returns that signal.
int InstallConnectInterruptSignal();

// Hands the allocator's free heap pages back to the system.
void ReleaseFreeHeap();

}  // namespace ga
