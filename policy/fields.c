/* SPDX-License-Identifier: MIT */
/*
 * The field-table parser behind policy_vm_parse() and policy_config_parse().
 * jansson does the JSON syntax, but it reports positions only for syntax
 * errors; semantic errors ("watermarks.low must be below high") still have
 * to point at the offending value, so a small scanner walks the original
 * text along a key path to find where that value (or key) starts. The
 * scanner runs only after jansson accepted the text, and on an error path,
 * so it may be simple, but it must never read out of bounds.
 */
#include "fields.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json-util.h"
#include "util.h"

static const char SIZE_FORMS[] =
	"an integer number of bytes or a string like \"512M\", \"2G\", \"1GiB\" "
	"(suffix K, M, G or T, optionally followed by B or iB)";

/* ---- key paths ------------------------------------------------------------ */

struct policy_field_path policy_field_path_key(const struct policy_field_path *parent, const char *key)
{
	struct policy_field_path p = parent ? *parent : (struct policy_field_path){ 0 };

	if (p.n < ARRAY_SIZE(p.c)) {
		p.c[p.n].key = key;
		p.c[p.n].idx = 0;
		p.n++;
	}
	return p;
}

static struct policy_field_path path_idx(const struct policy_field_path *parent, size_t idx)
{
	struct policy_field_path p = *parent;

	if (p.n < ARRAY_SIZE(p.c)) {
		p.c[p.n].key = NULL;
		p.c[p.n].idx = idx;
		p.n++;
	}
	return p;
}

/* Appends s to buf, escaping what would make the message ambiguous or unprintable. */
static void append_escaped(char *buf, size_t len, size_t *pos, const char *s)
{
	for (; *s && *pos + 5 < len; s++) {
		unsigned char c = (unsigned char)*s;

		if (c < 0x20 || c == 0x7f || c == '\'' || c == '\\')
			*pos += (size_t)snprintf(buf + *pos, len - *pos, "\\x%02x", c);
		else
			buf[(*pos)++] = (char)c;
	}
	buf[*pos] = '\0';
}

static void path_format(const struct policy_field_path *p, char *buf, size_t len)
{
	size_t pos = 0;

	buf[0] = '\0';
	for (unsigned i = 0; i < p->n && pos + 24 < len; i++) {
		if (p->c[i].key) {
			if (i > 0)
				buf[pos++] = '.';
			buf[pos] = '\0';
			append_escaped(buf, len, &pos, p->c[i].key);
		} else {
			pos += (size_t)snprintf(buf + pos, len - pos, "[%zu]", p->c[i].idx);
		}
	}
}

/* ---- position locator ----------------------------------------------------- */

struct scan {
	const char *s;
	size_t len, i;
	int line, col;
};

/* Columns count code points, like jansson's, so both kinds of errors agree. */
static void sc_adv(struct scan *sc)
{
	unsigned char c;

	if (sc->i >= sc->len)
		return;
	c = (unsigned char)sc->s[sc->i++];
	if (c == '\n') {
		sc->line++;
		sc->col = 1;
	} else if ((c & 0xc0) != 0x80) {
		sc->col++;
	}
}

static int sc_peek(const struct scan *sc)
{
	return sc->i < sc->len ? (unsigned char)sc->s[sc->i] : -1;
}

static void sc_ws(struct scan *sc)
{
	for (;;) {
		int c = sc_peek(sc);

		if (c != ' ' && c != '\t' && c != '\r' && c != '\n')
			return;
		sc_adv(sc);
	}
}

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static bool sc_hex4(struct scan *sc, unsigned *ret)
{
	unsigned v = 0;

	for (int k = 0; k < 4; k++) {
		int h = hexval(sc_peek(sc));

		if (h < 0)
			return false;
		v = v * 16 + (unsigned)h;
		sc_adv(sc);
	}
	*ret = v;
	return true;
}

static void put_byte(char *out, size_t cap, size_t *n, unsigned b)
{
	if (*n < cap)
		out[*n] = (char)b;
	(*n)++; /* keeps counting past cap, so an overlong key never matches */
}

