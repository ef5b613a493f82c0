/* SPDX-License-Identifier: MIT */
/*
 * The victim selectors by name, for the per-VM policy's "victims" key: the
 * policy parser validates names here and the mechanism looks up the ops
 * table it then drives.
 */
#include "victim.h"

#include <string.h>

#include "util.h"

static const struct policy_victim_ops *const victims[] = { &policy_victim_fifo, &policy_victim_clock };

const struct policy_victim_ops *policy_victim_find(const char *name)
{
	if (!name)
		return NULL;
	for (size_t i = 0; i < ARRAY_SIZE(victims); i++)
		if (strcmp(victims[i]->name, name) == 0)
			return victims[i];
	return NULL;
}

const char *policy_victim_names(void)
{
	return POLICY_VICTIM_NAMES;
}
