/*
 * form_token.c - the CSRF token of every web form (kefu/webform.h).
 *
 * Stateless: "<issued>.<nonce>.<mac>" where mac = HMAC-SHA-256(key,
 * "kefu-form-v1|purpose|binding|issued|nonce").  Nothing is stored per
 * token, so any kefud instance sharing the key (kept in the database,
 * channels/webform/webform.c) checks what another issued.  The purpose
 * ties a token to one form (a token of the sign-in form does not post a
 * reply); the binding ties it to the secret that form acts with (the
 * portal link's token, the portal session), so a page from one ticket
 * cannot post to another.  Purposes are our own constants and bindings
 * are base64url, so '|' cannot occur inside either.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "kefu/webform.h"

#define NONCE_BYTES 12
#define B64_NONCE 16 /* base64url, no padding, of 12 bytes */
#define B64_MAC 43   /* of 32 bytes */

static void
mac_compute(const unsigned char key[KF_FORM_KEY_LEN], const char *purpose, const char *binding,
            const char *issued, size_t issued_len, const char *nonce, size_t nonce_len,
            unsigned char mac[crypto_auth_hmacsha256_BYTES])
{
    crypto_auth_hmacsha256_state st;
    static const char tag[] = "kefu-form-v1|";

    crypto_auth_hmacsha256_init(&st, key, KF_FORM_KEY_LEN);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)tag, sizeof(tag) - 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)purpose, strlen(purpose));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"|", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)binding, strlen(binding));
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"|", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)issued, issued_len);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)"|", 1);
    crypto_auth_hmacsha256_update(&st, (const unsigned char *)nonce, nonce_len);
    crypto_auth_hmacsha256_final(&st, mac);
}

void
kf_form_token_make(const unsigned char key[KF_FORM_KEY_LEN], const char *purpose,
                   const char *binding, int64_t now, char *out)
{
    unsigned char nonce[NONCE_BYTES], mac[crypto_auth_hmacsha256_BYTES];
    char issued[24], nonce64[B64_NONCE + 1], mac64[B64_MAC + 1];

    snprintf(issued, sizeof(issued), "%lld", (long long)now);
    randombytes_buf(nonce, sizeof(nonce));
    sodium_bin2base64(nonce64, sizeof(nonce64), nonce, sizeof(nonce),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    mac_compute(key, purpose, binding ? binding : "", issued, strlen(issued), nonce64, B64_NONCE,
                mac);
    sodium_bin2base64(mac64, sizeof(mac64), mac, sizeof(mac),
                      sodium_base64_VARIANT_URLSAFE_NO_PADDING);
    snprintf(out, KF_FORM_TOKEN_MAX, "%s.%s.%s", issued, nonce64, mac64);
}

int
kf_form_token_check(const unsigned char key[KF_FORM_KEY_LEN], const char *purpose,
                    const char *binding, const char *token, int64_t now, int64_t max_age,
                    kf_pool *pool, int64_t *issued_r, const char **nonce_r)
{
    unsigned char mac[crypto_auth_hmacsha256_BYTES], sent[crypto_auth_hmacsha256_BYTES];
    size_t sent_len = 0;
    const char *dot1, *dot2;
    int64_t issued = 0;

    if (token == NULL || strlen(token) >= KF_FORM_TOKEN_MAX)
        return KF_FORM_TOKEN_BAD;
    /* 1. Shape: digits "." 16 base64url "." 43 base64url. */
    if ((dot1 = strchr(token, '.')) == NULL || (dot2 = strchr(dot1 + 1, '.')) == NULL ||
        dot1 == token || dot1 - token > 12 || dot2 - dot1 - 1 != B64_NONCE ||
        strlen(dot2 + 1) != B64_MAC)
        return KF_FORM_TOKEN_BAD;
    for (const char *p = token; p < dot1; p++) {
        if (*p < '0' || *p > '9')
            return KF_FORM_TOKEN_BAD;
        issued = issued * 10 + (*p - '0');
    }
    if (sodium_base642bin(sent, sizeof(sent), dot2 + 1, B64_MAC, NULL, &sent_len, NULL,
                          sodium_base64_VARIANT_URLSAFE_NO_PADDING) != 0 ||
        sent_len != sizeof(sent))
        return KF_FORM_TOKEN_BAD;

    /* 2. The MAC, compared in constant time. */
    mac_compute(key, purpose, binding ? binding : "", token, (size_t)(dot1 - token), dot1 + 1,
                B64_NONCE, mac);
    if (sodium_memcmp(mac, sent, sizeof(mac)) != 0)
        return KF_FORM_TOKEN_BAD;

    /* 3. Age: a little clock skew between instances is allowed. */
    if (issued > now + 60 || now - issued > max_age)
        return KF_FORM_TOKEN_EXPIRED;
    if (issued_r != NULL)
        *issued_r = issued;
    if (nonce_r != NULL)
        *nonce_r = kf_pool_strndup(pool, dot1 + 1, B64_NONCE);
    return KF_FORM_TOKEN_OK;
}
