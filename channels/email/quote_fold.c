/*
 * quote_fold.c - where the quoted history of a reply begins, so the display
 * can fold it away (the stored text keeps everything).
 *
 * Recognised: "On <date>, <who> wrote:" (also wrapped over two lines),
 * "在 ... 写道：", Outlook's "-----Original Message-----", the Chinese
 * "-----原始邮件-----" and QQ Mail's "------------------ 原始邮件 ------------------",
 * header blocks starting "From:"/"发件人:" followed by "Sent:"/"Date:"/"发送时间:"
 * ..., and a trailing run of ">" lines.
 */
#include <string.h>
#include <strings.h>

#include "kefu/email.h"

/* The line [s, e) without leading/trailing blanks. */
static void
trim(const char **s, const char **e)
{
    while (*s < *e && (**s == ' ' || **s == '\t' || **s == '\r'))
        (*s)++;
    while (*e > *s && ((*e)[-1] == ' ' || (*e)[-1] == '\t' || (*e)[-1] == '\r'))
        (*e)--;
}

static int
starts(const char *s, const char *e, const char *p)
{
    size_t n = strlen(p);
    return (size_t) (e - s) >= n && strncasecmp(s, p, n) == 0;
}

static int
ends(const char *s, const char *e, const char *p)
{
    size_t n = strlen(p);
    return (size_t) (e - s) >= n && strncasecmp(e - n, p, n) == 0;
}

static int
contains(const char *s, const char *e, const char *p)
{
    size_t n = strlen(p);
    for (const char *q = s; q + n <= e; q++)
        if (memcmp(q, p, n) == 0)
            return 1;
    return 0;
}

static int
header_line(const char *s, const char *e, int first)
{
    static const char *const firsts[] = {"From:", "发件人:", "发件人：", "寄件者:", "寄件者：", NULL};
    static const char *const rest[] = {"Sent:", "Date:", "To:", "Subject:", "Cc:", "发送时间:",
                                       "发送时间：", "时间:", "时间：", "日期:", "日期：", "收件人:",
                                       "收件人：", "主题:", "主题：", "抄送:", "抄送：", "寄件日期:",
                                       "寄件日期：", "主旨:", "主旨：", NULL};
    const char *const *list = first ? firsts : rest;
    for (int i = 0; list[i]; i++)
        if (starts(s, e, list[i]))
            return 1;
    return 0;
}

static int
separator(const char *s, const char *e)
{
    /* "-----Original Message-----", "-----原始邮件-----", "--- 原始邮件 ---", "_____" (Outlook) */
    const char *a = s, *b = e;
    while (a < b && (*a == '-' || *a == '_' || *a == ' '))
        a++;
    while (b > a && (b[-1] == '-' || b[-1] == '_' || b[-1] == ' '))
        b--;
    if (a - s < 2)
        return 0;
    if (a == b) /* an underscore rule only counts for Outlook when 20+ long */
        return (e - s) >= 20 && *s == '_';
    return starts(a, b, "Original Message") || starts(a, b, "原始邮件") ||
           starts(a, b, "原始郵件") ||
           starts(a, b, "Reply message") || starts(a, b, "回复的原邮件");
}

size_t
kf_quote_fold(const char *text, size_t len)
{
    const char *end = text + len;
    const char *line = text;
    size_t quote_start = len; /* start of a trailing ">" block */
    int in_quote = 0, after_forward = 0;

    while (line < end) {
        const char *nl = memchr(line, '\n', (size_t) (end - line));
        const char *le = nl ? nl : end;
        const char *s = line, *e = le;
        trim(&s, &e);
        const char *next = nl ? nl + 1 : end;

        if (s < e && *s == '>') {
            if (!in_quote) {
                quote_start = (size_t) (line - text);
                in_quote = 1;
            }
        } else if (s < e) {
            in_quote = 0;
            if (after_forward > 0)
                after_forward--;
            if (contains(s, e, "Forwarded message") || contains(s, e, "转发邮件") ||
                contains(s, e, "轉寄郵件")) {
                after_forward = 6; /* its header block is content, not history */
                line = next;
                continue;
            }
            quote_start = len;
            if (line > text && separator(s, e))
                return (size_t) (line - text);
            if (starts(s, e, "On ") && ends(s, e, "wrote:") && line > text)
                return (size_t) (line - text);
            if ((contains(s, e, "写道") || contains(s, e, "寫道")) && (ends(s, e, "：") ||
                                                                   ends(s, e, ":")) && line > text)
                return (size_t) (line - text);
            if (starts(s, e, "On ") && line > text && next < end) {
                /* "On Mon, 1 Jan 2024 at 10:00, Someone <a@b>\nwrote:" */
                const char *nl2 = memchr(next, '\n', (size_t) (end - next));
                const char *s2 = next, *e2 = nl2 ? nl2 : end;
                trim(&s2, &e2);
                if (ends(s2, e2, "wrote:") && (size_t) (e2 - s2) < 80)
                    return (size_t) (line - text);
            }
            if (header_line(s, e, 1) && line > text && !after_forward) {
                /* a header block: From: followed by Sent:/Date:/To:/Subject: within 4 lines */
                const char *p = next;
                for (int k = 0; k < 4 && p < end; k++) {
                    const char *n2 = memchr(p, '\n', (size_t) (end - p));
                    const char *s2 = p, *e2 = n2 ? n2 : end;
                    trim(&s2, &e2);
                    if (header_line(s2, e2, 0))
                        return (size_t) (line - text);
                    p = n2 ? n2 + 1 : end;
                }
            }
        }
        line = next;
    }
    return in_quote ? quote_start : len;
}
