#include "issuing.h"

#include <openssl/bn.h>
#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

#include <ctime>
#include <memory>

#include "gateway_agent/pki/certificate.h"
#include "gateway_agent/tpm/openssl_provider.h"

namespace ga::pki::internal {
namespace {

struct BnDeleter {
  void operator()(BIGNUM* p) const { BN_free(p); }
};
struct ExtensionDeleter {
  void operator()(X509_EXTENSION* p) const { X509_EXTENSION_free(p); }
};

Status AddExtension(X509* cert, X509V3_CTX* ctx, int nid, const char* value) {
  std::unique_ptr<X509_EXTENSION, ExtensionDeleter> ext(
      X509V3_EXT_conf_nid(nullptr, ctx, nid, value));
  if (!ext) {
    return OpenSslError(std::string("making extension ") + OBJ_nid2sn(nid) + " = " + value,
                        Code::kInternal);
  }
  if (X509_add_ext(cert, ext.get(), -1) != 1) return OpenSslError("X509_add_ext");
  return Status::Ok();
}

Status SetRandomSerial(X509* cert, OSSL_LIB_CTX* libctx) {
  unsigned char bytes[16];
  if (RAND_bytes_ex(libctx, bytes, sizeof(bytes), 0) != 1) {
    return OpenSslError("making a random serial number");
  }
  // Exactly 128 bits: the top bit set, so the encoding never shrinks.
  bytes[0] |= 0x80;
  std::unique_ptr<BIGNUM, BnDeleter> serial(BN_bin2bn(bytes, sizeof(bytes), nullptr));
  if (!serial || BN_to_ASN1_INTEGER(serial.get(), X509_get_serialNumber(cert)) == nullptr) {
    return OpenSslError("setting the serial number");
  }
  return Status::Ok();
}

Result<X509NamePtr> DeviceSubject(const std::string& cn, const std::string& ou) {
  X509NamePtr name(X509_NAME_new());
  if (!name) return OpenSslError("X509_NAME_new");
  if (!ou.empty() && X509_NAME_add_entry_by_NID(
                         name.get(), NID_organizationalUnitName, MBSTRING_UTF8,
                         reinterpret_cast<const unsigned char*>(ou.c_str()), -1, -1, 0) != 1) {
    return OpenSslError("OU \"" + ou + "\"", Code::kInvalidArgument);
  }
  if (X509_NAME_add_entry_by_NID(name.get(), NID_commonName, MBSTRING_UTF8,
                                 reinterpret_cast<const unsigned char*>(cn.c_str()), -1, -1,
                                 0) != 1) {
    return OpenSslError("CN \"" + cn + "\"", Code::kInvalidArgument);
  }
  return name;
}

}  // namespace

const char* DigestFor(EVP_PKEY* key) {
  if (EVP_PKEY_is_a(key, "EC")) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits > 384) return "SHA512";
    if (bits > 256) return "SHA384";
  }
  return "SHA256";
}

Status SignCertificate(X509* cert, EVP_PKEY* key) {
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, tpm::LibCtx());
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  if (!md) return OpenSslError("EVP_MD_CTX_new");
  if (EVP_DigestSignInit_ex(md.get(), nullptr, DigestFor(key), libctx, nullptr, key, nullptr) !=
      1) {
    return OpenSslError("EVP_DigestSignInit_ex with the CA key");
  }
  if (X509_sign_ctx(cert, md.get()) <= 0) return OpenSslError("signing with the CA key");
  return Status::Ok();
}

Result<EVP_PKEY*> CheckCsr(X509_REQ* csr) {
  if (csr == nullptr) return InvalidArgument("no CSR");
  EVP_PKEY* key = X509_REQ_get0_pubkey(csr);
  if (key == nullptr) {
    return OpenSslError("the CSR's public key does not parse", Code::kInvalidArgument);
  }
  GA_RETURN_IF_ERROR(CheckClientKey(key).With("the CSR's key is not usable with AWS IoT"));
  int verified = X509_REQ_verify(csr, key);
  if (verified != 1) {
    Status s = OpenSslError("the CSR's signature does not verify", Code::kInvalidArgument);
    return s;
  }
  return key;
}

