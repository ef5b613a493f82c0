/* SPDX-License-Identifier: MIT */
/*
 * libFuzzer target for the control protocol's untrusted-input paths: the
 * request parser (what any local peer can send to the pager) and the
 * response parser (what a client accepts). Beyond not crashing, it checks
 * the parser's promises: an accepted request names a command and a valid
 * VM name, a rejected one leaves nothing but the id, and the error reply
 * built from any input is a well-formed response line. The seed corpus has
 * a request for every command of the table (the parser is table-driven, so
 * that reaches every argument type). Input that is JSON of the shape
 * {"pager": {...}, "vms": [...]} also goes through the Prometheus renderer,
 * which must turn any statistics JSON into well-formed exposition text.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "ctl-proto.h"
#include "metrics.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void check(int cond)
{
	if (!cond)
		abort();
}

/* Every sample line belongs to the family of the HELP/TYPE lines above it. */
static void check_metrics(const uint8_t *data, size_t size)
{
	json_t *root = json_loadb((const char *)data, size, 0, NULL);
	char family[256] = "", *text = NULL, *line, *save = NULL;
	size_t len;

	if (!json_is_object(root)) {
		json_decref(root);
		return;
	}
	if (ctl_metrics_render(json_object_get(root, "pager"), json_object_get(root, "vms"), &text, &len) == 0) {
		check(strlen(text) == len);
		for (line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
			if (!strncmp(line, "# HELP ", 7)) {
				size_t n = strcspn(line + 7, " ");

				check(n > 0 && n < sizeof(family));
				memcpy(family, line + 7, n);
				family[n] = '\0';
			} else if (!strncmp(line, "# TYPE ", 7)) {
				check(!strncmp(line + 7, family, strlen(family)) && line[7 + strlen(family)] == ' ');
			} else {
				check(family[0] && !strncmp(line, family, strlen(family)));
				check(strchr(line, ' ') != NULL);
			}
		}
		free(text);
	}
	json_decref(root);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct ctl_request r;
	char err[512], perr[256];
	json_t *resp, *back = NULL;
	char *line;
	size_t len;
	int rc;

	rc = ctl_request_parse((const char *)data, size, &r, err, sizeof(err));
	check(memchr(err, '\0', sizeof(err)) != NULL);
	if (rc == 0) {
		check(r.command != NULL);
		for (const struct ctl_arg_spec *a = r.command->args; a->name; a++) {
			if (a->required && a->type == CTL_ARG_VM_NAME)
				check(ctl_vm_name_valid(r.vm));
			if (a->required && a->type == CTL_ARG_SIZE)
				check(r.local_memory > 0);
			if (a->required && a->type == CTL_ARG_OBJECT)
				check(json_is_object(json_object_get(r.args, a->name)));
		}
		resp = ctl_response_ok(r.id, json_object());
	} else {
		check(rc == -EINVAL || rc == -ENOSYS || rc == -EMSGSIZE);
		check(r.command == NULL && r.args == NULL && r.vm[0] == '\0');
		resp = ctl_response_error(r.id, rc, "%s", err);
	}
	check(resp != NULL);
	check(ctl_line_dump(resp, &line, &len) == 0);
	check(memchr(line, '\n', len - 1) == NULL && line[len - 1] == '\n');
	check(ctl_response_parse(line, len, &back, perr, sizeof(perr)) == 0);
	check(ctl_response_is_ok(back, NULL, NULL) == (rc == 0));
	json_decref(back);
	json_decref(resp);
	free(line);
	ctl_request_clear(&r);

	check_metrics(data, size);

	/* The client side must survive whatever a daemon (or impostor) sends. */
	back = NULL;
	if (ctl_response_parse((const char *)data, size, &back, perr, sizeof(perr)) == 0) {
		const char *code = NULL, *msg = NULL;

		if (!ctl_response_is_ok(back, &code, &msg))
			check(code != NULL && msg != NULL);
		json_decref(back);
	}
	return 0;
}
