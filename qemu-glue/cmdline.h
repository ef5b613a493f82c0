/* SPDX-License-Identifier: MIT */
/*
 * Analysis of a qemu-system command line for uffd-qemu, with no syscalls so
 * every rule is unit-testable. It answers three questions: is this a
 * capability probe (libvirt and management tools run QEMU with -machine none,
 * -version, -device help ...: such runs must pass through untouched); where
 * does guest RAM live (the pager needs it in a shared memfd, so a missing
 * backend is added and an unshareable one is refused); and does anything map
 * or pin guest RAM outside QEMU's own page tables (vhost-user, vfio, vDPA,
 * preallocation, mlock, O_DIRECT disks), which would fill pages behind the
 * pager's back and silently corrupt the guest. Options are read in both the
 * key=value form (with ",," escaping) and the JSON form libvirt emits, with
 * QEMU 7.2's arity; what cannot be analysed (an option QEMU 7.2 does not
 * have, -readconfig, -set) is refused.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define GLUE_CMDLINE_BACKEND_ID "uffdvm-ram0"  /* id of the backend uffd-qemu adds */
#define GLUE_CMDLINE_DEFAULT_RAM (128ULL << 20) /* QEMU's default -m */

enum glue_cmdline_action {
	GLUE_CMDLINE_PROBE = 0,   /* capability probe: exec QEMU as is, no preload */
	GLUE_CMDLINE_KEEP,        /* guest RAM already in shared memfd backends */
	GLUE_CMDLINE_ADD_BACKEND, /* a shared memfd backend was appended to argv */
	GLUE_CMDLINE_REFUSE,      /* cannot be paged safely: see glue_cmdline_error() */
};

enum glue_cmdline_flags {
	/* Turn refusals about devices touching guest RAM into warnings. */
	GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES = 1u << 0,
};

struct glue_cmdline;

/*
 * Analyzes argv (argv[0] is the QEMU binary, argv[argc] need not be NULL).
 * A refusal is a successful analysis with action REFUSE.
 * Returns 0 or -ENOMEM / -EINVAL (argc < 1); *ret untouched on failure.
 */
int glue_cmdline_analyze(int argc, char *const *argv, unsigned flags, struct glue_cmdline **ret);
void glue_cmdline_free(struct glue_cmdline *c);

enum glue_cmdline_action glue_cmdline_action(const struct glue_cmdline *c);
/* Guest RAM in bytes (-m, rounded up like QEMU does; 128M when absent). */
uint64_t glue_cmdline_ram_size(const struct glue_cmdline *c);
/* The command line to exec: argv plus additions, NULL-terminated. */
char *const *glue_cmdline_argv(const struct glue_cmdline *c);
int glue_cmdline_argc(const struct glue_cmdline *c);
/* Ids of the memory backends holding guest RAM (added or found). */
size_t glue_cmdline_n_backends(const struct glue_cmdline *c);
const char *glue_cmdline_backend(const struct glue_cmdline *c, size_t i);
/* -name guest=X / -name X, or NULL. */
const char *glue_cmdline_guest_name(const struct glue_cmdline *c);
/* The last -uuid value (read with QEMU's arity, so never another option's value), or NULL. */
const char *glue_cmdline_uuid(const struct glue_cmdline *c);
/*
 * Whether QEMU will also read its default configuration file (no
 * -no-user-config): a -readconfig the launcher cannot see, so it checks that
 * there is no such file.
 */
bool glue_cmdline_reads_user_config(const struct glue_cmdline *c);
/* Why the command line was refused: one problem per line, NULL unless REFUSE. */
const char *glue_cmdline_error(const struct glue_cmdline *c);
/* Unsafe devices let through by GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES, one per line, or NULL. */
const char *glue_cmdline_warnings(const struct glue_cmdline *c);

/*
 * Parses a QEMU size: a number with optional fraction and suffix B/K/M/G/T/P/E
 * (any case); a bare number is in units of default_unit (QEMU's -m takes MiB).
 * Returns 0 or -EINVAL / -ERANGE.
 */
int glue_cmdline_parse_size(const char *s, uint64_t default_unit, uint64_t *ret_bytes);