Result<X509Ptr> BuildCertificate(const CertificateRequest& request, const X509* ca_cert,
                                 EVP_PKEY* ca_key) {
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, tpm::LibCtx());
  EVP_PKEY* subject_key = X509_REQ_get0_pubkey(request.csr);
  if (subject_key == nullptr) return InvalidArgument("the CSR has no public key");
  GA_ASSIGN_OR_RETURN(X509NamePtr subject,
                      DeviceSubject(request.common_name, request.organizational_unit));

  X509Ptr cert(X509_new_ex(libctx, nullptr));
  if (!cert) return OpenSslError("X509_new_ex");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_subject_name(cert.get(), subject.get()) != 1 ||
      X509_set_issuer_name(cert.get(), X509_get_subject_name(ca_cert)) != 1 ||
      X509_set_pubkey(cert.get(), subject_key) != 1) {
    return OpenSslError("filling the certificate");
  }
  GA_RETURN_IF_ERROR(SetRandomSerial(cert.get(), libctx));

  // notBefore: a few minutes back, but not before the CA's own notBefore;
  // notAfter: validity ahead, capped at the CA's notAfter.
  time_t now = time(nullptr);
  if (X509_time_adj_ex(X509_getm_notBefore(cert.get()), 0, -kClockSkewSeconds, &now) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()),
                       static_cast<int>(request.validity.count() / 86400),
                       static_cast<long>(request.validity.count() % 86400), &now) == nullptr) {
    return OpenSslError("setting the validity");
  }
  if (ASN1_TIME_compare(X509_get0_notBefore(cert.get()), X509_get0_notBefore(ca_cert)) < 0 &&
      X509_set1_notBefore(cert.get(), X509_get0_notBefore(ca_cert)) != 1) {
    return OpenSslError("setting notBefore");
  }
  if (ASN1_TIME_compare(X509_get0_notAfter(cert.get()), X509_get0_notAfter(ca_cert)) > 0 &&
      X509_set1_notAfter(cert.get(), X509_get0_notAfter(ca_cert)) != 1) {
    return OpenSslError("setting notAfter");
  }

  X509V3_CTX v3;
  X509V3_set_ctx(&v3, const_cast<X509*>(ca_cert), cert.get(), nullptr, nullptr, 0);
  GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_basic_constraints, "critical,CA:FALSE"));
  GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_key_usage, "critical,digitalSignature"));
  if (request.profile == CertificateProfile::kDevice) {
    GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_ext_key_usage, "clientAuth"));
  }
  if (request.profile == CertificateProfile::kServer) {
    GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_ext_key_usage, "serverAuth"));
    std::string names;
    for (const std::string& name : request.alt_names) {
      if ((name.rfind("DNS:", 0) != 0 && name.rfind("IP:", 0) != 0) ||
          name.find_first_of(",\n") != std::string::npos) {
        return InvalidArgument("subjectAltName \"" + name + "\": not DNS:<name> or IP:<address>");
      }
      names += (names.empty() ? "" : ",") + name;
    }
    GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_subject_alt_name, names.c_str()));
  }
  GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_subject_key_identifier, "hash"));
  // An imported CA certificate may lack an SKI: then there is no key id to
  // point at, and the AKI is left out rather than made up.
  if (X509_get0_subject_key_id(const_cast<X509*>(ca_cert)) != nullptr) {
    GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_authority_key_identifier, "keyid:always"));
  }
  GA_RETURN_IF_ERROR(SignCertificate(cert.get(), ca_key));
  return cert;
}

