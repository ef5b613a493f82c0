/* SPDX-License-Identifier: MIT */
/* Backend selection for donor URLs; the RDMA backend registers here once it exists. */
#include "transport.h"

#include <errno.h>
#include <string.h>

static const struct donor_transport_ops *const backends[] = {
	&donor_tcp_ops,
};

int donor_connect(const char *url, const struct donor_key *key, const char *client_id,
		  const struct donor_connect_opts *opts, struct donor_conn **ret_conn)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (strncmp(url, backends[i]->scheme, strlen(backends[i]->scheme)) == 0)
			return backends[i]->connect(url, key, client_id, opts, ret_conn);
	return -EPROTONOSUPPORT;
}
