/*
 * kefu/types.h - status codes and forward declarations shared by every module.
 *
 * Threads:   any.
 * Errors:    functions return int: KF_OK or one of the negative codes below;
 *            a human-readable reason travels in a `const char **error_r`
 *            (a static string or pool memory, never a library's buffer).
 */
#ifndef KEFU_TYPES_H
#define KEFU_TYPES_H

#include <stddef.h>
#include <stdint.h>

enum kf_status {
    KF_OK = 0,
    KF_ERR = -1,       /* failed; already logged where it happened          */
    KF_EINVAL = -2,    /* caller's input is wrong             -> 400 / 422   */
    KF_ENOTFOUND = -3, /* no such row                         -> 404         */
    KF_ECONFLICT = -4, /* state or version forbids it         -> 409         */
    KF_ERETRY = -5,    /* deadlock 1213, lock wait 1205, Galera certification */
    KF_EBUSY = -6,     /* queue full, no connection free      -> 503         */
    KF_EDB = -7,       /* any other database failure          -> 500         */
};

typedef struct kf_pool kf_pool;
typedef struct kf_config kf_config;
typedef struct kf_db kf_db;
typedef struct kf_stmt kf_stmt;
typedef struct kf_router kf_router;
typedef struct kf_route kf_route;
typedef struct kf_call kf_call;
typedef struct kf_reply kf_reply;
typedef struct kf_workers kf_workers;
typedef struct kf_loop kf_loop;
typedef struct kf_scheduler kf_scheduler;
typedef struct kf_job kf_job;
typedef struct kf_server kf_server;

#define KF_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif /* KEFU_TYPES_H */
