// TSS2 return codes as ga::Status (private to tpm/).
#pragma once

#include <tss2/tss2_common.h>

#include <string>
#include <string_view>

#include "gateway_agent/status.h"
#include "gateway_agent/tpm_handle.h"

namespace ga::tpm {

// The TPM-layer code without the handle/session/parameter number, e.g.
// TPM2_RC_INTEGRITY for 0x19f (integrity failure on parameter 1).
TSS2_RC BaseRc(TSS2_RC rc);

// "<function> (<where>): <Tss2_RC_Decode text> (0x...)". Code: Unavailable for
// TCTI/communication failures and DA lockout, kTpm otherwise.
Status TssError(std::string_view function, TSS2_RC rc, std::string_view where);

// Whether a TssError made on this thread since the last call reported a lost
// TPM connection (TCTI failure, ESAPI out of sequence after one, or a TPM that
// restarted and awaits TPM2_Startup). Clears the flag.
bool TakeConnectionLost();

}  // namespace ga::tpm
