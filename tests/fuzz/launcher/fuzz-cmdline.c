/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for uffd-qemu's command-line analysis (qemu-glue/
 * cmdline.c), the launcher's whole defence against a QEMU command line that
 * would touch guest RAM behind the pager. The input is a QEMU argv, its
 * arguments separated by NUL bytes. Beyond "no crash, no sanitizer report",
 * it checks what the launcher relies on: the user's arguments come out
 * first and unchanged; an error exists exactly when the line is refused; an
 * added backend is exactly the four arguments naming one memfd; and
 * --allow-unsafe-devices only ever turns refusals into warnings for a line
 * that would otherwise be refused, never changes an accepted line's
 * verdict and never lets through what cannot be analysed (it must not
 * matter for hard refusals, so refused-with-override implies refused).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cmdline.h"

#define MAX_ARGS 128

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond, const char *what)
{
	if (!cond) {
		fprintf(stderr, "invariant broken: %s\n", what);
		abort();
	}
}

static void check_result(const struct glue_cmdline *c, int argc, char *const *argv, unsigned flags)
{
	enum glue_cmdline_action act = glue_cmdline_action(c);
	char *const *out = glue_cmdline_argv(c);
	int n = glue_cmdline_argc(c);

	check(n >= argc && out[n] == NULL, "argv NULL-terminated, no shorter than the input");
	for (int i = 0; i < argc; i++)
		check(strcmp(out[i], argv[i]) == 0, "the user's arguments come first, unchanged");
	check((glue_cmdline_error(c) != NULL) == (act == GLUE_CMDLINE_REFUSE), "error iff refused");
	check(!glue_cmdline_error(c) || *glue_cmdline_error(c), "a refusal says why");
	if (!(flags & GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES))
		check(glue_cmdline_warnings(c) == NULL, "warnings only under the override");
	switch (act) {
	case GLUE_CMDLINE_ADD_BACKEND: {
		char want[128];

		snprintf(want, sizeof(want),
			 "memory-backend-memfd,id=" GLUE_CMDLINE_BACKEND_ID ",size=%llu,share=on",
			 (unsigned long long)glue_cmdline_ram_size(c));
		check(n == argc + 4, "four arguments added");
		check(!strcmp(out[argc], "-object") && !strcmp(out[argc + 1], want) &&
			      !strcmp(out[argc + 2], "-machine") &&
			      !strcmp(out[argc + 3], "memory-backend=" GLUE_CMDLINE_BACKEND_ID),
		      "the added backend");
		check(glue_cmdline_n_backends(c) == 1 &&
			      !strcmp(glue_cmdline_backend(c, 0), GLUE_CMDLINE_BACKEND_ID),
		      "one backend, ours");
		check(glue_cmdline_ram_size(c) > 0 && glue_cmdline_ram_size(c) % 8192 == 0,
		      "RAM size aligned like QEMU's");
		break;
	}
	case GLUE_CMDLINE_KEEP:
		check(n == argc && glue_cmdline_n_backends(c) >= 1, "kept line names its backends");
		for (size_t i = 0; i < glue_cmdline_n_backends(c); i++)
			check(glue_cmdline_backend(c, i) != NULL, "backend ids");
		break;
	case GLUE_CMDLINE_PROBE:
		check(n == argc && glue_cmdline_n_backends(c) == 0, "a probe is exec'ed untouched");
		check(glue_cmdline_warnings(c) == NULL, "no warnings without a guest");
		break;
	case GLUE_CMDLINE_REFUSE:
		/* Never exec'ed: the line may carry the backend it would have had. */
		check(glue_cmdline_warnings(c) == NULL, "no warnings in a refusal");
		break;
	default:
		check(0, "known verdict");
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *buf, *argv[MAX_ARGS + 1];
	struct glue_cmdline *strict = NULL, *lax = NULL;
	int argc = 0;

	buf = malloc(size + 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	buf[size] = '\0';
	argv[argc++] = "qemu-system-x86_64";
	for (char *p = buf; p < buf + size && argc < MAX_ARGS; p += strlen(p) + 1)
		argv[argc++] = p;
	argv[argc] = NULL;

	check(glue_cmdline_analyze(argc, argv, 0, &strict) == 0, "analysis succeeds");
	check(glue_cmdline_analyze(argc, argv, GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES, &lax) == 0,
	      "analysis succeeds under the override");
	check_result(strict, argc, argv, 0);
	check_result(lax, argc, argv, GLUE_CMDLINE_ALLOW_UNSAFE_DEVICES);
	if (glue_cmdline_action(strict) != GLUE_CMDLINE_REFUSE) {
		check(glue_cmdline_action(lax) == glue_cmdline_action(strict) &&
			      glue_cmdline_warnings(lax) == NULL,
		      "the override changes nothing on an accepted line");
	} else if (glue_cmdline_action(lax) != GLUE_CMDLINE_REFUSE) {
		check(glue_cmdline_warnings(lax) != NULL, "what the override lets through is warned about");
	}
	check(glue_cmdline_ram_size(strict) == glue_cmdline_ram_size(lax), "same RAM size");
	glue_cmdline_free(strict);
	glue_cmdline_free(lax);
	free(buf);
	return 0;
}
