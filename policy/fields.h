/* SPDX-License-Identifier: MIT */
/*
 * Table-driven parsing of the JSON documents in policy/: a per-VM policy
 * and the pager configuration are each described by a table of fields
 * (key, kind, where the value goes in the target struct, the range or the
 * allowed values), and one parser walks any such table. Adding a setting
 * is adding a row; the error wording (FILE:LINE:COLUMN: field 'PATH':
 * PROBLEM (allowed: VALUES)) and the refusal of unknown keys come with it.
 * Internal to policy/ (public API: policy.h); the unit tests use it directly.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "policy.h"

enum policy_field_kind {
	POLICY_FIELD_SIZE,    /* integer bytes or "512M"; lo.., or lo..hi if hi; uint64_t */
	POLICY_FIELD_INT,     /* integer lo..hi (lo >= 0); unsigned member of any width */
	POLICY_FIELD_PERCENT, /* integer 1..100 or "95%"; unsigned */
	POLICY_FIELD_ENUM,    /* one of names[]; its index is stored (enum, int or bool member) */
	POLICY_FIELD_BOOL,    /* true or false; bool */
	POLICY_FIELD_STRING,  /* length lo..hi if hi, then valid(); char[size] */
	POLICY_FIELD_PATH,    /* absolute path shorter than the member; char[size] */
	POLICY_FIELD_OBJECT,  /* nested object: sub[] rows, offsets into the same target */
	POLICY_FIELD_ARRAY,   /* array of sub[0] (off 0, size = stride) at off; count at count_off */
};

#define POLICY_FIELD_REQUIRED (1u << 0)   /* a missing key is an error */
#define POLICY_FIELD_PAGE_ROUND (1u << 1) /* sizes: rounded down to 4 KiB before the range check */
#define POLICY_FIELD_UNIQUE (1u << 2)     /* arrays of strings: no element twice */

struct policy_field_ctx;

/* A field path such as watermarks.low or allowed_uids[3]. */
struct policy_field_path {
	unsigned n;
	struct {
		const char *key; /* NULL: array element idx */
		size_t idx;
	} c[4];
};

struct policy_field {
	const char *name; /* the JSON key; NULL ends a table */
	enum policy_field_kind kind;
	unsigned flags;          /* POLICY_FIELD_* */
	size_t off, size;        /* the member in the target struct (POLICY_FIELD_AT) */
	const char *allowed;     /* "(allowed: ...)" in errors; kinds with a fixed form have a default */
	const char *noun;        /* "name" in "invalid name", "uid" in "not a uid", "uids" in "too many uids" */
	int64_t lo, hi;          /* range: INT value, SIZE bytes, STRING length */
	const char *const *names;       /* ENUM: NULL-terminated */
	const struct policy_field *sub; /* OBJECT: NULL-terminated rows; ARRAY: the element row */
	size_t count_off;               /* ARRAY: unsigned element count */
	bool (*valid)(const char *s);   /* STRING: the value's own syntax */
	/* Runs after the value (and everything under it) is stored: rules that span fields. */
	int (*check)(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
		     const struct policy_field_path *p, void *base);
};

/* .off and .size of member m of struct type T, for a row. */
#define POLICY_FIELD_AT(T, m) .off = offsetof(T, m), .size = sizeof(((T *)0)->m)

/*
 * Parses text (len bytes, need not be NUL-terminated) as a JSON object
 * described by table into base, which holds the defaults. Keys not in the
 * table (except "_comments") are errors. source names the text in errors.
 * Returns 0 or -EINVAL with err filled; base is partly written on failure,
 * so callers parse into a copy.
 */
int policy_fields_parse(const char *text, size_t len, const char *source,
			const struct policy_field *table, void *base, struct policy_error *err);
/* Builds the JSON object that table describes from base; NULL on a bad enum index or ENOMEM. */
json_t *policy_fields_to_json(const struct policy_field *table, const void *base);

/* For check hooks: path p plus key. */
struct policy_field_path policy_field_path_key(const struct policy_field_path *p, const char *key);
/* For check hooks: fills the error for the value at p. Returns -EINVAL. */
__attribute__((format(printf, 4, 5))) int policy_field_fail(struct policy_field_ctx *x,
							     const struct policy_field_path *p,
							     const char *allowed, const char *fmt, ...);
