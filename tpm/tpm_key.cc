#include "gateway_agent/tpm/tpm_key.h"

#include <openssl/bio.h>
#include <openssl/pem.h>
#include <tss2/tss2_mu.h>
#include <tss2/tss2_tpm2_types.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <fstream>
#include <sstream>

#include "gateway_agent/files.h"
#include "gateway_agent/openssl.h"

namespace ga::tpm {
namespace {

constexpr char kPemLabel[] = "TSS2 PRIVATE KEY";
// DER contents of OID 2.23.133.10.1.3 (loadable key), .4 (importable), .5 (sealed).
constexpr char kOidLoadable[] = "\x67\x81\x05\x0a\x01\x03";
constexpr char kOidImportable[] = "\x67\x81\x05\x0a\x01\x04";
constexpr char kOidSealed[] = "\x67\x81\x05\x0a\x01\x05";
constexpr size_t kOidLen = 6;

// A minimal DER reader over one buffer; every read is bounds-checked.
class DerReader {
 public:
  explicit DerReader(std::string_view in) : in_(in) {}
  bool empty() const { return in_.empty(); }
  int peek_tag() const { return in_.empty() ? -1 : static_cast<unsigned char>(in_[0]); }

  // Reads one TLV with a low tag number and a definite length.
  bool Read(int* tag, std::string_view* contents) {
    if (in_.size() < 2) return false;
    *tag = static_cast<unsigned char>(in_[0]);
    if ((*tag & 0x1f) == 0x1f) return false;  // high tag numbers are never used here
    size_t pos = 1;
    size_t len = static_cast<unsigned char>(in_[pos++]);
    if (len & 0x80) {
      size_t n = len & 0x7f;
      if (n == 0 || n > 4 || in_.size() < pos + n) return false;
      len = 0;
      for (size_t i = 0; i < n; ++i) len = (len << 8) | static_cast<unsigned char>(in_[pos++]);
    }
    if (in_.size() - pos < len) return false;
    *contents = in_.substr(pos, len);
    in_.remove_prefix(pos + len);
    return true;
  }

  bool Expect(int tag, std::string_view* contents) {
    int t = 0;
    return Read(&t, contents) && t == tag;
  }