static void put_utf8(char *out, size_t cap, size_t *n, unsigned cp)
{
	if (cp < 0x80) {
		put_byte(out, cap, n, cp);
	} else if (cp < 0x800) {
		put_byte(out, cap, n, 0xc0 | (cp >> 6));
		put_byte(out, cap, n, 0x80 | (cp & 0x3f));
	} else if (cp < 0x10000) {
		put_byte(out, cap, n, 0xe0 | (cp >> 12));
		put_byte(out, cap, n, 0x80 | ((cp >> 6) & 0x3f));
		put_byte(out, cap, n, 0x80 | (cp & 0x3f));
	} else {
		put_byte(out, cap, n, 0xf0 | (cp >> 18));
		put_byte(out, cap, n, 0x80 | ((cp >> 12) & 0x3f));
		put_byte(out, cap, n, 0x80 | ((cp >> 6) & 0x3f));
		put_byte(out, cap, n, 0x80 | (cp & 0x3f));
	}
}

/*
 * Reads a JSON string at sc, decoding escapes into out (cap bytes, not
 * terminated); *ret_n is the decoded length, which may exceed cap.
 */
static bool sc_string(struct scan *sc, char *out, size_t cap, size_t *ret_n)
{
	size_t n = 0;

	if (sc_peek(sc) != '"')
		return false;
	sc_adv(sc);
	for (;;) {
		int c = sc_peek(sc);

		if (c < 0)
			return false;
		sc_adv(sc);
		if (c == '"')
			break;
		if (c != '\\') {
			put_byte(out, cap, &n, (unsigned)c);
			continue;
		}
		c = sc_peek(sc);
		sc_adv(sc);
		switch (c) {
		case '"': case '\\': case '/': put_byte(out, cap, &n, (unsigned)c); break;
		case 'b': put_byte(out, cap, &n, '\b'); break;
		case 'f': put_byte(out, cap, &n, '\f'); break;
		case 'n': put_byte(out, cap, &n, '\n'); break;
		case 'r': put_byte(out, cap, &n, '\r'); break;
		case 't': put_byte(out, cap, &n, '\t'); break;
		case 'u': {
			unsigned cp, lo;

			if (!sc_hex4(sc, &cp))
				return false;
			if (cp >= 0xd800 && cp < 0xdc00 && sc_peek(sc) == '\\' && sc->i + 1 < sc->len &&
			    sc->s[sc->i + 1] == 'u') {
				sc_adv(sc);
				sc_adv(sc);
				if (!sc_hex4(sc, &lo))
					return false;
				if (lo >= 0xdc00 && lo < 0xe000)
					cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
			}
			put_utf8(out, cap, &n, cp);
			break;
		}
		default:
			return false;
		}
	}
	*ret_n = n;
	return true;
}

/* Skips one value; containers by counting brackets (no recursion). */
static bool sc_skip_value(struct scan *sc)
{
	char dummy[1];
	size_t n;
	int c = sc_peek(sc), depth = 0;

	if (c == '"')
		return sc_string(sc, dummy, 0, &n);
	if (c != '{' && c != '[') {
		while ((c = sc_peek(sc)) >= 0 && !strchr(",]}: \t\r\n", c))
			sc_adv(sc);
		return true;
	}
	while ((c = sc_peek(sc)) >= 0) {
		if (c == '"') {
			if (!sc_string(sc, dummy, 0, &n))
				return false;
			continue;
		}
		if (c == '{' || c == '[')
			depth++;
		else if (c == '}' || c == ']')
			depth--;
		sc_adv(sc);
		if (depth == 0)
			return true;
	}
	return false;
}

/*
 * With sc at a container, moves it to the value (or, with at_key, the key)
 * named by comp. Returns false if not found; sc is then meaningless.
 */
static bool sc_member(struct scan *sc, const char *key, size_t idx, bool at_key)
{
	if (!key) {
		if (sc_peek(sc) != '[')
			return false;
		sc_adv(sc);
		for (size_t k = 0;; k++) {
			sc_ws(sc);
			if (sc_peek(sc) == ']' || sc_peek(sc) < 0)
				return false;
			if (k == idx)
				return true;
			if (!sc_skip_value(sc))
				return false;
			sc_ws(sc);
			if (sc_peek(sc) != ',')
				return false;
			sc_adv(sc);
		}
	}
	if (sc_peek(sc) != '{')
		return false;
	sc_adv(sc);
	for (;;) {
		struct scan at;
		char buf[256];
		size_t n, klen = strlen(key);
		bool match;

		sc_ws(sc);
		at = *sc;
		if (!sc_string(sc, buf, sizeof(buf), &n))
			return false;
		match = n == klen && n <= sizeof(buf) && memcmp(buf, key, n) == 0;
		sc_ws(sc);
		if (sc_peek(sc) != ':')
			return false;
		sc_adv(sc);
		sc_ws(sc);
		if (match) {
			if (at_key)
				*sc = at;
			return true;
		}
		if (!sc_skip_value(sc))
			return false;
		sc_ws(sc);
		if (sc_peek(sc) != ',')
			return false;
		sc_adv(sc);
	}
}

