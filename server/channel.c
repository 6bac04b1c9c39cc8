/*
 * channel.c - the registry of channel adapters (filled at start-up, read by
 * the outbox job).
 */
#include <string.h>

#include "kefu/channel.h"
#include "kefu/log.h"

#define MAX_CHANNELS 16

static kf_channel *channels[MAX_CHANNELS];
static unsigned n_channels;

void
kf_channel_register(kf_channel *ch)
{
    for (unsigned i = 0; i < n_channels; i++)
        if (strcmp(channels[i]->ops->name, ch->ops->name) == 0) {
            channels[i] = ch; /* a later registration replaces (tests) */
            return;
        }
    if (n_channels == MAX_CHANNELS)
        kf_panic("too many channel adapters");
    channels[n_channels++] = ch;
}

kf_channel *
kf_channel_find(const char *name)
{
    for (unsigned i = 0; i < n_channels; i++)
        if (strcmp(channels[i]->ops->name, name) == 0)
            return channels[i];
    return NULL;
}

unsigned
kf_channel_names(const char **names, unsigned max)
{
    unsigned n = 0;
    for (unsigned i = 0; i < n_channels && n < max; i++)
        names[n++] = channels[i]->ops->name;
    return n;
}

void
kf_channel_reset(void)
{
    n_channels = 0;
}
