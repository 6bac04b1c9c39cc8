/* auth.c - placeholder: refuses every non-public route until sessions/tokens land. */
#include "kefu/auth.h"

int
kf_auth_authenticate(kf_call *c)
{
    if (c->route->auth == KF_AUTH_PUBLIC)
        return KF_OK;
    kf_reply_problem(&c->reply, c, 401, "unauthorized", "Authentication is required.", NULL);
    return KF_ERR;
}
