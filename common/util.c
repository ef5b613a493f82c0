/* SPDX-License-Identifier: MIT */
/* Size parsing and formatting shared by the CLI tools, policies and daemons. */
#include "util.h"

#include <ctype.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdlib.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

int parse_size(const char *s, uint64_t *ret_bytes)
{
	uint64_t value = 0, mult = 1;
	const char *p = s;

	if (!s || !isdigit((unsigned char)*p))
		return -EINVAL;
	for (; isdigit((unsigned char)*p); p++) {
		if (value > (UINT64_MAX - 9) / 10)
			return -ERANGE;
		value = value * 10 + (uint64_t)(*p - '0');
	}
	switch (toupper((unsigned char)*p)) {
	case '\0': break;
	case 'K': mult = 1ULL << 10; p++; break;
	case 'M': mult = 1ULL << 20; p++; break;
	case 'G': mult = 1ULL << 30; p++; break;
	case 'T': mult = 1ULL << 40; p++; break;
	case 'B': break;
	default: return -EINVAL;
	}
	if (*p && strcasecmp(p, "iB") != 0 && strcasecmp(p, "B") != 0)
		return -EINVAL;
	if (value && mult > UINT64_MAX / value)
		return -ERANGE;
	*ret_bytes = value * mult;
	return 0;
}

const char *format_size(uint64_t bytes, char *buf, size_t len)
{
	static const char units[] = "BKMGT";
	double v = (double)bytes;
	unsigned u = 0;

	while (v >= 1024.0 && u < sizeof(units) - 2) {
		v /= 1024.0;
		u++;
	}
	if (u == 0)
		snprintf(buf, len, "%llu", (unsigned long long)bytes);
	else if (v == (double)(uint64_t)v)
		snprintf(buf, len, "%llu%c", (unsigned long long)v, units[u]);
	else
		snprintf(buf, len, "%.1f%c", v, units[u]);
	return buf;
}

bool fd_link_has_prefix(int fd, const char *prefix)
{
	char path[64], target[256];
	ssize_t n;

	snprintf(path, sizeof(path), "/proc/self/fd/%d", fd);
	n = readlink(path, target, sizeof(target) - 1);
	if (n < 0)
		return false;
	target[n] = '\0';
	return strncmp(target, prefix, strlen(prefix)) == 0;
}

int mkdir_p(const char *path, mode_t mode)
{
	char tmp[256];

	if (snprintf(tmp, sizeof(tmp), "%s", path) >= (int)sizeof(tmp))
		return -ENAMETOOLONG;
	for (char *s = tmp + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		mkdir(tmp, 0755);
		*s = '/';
	}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int mkdir_parent(const char *path)
{
	const char *slash = strrchr(path, '/');
	char dir[256];

	if (!slash || slash == path)
		return 0;
	if (snprintf(dir, sizeof(dir), "%.*s", (int)(slash - path), path) >= (int)sizeof(dir))
		return -ENAMETOOLONG;
	return mkdir_p(dir, 0755);
}

int split_host_port(const char *hp, char **ret_host, const char **ret_port)
{
	const char *colon = strrchr(hp, ':');
	char *host;

	if (!colon || colon == hp || colon[1] == '\0')
		return -EINVAL;
	if (hp[0] == '[' && colon[-1] == ']')
		host = strndup(hp + 1, (size_t)(colon - hp - 2));
	else
		host = strndup(hp, (size_t)(colon - hp));
	if (!host)
		return -ENOMEM;
	*ret_host = host;
	*ret_port = colon + 1;
	return 0;
}

int poll_until(int fd, short ev, uint64_t deadline)
{
	for (;;) {
		uint64_t now = now_ns();
		struct pollfd pfd = { .fd = fd, .events = ev };
		int r;

		if (now >= deadline)
			return -ETIMEDOUT;
		r = poll(&pfd, 1, (int)((deadline - now) / 1000000ULL) + 1);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

int find_beside_self(const char *env_name, const char *beside_exe, const char *installed, char *buf, size_t len)
{
	const char *env = getenv(env_name);
	char self[PATH_MAX];
	ssize_t n;

	if (!buf || !len)
		return -EINVAL;
	if (env && *env) {
		snprintf(buf, len, "%s", env);
		return access(env, R_OK) < 0 ? -errno : 0;
	}
	n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	if (n > 0) {
		self[n] = '\0';
		snprintf(buf, len, "%s/%s", dirname(self), beside_exe);
		if (access(buf, R_OK) == 0)
			return 0;
	}
	snprintf(buf, len, "%s", installed);
	return access(buf, R_OK) == 0 ? 0 : -ENOENT;
}
