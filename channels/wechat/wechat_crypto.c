/*
 * wechat_crypto.c - WeChat's message signatures and WXBizMsgCrypt, exactly
 * as the official samples do it (see ../shared/research/wechat.md §2, §6).
 *
 * The traps this file exists to get right:
 *   - signatures sort their parts byte-wise (strcmp), never numerically;
 *   - the PKCS#7 block is 32 bytes, not AES's 16: OpenSSL's own padding is
 *     switched off and the pad (1..32) is added and checked here;
 *   - EncodingAESKeys are often non-canonical base64: the unused low bits of
 *     the 43rd character are ignored;
 *   - the message length is a big-endian 32-bit integer built byte by byte.
 *
 * Pure functions: no database, no globals; any thread.
 */
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "kefu/wechat.h"

#define PKCS7_BLOCK 32
#define RANDOM_LEN 16

/* ---- base64 ---- */

static int
b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

char *
kf_wechat_b64_encode(kf_pool *pool, const unsigned char *data, size_t len)
{
    size_t cap = sodium_base64_ENCODED_LEN(len, sodium_base64_VARIANT_ORIGINAL);
    char *out = kf_pool_alloc(pool, cap);
    sodium_bin2base64(out, cap, data, len, sodium_base64_VARIANT_ORIGINAL);
    return out;
}

/*
 * Strict standard base64: length a multiple of 4, '=' only as the last one
 * or two characters, no whitespace.  Unused low bits of the last symbol are
 * ignored, as every WeChat SDK does.
 */
unsigned char *
kf_wechat_b64_decode(kf_pool *pool, const char *s, size_t len, size_t *out_len)
{
    size_t pad = 0, n = 0;
    unsigned char *out;

    if (len == 0 || len % 4 != 0)
        return NULL;
    if (s[len - 1] == '=')
        pad = s[len - 2] == '=' ? 2 : 1;
    out = kf_pool_alloc(pool, len / 4 * 3 + 1);
    for (size_t i = 0; i < len; i += 4) {
        unsigned v = 0;
        int last = i + 4 == len;
        for (size_t j = 0; j < 4; j++) {
            int d;
            if (last && j >= 4 - pad)
                d = 0;
            else if ((d = b64_value((unsigned char) s[i + j])) < 0)
                return NULL;
            v = v << 6 | (unsigned) d;
        }
        out[n++] = (unsigned char) (v >> 16);
        if (!last || pad < 2)
            out[n++] = (unsigned char) (v >> 8);
        if (!last || pad < 1)
            out[n++] = (unsigned char) v;
    }
    *out_len = n;
    return out;
}

int
kf_wechat_aes_key(const char *encoding_aes_key, unsigned char key[32], const char **error_r)
{
    unsigned acc = 0;
    int bits = 0;
    size_t n = 0;

    if (encoding_aes_key == NULL || strlen(encoding_aes_key) != KF_WECHAT_AES_KEY_LEN) {
        *error_r = "the EncodingAESKey must be 43 characters";
        return KF_EINVAL;
    }
    /* 43 symbols = 258 bits: 32 bytes and 2 bits that do not matter. */
    for (size_t i = 0; i < KF_WECHAT_AES_KEY_LEN; i++) {
        unsigned char c = (unsigned char) encoding_aes_key[i];
        int d = b64_value(c);
        if (d < 0 || c == '+' || c == '/') {
            *error_r = "the EncodingAESKey must be letters and digits only";
            return KF_EINVAL;
        }
        acc = (acc << 6 | (unsigned) d) & 0xffffu;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            if (n < 32)
                key[n++] = (unsigned char) (acc >> bits);
        }
    }
    return KF_OK;
}

/* ---- signatures ---- */

static int
cmp_str(const void *a, const void *b)
{
    return strcmp(*(const char *const *) a, *(const char *const *) b);
}

void
kf_wechat_signature(const char *const *parts, size_t n, char hex[41])
{
    const char *sorted[8];
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int mdlen = 0;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();

    if (n > KF_ARRAY_LEN(sorted))
        n = KF_ARRAY_LEN(sorted);
    for (size_t i = 0; i < n; i++)
        sorted[i] = parts[i] ? parts[i] : "";
    qsort(sorted, n, sizeof(sorted[0]), cmp_str);
    if (ctx == NULL || EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) != 1)
        abort();
    for (size_t i = 0; i < n; i++)
        EVP_DigestUpdate(ctx, sorted[i], strlen(sorted[i]));
    EVP_DigestFinal_ex(ctx, md, &mdlen);
    EVP_MD_CTX_free(ctx);
    sodium_bin2hex(hex, 41, md, 20);
}

int
kf_wechat_signature_ok(const char *const *parts, size_t n, const char *given)
{
    char want[41], got[41];

    if (given == NULL || strlen(given) != 40)
        return 0;
    for (size_t i = 0; i < 40; i++) {
        char ch = given[i];
        got[i] = ch >= 'A' && ch <= 'F' ? (char) (ch - 'A' + 'a') : ch;
    }
    got[40] = '\0';
    kf_wechat_signature(parts, n, want);
    return CRYPTO_memcmp(want, got, 40) == 0;
}