/*
 * Finds the line and column of the value at path p (or of its key). When
 * the path does not exist (a missing key), the deepest enclosing value
 * found is reported, which is where the key would have to be added.
 */
static void locate(const char *text, size_t len, const struct policy_field_path *p, bool at_key, int *ret_line,
		   int *ret_col)
{
	struct scan sc = { .s = text, .len = len, .line = 1, .col = 1 };

	sc_ws(&sc);
	*ret_line = sc.line;
	*ret_col = sc.col;
	for (unsigned d = 0; d < p->n; d++) {
		if (!sc_member(&sc, p->c[d].key, p->c[d].idx, at_key && d + 1 == p->n))
			return;
		*ret_line = sc.line;
		*ret_col = sc.col;
	}
}

/* ---- error reporting -------------------------------------------------------- */

struct policy_field_ctx {
	const char *text;
	size_t len;
	const char *source;
	struct policy_error *err;
};

/*
 * Reports PROBLEM about the field at p. at_key points at the key rather than
 * the value (unknown keys); a missing key points at the enclosing object.
 * Returns -EINVAL.
 */
__attribute__((format(printf, 5, 0))) static int vfail(struct policy_field_ctx *x,
							const struct policy_field_path *p, bool at_key,
							const char *allowed, const char *fmt, va_list ap)
{
	char path[160], problem[320];
	int line, col;

	locate(x->text, x->len, p, at_key, &line, &col);
	path_format(p, path, sizeof(path));
	vsnprintf(problem, sizeof(problem), fmt, ap);
	x->err->line = line;
	x->err->column = col;
	snprintf(x->err->msg, sizeof(x->err->msg), "%s:%d:%d: field '%s': %s%s%s%s", x->source, line,
		 col, path, problem, allowed ? " (allowed: " : "", allowed ? allowed : "",
		 allowed ? ")" : "");
	return -EINVAL;
}

__attribute__((format(printf, 5, 6))) static int fail(struct policy_field_ctx *x,
						       const struct policy_field_path *p, bool at_key,
						       const char *allowed, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vfail(x, p, at_key, allowed, fmt, ap);
	va_end(ap);
	return r;
}

int policy_field_fail(struct policy_field_ctx *x, const struct policy_field_path *p,
		      const char *allowed, const char *fmt, ...)
{
	va_list ap;
	int r;

	va_start(ap, fmt);
	r = vfail(x, p, false, allowed, fmt, ap);
	va_end(ap);
	return r;
}

/* ---- unknown keys ------------------------------------------------------------- */

/* Edit distance of a and b, or a large value when either is long. */
static size_t edit_distance(const char *a, const char *b)
{
	size_t la = strlen(a), lb = strlen(b), row[64];

	if (la >= ARRAY_SIZE(row) || lb >= ARRAY_SIZE(row))
		return SIZE_MAX;
	for (size_t j = 0; j <= lb; j++)
		row[j] = j;
	for (size_t i = 1; i <= la; i++) {
		size_t diag = row[0];

		row[0] = i;
		for (size_t j = 1; j <= lb; j++) {
			size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);

			if (up + 1 < best)
				best = up + 1;
			if (row[j - 1] + 1 < best)
				best = row[j - 1] + 1;
			diag = up;
			row[j] = best;
		}
	}
	return row[lb];
}

/*
 * Rejects keys that are not rows of table; "_..." keys are comments. This
 * runs before any value is looked at, so a typo is named rather than the
 * "missing (required)" or default it would otherwise cause.
 */
