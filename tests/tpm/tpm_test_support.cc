#include "tpm_test_support.h"

#include <gtest/gtest.h>
#include <openssl/core_names.h>
#include <openssl/param_build.h>
#include <openssl/sha.h>

#include <fstream>
#include <sstream>

namespace ga::tpm::testing {

EvpPkeyPtr SoftwarePublicKey(const TpmKeyBlob& key) {
  EVP_PKEY* pkey = nullptr;
  std::unique_ptr<EVP_PKEY_CTX, decltype(&EVP_PKEY_CTX_free)> ctx(nullptr, EVP_PKEY_CTX_free);
  std::unique_ptr<OSSL_PARAM_BLD, decltype(&OSSL_PARAM_BLD_free)> bld(OSSL_PARAM_BLD_new(),
                                                                      OSSL_PARAM_BLD_free);
  std::unique_ptr<BIGNUM, decltype(&BN_free)> n(nullptr, BN_free), e(nullptr, BN_free);
  if (key.algorithm() == KeyAlgorithm::kEccP256) {
    ctx.reset(EVP_PKEY_CTX_new_from_name(nullptr, "EC", nullptr));
    OSSL_PARAM_BLD_push_utf8_string(bld.get(), OSSL_PKEY_PARAM_GROUP_NAME, "prime256v1", 0);
    OSSL_PARAM_BLD_push_octet_string(bld.get(), OSSL_PKEY_PARAM_PUB_KEY, key.ec_point().data(),
                                     key.ec_point().size());
  } else {
    ctx.reset(EVP_PKEY_CTX_new_from_name(nullptr, "RSA", nullptr));
    n.reset(BN_bin2bn(reinterpret_cast<const unsigned char*>(key.rsa_modulus().data()),
                      static_cast<int>(key.rsa_modulus().size()), nullptr));
    e.reset(BN_new());
    BN_set_word(e.get(), key.rsa_exponent());
    OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_N, n.get());
    OSSL_PARAM_BLD_push_BN(bld.get(), OSSL_PKEY_PARAM_RSA_E, e.get());
  }
  OSSL_PARAM* params = OSSL_PARAM_BLD_to_param(bld.get());
  if (ctx && EVP_PKEY_fromdata_init(ctx.get()) == 1) {
    EVP_PKEY_fromdata(ctx.get(), &pkey, EVP_PKEY_PUBLIC_KEY, params);
  }
  OSSL_PARAM_free(params);
  return EvpPkeyPtr(pkey);
}

bool VerifySha256(const TpmKeyBlob& key, const std::string& message, const std::string& sig) {
  EvpPkeyPtr pub = SoftwarePublicKey(key);
  if (!pub) return false;
  EvpMdCtxPtr md(EVP_MD_CTX_new());
  if (EVP_DigestVerifyInit_ex(md.get(), nullptr, "SHA256", nullptr, nullptr, pub.get(), nullptr) !=
      1) {
    return false;
  }
  return EVP_DigestVerify(md.get(), reinterpret_cast<const unsigned char*>(sig.data()), sig.size(),
                          reinterpret_cast<const unsigned char*>(message.data()),
                          message.size()) == 1;
}

std::string MustRun(const std::vector<std::string>& argv,
                    const std::map<std::string, std::string>& env) {
  ga::testing::CommandResult r = ga::testing::RunCommand(argv, std::chrono::seconds(60), env);
  if (r.exit_code != 0) {
    std::string cmd;
    for (const auto& a : argv) cmd += a + " ";
    ADD_FAILURE() << "command failed (" << r.exit_code << "): " << cmd << "\n" << r.output;
  }
  return r.output;
}

std::map<std::string, std::string> TpmToolsEnv(const std::string& tcti) {
  return {{"TPM2TOOLS_TCTI", tcti}, {"TPM2OPENSSL_TCTI", tcti}, {"TSS2_LOG", "all+none"}};
}

TestPki TestPki::Create(const std::filesystem::path& dir) {
  TestPki p;
  p.dir = dir;
  p.root_cert = dir / "root.pem";
  p.root_key = dir / "root.key";
  p.intermediate_cert = dir / "intermediate.pem";
  p.intermediate_key = dir / "intermediate.key";
  p.server_cert = dir / "server.pem";
  p.server_key = dir / "server.key";
  auto s = [](const std::filesystem::path& f) { return f.string(); };
  WriteText(dir / "ca.ext",
            "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n"
            "subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n");
  WriteText(dir / "server.ext",
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\nsubjectAltName=DNS:localhost,IP:127.0.0.1\n");
  MustRun({"openssl",
           "req",
           "-x509",
           "-newkey",
           "ec",
           "-pkeyopt",
           "ec_paramgen_curve:P-256",
           "-nodes",
           "-keyout",
           s(p.root_key),
           "-out",
           s(p.root_cert),
           "-subj",
           "/CN=Test Root CA",
           "-days",
           "2",
           "-addext",
           "basicConstraints=critical,CA:TRUE",
           "-addext",
           "keyUsage=critical,keyCertSign,cRLSign"});
  MustRun({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", s(p.intermediate_key), "-out", s(dir / "intermediate.csr"), "-subj",
           "/CN=Test Device CA"});
  MustRun({"openssl", "x509", "-req", "-in", s(dir / "intermediate.csr"), "-CA", s(p.root_cert),
           "-CAkey", s(p.root_key), "-CAcreateserial", "-days", "2", "-extfile", s(dir / "ca.ext"),
           "-out", s(p.intermediate_cert)});
  MustRun({"openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
           "-nodes", "-keyout", s(p.server_key), "-out", s(dir / "server.csr"), "-subj",
           "/CN=localhost"});
  MustRun({"openssl", "x509", "-req", "-in", s(dir / "server.csr"), "-CA", s(p.root_cert), "-CAkey",
           s(p.root_key), "-CAcreateserial", "-days", "2", "-extfile", s(dir / "server.ext"),
           "-out", s(p.server_cert)});
  return p;
}

std::string TestPki::IssueClientCert(const std::string& csr_pem, const std::string& name) const {
  auto csr = dir / (name + ".csr");
  auto ext = dir / (name + ".ext");
  auto out = dir / (name + ".pem");
  WriteText(csr, csr_pem);
  WriteText(ext,
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=clientAuth\n");
  MustRun({"openssl", "x509", "-req", "-in", csr.string(), "-CA", intermediate_cert.string(),
           "-CAkey", intermediate_key.string(), "-CAcreateserial", "-days", "2", "-extfile",
           ext.string(), "-out", out.string()});
  return ReadText(out);
}

}  // namespace ga::tpm::testing
