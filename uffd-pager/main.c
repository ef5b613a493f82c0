/* SPDX-License-Identifier: MIT */
/*
 * uffd-pager: command line, configuration, and the daemon's life. main()
 * assembles the daemon from the bottom up: the registry (pager_new), then
 * the control server and the libvirt watcher, each started here with its
 * options and each stopped here, in reverse order, before the registry goes.
 */
#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "control.h"
#include "log.h"
#include "policy.h"
#include "registry.h"
#include "util.h"
#if HAVE_LIBVIRT
#include "virt.h"
#endif

static void usage(FILE *f)
{
	fprintf(f,
		"Usage: uffd-pager [OPTIONS]\n"
		"Serves guest RAM of VMs started with uffd-qemu through userfaultfd, keeping each VM\n"
		"within its policy's local_memory and storing cold pages in a per-VM spill file.\n\n"
		"  --config FILE      pager configuration (JSON, see docs/policy.md); default none\n"
		"  --socket PATH      registration socket (default %s/register.sock)\n"
		"  --control PATH     control socket for uffd-ctl (default %s/control.sock)\n"
		"  --control-mode MODE  octal mode of the control socket (default 0660)\n"
		"  --control-group GROUP  group of the control socket (name or gid; default the daemon's)\n"
		"  --admin-group GROUP  its members may run admin commands (vm.set-limit, vm.drain...);\n"
		"                     root may always; everyone who can connect may read (default none)\n"
		"  --metrics-listen 127.0.0.1:PORT  serve Prometheus metrics at http://ADDR:PORT/metrics\n"
		"                     (loopback only; default off)\n"
		"  --state-dir DIR    where spill files live; on disk, never tmpfs (default %s)\n"
		"  --budget SIZE      host-wide sum of local_memory over all VMs (default unlimited)\n"
		"  --donor URL        a donor (tcp://HOST:PORT), repeatable; added to the config's donors\n"
		"  --donor-key-file FILE  pre-shared key for donors (mode 0600)\n"
		"  --client-id ID     the pager's identity towards donors (default: derived from /etc/machine-id)\n"
		"  --libvirt URI      connect to libvirt (e.g. qemu:///system): report a paged domain's stop\n"
		"                     as a domain.stopped event, and set the guest balloon of policies\n"
		"                     with balloon.enabled (needs write access; reconnects if lost)%s\n"
		"  --log-level LEVEL  error, warn, info (default) or debug\n"
		"  --version          print the version\n"
		"  --help             this text\n"
		"Command-line options override the configuration file.\n",
		UFFDVM_RUN_DIR, UFFDVM_RUN_DIR, UFFDVM_STATE_DIR,
		HAVE_LIBVIRT ? "" : "\n                     (not in this build: it was built without libvirt)");
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
		{ "control-mode", required_argument, NULL, 'M' }, { "control-group", required_argument, NULL, 'G' },
		{ "admin-group", required_argument, NULL, 'A' }, { "metrics-listen", required_argument, NULL, 'm' },
		{ "libvirt", required_argument, NULL, 'L' },
		{ NULL, 0, NULL, 0 },
	};
	const char *config = NULL, *sock = NULL, *control = NULL, *state = NULL, *budget = NULL, *level = NULL;
	struct policy_pager_config cfg;
	struct policy_error perr;
	struct pager *p;
	const char *donors[POLICY_MAX_DONORS], *keyfile = NULL, *client_id = NULL, *libvirt_uri = NULL;
	unsigned ndonors = 0;
	struct ctl_server_options copts;
	struct ctl_server *ctl = NULL;
	mode_t control_mode = 0660;
	unsigned char maddr[4];
	unsigned short mport;
	enum log_level lvl;
	char *end;
	int c, r;

	log_set_prefix("uffd-pager");
	ctl_server_options_init(&copts);
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
		case 'M':
			errno = 0;
			control_mode = (mode_t)strtoul(optarg, &end, 8);
			if (errno || *end || !*optarg || control_mode == 0 || control_mode > 0777) {
				fprintf(stderr, "uffd-pager: --control-mode '%s': expected an octal mode such as 0660\n",
					optarg);
				return 2;
			}
			break;
		case 'G':
		case 'A': {
			struct group *g = getgrnam(optarg);
			unsigned long gid;

			errno = 0;
			gid = g ? g->gr_gid : strtoul(optarg, &end, 10);
			if (!g && (errno || *end || !*optarg || gid >= (gid_t)-1)) {
				fprintf(stderr, "uffd-pager: --%s '%s': no such group (a name or a numeric gid)\n",
					c == 'G' ? "control-group" : "admin-group", optarg);
				return 2;
			}
			if (c == 'G')
				copts.group = (gid_t)gid;
			else
				copts.admin_gid = (gid_t)gid;
			break;
		}
		case 'm':
			snprintf(copts.metrics_listen, sizeof(copts.metrics_listen), "%s", optarg);
			if (strlen(optarg) >= sizeof(copts.metrics_listen) ||
			    ctl_metrics_parse_listen(optarg, maddr, &mport) < 0) {
				fprintf(stderr, "uffd-pager: --metrics-listen '%s': expected 127.x.y.z:PORT (loopback only: "
					"the endpoint has no authentication)\n", optarg);
				return 2;
			}
			break;
		case 'L':
			if (!HAVE_LIBVIRT) {
				fprintf(stderr, "uffd-pager: --libvirt %s: this uffd-pager was built without libvirt "
					"(rebuild with libvirt-dev installed and -Dlibvirt=enabled)\n", optarg);
				return 2;
			}
			if (!*optarg) {
				fprintf(stderr, "uffd-pager: --libvirt '': expected a libvirt URI such as qemu:///system\n");
				return 2;
			}
			libvirt_uri = optarg;
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
	mkdir_parent(cfg.control_path);
	r = ctl_server_start(p, cfg.control_path, control_mode, &copts, &ctl);
	if (r < 0) {
		log_err_errno(r, "cannot start the control server on %s", cfg.control_path);
		pager_free(p);
		return 1;
	}
#if HAVE_LIBVIRT
	struct virt *virt = NULL;

	if (libvirt_uri && virt_start(p, libvirt_uri, &virt) < 0) {
		log_err("--libvirt %s: cannot start the libvirt watcher", libvirt_uri);
		ctl_server_stop(ctl);
		pager_free(p);
		return 1;
	}
#endif
	r = pager_run(p); /* on return, vm.drain / vm.park jobs stop waiting: the control server can stop */
#if HAVE_LIBVIRT
	virt_stop(virt); /* before pager_free: it unsubscribes from the pager's events */
#else
	(void)libvirt_uri;
#endif
	ctl_server_stop(ctl);
	pager_free(p);
	return r < 0 ? 1 : 0;
}
