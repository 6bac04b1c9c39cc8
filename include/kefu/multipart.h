/*
 * kefu/multipart.h - a strict multipart/form-data parser (RFC 7578, RFC 2046
 * section 5.1.1).
 *
 * The whole body is in memory (the HTTP layer has already bounded it); the
 * parser finds the parts and returns borrowed slices of their content.  It
 * is strict where leniency has hurt others: the boundary must be valid, the
 * body must start with the first delimiter and end with the close
 * delimiter, a delimiter may not appear inside a part, every part needs a
 * Content-Disposition: form-data with a name, header lines end in CRLF and
 * are never folded, and part count and header size are limited.  A preamble
 * is refused; an epilogue after the close delimiter is ignored.
 *
 * Filenames: filename*=charset'lang'%xx (RFC 5987 / 2231, UTF-8 or
 * ISO-8859-1) wins over filename="..."; the result is valid UTF-8 (or the
 * part is refused) but is NOT otherwise cleaned: callers strip directories
 * and control characters before storing it (kf_attachment_filename_clean).
 *
 * Threads:   any; no global state.
 * Ownership: names, filenames and content types are copied into the pool;
 *            part data points into the body, which must outlive the result.
 * Errors:    KF_OK; KF_EINVAL with a reason in *error_r, and
 *            mp->too_large = 1 when a limit (not the syntax) stopped it.
 */
#ifndef KEFU_MULTIPART_H
#define KEFU_MULTIPART_H

#include <stddef.h>
#include "kefu/pool.h"
#include "kefu/types.h"

typedef struct kf_mp_limits {
    size_t max_parts;        /* parts in one body */
    size_t max_header_bytes; /* header block of one part */
    size_t max_total;        /* the whole body */
} kf_mp_limits;

typedef struct kf_mp_part {
    const char *name;         /* form field name */
    const char *filename;     /* NULL when the part is not a file */
    const char *content_type; /* as sent, or NULL */
    const char *data;         /* borrowed from the body; may contain NUL bytes */
    size_t len;
} kf_mp_part;

typedef struct kf_multipart {
    kf_mp_part *parts;
    size_t n_parts;
    int too_large; /* set with KF_EINVAL when a limit was hit */
} kf_multipart;

/*
 * The boundary of a Content-Type header value ("multipart/form-data;
 * boundary=..."), copied into the pool.  KF_EINVAL when the type is not
 * multipart/form-data or the boundary is missing or invalid.
 */
int kf_multipart_boundary(kf_pool *pool, const char *content_type, const char **boundary_r,
                          const char **error_r);

/* Parse body (len bytes) sent with that Content-Type. */
int kf_multipart_parse(kf_pool *pool, const char *content_type, const char *body, size_t len,
                       const kf_mp_limits *limits, kf_multipart *mp, const char **error_r);

#endif /* KEFU_MULTIPART_H */