static int check_keys(struct policy_field_ctx *x, json_t *obj, const struct policy_field_path *p,
		      const struct policy_field *table)
{
	char allowed[384];
	size_t pos = 0;
	const char *key;
	json_t *v;

	allowed[0] = '\0';
	for (const struct policy_field *f = table; f->name && pos < sizeof(allowed); f++)
		pos += (size_t)snprintf(allowed + pos, sizeof(allowed) - pos, "%s, ", f->name);
	if (pos < sizeof(allowed))
		snprintf(allowed + pos, sizeof(allowed) - pos, "or comments starting with \"_\"");

	json_object_foreach(obj, key, v) {
		struct policy_field_path kp;
		const char *guess = NULL;
		size_t best = 3; /* a typo, not a different word */
		bool known = key[0] == '_';

		for (const struct policy_field *f = table; f->name && !known; f++)
			known = strcmp(key, f->name) == 0;
		if (known)
			continue;
		kp = policy_field_path_key(p, key);
		for (const struct policy_field *f = table; f->name; f++) {
			size_t d = edit_distance(key, f->name);

			if (d < best) {
				best = d;
				guess = f->name;
			}
		}
		if (guess)
			return fail(x, &kp, true, allowed, "unknown key; did you mean '%s'?", guess);
		return fail(x, &kp, true, allowed, "unknown key");
	}
	return 0;
}

/*
 * Parses the whole document: a JSON object whose keys are all rows of
 * table. Clears x->err first. Returns the object (the caller decrefs it)
 * or NULL with x->err saying where and why.
 */
static json_t *load_object(struct policy_field_ctx *x, const struct policy_field *table)
{
	json_error_t je;
	json_t *root;

	memset(x->err, 0, sizeof(*x->err));
	if (!x->text) {
		snprintf(x->err->msg, sizeof(x->err->msg), "%s: no input", x->source);
		return NULL;
	}
	root = json_loadb(x->text, x->len, JSON_REJECT_DUPLICATES, &je);
	if (!root) {
		x->err->line = je.line > 0 ? je.line : 1;
		x->err->column = je.column > 0 ? je.column : 1;
		snprintf(x->err->msg, sizeof(x->err->msg), "%s:%d:%d: invalid JSON: %s", x->source,
			 x->err->line, x->err->column, je.text);
		return NULL;
	}
	if (!json_is_object(root)) {
		int line, col;

		locate(x->text, x->len, &(struct policy_field_path){ 0 }, false, &line, &col);
		x->err->line = line;
		x->err->column = col;
		snprintf(x->err->msg, sizeof(x->err->msg),
			 "%s:%d:%d: expected a JSON object { ... } at the top level, got %s", x->source,
			 line, col, json_type_name(root));
		json_decref(root);
		return NULL;
	}
	if (check_keys(x, root, NULL, table) < 0) {
		json_decref(root);
		return NULL;
	}
	return root;
}

/* ---- one value per kind ------------------------------------------------------- */

/* Members are unsigned integers, bools or enums of any width: stored by size. */
static void put_uint(void *dst, size_t size, uint64_t v)
{
	switch (size) {
	case 1: *(uint8_t *)dst = (uint8_t)v; break;
	case 2: *(uint16_t *)dst = (uint16_t)v; break;
	case 4: *(uint32_t *)dst = (uint32_t)v; break;
	default: *(uint64_t *)dst = v; break;
	}
}

static uint64_t get_uint(const void *src, size_t size)
{
	switch (size) {
	case 1: return *(const uint8_t *)src;
	case 2: return *(const uint16_t *)src;
	case 4: return *(const uint32_t *)src;
	default: return *(const uint64_t *)src;
	}
}

/* A size: integer bytes >= 0 or a string parse_size() understands. */
static int get_size(struct policy_field_ctx *x, json_t *v, const struct policy_field_path *p,
		    const char *allowed, uint64_t *ret)
{
	int r;

	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);

		if (i < 0)
			return fail(x, p, false, allowed, "%" JSON_INTEGER_FORMAT " is negative", i);
		*ret = (uint64_t)i;
		return 0;
	}
	if (!json_is_string(v))
		return fail(x, p, false, allowed,
			    "expected a string like \"512M\" or an integer number of bytes, got %s",
			    json_type_name(v));
	r = parse_size(json_string_value(v), ret);
	if (r == -ERANGE)
		return fail(x, p, false, allowed, "size \"%.64s\" does not fit in 64 bits",
			    json_string_value(v));
	if (r < 0)
		return fail(x, p, false, SIZE_FORMS, "\"%.64s\" is not a size",
			    json_string_value(v));
	return 0;
}

