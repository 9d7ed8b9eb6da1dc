#include "gateway_agent/pki/certificate.h"

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#include <cctype>
#include <cstring>
#include <ctime>

#include "gateway_agent/files.h"

namespace ga::pki {
namespace {

bool IsBlank(std::string_view s) {
  for (char c : s) {
    if (!std::isspace(static_cast<unsigned char>(c))) return false;
  }
  return true;
}

// The PEM blocks of a text: the label of each, and the text outside them.
struct PemBlock {
  std::string label;
  std::string_view text;  // from BEGIN through END line
};
Result<std::vector<PemBlock>> SplitPem(std::string_view pem, std::string_view source) {
  static constexpr std::string_view kBegin = "-----BEGIN ";
  static constexpr std::string_view kEnd = "-----END ";
  std::vector<PemBlock> blocks;
  size_t pos = 0;
  while (pos < pem.size()) {
    size_t begin = pem.find(kBegin, pos);
    std::string_view gap =
        pem.substr(pos, begin == std::string_view::npos ? pem.size() - pos : begin - pos);
    if (!IsBlank(gap)) {
      std::string sample(gap.substr(0, 40));
      for (char& c : sample) {
        if (!std::isprint(static_cast<unsigned char>(c))) c = '?';
      }
      return InvalidArgument(std::string(source) + ": unexpected text outside PEM blocks: \"" +
                             sample + "\"");
    }
    if (begin == std::string_view::npos) break;
    size_t label_end = pem.find("-----", begin + kBegin.size());
    if (label_end == std::string_view::npos) {
      return InvalidArgument(std::string(source) + ": malformed PEM BEGIN line");
    }
    std::string label(pem.substr(begin + kBegin.size(), label_end - begin - kBegin.size()));
    std::string end_line = std::string(kEnd) + label + "-----";
    size_t end = pem.find(end_line, label_end);
    if (end == std::string_view::npos) {
      return InvalidArgument(std::string(source) + ": PEM block \"" + label + "\" has no END line");
    }
    pos = end + end_line.size();
    blocks.push_back({label, pem.substr(begin, pos - begin)});
  }
  return blocks;
}

}  // namespace

std::string AwsCertificateId(const X509* cert) {
  if (cert == nullptr) return "";
  unsigned char* der = nullptr;
  int len = i2d_X509(cert, &der);
  if (len <= 0) {
    ClearOpenSslErrors();
    return "";
  }
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(der, static_cast<size_t>(len), digest);
  OPENSSL_free(der);
  static constexpr char kHex[] = "0123456789abcdef";
  std::string hex;
  hex.reserve(2 * sizeof(digest));
  for (unsigned char b : digest) {
    hex.push_back(kHex[b >> 4]);
    hex.push_back(kHex[b & 0xf]);
  }
  return hex;
}

Result<std::string> CertificateToPem(const X509* cert) {
  if (cert == nullptr) return InvalidArgument("CertificateToPem: no certificate");
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || PEM_write_bio_X509(bio.get(), cert) != 1) {
    return OpenSslError("PEM_write_bio_X509");
  }
  return MemoryBioText(bio.get());
}

Result<std::string> CertificateToDer(const X509* cert) {
  if (cert == nullptr) return InvalidArgument("CertificateToDer: no certificate");
  unsigned char* der = nullptr;
  int len = i2d_X509(cert, &der);
  if (len <= 0) return OpenSslError("i2d_X509");
  std::string out(reinterpret_cast<char*>(der), static_cast<size_t>(len));
  OPENSSL_free(der);
  return out;
}

Result<std::vector<X509Ptr>> ParseCertificatesPem(std::string_view pem, std::string_view source) {
  GA_ASSIGN_OR_RETURN(std::vector<PemBlock> blocks, SplitPem(pem, source));
  if (blocks.empty()) return InvalidArgument(std::string(source) + ": no PEM certificate");
  std::vector<X509Ptr> certs;
  for (const PemBlock& block : blocks) {
    if (block.label != "CERTIFICATE" && block.label != "TRUSTED CERTIFICATE") {
      return InvalidArgument(std::string(source) + ": PEM block \"" + block.label +
                             "\" where a CERTIFICATE was expected");
    }
    BioPtr bio(BIO_new_mem_buf(block.text.data(), static_cast<int>(block.text.size())));
    if (!bio) return OpenSslError("BIO_new_mem_buf");
    X509Ptr cert(block.label == "CERTIFICATE"
                     ? PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr)
                     : PEM_read_bio_X509_AUX(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) {
      return OpenSslError(std::string(source) + ": certificate " +
                              std::to_string(certs.size() + 1) + " does not parse",
                          Code::kInvalidArgument);
    }
    certs.push_back(std::move(cert));
  }
  return certs;
}

Result<X509Ptr> ReadCertificateFile(const std::filesystem::path& path) {
  GA_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  GA_ASSIGN_OR_RETURN(std::vector<X509Ptr> certs, ParseCertificatesPem(text, path.string()));
  return std::move(certs.front());
}