 private:
  std::string_view in_;
};

void AppendDer(std::string* out, int tag, std::string_view contents) {
  out->push_back(static_cast<char>(tag));
  size_t len = contents.size();
  if (len < 0x80) {
    out->push_back(static_cast<char>(len));
  } else {
    std::string bytes;
    while (len > 0) {
      bytes.insert(bytes.begin(), static_cast<char>(len & 0xff));
      len >>= 8;
    }
    out->push_back(static_cast<char>(0x80 | bytes.size()));
    *out += bytes;
  }
  *out += contents;
}

std::string DerUnsignedInteger(uint32_t value) {
  std::string bytes;
  do {
    bytes.insert(bytes.begin(), static_cast<char>(value & 0xff));
    value >>= 8;
  } while (value != 0);
  if (static_cast<unsigned char>(bytes[0]) & 0x80) bytes.insert(bytes.begin(), '\0');
  std::string out;
  AppendDer(&out, 0x02, bytes);
  return out;
}

Status Malformed(std::string_view source, std::string_view why) {
  std::string m(source);
  m += ": not a usable TSS2 PRIVATE KEY: ";
  m += why;
  return InvalidArgument(std::move(m));
}

}  // namespace

Result<TpmKeyBlob> TpmKeyBlob::FromParts(std::string public_area, std::string private_area,
                                         uint32_t parent, bool empty_auth,
                                         std::string_view source) {
  TPM2B_PUBLIC pub{};
  size_t offset = 0;
  TSS2_RC rc = Tss2_MU_TPM2B_PUBLIC_Unmarshal(reinterpret_cast<const uint8_t*>(public_area.data()),
                                              public_area.size(), &offset, &pub);
  if (rc != TSS2_RC_SUCCESS || offset != public_area.size()) {
    return Malformed(source, "the public area does not unmarshal as TPM2B_PUBLIC");
  }
  TPM2B_PRIVATE priv{};
  offset = 0;
  rc = Tss2_MU_TPM2B_PRIVATE_Unmarshal(reinterpret_cast<const uint8_t*>(private_area.data()),
                                       private_area.size(), &offset, &priv);
  if (rc != TSS2_RC_SUCCESS || offset != private_area.size() || priv.size == 0) {
    return Malformed(source, "the private area does not unmarshal as TPM2B_PRIVATE");
  }
  if (!empty_auth) {
    return Malformed(source, "the key needs an authorization value (emptyAuth false)");
  }
  const TPMT_PUBLIC& area = pub.publicArea;
  if ((area.objectAttributes & TPMA_OBJECT_SIGN_ENCRYPT) == 0 ||
      (area.objectAttributes & TPMA_OBJECT_RESTRICTED) != 0) {
    return Malformed(source, "not an unrestricted signing key");
  }

  TpmKeyBlob key;
  if (area.type == TPM2_ALG_ECC) {
    const TPMS_ECC_PARMS& ecc = area.parameters.eccDetail;
    if (ecc.curveID != TPM2_ECC_NIST_P256) return Malformed(source, "ECC curve is not P-256");
    if (ecc.scheme.scheme == TPM2_ALG_ECDSA) {
      key.scheme_hash_ = ecc.scheme.details.ecdsa.hashAlg;
    } else if (ecc.scheme.scheme != TPM2_ALG_NULL) {
      return Malformed(source, "ECC signing scheme is neither ECDSA nor NULL");
    }
    const TPMS_ECC_POINT& point = area.unique.ecc;
    if (point.x.size == 0 || point.x.size > 32 || point.y.size == 0 || point.y.size > 32) {
      return Malformed(source, "ECC public point has a bad size");
    }
    key.algorithm_ = KeyAlgorithm::kEccP256;
    key.ec_point_.assign(65, '\0');
    key.ec_point_[0] = 0x04;
    std::copy_n(point.x.buffer, point.x.size, key.ec_point_.begin() + 1 + 32 - point.x.size);
    std::copy_n(point.y.buffer, point.y.size, key.ec_point_.begin() + 33 + 32 - point.y.size);
  } else if (area.type == TPM2_ALG_RSA) {
    const TPMS_RSA_PARMS& rsa = area.parameters.rsaDetail;
    if (rsa.keyBits != 2048 || area.unique.rsa.size != 256) {
      return Malformed(source, "RSA key is not 2048 bits");
    }
    if (rsa.scheme.scheme == TPM2_ALG_RSASSA) {
      key.scheme_hash_ = rsa.scheme.details.rsassa.hashAlg;
    } else if (rsa.scheme.scheme != TPM2_ALG_NULL) {
      return Malformed(source, "RSA signing scheme is neither RSASSA nor NULL");
    }
    key.algorithm_ = KeyAlgorithm::kRsa2048;
    key.rsa_modulus_.assign(reinterpret_cast<const char*>(area.unique.rsa.buffer),
                            area.unique.rsa.size);
    key.rsa_exponent_ = rsa.exponent == 0 ? 65537 : rsa.exponent;
  } else {
    return Malformed(source, "key type is neither ECC nor RSA");
  }
  if (key.scheme_hash_ != 0 && key.scheme_hash_ != TPM2_ALG_SHA256 &&
      key.scheme_hash_ != TPM2_ALG_SHA384 && key.scheme_hash_ != TPM2_ALG_SHA512) {
    return Malformed(source, "the key's scheme hash is not SHA-256/384/512");
  }
  key.public_area_ = std::move(public_area);
  key.private_area_ = std::move(private_area);
  key.parent_ = parent;
  key.empty_auth_ = empty_auth;
  return key;
}

Result<TpmKeyBlob> TpmKeyBlob::FromPem(std::string_view pem, std::string_view source) {
  std::string der;
  if (pem.find("-----BEGIN") != std::string_view::npos) {
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return OpenSslError("BIO_new_mem_buf");
    char* name = nullptr;
    char* header = nullptr;
    unsigned char* data = nullptr;
    long len = 0;
    if (PEM_read_bio(bio.get(), &name, &header, &data, &len) != 1) {
      ClearOpenSslErrors();
      return Malformed(source, "no PEM block");
    }
    std::string label(name);
    der.assign(reinterpret_cast<char*>(data), static_cast<size_t>(len));
    OPENSSL_free(name);
    OPENSSL_free(header);
    OPENSSL_free(data);
    if (label != kPemLabel) {
      return Malformed(source, "PEM label is \"" + label + "\", expected \"" + kPemLabel + "\"");
    }
  } else {
    der.assign(pem);
  }

  DerReader outer(der);
  std::string_view seq;
  if (!outer.Expect(0x30, &seq)) return Malformed(source, "not a DER SEQUENCE");
  DerReader r(seq);
  std::string_view oid;
  if (!r.Expect(0x06, &oid)) return Malformed(source, "missing key type OID");
  if (oid == std::string_view(kOidImportable, kOidLen)) {
    return Malformed(source, "an importable key (2.23.133.10.1.4) is not supported");
  }
  if (oid == std::string_view(kOidSealed, kOidLen)) {
    return Malformed(source, "a sealed data object (2.23.133.10.1.5) is not a key");
  }
  if (oid != std::string_view(kOidLoadable, kOidLen)) {
    return Malformed(source, "key type OID is not 2.23.133.10.1.3 (loadable key)");
  }
  bool empty_auth = false;
  if (r.peek_tag() == 0xa0) {
    std::string_view explicit_bool, value;
    if (!r.Expect(0xa0, &explicit_bool)) return Malformed(source, "bad emptyAuth");
    DerReader b(explicit_bool);
    if (!b.Expect(0x01, &value) || value.size() != 1) return Malformed(source, "bad emptyAuth");
    empty_auth = value[0] != 0;
  }
  if (r.peek_tag() == 0xa1) return Malformed(source, "keys with a policy are not supported");
  if (r.peek_tag() == 0xa2)
    return Malformed(source, "keys with an import secret are not supported");
  if (r.peek_tag() == 0xa3) return Malformed(source, "keys with an authPolicy are not supported");
  std::string_view parent_der;
  if (!r.Expect(0x02, &parent_der)) return Malformed(source, "missing parent INTEGER");
  if (parent_der.empty() || (static_cast<unsigned char>(parent_der[0]) & 0x80) != 0) {
    return Malformed(source, "parent handle is negative");
  }
  while (parent_der.size() > 1 && parent_der[0] == '\0') parent_der.remove_prefix(1);
  if (parent_der.size() > 4) return Malformed(source, "parent handle is larger than 32 bits");
  uint32_t parent = 0;
  for (char c : parent_der) parent = (parent << 8) | static_cast<unsigned char>(c);
  std::string_view pub, priv;
  if (!r.Expect(0x04, &pub)) return Malformed(source, "missing pubkey OCTET STRING");
  if (!r.Expect(0x04, &priv)) return Malformed(source, "missing privkey OCTET STRING");
  // Later optional fields of newer writers (e.g. a description) do not matter here.
  return FromParts(std::string(pub), std::string(priv), parent, empty_auth, source);
}

Result<TpmKeyBlob> TpmKeyBlob::ReadFile(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) return ErrnoStatus("open key file " + path.string(), errno);
  std::ostringstream ss;
  ss << in.rdbuf();
  if (in.bad()) return ErrnoStatus("read key file " + path.string(), errno);
  std::string text = ss.str();
  if (text.size() > 64 * 1024) return Malformed(path.string(), "file is larger than 64 KiB");
  return FromPem(text, path.string());
}

std::string TpmKeyBlob::ToPem() const {
  std::string body;
  AppendDer(&body, 0x06, std::string_view(kOidLoadable, kOidLen));
  if (empty_auth_) body += std::string("\xa0\x03\x01\x01\xff", 5);
  body += DerUnsignedInteger(parent_);
  AppendDer(&body, 0x04, public_area_);
  AppendDer(&body, 0x04, private_area_);
  std::string der;
  AppendDer(&der, 0x30, body);

  BioPtr bio(BIO_new(BIO_s_mem()));
  PEM_write_bio(bio.get(), kPemLabel, "", reinterpret_cast<const unsigned char*>(der.data()),
                static_cast<long>(der.size()));
  return MemoryBioText(bio.get());
}

Status TpmKeyBlob::WriteFile(const std::filesystem::path& path, bool overwrite) const {
  return WriteFileAtomic(path, ToPem(), 0600, overwrite ? IfExists::kReplace : IfExists::kRefuse)
      .With("key file");
}

size_t TpmKeyBlob::max_signature_size() const {
  return algorithm_ == KeyAlgorithm::kEccP256 ? 72 : 256;
}

}  // namespace ga::tpm
