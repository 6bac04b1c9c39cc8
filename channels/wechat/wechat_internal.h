/*
 * wechat_internal.h - shared between the files of channels/wechat/ only.
 */
#ifndef KEFU_WECHAT_INTERNAL_H
#define KEFU_WECHAT_INTERNAL_H

#include "kefu/http.h"
#include "kefu/wechat.h"

#define WX_DEFAULT_API_OFFICIAL "https://api.weixin.qq.com"
#define WX_DEFAULT_API_WECOM "https://qyapi.weixin.qq.com"

/* wechat_channel.c: an account changed (after the commit): forget cached copies. */
void kf_wechat_account_changed(void);

/*
 * wechat_api.c: kf_wechat_http_call()'s sibling for media/upload: POST a
 * multipart/form-data body with one file part (field, filename,
 * content_type, the bytes, copied).  The same limits and errors; the
 * transfer may use all the time left before deadline (not capped at
 * wechat_api_timeout, which still bounds the connect).
 */
int kf_wechat_http_upload(const kf_config *cfg, const char *url, const char *field,
                          const char *filename, const char *content_type, const void *data,
                          size_t len, double deadline, size_t max_body, kf_wechat_http *r,
                          const char **why_r, kf_pool *pool);

/* wechat_admin.c: the admin API handlers (routes in wechat_channel.c). */
int kf_wechat_h_list(kf_call *c, kf_reply *out);
int kf_wechat_h_create(kf_call *c, kf_reply *out);
int kf_wechat_h_get(kf_call *c, kf_reply *out);
int kf_wechat_h_update(kf_call *c, kf_reply *out);
int kf_wechat_h_delete(kf_call *c, kf_reply *out);

#endif /* KEFU_WECHAT_INTERNAL_H */