Result<X509ReqPtr> ParseCsrPem(std::string_view pem, std::string_view source) {
  GA_ASSIGN_OR_RETURN(std::vector<PemBlock> blocks, SplitPem(pem, source));
  if (blocks.size() != 1 ||
      (blocks[0].label != "CERTIFICATE REQUEST" && blocks[0].label != "NEW CERTIFICATE REQUEST")) {
    return InvalidArgument(std::string(source) +
                           ": expected exactly one PEM \"CERTIFICATE REQUEST\" block");
  }
  BioPtr bio(BIO_new_mem_buf(blocks[0].text.data(), static_cast<int>(blocks[0].text.size())));
  if (!bio) return OpenSslError("BIO_new_mem_buf");
  X509ReqPtr csr(PEM_read_bio_X509_REQ(bio.get(), nullptr, nullptr, nullptr));
  if (!csr) {
    return OpenSslError(std::string(source) + ": the CSR does not parse", Code::kInvalidArgument);
  }
  return csr;
}

Result<X509ReqPtr> ReadCsrFile(const std::filesystem::path& path) {
  GA_ASSIGN_OR_RETURN(std::string text, ReadFile(path));
  return ParseCsrPem(text, path.string());
}

Result<std::string> CommonName(const X509_NAME* name) {
  if (name == nullptr) return std::string();
  int index = X509_NAME_get_index_by_NID(name, NID_commonName, -1);
  if (index < 0) return std::string();
  if (X509_NAME_get_index_by_NID(name, NID_commonName, index) >= 0) {
    return InvalidArgument("the subject has more than one CN");
  }
  const ASN1_STRING* data = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, index));
  unsigned char* utf8 = nullptr;
  int len = ASN1_STRING_to_UTF8(&utf8, data);
  if (len < 0)
    return OpenSslError("the subject's CN is not a valid string", Code::kInvalidArgument);
  std::string cn(reinterpret_cast<char*>(utf8), static_cast<size_t>(len));
  OPENSSL_free(utf8);
  if (cn.find('\0') != std::string::npos) {
    return InvalidArgument("the subject's CN contains a NUL character");
  }
  return cn;
}

std::string NameToString(const X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  if (!bio || X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB) < 0) {
    ClearOpenSslErrors();
    return "";
  }
  return MemoryBioText(bio.get());
}

bool HasOrganizationalUnit(const X509_NAME* name, std::string_view ou) {
  for (int i = -1; (i = X509_NAME_get_index_by_NID(name, NID_organizationalUnitName, i)) >= 0;) {
    const ASN1_STRING* value = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, i));
    if (std::string_view(reinterpret_cast<const char*>(ASN1_STRING_get0_data(value)),
                         static_cast<size_t>(ASN1_STRING_length(value))) == ou) {
      return true;
    }
  }
  return false;
}

std::chrono::system_clock::time_point ToTimePoint(const ASN1_TIME* time) {
  struct tm tm {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
    ClearOpenSslErrors();
    return {};
  }
  return std::chrono::system_clock::from_time_t(timegm(&tm));
}

std::string FormatTime(const ASN1_TIME* time) {
  struct tm tm {};
  if (time == nullptr || ASN1_TIME_to_tm(time, &tm) != 1) {
    ClearOpenSslErrors();
    return "(invalid time)";
  }
  char buf[64];
  std::strftime(buf, sizeof(buf), "%Y-%m-%d %H:%M:%S UTC", &tm);
  return buf;
}

Status CheckClientKey(EVP_PKEY* key) {
  if (key == nullptr) return InvalidArgument("no public key");
  static constexpr std::string_view kAllowed =
      "AWS IoT accepts EC P-256, P-384 or P-521 and RSA of at least 2048 bits";
  if (EVP_PKEY_is_a(key, "EC")) {
    char group[64] = {};
    size_t len = 0;
    if (EVP_PKEY_get_utf8_string_param(key, OSSL_PKEY_PARAM_GROUP_NAME, group, sizeof(group),
                                       &len) != 1) {
      ClearOpenSslErrors();
      return InvalidArgument("EC key with explicit or unknown curve parameters; " +
                             std::string(kAllowed));
    }
    std::string_view g(group, len);
    if (g == "prime256v1" || g == "P-256" || g == "secp384r1" || g == "P-384" || g == "secp521r1" ||
        g == "P-521") {
      return Status::Ok();
    }
    return InvalidArgument("EC key on curve " + std::string(g) + "; " + std::string(kAllowed));
  }
  if (EVP_PKEY_is_a(key, "RSA")) {
    int bits = EVP_PKEY_get_bits(key);
    if (bits >= 2048) return Status::Ok();
    return InvalidArgument("RSA key of " + std::to_string(bits) + " bits; " +
                           std::string(kAllowed));
  }
  const char* type = EVP_PKEY_get0_type_name(key);
  return InvalidArgument(std::string(type != nullptr ? type : "unknown") + " key; " +
                         std::string(kAllowed));
}

Result<std::string> ChainPem(const X509* leaf, const std::vector<X509Ptr>& chain) {
  GA_ASSIGN_OR_RETURN(std::string pem, CertificateToPem(leaf));
  for (const X509Ptr& cert : chain) {
    GA_ASSIGN_OR_RETURN(std::string more, CertificateToPem(cert.get()));
    pem += more;
  }
  return pem;
}

Status WriteChainFile(const std::filesystem::path& path, const X509* leaf,
                      const std::vector<X509Ptr>& chain) {
  GA_ASSIGN_OR_RETURN(std::string pem, ChainPem(leaf, chain));
  return WriteFileAtomic(path, pem, 0644).With("writing certificate chain " + path.string());
}

}  // namespace ga::pki
