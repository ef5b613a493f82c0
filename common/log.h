/* SPDX-License-Identifier: MIT */
/*
 * One logging facility for every uffdvm program. Daemons log to stderr so
 * systemd/journald picks the lines up; messages about one VM carry its name
 * (vm_log_err() and friends) so an operator can grep a guest's history.
 */
#pragma once

#include <errno.h>
#include <stdarg.h>

enum log_level { LOG_LVL_ERR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

void log_set_level(enum log_level level);
enum log_level log_get_level(void);
/* Parses "error", "warn", "info", "debug". Returns 0 or -EINVAL. */
int log_parse_level(const char *s, enum log_level *ret_level);
void log_set_prefix(const char *program);

void log_msg(enum log_level level, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) \
	do { \
		if (log_get_level() >= LOG_LVL_DEBUG) \
			log_msg(LOG_LVL_DEBUG, __VA_ARGS__); \
	} while (0)

/* Logs with strerror(-err) appended and returns err (a -errno), systemd style. */
#define log_err_errno(err, fmt, ...) \
	({ \
		int _e = (err); \
		log_msg(LOG_LVL_ERR, fmt ": %s", ##__VA_ARGS__, strerror(-_e)); \
		_e; \
	})
#define log_warn_errno(err, fmt, ...) \
	({ \
		int _e = (err); \
		log_msg(LOG_LVL_WARN, fmt ": %s", ##__VA_ARGS__, strerror(-_e)); \
		_e; \
	})

/* Messages about one VM: "vm NAME: ..." so one grep finds a guest's history. */
#define vm_log_err(name, fmt, ...) log_msg(LOG_LVL_ERR, "vm %s: " fmt, (name), ##__VA_ARGS__)
#define vm_log_warn(name, fmt, ...) log_msg(LOG_LVL_WARN, "vm %s: " fmt, (name), ##__VA_ARGS__)
#define vm_log_info(name, fmt, ...) log_msg(LOG_LVL_INFO, "vm %s: " fmt, (name), ##__VA_ARGS__)
#define vm_log_debug(name, fmt, ...) \
	do { \
		if (log_get_level() >= LOG_LVL_DEBUG) \
			log_msg(LOG_LVL_DEBUG, "vm %s: " fmt, (name), ##__VA_ARGS__); \
	} while (0)
