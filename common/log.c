/* SPDX-License-Identifier: MIT */
/* Level-filtered logging to stderr, one line per call, safe across threads. */
#include "log.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

static enum log_level current_level = LOG_LVL_INFO;
static const char *prefix = "uffdvm";

void log_set_level(enum log_level level) { current_level = level; }
enum log_level log_get_level(void) { return current_level; }
void log_set_prefix(const char *program) { prefix = program; }

int log_parse_level(const char *s, enum log_level *ret_level)
{
	static const char *const names[] = { "error", "warn", "info", "debug" };

	for (unsigned i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcmp(s, names[i]) == 0) {
			*ret_level = (enum log_level)i;
			return 0;
		}
	}
	return -EINVAL;
}

void log_msg(enum log_level level, const char *fmt, ...)
{
	static const char *const tags[] = { "error", "warning", "info", "debug" };
	char line[1024];
	va_list ap;
	int n;

	if (level > current_level)
		return;
	/* Format first, then one fputs: lines from several threads never interleave. */
	n = snprintf(line, sizeof(line), "%s: %s: ", prefix, tags[level]);
	va_start(ap, fmt);
	vsnprintf(line + n, sizeof(line) - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(line, "\n");
	fputs(line, stderr);
}
