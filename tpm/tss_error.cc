#include "tss_error.h"

#include <tss2/tss2_rc.h>
#include <tss2/tss2_tpm2_types.h>

#include <cstdio>

namespace ga::tpm {

TSS2_RC BaseRc(TSS2_RC rc) {
  // A resource manager (tabrmd) passes TPM codes on in its own layer.
  if ((rc & TSS2_RC_LAYER_MASK) == TSS2_RESMGR_TPM_RC_LAYER) rc &= ~TSS2_RC_LAYER_MASK;
  if ((rc & TSS2_RC_LAYER_MASK) != 0) return rc;  // not from the TPM itself
  if ((rc & TPM2_RC_FMT1) != 0) return rc & (TPM2_RC_FMT1 | 0x3f);
  return rc & 0xfff;
}

namespace {
thread_local bool connection_lost = false;
}  // namespace

bool TakeConnectionLost() {
  bool lost = connection_lost;
  connection_lost = false;
  return lost;
}

Status TssError(std::string_view function, TSS2_RC rc, std::string_view where) {
  std::string m(function);
  if (!where.empty()) {
    m += " (";
    m += where;
    m += ")";
  }
  m += ": ";
  m += Tss2_RC_Decode(rc);
  char buf[24];
  std::snprintf(buf, sizeof(buf), " (0x%x)", rc);
  m += buf;
  Code code = Code::kTpm;
  TSS2_RC layer = rc & TSS2_RC_LAYER_MASK;
  TSS2_RC base = BaseRc(rc);
  if (layer == TSS2_TCTI_RC_LAYER ||
      (layer == TSS2_ESAPI_RC_LAYER && (rc & 0xffff) == TSS2_BASE_RC_IO_ERROR)) {
    code = Code::kUnavailable;
    connection_lost = true;
  } else if (layer == TSS2_ESAPI_RC_LAYER && (rc & 0xffff) == TSS2_BASE_RC_BAD_SEQUENCE) {
    // What ESAPI answers after a TCTI failure left a command half done.
    code = Code::kUnavailable;
    connection_lost = true;
    m += "; the connection to the TPM was lost in the middle of a command";
  } else if (base == TPM2_RC_INITIALIZE && function != "Esys_Startup") {
    code = Code::kUnavailable;
    connection_lost = true;
    m += "; the TPM restarted";
  } else if (base == TPM2_RC_LOCKOUT) {
    code = Code::kUnavailable;
    m += "; the TPM is in dictionary-attack lockout: wait for the recovery time or clear it "
         "with the lockout authorization (tpm2_dictionarylockout --clear-lockout)";
  } else if (base == TPM2_RC_RETRY || base == TPM2_RC_YIELDED || base == TPM2_RC_TESTING) {
    code = Code::kUnavailable;
  }
  return {code, std::move(m)};
}

}  // namespace ga::tpm
