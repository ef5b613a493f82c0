/* SPDX-License-Identifier: MIT */
/*
 * Optional libvirt connection of the pager (--libvirt URI): watches domain
 * lifecycle events so that a domain that stops is named in the log and in
 * a "domain.stopped" event next to the registry's own "vm.detached". It
 * only observes: freeing a VM stays with the registration socket and pidfd.
 * Compiled only with HAVE_LIBVIRT.
 */
#pragma once

struct pager;
struct virt;

/*
 * Starts the thread that connects to uri (read-only) and runs libvirt's
 * event loop. A failure to connect is logged there and leaves the pager
 * running without it. Returns 0 or -errno (thread creation, memory).
 */
int virt_start(struct pager *p, const char *uri, struct virt **ret);
/* Stops the thread and closes the connection. NULL-safe. */
void virt_stop(struct virt *v);