Result<X509Ptr> BuildSelfSignedCa(EVP_PKEY* key, const X509_NAME* subject, int days) {
  GA_ASSIGN_OR_RETURN(OSSL_LIB_CTX * libctx, tpm::LibCtx());
  X509Ptr cert(X509_new_ex(libctx, nullptr));
  if (!cert) return OpenSslError("X509_new_ex");
  if (X509_set_version(cert.get(), X509_VERSION_3) != 1 ||
      X509_set_subject_name(cert.get(), subject) != 1 ||
      X509_set_issuer_name(cert.get(), subject) != 1 || X509_set_pubkey(cert.get(), key) != 1) {
    return OpenSslError("filling the CA certificate");
  }
  GA_RETURN_IF_ERROR(SetRandomSerial(cert.get(), libctx));
  time_t now = time(nullptr);
  if (X509_time_adj_ex(X509_getm_notBefore(cert.get()), 0, -kClockSkewSeconds, &now) == nullptr ||
      X509_time_adj_ex(X509_getm_notAfter(cert.get()), days, 0, &now) == nullptr) {
    return OpenSslError("setting the CA validity");
  }
  X509V3_CTX v3;
  X509V3_set_ctx(&v3, cert.get(), cert.get(), nullptr, nullptr, 0);
  GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_basic_constraints, "critical,CA:TRUE"));
  GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_key_usage, "critical,keyCertSign,cRLSign"));
  GA_RETURN_IF_ERROR(AddExtension(cert.get(), &v3, NID_subject_key_identifier, "hash"));
  GA_RETURN_IF_ERROR(SignCertificate(cert.get(), key));
  return cert;
}

Status CheckCaCertificate(const X509* cert, std::string_view source) {
  std::string where(source);
  X509* mutable_cert = const_cast<X509*>(cert);  // the flag getters cache, hence non-const
  if ((X509_get_extension_flags(mutable_cert) & EXFLAG_CA) == 0) {
    return InvalidArgument(where + ": not a CA certificate (no basicConstraints CA:TRUE)");
  }
  if ((X509_get_key_usage(mutable_cert) & KU_KEY_CERT_SIGN) == 0) {
    return InvalidArgument(where + ": its keyUsage does not allow keyCertSign");
  }
  if (X509_cmp_current_time(X509_get0_notAfter(cert)) <= 0) {
    return FailedPrecondition(where + ": the CA certificate expired on " +
                              FormatTime(X509_get0_notAfter(cert)));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(cert)) >= 0) {
    return FailedPrecondition(where + ": the CA certificate is not valid before " +
                              FormatTime(X509_get0_notBefore(cert)) +
                              " (is the system clock right?)");
  }
  return Status::Ok();
}

Status CheckIssuedBy(const X509* cert, const X509* issuer) {
  int rc = X509_check_issued(const_cast<X509*>(issuer), const_cast<X509*>(cert));
  if (rc != X509_V_OK) {
    return InvalidArgument("the certificate (issuer \"" + NameToString(X509_get_issuer_name(cert)) +
                           "\") was not issued by \"" +
                           NameToString(X509_get_subject_name(issuer)) +
                           "\": " + X509_verify_cert_error_string(rc));
  }
  EVP_PKEY* issuer_key = X509_get0_pubkey(issuer);
  if (issuer_key == nullptr || X509_verify(const_cast<X509*>(cert), issuer_key) != 1) {
    return OpenSslError("the certificate's signature does not verify with the CA's key",
                        Code::kInvalidArgument);
  }
  return Status::Ok();
}

std::chrono::seconds ValidityOf(const CaConfig& config) {
  return std::chrono::duration_cast<std::chrono::seconds>(config.validity);
}

Status CheckValidity(const CaConfig& config) {
  if (ValidityOf(config) < std::chrono::minutes(1)) {
    return InvalidArgument("[ca] validity must be at least 1m");
  }
  return Status::Ok();
}

}  // namespace ga::pki::internal