static int parse_size_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			    const struct policy_field_path *p, void *dst)
{
	const char *allowed = f->allowed ? f->allowed : SIZE_FORMS;
	uint64_t bytes, lo = (uint64_t)f->lo, hi = (uint64_t)f->hi;
	char human[32];
	int r;

	r = get_size(x, v, p, allowed, &bytes);
	if (r < 0)
		return r;
	/* Residency and balloon targets are counted in pages: a partial page could never be used. */
	if (f->flags & POLICY_FIELD_PAGE_ROUND)
		bytes &= ~(uint64_t)(PAGE_SIZE_4K - 1);
	if (hi && (bytes < lo || bytes > hi))
		return fail(x, p, false, allowed, "%" PRIu64 " bytes (%s) is out of range", bytes,
			    format_size(bytes, human, sizeof(human)));
	if (bytes < lo)
		return fail(x, p, false, allowed, "%" PRIu64 " bytes%s is below %s", bytes,
			    f->flags & POLICY_FIELD_PAGE_ROUND ? " (rounded down to 4 KiB pages)" : "",
			    format_size(lo, human, sizeof(human)));
	put_uint(dst, f->size, bytes);
	return 0;
}

static int parse_int_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			   const struct policy_field_path *p, void *dst)
{
	json_int_t i;

	if (!json_is_integer(v))
		return fail(x, p, false, f->allowed, "expected an integer%s%s, got %s", f->noun ? " " : "",
			    f->noun ? f->noun : "", json_type_name(v));
	i = json_integer_value(v);
	if (i < f->lo || i > f->hi) {
		if (f->noun)
			return fail(x, p, false, f->allowed, "%" JSON_INTEGER_FORMAT " is not a %s", i, f->noun);
		return fail(x, p, false, f->allowed, "%" JSON_INTEGER_FORMAT " is out of range", i);
	}
	put_uint(dst, f->size, (uint64_t)i);
	return 0;
}

/* An integer percentage 1..100 or a string like "95%". */
static int parse_percent_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			       const struct policy_field_path *p, void *dst)
{
	const char *allowed = f->allowed ? f->allowed : "an integer 1..100 or a string like \"95%\"";
	long long val;

	if (json_is_integer(v)) {
		val = json_integer_value(v);
	} else if (json_is_string(v)) {
		const char *s = json_string_value(v), *q = s;

		val = 0;
		for (; *q >= '0' && *q <= '9'; q++)
			if (val <= 1000) /* saturate: anything above is out of range anyway */
				val = val * 10 + (*q - '0');
		if (q == s || strcmp(q, "%") != 0)
			return fail(x, p, false, allowed, "\"%.64s\" is not a percentage", s);
	} else {
		return fail(x, p, false, allowed, "expected a percentage, got %s", json_type_name(v));
	}
	if (val < 1 || val > 100)
		return fail(x, p, false, allowed, "%lld%% is out of range", val);
	put_uint(dst, f->size, (uint64_t)val);
	return 0;
}

/* A string from f->names; its index is stored. */
static int parse_enum_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			    const struct policy_field_path *p, void *dst)
{
	char allowed[256];
	size_t pos = 0;

	allowed[0] = '\0';
	for (size_t i = 0; f->names[i] && pos < sizeof(allowed); i++)
		pos += (size_t)snprintf(allowed + pos, sizeof(allowed) - pos, "%s\"%s\"", i ? ", " : "",
					f->names[i]);
	if (!json_is_string(v))
		return fail(x, p, false, allowed, "expected a string, got %s", json_type_name(v));
	for (size_t i = 0; f->names[i]; i++) {
		if (strcmp(json_string_value(v), f->names[i]) == 0) {
			put_uint(dst, f->size, i);
			return 0;
		}
	}
	return fail(x, p, false, allowed, "unknown value \"%.64s\"", json_string_value(v));
}

