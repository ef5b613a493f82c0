/* SPDX-License-Identifier: MIT */
/*
 * Optional libvirt connection of the pager (--libvirt URI). It watches
 * domain lifecycle events so that a domain that stops is named in the log
 * and in a "domain.stopped" event next to the registry's own
 * "vm.detached" (freeing a VM stays with the registration socket and
 * pidfd), and it carries out the registry's guest-balloon targets
 * (pager_set_balloon_handler, docs/policy.md "balloon") with
 * virDomainSetMemoryFlags on its own thread. A lost connection is
 * re-opened with backoff. Compiled only with HAVE_LIBVIRT.
 */
#pragma once

struct pager;
struct virt;

/*
 * Starts the thread that connects to uri (read-write, or read-only when
 * write access is refused: then balloon requests fail) and runs libvirt's
 * event loop, and installs the pager's balloon handler. A failure to
 * connect is logged there and retried with backoff while the pager runs.
 * Returns 0 or -errno (eventfd, thread creation, memory).
 */
int virt_start(struct pager *p, const char *uri, struct virt **ret);
/* Removes the balloon handler, stops the thread and closes the connection. NULL-safe. */
void virt_stop(struct virt *v);
