/* SPDX-License-Identifier: MIT */
/* An empty library that the launcher tests preload in place of libuffd-glue.so. */
int fake_glue_marker(void);
int fake_glue_marker(void) { return 42; }