static int parse_string_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			      const struct policy_field_path *p, void *dst)
{
	const char *noun = f->noun ? f->noun : "value", *s;
	size_t n;

	if (!json_is_string(v))
		return fail(x, p, false, f->allowed, "expected a string, got %s", json_type_name(v));
	s = json_string_value(v);
	n = strlen(s);
	if ((f->hi && (n < (uint64_t)f->lo || n > (uint64_t)f->hi)) || n >= f->size)
		return fail(x, p, false, f->allowed, "%s is %zu characters long", noun, n);
	if (f->valid && !f->valid(s))
		return fail(x, p, false, f->allowed, "invalid %s \"%.64s\"", noun, s);
	memcpy(dst, s, n + 1);
	return 0;
}

/* An absolute path that fits in the member (with NUL). */
static int parse_path_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			    const struct policy_field_path *p, void *dst)
{
	char allowed[96];
	const char *s;

	snprintf(allowed, sizeof(allowed), "an absolute path of at most %zu bytes", f->size - 1);
	if (!json_is_string(v))
		return fail(x, p, false, allowed, "expected a string, got %s", json_type_name(v));
	s = json_string_value(v);
	if (s[0] != '/')
		return fail(x, p, false, allowed, "\"%.64s\" is not an absolute path", s);
	if (strlen(s) >= f->size)
		return fail(x, p, false, allowed, "path is %zu bytes long", strlen(s));
	memcpy(dst, s, strlen(s) + 1);
	return 0;
}

static int parse_value(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
		       const struct policy_field_path *p, void *base);

/* Every row of table whose key is in obj (whose keys were checked already). */
static int parse_rows(struct policy_field_ctx *x, const struct policy_field *table, json_t *obj,
		      const struct policy_field_path *parent, void *base)
{
	for (const struct policy_field *f = table; f->name; f++) {
		struct policy_field_path fp = policy_field_path_key(parent, f->name);
		json_t *v = json_object_get(obj, f->name);
		int r;

		if (!v) {
			if (f->flags & POLICY_FIELD_REQUIRED)
				return fail(x, &fp, false, f->allowed, "missing (required)");
			continue;
		}
		r = parse_value(x, f, v, &fp, base);
		if (r < 0)
			return r;
	}
	return 0;
}

static int parse_object_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			      const struct policy_field_path *p, void *base)
{
	int r;

	if (!json_is_object(v))
		return fail(x, p, false, f->allowed, "expected an object, got %s", json_type_name(v));
	r = check_keys(x, v, p, f->sub);
	if (r < 0)
		return r;
	return parse_rows(x, f->sub, v, p, base);
}

static int parse_array_field(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
			     const struct policy_field_path *p, void *base)
{
	const struct policy_field *el = f->sub;
	size_t max = f->size / el->size, i;
	char *arr = (char *)base + f->off;
	json_t *e;
	int r;

	if (!json_is_array(v))
		return fail(x, p, false, f->allowed, "expected an array, got %s", json_type_name(v));
	json_array_foreach(v, i, e) {
		struct policy_field_path ep = path_idx(p, i);

		if (i >= max)
			return fail(x, &ep, false, f->allowed, "too many %s (%zu)", f->noun,
				    json_array_size(v));
		r = parse_value(x, el, e, &ep, arr + i * el->size);
		if (r < 0)
			return r;
		if (!(f->flags & POLICY_FIELD_UNIQUE))
			continue;
		for (size_t k = 0; k < i; k++)
			if (strcmp(arr + k * el->size, arr + i * el->size) == 0)
				return fail(x, &ep, false, f->allowed, "\"%.64s\" is listed twice",
					    arr + i * el->size);
	}
	put_uint((char *)base + f->count_off, sizeof(unsigned), json_array_size(v));
	return 0;
}

