/* SPDX-License-Identifier: MIT */
/* uffd-pager: command line, configuration, and the daemon's life. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "policy.h"
#include "registry.h"
#include "util.h"

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: uffd-pager [OPTIONS]\n"
		"Serves guest RAM of VMs started with uffd-qemu through userfaultfd, keeping each VM\n"
		"within its policy's local_memory and storing cold pages in a per-VM spill file.\n\n"
		"  --config FILE      pager configuration (JSON, see docs/policy.md); default none\n"
		"  --socket PATH      registration socket (default %s/register.sock)\n"
		"  --control PATH     control socket for uffd-ctl (default %s/control.sock)\n"
		"  --state-dir DIR    where spill files live; on disk, never tmpfs (default %s)\n"
		"  --budget SIZE      host-wide sum of local_memory over all VMs (default unlimited)\n"
		"  --donor URL        a donor (tcp://HOST:PORT), repeatable; added to the config's donors\n"
		"  --donor-key-file FILE  pre-shared key for donors (mode 0600)\n"
		"  --client-id ID     the pager's identity towards donors (default uffd-pager)\n"
		"  --log-level LEVEL  error, warn, info (default) or debug\n"
		"  --version          print the version\n"
		"  --help             this text\n"
		"Command-line options override the configuration file.\n",
		UFFDVM_RUN_DIR, UFFDVM_RUN_DIR, UFFDVM_STATE_DIR);
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },   { "socket", required_argument, NULL, 's' },
		{ "control", required_argument, NULL, 'C' },  { "state-dir", required_argument, NULL, 'd' },
		{ "budget", required_argument, NULL, 'b' },   { "log-level", required_argument, NULL, 'l' },
		{ "version", no_argument, NULL, 'V' },        { "help", no_argument, NULL, 'h' },
		{ "donor", required_argument, NULL, 'D' },    { "donor-key-file", required_argument, NULL, 'K' },
		{ "client-id", required_argument, NULL, 'I' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *sock = NULL, *control = NULL, *state = NULL, *budget = NULL, *level = NULL;
	struct policy_pager_config cfg;
	struct policy_error perr;
	struct pager *p;
	const char *donors[POLICY_MAX_DONORS], *keyfile = NULL, *client_id = NULL;
	unsigned ndonors = 0;
	enum log_level lvl;
	int c, r;

	log_set_prefix("uffd-pager");
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'c': config = optarg; break;
		case 's': sock = optarg; break;
		case 'C': control = optarg; break;
		case 'd': state = optarg; break;
		case 'b': budget = optarg; break;
		case 'l': level = optarg; break;
		case 'D':
			if (!policy_donor_url_valid(optarg)) {
				fprintf(stderr, "uffd-pager: --donor '%s': expected tcp://HOST:PORT or rdma://HOST:PORT\n", optarg);
				return 2;
			}
			if (ndonors == POLICY_MAX_DONORS) {
				fprintf(stderr, "uffd-pager: --donor: at most %d donors\n", POLICY_MAX_DONORS);
				return 2;
			}
			donors[ndonors++] = optarg;
			break;
		case 'K': keyfile = optarg; break;
		case 'I':
			if (!policy_client_id_valid(optarg)) {
				fprintf(stderr, "uffd-pager: --client-id '%s': 1..64 characters of A-Z a-z 0-9 . _ : @ -\n", optarg);
				return 2;
			}
			client_id = optarg;
			break;
		case 'V': printf("uffd-pager %s\n", UFFDVM_VERSION); return 0;
		case 'h': usage(stdout); return 0;
		default: usage(stderr); return 2;
		}
	}
	if (optind < argc) {
		fprintf(stderr, "uffd-pager: unexpected argument '%s'\n", argv[optind]);
		return 2;
	}
	policy_config_init(&cfg);
	if (config && policy_config_load(config, &cfg, &perr) < 0) {
		fprintf(stderr, "uffd-pager: %s\n", perr.msg);
		return 2;
	}
	if (sock)
		snprintf(cfg.socket_path, sizeof(cfg.socket_path), "%s", sock);
	if (control)
		snprintf(cfg.control_path, sizeof(cfg.control_path), "%s", control);
	if (state)
		snprintf(cfg.state_dir, sizeof(cfg.state_dir), "%s", state);
	if (budget && parse_size(budget, &cfg.budget) < 0) {
		fprintf(stderr, "uffd-pager: --budget '%s': expected a size like 4G or 512M\n", budget);
		return 2;
	}
	for (unsigned i = 0; i < ndonors; i++) {
		bool dup = false;
		for (unsigned k = 0; k < cfg.n_donors; k++)
			dup |= strcmp(cfg.donors[k], donors[i]) == 0;
		if (dup)
			continue;
		if (cfg.n_donors == POLICY_MAX_DONORS) {
			fprintf(stderr, "uffd-pager: --donor %s: at most %d donors in all\n", donors[i], POLICY_MAX_DONORS);
			return 2;
		}
		snprintf(cfg.donors[cfg.n_donors++], POLICY_URL_MAX, "%s", donors[i]);
	}
	if (keyfile)
		snprintf(cfg.donor_key_file, sizeof(cfg.donor_key_file), "%s", keyfile);
	if (client_id)
		snprintf(cfg.client_id, sizeof(cfg.client_id), "%s", client_id);
	log_set_level((enum log_level)cfg.log_level);
	if (level) {
		if (log_parse_level(level, &lvl) < 0) {
			fprintf(stderr, "uffd-pager: --log-level '%s' (allowed: error, warn, info, debug)\n", level);
			return 2;
		}
		log_set_level(lvl);
	}
	r = pager_new(&cfg, &p);
	if (r < 0)
		return 1;
	r = pager_run(p);
	pager_free(p);
	return r < 0 ? 1 : 0;
}
