// A TPM key as it lives outside the TPM: the public area and the private area
// wrapped by the parent (SRK), stored as the interoperable "TSS2 PRIVATE KEY"
// PEM (the format of tpm2-openssl, tpm2-tss-engine and tpm2-tools).
//
// A TpmKeyBlob is plain data: copyable, holds no TPM resource, usable with any
// TpmContext of the TPM it was made on.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

#include "gateway_agent/status.h"
#include "gateway_agent/tpm_handle.h"

namespace ga::tpm {

// Handle value "owner hierarchy" in a key file: the key's parent is the
// primary key made from the standard ECC SRK template (tpm2-openssl writes this).
inline constexpr uint32_t kOwnerHierarchy = 0x40000001;

enum class KeyAlgorithm { kEccP256, kRsa2048 };

class TpmKeyBlob {
 public:
  // Validates and wraps a marshalled TPM2B_PUBLIC and TPM2B_PRIVATE. Refuses
  // anything that is not an unrestricted signing key (ECC P-256 or RSA-2048)
  // with InvalidArgument; `source` (a file name, "tpm") names it in errors.
  static Result<TpmKeyBlob> FromParts(std::string public_area, std::string private_area,
                                      uint32_t parent, bool empty_auth, std::string_view source);

  // Parses "-----BEGIN TSS2 PRIVATE KEY-----" PEM (or its DER).
  static Result<TpmKeyBlob> FromPem(std::string_view pem, std::string_view source);
  // Reads and parses a key file; errors name the file.
  static Result<TpmKeyBlob> ReadFile(const std::filesystem::path& path);

  std::string ToPem() const;
  // Writes the PEM with mode 0600 by WriteFileAtomic. Fails with
  // AlreadyExists when `path` exists and !overwrite.
  Status WriteFile(const std::filesystem::path& path, bool overwrite = false) const;

  KeyAlgorithm algorithm() const { return algorithm_; }
  // Marshalled TPM2B_PUBLIC / TPM2B_PRIVATE, exactly as stored in the file.
  const std::string& public_area() const { return public_area_; }
  const std::string& private_area() const { return private_area_; }
  uint32_t parent() const { return parent_; }
  bool empty_auth() const { return empty_auth_; }
  // ECC: the uncompressed point 04||X||Y (X and Y left-padded to 32 bytes).
  const std::string& ec_point() const { return ec_point_; }
  // RSA: big-endian modulus and public exponent.
  const std::string& rsa_modulus() const { return rsa_modulus_; }
  uint32_t rsa_exponent() const { return rsa_exponent_; }
  // The hash the key's own scheme fixes (TPM2_ALG_SHA256 ...), or 0 when the
  // key's scheme is NULL and any of SHA-256/384/512 may be chosen per signature.
  uint16_t scheme_hash() const { return scheme_hash_; }
  // Largest DER signature this key makes (72 for P-256, 256 for RSA-2048).
  size_t max_signature_size() const;

 private:
  TpmKeyBlob() = default;
  KeyAlgorithm algorithm_ = KeyAlgorithm::kEccP256;
  std::string public_area_;
  std::string private_area_;
  uint32_t parent_ = kDefaultSrkHandle;
  bool empty_auth_ = true;
  std::string ec_point_;
  std::string rsa_modulus_;
  uint32_t rsa_exponent_ = 0;
  uint16_t scheme_hash_ = 0;
};

}  // namespace ga::tpm