/* Parses v as row f into base (+ f->off), then runs f's check hook. */
static int parse_value(struct policy_field_ctx *x, const struct policy_field *f, json_t *v,
		       const struct policy_field_path *p, void *base)
{
	void *dst = (char *)base + f->off;
	int r;

	switch (f->kind) {
	case POLICY_FIELD_SIZE: r = parse_size_field(x, f, v, p, dst); break;
	case POLICY_FIELD_INT: r = parse_int_field(x, f, v, p, dst); break;
	case POLICY_FIELD_PERCENT: r = parse_percent_field(x, f, v, p, dst); break;
	case POLICY_FIELD_ENUM: r = parse_enum_field(x, f, v, p, dst); break;
	case POLICY_FIELD_BOOL:
		if (!json_is_boolean(v))
			return fail(x, p, false, f->allowed ? f->allowed : "true or false",
				    "expected a boolean, got %s", json_type_name(v));
		put_uint(dst, f->size, json_is_true(v));
		r = 0;
		break;
	case POLICY_FIELD_STRING: r = parse_string_field(x, f, v, p, dst); break;
	case POLICY_FIELD_PATH: r = parse_path_field(x, f, v, p, dst); break;
	case POLICY_FIELD_OBJECT: r = parse_object_field(x, f, v, p, base); break;
	case POLICY_FIELD_ARRAY: r = parse_array_field(x, f, v, p, base); break;
	default: r = fail(x, p, false, NULL, "internal error: field kind %d", (int)f->kind); break;
	}
	if (r < 0 || !f->check)
		return r;
	return f->check(x, f, v, p, base);
}

int policy_fields_parse(const char *text, size_t len, const char *source,
			const struct policy_field *table, void *base, struct policy_error *err)
{
	struct policy_error dummy;
	struct policy_field_ctx x = { .text = text, .len = len, .source = source ? source : "<input>",
				      .err = err ? err : &dummy };
	json_t *root;
	int r;

	root = load_object(&x, table);
	if (!root)
		return -EINVAL;
	r = parse_rows(&x, table, root, NULL, base);
	json_decref(root);
	return r;
}

/* ---- back to JSON ------------------------------------------------------------- */

/* Sizes are written with the largest exact suffix, so they read back identically. */
static json_t *size_json(uint64_t bytes)
{
	static const char suffix[] = "KMGT";
	char buf[32];
	int u = -1;

	if (bytes == 0)
		return json_integer(0);
	while (u < 3 && bytes % (1ULL << (10 * (u + 2))) == 0)
		u++;
	if (u < 0) {
		/* Beyond a JSON integer, but parse_size() reads a string of digits. */
		if (bytes > (uint64_t)INT64_MAX) {
			snprintf(buf, sizeof(buf), "%" PRIu64, bytes);
			return json_string(buf);
		}
		return json_integer((json_int_t)bytes);
	}
	snprintf(buf, sizeof(buf), "%" PRIu64 "%c", bytes >> (10 * (u + 1)), suffix[u]);
	return json_string(buf);
}

static json_t *value_json(const struct policy_field *f, const void *base)
{
	const char *src = (const char *)base + f->off;

	switch (f->kind) {
	case POLICY_FIELD_SIZE: return size_json(get_uint(src, f->size));
	case POLICY_FIELD_INT:
	case POLICY_FIELD_PERCENT: return json_integer((json_int_t)get_uint(src, f->size));
	case POLICY_FIELD_ENUM: {
		uint64_t i = get_uint(src, f->size);

		for (uint64_t k = 0; k <= i; k++)
			if (!f->names[k])
				return NULL;
		return json_string(f->names[i]);
	}
	case POLICY_FIELD_BOOL: return json_boolean(get_uint(src, f->size));
	case POLICY_FIELD_STRING:
	case POLICY_FIELD_PATH: return json_stringn(src, strnlen(src, f->size));
	case POLICY_FIELD_OBJECT: return policy_fields_to_json(f->sub, base);
	case POLICY_FIELD_ARRAY: {
		unsigned n = (unsigned)get_uint((const char *)base + f->count_off, sizeof(unsigned));
		json_t *a = json_array();

		for (unsigned i = 0; a && i < n && i < f->size / f->sub->size; i++) {
			if (json_array_append_new(a, value_json(f->sub, src + i * f->sub->size)) < 0) {
				json_decref(a);
				return NULL;
			}
		}
		return a;
	}
	}
	return NULL;
}

json_t *policy_fields_to_json(const struct policy_field *table, const void *base)
{
	json_t *obj = json_object();

	for (const struct policy_field *f = table; obj && f->name; f++) {
		/* Fails on a NULL value: a bad enum index or ENOMEM below fails the whole object. */
		if (json_object_set_new(obj, f->name, value_json(f, base)) < 0) {
			json_decref(obj);
			return NULL;
		}
	}
	return obj;
}
