/*
 * libFuzzer: bytes as HTML through the allow-list sanitizer and the text
 * extractor.  The output, parsed again with gumbo the way a browser would,
 * must contain nothing the allow-list forbids: no script, style, iframe,
 * object, embed, form or svg element, no on* or style attribute, no href/src
 * with a javascript:, vbscript: or data: URL.  Output and text are UTF-8.
 */
#include <ctype.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <gumbo.h>

#include "kefu/email.h"
#include "kefu/pool.h"
#include "kefu/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int
bad_url(const char *v)
{
    char s[16];
    size_t n = 0;
    for (; *v && n < sizeof(s) - 1; v++)
        if ((unsigned char) *v > 0x20 && *v != 0x7f)
            s[n++] = (char) tolower((unsigned char) *v);
    s[n] = '\0';
    return strncmp(s, "javascript:", 11) == 0 || strncmp(s, "vbscript:", 9) == 0 ||
           strncmp(s, "data:", 5) == 0;
}

static void
check(const GumboNode *n, unsigned depth)
{
    if (n->type != GUMBO_NODE_ELEMENT || depth > 5000)
        return;
    const GumboElement *e = &n->v.element;
    switch (e->tag) {
    case GUMBO_TAG_SCRIPT: case GUMBO_TAG_STYLE: case GUMBO_TAG_IFRAME: case GUMBO_TAG_OBJECT:
    case GUMBO_TAG_EMBED: case GUMBO_TAG_FORM: case GUMBO_TAG_SVG: case GUMBO_TAG_MATH:
    case GUMBO_TAG_FRAME: case GUMBO_TAG_META: case GUMBO_TAG_LINK: case GUMBO_TAG_BASE:
        abort();
    default:
        break;
    }
    for (unsigned i = 0; i < e->attributes.length; i++) {
        const GumboAttribute *a = e->attributes.data[i];
        if (strncasecmp(a->name, "on", 2) == 0 || strcasecmp(a->name, "style") == 0)
            abort();
        if ((strcasecmp(a->name, "href") == 0 || strcasecmp(a->name, "src") == 0) &&
            bad_url(a->value))
            abort();
    }
    for (unsigned i = 0; i < e->children.length; i++)
        check(e->children.data[i], depth + 1);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    kf_pool *pool = kf_pool_create(4096);
    size_t len;
    /* gumbo wants UTF-8: the charset fallback the mail parser uses first */
    char *html = kf_email_to_utf8(pool, NULL, (const char *) data, size, &len);
    int remote = size > 0 && (data[0] & 1);
    char *out = kf_html_sanitize(pool, html, len, remote);
    if (!kf_utf8_valid(out, strlen(out)) && out[0] != '\0')
        abort();
    GumboOutput *g = gumbo_parse(out);
    check(g->root, 0);
    gumbo_destroy_output(&kGumboDefaultOptions, g);
    char *text = kf_html_to_text(pool, html, len);
    if (text[0] != '\0' && !kf_utf8_valid(text, strlen(text)))
        abort();
    kf_pool_destroy(&pool);
    return 0;
}
