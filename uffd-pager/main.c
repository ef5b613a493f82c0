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
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *sock = NULL, *control = NULL, *state = NULL, *budget = NULL, *level = NULL;
	struct policy_pager_config cfg;
	struct policy_error perr;
	struct pager *p;
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
