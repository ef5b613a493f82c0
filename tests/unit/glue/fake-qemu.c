/* SPDX-License-Identifier: MIT */
/*
 * Stand-in for qemu-system in the launcher tests: writes the argv and the
 * environment it was exec'ed with to $FAKE_QEMU_OUT, one item per line, so
 * the test can check exactly what uffd-qemu hands to QEMU.
 */
#include <stdio.h>
#include <stdlib.h>

extern char **environ;

int main(int argc, char **argv)
{
	const char *out = getenv("FAKE_QEMU_OUT");
	FILE *f = out ? fopen(out, "w") : NULL;

	if (!f)
		return 3;
	for (int i = 0; i < argc; i++)
		fprintf(f, "arg=%s\n", argv[i]);
	for (char **e = environ; *e; e++)
		fprintf(f, "env=%s\n", *e);
	fclose(f);
	return 0;
}
