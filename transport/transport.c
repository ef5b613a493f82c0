/* SPDX-License-Identifier: MIT */
/* Backend selection for donor URLs: tcp:// always, rdma:// when built with libibverbs and librdmacm. */
#include "transport.h"

#include <errno.h>
#include <string.h>

#include "config.h"
#include "log.h"

static const struct donor_transport_ops *const backends[] = {
	&donor_tcp_ops,
#if HAVE_RDMA
	&donor_rdma_ops,
#endif
};

int donor_connect(const char *url, const struct donor_key *key, const char *client_id,
		  const struct donor_connect_opts *opts, struct donor_conn **ret_conn)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (strncmp(url, backends[i]->scheme, strlen(backends[i]->scheme)) == 0)
			return backends[i]->connect(url, key, client_id, opts, ret_conn);
	if (strncmp(url, "rdma://", 7) == 0)
		log_err("donor %s: built without RDMA support (libibverbs/librdmacm missing at "
			"build time; meson -Drdma=enabled)", url);
	return -EPROTONOSUPPORT;
}
