/* SPDX-License-Identifier: MIT */
/*
 * Rewriting of the drives a VM's disk cache covers (policy disk_cache.drives)
 * to NBD exports of one nbdkit on a Unix socket, with no syscalls so every
 * rule is unit-testable. A drive is named by its -drive id= or its
 * -blockdev node-name=; -blockdev is read in the key=value form and in the
 * JSON form libvirt writes. Only drives whose bytes come from one local
 * file can be served by nbdkit's file plugin: anything else named in the
 * policy (another protocol, file.* or driver= sub-options, a file name with
 * a comma, a missing drive) is refused, never left uncached silently.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>

struct glue_drives;

/*
 * Rewrites the n drives names[] of argv (argv[0] is QEMU; argc entries) to
 * the NBD export of the same name on Unix socket sock. A refusal is a
 * successful result with glue_drives_error() set. Returns 0, -EINVAL (sock
 * unusable in an NBD URI) or -ENOMEM; *ret untouched on failure.
 */
int glue_drives_rewrite(int argc, char *const *argv, const char *const *names, size_t n, const char *sock,
			struct glue_drives **ret);
void glue_drives_free(struct glue_drives *d);

/* Why the drives cannot be cached: one problem per line, or NULL. */
const char *glue_drives_error(const struct glue_drives *d);
/* The rewritten command line, NULL-terminated (valid until glue_drives_free). */
char *const *glue_drives_argv(const struct glue_drives *d);
int glue_drives_argc(const struct glue_drives *d);
/* The image file of names[i] as the command line gave it (relative to QEMU's working directory). */
const char *glue_drives_image(const struct glue_drives *d, size_t i);