/* ---- AES-256-CBC without cipher padding ---- */

static int
aes_cbc(int enc, const unsigned char key[32], const unsigned char *in, size_t len,
        unsigned char *out)
{
    EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
    int n1 = 0, n2 = 0, ok;

    if (ctx == NULL)
        abort();
    /* IV = the first 16 bytes of the key; padding off: we pad to 32 ourselves. */
    ok = EVP_CipherInit_ex(ctx, EVP_aes_256_cbc(), NULL, key, key, enc) == 1 &&
         EVP_CIPHER_CTX_set_padding(ctx, 0) == 1 &&
         EVP_CipherUpdate(ctx, out, &n1, in, (int) len) == 1 &&
         EVP_CipherFinal_ex(ctx, out + n1, &n2) == 1 && (size_t) (n1 + n2) == len;
    EVP_CIPHER_CTX_free(ctx);
    return ok;
}

int
kf_wechat_decrypt(kf_pool *pool, const unsigned char key[32], const char *b64, size_t b64_len,
                  const char *receive_id, char **msg_r, size_t *len_r, const char **error_r)
{
    size_t clen = 0, rlen = strlen(receive_id);
    unsigned char *cipher, *plain;

    /* 1. Base64; WeChat's ciphertexts are always whole 32-byte blocks. */
    if ((cipher = kf_wechat_b64_decode(pool, b64, b64_len, &clen)) == NULL) {
        *error_r = "Encrypt is not valid base64";
        return KF_EINVAL;
    }
    if (clen == 0 || clen % PKCS7_BLOCK != 0 || clen > (1u << 30)) {
        *error_r = "Encrypt is not a whole number of 32-byte blocks";
        return KF_EINVAL;
    }

    /* 2. Decrypt, then strip the 32-byte PKCS#7 pad (all its bytes equal). */
    plain = kf_pool_alloc(pool, clen + 1);
    if (!aes_cbc(0, key, cipher, clen, plain)) {
        *error_r = "AES decryption failed";
        return KF_EINVAL;
    }
    unsigned pad = plain[clen - 1];
    unsigned bad = pad < 1 || pad > PKCS7_BLOCK;
    for (size_t i = 0; !bad && i < pad; i++)
        bad |= plain[clen - 1 - i] != pad;
    if (bad) {
        *error_r = "bad padding (wrong EncodingAESKey?)";
        return KF_EINVAL;
    }
    size_t content = clen - pad;

    /* 3. random(16) || be32(len) || msg || receive id. */
    if (content < RANDOM_LEN + 4) {
        *error_r = "decrypted text too short";
        return KF_EINVAL;
    }
    size_t mlen = (size_t) plain[16] << 24 | (size_t) plain[17] << 16 | (size_t) plain[18] << 8 |
                  (size_t) plain[19];
    if (mlen > content - RANDOM_LEN - 4) {
        *error_r = "message length beyond the decrypted text";
        return KF_EINVAL;
    }
    const unsigned char *id = plain + RANDOM_LEN + 4 + mlen;
    size_t idlen = content - RANDOM_LEN - 4 - mlen;
    if (!kf_memeq_ct(id, idlen, receive_id, rlen)) {
        *error_r = "the message is for another AppID/CorpID";
        return KF_EINVAL;
    }
    *msg_r = kf_pool_strndup(pool, (const char *) plain + RANDOM_LEN + 4, mlen);
    if (len_r != NULL)
        *len_r = mlen;
    return KF_OK;
}

int
kf_wechat_encrypt(kf_pool *pool, const unsigned char key[32], const unsigned char *random16,
                  const char *msg, size_t len, const char *receive_id, char **b64_r)
{
    size_t rlen = strlen(receive_id), full = RANDOM_LEN + 4 + len + rlen;
    size_t pad = PKCS7_BLOCK - full % PKCS7_BLOCK; /* 1..32: a whole block when aligned */
    size_t total = full + pad;
    unsigned char *plain = kf_pool_alloc(pool, total), *cipher = kf_pool_alloc(pool, total);

    if (random16 != NULL)
        memcpy(plain, random16, RANDOM_LEN);
    else
        randombytes_buf(plain, RANDOM_LEN);
    plain[16] = (unsigned char) (len >> 24);
    plain[17] = (unsigned char) (len >> 16);
    plain[18] = (unsigned char) (len >> 8);
    plain[19] = (unsigned char) len;
    if (len > 0)
        memcpy(plain + 20, msg, len);
    memcpy(plain + 20 + len, receive_id, rlen);
    memset(plain + full, (int) pad, pad);
    if (!aes_cbc(1, key, plain, total, cipher))
        return KF_ERR;
    sodium_memzero(plain, total);
    *b64_r = kf_wechat_b64_encode(pool, cipher, total);
    return KF_OK;
}
