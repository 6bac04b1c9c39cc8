/*
 * kefu/attachment.h - what files on tickets need besides storage (which is
 * kf_ticket_add_attachment() in kefu/ticket.h: an attachment row plus
 * 256 KiB attachment_chunk rows): the content type sniffed from the bytes
 * (never taken from the client), a filename cleaned before it is stored,
 * and the Content-Disposition of a download.
 *
 * Threads:   any; pure functions.
 */
#ifndef KEFU_ATTACHMENT_H
#define KEFU_ATTACHMENT_H

#include <stddef.h>
#include <stdint.h>
#include "kefu/pool.h"
#include "kefu/types.h"

#define KF_ATTACHMENT_NAME_MAX 255 /* characters (attachment.filename) */

/*
 * The type of data by its first bytes: image/png, image/jpeg, image/gif,
 * application/pdf, application/zip, text/plain; charset=utf-8 (valid UTF-8
 * without control characters other than tab, CR, LF, FF), else
 * application/octet-stream.  A static string.
 */
const char *kf_attachment_sniff(const unsigned char *data, size_t len);

/*
 * A filename safe to store and show: the last path component, control
 * characters and invalid UTF-8 replaced by '_', leading/trailing dots and
 * spaces trimmed, at most KF_ATTACHMENT_NAME_MAX characters (the extension
 * kept when shortening), "attachment" when nothing is left.  In the pool.
 */
char *kf_attachment_filename_clean(kf_pool *pool, const char *name);

/*
 * Content-Disposition value for a download (RFC 6266): attachment; an
 * ASCII fallback filename="..." and filename*=UTF-8''<percent-encoded>.
 */
char *kf_attachment_disposition(kf_pool *pool, const char *filename);

#endif /* KEFU_ATTACHMENT_H */
