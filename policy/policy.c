/* SPDX-License-Identifier: MIT */
/*
 * Parsing and validation of per-VM policies and of the pager configuration.
 * jansson does the JSON syntax, but it reports positions only for syntax
 * errors; semantic errors ("watermarks.low must be below high") still have
 * to point at the offending value, so a small scanner walks the original
 * text along a key path to find where that value (or key) starts. The
 * scanner runs only after jansson accepted the text, and on an error path,
 * so it may be simple, but it must never read out of bounds.
 */
#include "policy.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "util.h"

#ifndef TMPFS_MAGIC
#define TMPFS_MAGIC 0x01021994
#endif
#ifndef RAMFS_MAGIC
#define RAMFS_MAGIC 0x858458f6
#endif

#define POLICY_FILE_MAX (1024 * 1024)
#define MIN_LOCAL_MEMORY (1ULL << 20)

static const char SIZE_FORMS[] =
	"an integer number of bytes or a string like \"512M\", \"2G\", \"1GiB\" "
	"(suffix K, M, G or T, optionally followed by B or iB)";

/* ---- key paths ------------------------------------------------------------ */

/* A field path such as watermarks.low or allowed_uids[3]. */
struct fpath {
	unsigned n;
	struct {
		const char *key; /* NULL: array element idx */
		size_t idx;
	} c[4];
};

static struct fpath path_key(const struct fpath *parent, const char *key)
{
	struct fpath p = parent ? *parent : (struct fpath){ 0 };

	if (p.n < ARRAY_SIZE(p.c)) {
		p.c[p.n].key = key;
		p.c[p.n].idx = 0;
		p.n++;
	}
	return p;
}

static struct fpath path_idx(const struct fpath *parent, size_t idx)
{
	struct fpath p = *parent;

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

static void path_format(const struct fpath *p, char *buf, size_t len)
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
static void locate(const char *text, size_t len, const struct fpath *p, bool at_key, int *ret_line,
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

struct pctx {
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
__attribute__((format(printf, 5, 6))) static int fail(struct pctx *x, const struct fpath *p,
						       bool at_key, const char *allowed,
						       const char *fmt, ...)
{
	char path[160], problem[320];
	va_list ap;
	int line, col;

	locate(x->text, x->len, p, at_key, &line, &col);
	path_format(p, path, sizeof(path));
	va_start(ap, fmt);
	vsnprintf(problem, sizeof(problem), fmt, ap);
	va_end(ap);
	x->err->line = line;
	x->err->column = col;
	snprintf(x->err->msg, sizeof(x->err->msg), "%s:%d:%d: field '%s': %s%s%s%s", x->source, line,
		 col, path, problem, allowed ? " (allowed: " : "", allowed ? allowed : "",
		 allowed ? ")" : "");
	return -EINVAL;
}

static const char *type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE: return "true";
	case JSON_FALSE: return "false";
	case JSON_NULL: return "null";
	}
	return "an unknown value";
}

/* Parses text with jansson; syntax errors are reported with jansson's position. */
/* ---- typed getters ------------------------------------------------------------ */

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

/* Rejects keys not in names (NULL-terminated); "_..." keys are comments. */
static int check_keys(struct pctx *x, json_t *obj, const struct fpath *p,
		      const char *const *names)
{
	char allowed[256];
	size_t pos = 0;
	const char *key;
	json_t *v;

	allowed[0] = '\0';
	for (const char *const *n = names; *n; n++)
		pos += (size_t)snprintf(allowed + pos, sizeof(allowed) - pos, "%s, ", *n);
	snprintf(allowed + pos, sizeof(allowed) - pos, "or comments starting with \"_\"");

	json_object_foreach(obj, key, v) {
		bool known = key[0] == '_';

		for (const char *const *n = names; *n && !known; n++)
			known = strcmp(key, *n) == 0;
		if (!known) {
			struct fpath kp = path_key(p, key);
			const char *guess = NULL;
			size_t best = 3; /* a typo, not a different word */

			for (const char *const *n = names; *n; n++) {
				size_t d = edit_distance(key, *n);

				if (d < best) {
					best = d;
					guess = *n;
				}
			}
			if (guess)
				return fail(x, &kp, true, allowed, "unknown key; did you mean '%s'?",
					    guess);
			return fail(x, &kp, true, allowed, "unknown key");
		}
	}
	return 0;
}

/*
 * Parses the whole document: a JSON object whose keys are all in keys.
 * Clears x->err first. Returns the object (the caller decrefs it) or NULL
 * with x->err saying where and why.
 */
static json_t *load_object(struct pctx *x, const char *const *keys)
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

		locate(x->text, x->len, &(struct fpath){ 0 }, false, &line, &col);
		x->err->line = line;
		x->err->column = col;
		snprintf(x->err->msg, sizeof(x->err->msg),
			 "%s:%d:%d: expected a JSON object { ... } at the top level, got %s", x->source,
			 line, col, type_name(root));
		json_decref(root);
		return NULL;
	}
	if (check_keys(x, root, NULL, keys) < 0) {
		json_decref(root);
		return NULL;
	}
	return root;
}

/* A size: integer bytes >= 0 or a string parse_size() understands. */
static int get_size(struct pctx *x, json_t *v, const struct fpath *p, const char *allowed,
		    uint64_t *ret)
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
			    type_name(v));
	r = parse_size(json_string_value(v), ret);
	if (r == -ERANGE)
		return fail(x, p, false, allowed, "size \"%.64s\" does not fit in 64 bits",
			    json_string_value(v));
	if (r < 0)
		return fail(x, p, false, SIZE_FORMS, "\"%.64s\" is not a size",
			    json_string_value(v));
	return 0;
}

/* An integer in lo..hi; allowed names the range (and the unit) for the error. */
static int get_int(struct pctx *x, json_t *v, const struct fpath *p, json_int_t lo, json_int_t hi,
		   const char *allowed, json_int_t *ret)
{
	if (!json_is_integer(v))
		return fail(x, p, false, allowed, "expected an integer, got %s", type_name(v));
	if (json_integer_value(v) < lo || json_integer_value(v) > hi)
		return fail(x, p, false, allowed, "%" JSON_INTEGER_FORMAT " is out of range", json_integer_value(v));
	*ret = json_integer_value(v);
	return 0;
}

/* An integer percentage 1..100 or a string like "95%". */
static int get_percent(struct pctx *x, json_t *v, const struct fpath *p, unsigned *ret)
{
	static const char allowed[] = "an integer 1..100 or a string like \"95%\"";
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
		return fail(x, p, false, allowed, "expected a percentage, got %s", type_name(v));
	}
	if (val < 1 || val > 100)
		return fail(x, p, false, allowed, "%lld%% is out of range", val);
	*ret = (unsigned)val;
	return 0;
}

/* A string from a fixed set; *ret is its index. */
static int get_enum(struct pctx *x, json_t *v, const struct fpath *p, const char *const *names,
		    size_t n, int *ret)
{
	char allowed[128];
	size_t pos = 0;

	allowed[0] = '\0';
	for (size_t i = 0; i < n; i++)
		pos += (size_t)snprintf(allowed + pos, sizeof(allowed) - pos, "%s\"%s\"",
					i ? ", " : "", names[i]);
	if (!json_is_string(v))
		return fail(x, p, false, allowed, "expected a string, got %s", type_name(v));
	for (size_t i = 0; i < n; i++) {
		if (strcmp(json_string_value(v), names[i]) == 0) {
			*ret = (int)i;
			return 0;
		}
	}
	return fail(x, p, false, allowed, "unknown value \"%.64s\"", json_string_value(v));
}

/* An absolute path that fits in cap bytes (with NUL). */
static int get_abs_path(struct pctx *x, json_t *v, const struct fpath *p, char *out, size_t cap)
{
	char allowed[96];
	const char *s;

	snprintf(allowed, sizeof(allowed), "an absolute path of at most %zu bytes", cap - 1);
	if (!json_is_string(v))
		return fail(x, p, false, allowed, "expected a string, got %s", type_name(v));
	s = json_string_value(v);
	if (s[0] != '/')
		return fail(x, p, false, allowed, "\"%.64s\" is not an absolute path", s);
	if (strlen(s) >= cap)
		return fail(x, p, false, allowed, "path is %zu bytes long", strlen(s));
	memcpy(out, s, strlen(s) + 1);
	return 0;
}

/* ---- per-VM policy ---------------------------------------------------------------- */

static const char *const unavailable_names[] = { "refuse", "run-unpaged" };
static const char *const loss_names[] = { "stop", "kill" };

void policy_vm_init(struct policy_vm *p)
{
	memset(p, 0, sizeof(*p));
	p->high_pct = 100;
	p->low_pct = 90;
	p->spill_max = 0;
	p->on_pager_unavailable = POLICY_UNAVAILABLE_REFUSE;
	p->on_data_loss = POLICY_LOSS_STOP;
	p->replicas = 1;
	p->backup_spill = false;
	p->balloon_enabled = false;
	p->balloon_floor = 256ULL << 20;
	p->balloon_settle_ms = 5000;
}

bool policy_name_valid(const char *name)
{
	size_t n = 0;

	if (!name)
		return false;
	for (; name[n]; n++) {
		char c = name[n];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '.' || c == '_' || c == '-'))
			return false;
	}
	/* The name becomes a file name in state_dir: "." and ".." would escape it. */
	return n >= 1 && n < POLICY_NAME_MAX && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int vm_name(struct pctx *x, json_t *v, struct policy_vm *p)
{
	static const char allowed[] = "1..63 characters from A-Z a-z 0-9 . _ -, not \".\" or \"..\"";
	struct fpath fp = path_key(NULL, "name");
	const char *s;

	if (!v)
		return fail(x, &fp, false, allowed, "missing (required)");
	if (!json_is_string(v))
		return fail(x, &fp, false, allowed, "expected a string, got %s", type_name(v));
	s = json_string_value(v);
	if (!policy_name_valid(s)) {
		if (s[0] == '\0' || strlen(s) >= POLICY_NAME_MAX)
			return fail(x, &fp, false, allowed, "name is %zu characters long", strlen(s));
		return fail(x, &fp, false, allowed, "invalid name \"%.64s\"", s);
	}
	memcpy(p->name, s, strlen(s) + 1);
	return 0;
}

static int vm_local_memory(struct pctx *x, json_t *v, struct policy_vm *p)
{
	static const char allowed[] = "a size >= 1M: an integer number of bytes or a string like "
				      "\"512M\", \"2G\", \"1GiB\"";
	struct fpath fp = path_key(NULL, "local_memory");
	uint64_t bytes;
	int r;

	if (!v)
		return fail(x, &fp, false, allowed, "missing (required)");
	r = get_size(x, v, &fp, allowed, &bytes);
	if (r < 0)
		return r;
	/* Residency is counted in pages; a partial page could never be used. */
	bytes &= ~(PAGE_SIZE_4K - 1);
	if (bytes < MIN_LOCAL_MEMORY)
		return fail(x, &fp, false, allowed,
			    "%" PRIu64 " bytes (rounded down to 4 KiB pages) is below 1M", bytes);
	p->local_memory = bytes;
	return 0;
}

static int vm_watermarks(struct pctx *x, json_t *v, struct policy_vm *p)
{
	static const char *const keys[] = { "high", "low", NULL };
	struct fpath fp = path_key(NULL, "watermarks");
	struct fpath hp = path_key(&fp, "high"), lp = path_key(&fp, "low");
	json_t *high, *low;
	int r;

	if (!v)
		return 0;
	if (!json_is_object(v))
		return fail(x, &fp, false, "an object {\"high\": PERCENT, \"low\": PERCENT}",
			    "expected an object, got %s", type_name(v));
	r = check_keys(x, v, &fp, keys);
	if (r < 0)
		return r;
	high = json_object_get(v, "high");
	low = json_object_get(v, "low");
	if (high && (r = get_percent(x, high, &hp, &p->high_pct)) < 0)
		return r;
	if (low && (r = get_percent(x, low, &lp, &p->low_pct)) < 0)
		return r;
	if (p->low_pct >= p->high_pct) {
		if (low)
			return fail(x, &lp, false, "1 <= low < high <= 100",
				    "low watermark %u%% is not below the high watermark %u%%",
				    p->low_pct, p->high_pct);
		return fail(x, &hp, false, "1 <= low < high <= 100",
			    "high watermark %u%% is not above the default low watermark %u%%; "
			    "set watermarks.low too",
			    p->high_pct, p->low_pct);
	}
	return 0;
}

static int vm_spill(struct pctx *x, json_t *v, struct policy_vm *p)
{
	static const char *const keys[] = { "max_size", NULL };
	struct fpath fp = path_key(NULL, "spill");
	struct fpath mp = path_key(&fp, "max_size");
	json_t *max;
	int r;

	if (!v)
		return 0;
	if (!json_is_object(v))
		return fail(x, &fp, false, "an object {\"max_size\": SIZE}",
			    "expected an object, got %s", type_name(v));
	r = check_keys(x, v, &fp, keys);
	if (r < 0)
		return r;
	max = json_object_get(v, "max_size");
	if (max && (r = get_size(x, max, &mp, SIZE_FORMS, &p->spill_max)) < 0)
		return r;
	return 0;
}

static int vm_durability(struct pctx *x, json_t *v, struct policy_vm *p)
{
	static const char *const keys[] = { "replicas", "backup", NULL };
	static const char *const backups[] = { "none", "spill" };
	struct fpath fp = path_key(NULL, "durability");
	json_t *e;
	int r, b;

	if (!v)
		return 0;
	if (!json_is_object(v))
		return fail(x, &fp, false, "an object {\"replicas\": 1..3, \"backup\": \"spill\"|\"none\"}",
			    "expected an object, got %s", type_name(v));
	r = check_keys(x, v, &fp, keys);
	if (r < 0)
		return r;
	if ((e = json_object_get(v, "replicas"))) {
		struct fpath rp = path_key(&fp, "replicas");

		json_int_t n;

		r = get_int(x, e, &rp, 1, POLICY_MAX_REPLICAS, "an integer 1..3", &n);
		if (r < 0)
			return r;
		p->replicas = (unsigned)n;
	}
	if ((e = json_object_get(v, "backup"))) {
		struct fpath bp = path_key(&fp, "backup");

		r = get_enum(x, e, &bp, backups, ARRAY_SIZE(backups), &b);
		if (r < 0)
			return r;
		p->backup_spill = b == 1;
	}
	return 0;
}

static int vm_balloon(struct pctx *x, json_t *v, struct policy_vm *p)
{
	static const char *const keys[] = { "enabled", "floor", "settle_ms", NULL };
	static const char floor_allowed[] = "a size >= 16M: an integer number of bytes or a string like "
					    "\"256M\", \"1G\"";
	struct fpath fp = path_key(NULL, "balloon");
	json_t *e;
	int r;

	if (!v)
		return 0;
	if (!json_is_object(v))
		return fail(x, &fp, false, "an object {\"enabled\": true|false, \"floor\": SIZE, \"settle_ms\": 0..600000}",
			    "expected an object, got %s", type_name(v));
	r = check_keys(x, v, &fp, keys);
	if (r < 0)
		return r;
	if ((e = json_object_get(v, "enabled"))) {
		struct fpath ep = path_key(&fp, "enabled");

		if (!json_is_boolean(e))
			return fail(x, &ep, false, "true or false", "expected a boolean, got %s", type_name(e));
		p->balloon_enabled = json_is_true(e);
	}
	if ((e = json_object_get(v, "floor"))) {
		struct fpath lp = path_key(&fp, "floor");
		uint64_t bytes;

		r = get_size(x, e, &lp, floor_allowed, &bytes);
		if (r < 0)
			return r;
		/* libvirt sets memory in KiB; the guest's balloon works in 4 KiB pages. */
		bytes &= ~(PAGE_SIZE_4K - 1);
		if (bytes < POLICY_BALLOON_MIN_FLOOR)
			return fail(x, &lp, false, floor_allowed,
				    "%" PRIu64 " bytes is below 16M (a guest squeezed that far cannot run)", bytes);
		p->balloon_floor = bytes;
	}
	if ((e = json_object_get(v, "settle_ms"))) {
		struct fpath sp = path_key(&fp, "settle_ms");

		json_int_t ms;

		r = get_int(x, e, &sp, 0, POLICY_BALLOON_MAX_SETTLE_MS, "an integer 0..600000 (milliseconds)", &ms);
		if (r < 0)
			return r;
		p->balloon_settle_ms = (unsigned)ms;
	}
	return 0;
}

int policy_vm_parse(const char *text, size_t len, const char *source, struct policy_vm *ret,
		    struct policy_error *err)
{
	static const char *const keys[] = { "name", "local_memory", "watermarks", "spill",
					    "on_pager_unavailable", "on_data_loss", "durability", "balloon", NULL };
	struct policy_error dummy;
	struct pctx x = { .text = text, .len = len, .source = source ? source : "<policy>",
			  .err = err ? err : &dummy };
	struct fpath fp;
	struct policy_vm p;
	json_t *root, *v;
	int r, e;

	root = load_object(&x, keys);
	if (!root)
		return -EINVAL;
	policy_vm_init(&p);
	if ((r = vm_name(&x, json_object_get(root, "name"), &p)) < 0 ||
	    (r = vm_local_memory(&x, json_object_get(root, "local_memory"), &p)) < 0 ||
	    (r = vm_watermarks(&x, json_object_get(root, "watermarks"), &p)) < 0 ||
	    (r = vm_spill(&x, json_object_get(root, "spill"), &p)) < 0 ||
	    (r = vm_durability(&x, json_object_get(root, "durability"), &p)) < 0 ||
	    (r = vm_balloon(&x, json_object_get(root, "balloon"), &p)) < 0)
		goto out;
	if ((v = json_object_get(root, "on_pager_unavailable"))) {
		fp = path_key(NULL, "on_pager_unavailable");
		r = get_enum(&x, v, &fp, unavailable_names, ARRAY_SIZE(unavailable_names), &e);
		if (r < 0)
			goto out;
		p.on_pager_unavailable = (enum policy_unavailable)e;
	}
	if ((v = json_object_get(root, "on_data_loss"))) {
		fp = path_key(NULL, "on_data_loss");
		r = get_enum(&x, v, &fp, loss_names, ARRAY_SIZE(loss_names), &e);
		if (r < 0)
			goto out;
		p.on_data_loss = (enum policy_loss_action)e;
	}
	*ret = p;
	r = 0;
out:
	json_decref(root);
	return r;
}

/* Reads at most POLICY_FILE_MAX bytes of path into a malloc'ed buffer. */
static int read_file(const char *path, char **ret_buf, size_t *ret_len, struct policy_error *err)
{
	_cleanup_close_ int fd = -1;
	_cleanup_free_ char *buf = NULL;
	size_t n = 0;

	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		int r = -errno;

		snprintf(err->msg, sizeof(err->msg), "%s: cannot open: %s", path, strerror(-r));
		return r;
	}
	buf = malloc(POLICY_FILE_MAX + 1);
	if (!buf) {
		snprintf(err->msg, sizeof(err->msg), "%s: %s", path, strerror(ENOMEM));
		return -ENOMEM;
	}
	for (;;) {
		ssize_t k = read(fd, buf + n, POLICY_FILE_MAX + 1 - n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			int r = -errno;

			snprintf(err->msg, sizeof(err->msg), "%s: cannot read: %s", path, strerror(-r));
			return r;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > POLICY_FILE_MAX) {
			snprintf(err->msg, sizeof(err->msg), "%s: larger than %d bytes", path,
				 POLICY_FILE_MAX);
			return -EFBIG;
		}
	}
	*ret_buf = TAKE_PTR(buf);
	*ret_len = n;
	return 0;
}

int policy_vm_load(const char *path, struct policy_vm *ret, struct policy_error *err)
{
	_cleanup_free_ char *buf = NULL;
	struct policy_error dummy;
	size_t len;
	int r;

	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	r = read_file(path, &buf, &len, err);
	if (r < 0)
		return r;
	return policy_vm_parse(buf, len, path, ret, err);
}

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

char *policy_vm_to_json(const struct policy_vm *p)
{
	json_t *root, *local = size_json(p->local_memory), *spill = size_json(p->spill_max);
	json_t *bfloor = size_json(p->balloon_floor);
	char *s = NULL;

	if (!bfloor || !local || !spill || (unsigned)p->on_pager_unavailable >= ARRAY_SIZE(unavailable_names) ||
	    (unsigned)p->on_data_loss >= ARRAY_SIZE(loss_names)) {
		json_decref(local);
		json_decref(spill);
		json_decref(bfloor);
		return NULL;
	}
	/* "o" steals the references to local, spill and bfloor. */
	root = json_pack("{s:s, s:o, s:{s:I, s:I}, s:{s:o}, s:s, s:s, s:{s:I, s:s}, s:{s:b, s:o, s:I}}", "name", p->name,
			 "local_memory", local, "watermarks", "high", (json_int_t)p->high_pct, "low",
			 (json_int_t)p->low_pct, "spill", "max_size", spill, "on_pager_unavailable",
			 unavailable_names[p->on_pager_unavailable], "on_data_loss",
			 loss_names[p->on_data_loss], "durability", "replicas", (json_int_t)p->replicas,
			 "backup", p->backup_spill ? "spill" : "none", "balloon", "enabled", p->balloon_enabled,
			 "floor", bfloor, "settle_ms", (json_int_t)p->balloon_settle_ms);
	if (root)
		s = json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
	json_decref(root);
	return s;
}

uint64_t policy_balloon_target(const struct policy_vm *p, uint64_t guest_bytes, uint64_t limit,
			       enum policy_balloon_why why)
{
	uint64_t want;

	if (!p->balloon_enabled || why == POLICY_BALLOON_DRAIN)
		return 0;
	if (why == POLICY_BALLOON_PARK)
		want = p->balloon_floor;
	else if (limit < guest_bytes)
		want = limit > p->balloon_floor ? limit : p->balloon_floor;
	else
		return 0;
	return want < guest_bytes ? want & ~(PAGE_SIZE_4K - 1) : 0;
}

static uint64_t pct_pages(const struct policy_vm *p, unsigned pct, uint64_t page_size)
{
	unsigned __int128 bytes = (unsigned __int128)p->local_memory * pct / 100;
	uint64_t pages;

	if (!page_size)
		page_size = PAGE_SIZE_4K;
	pages = (uint64_t)(bytes / page_size);
	return pages ? pages : 1;
}

uint64_t policy_vm_high_pages(const struct policy_vm *p, uint64_t page_size)
{
	return pct_pages(p, p->high_pct, page_size);
}

uint64_t policy_vm_low_pages(const struct policy_vm *p, uint64_t page_size)
{
	return pct_pages(p, p->low_pct, page_size);
}

/* ---- pager configuration ------------------------------------------------------------ */

void policy_config_init(struct policy_pager_config *c)
{
	memset(c, 0, sizeof(*c));
	c->budget = 0;
	c->max_guest_memory = 1ULL << 40;
	snprintf(c->state_dir, sizeof(c->state_dir), "%s", UFFDVM_STATE_DIR);
	snprintf(c->socket_path, sizeof(c->socket_path), "%s", UFFDVM_RUN_DIR "/register.sock");
	snprintf(c->control_path, sizeof(c->control_path), "%s", UFFDVM_RUN_DIR "/control.sock");
	c->n_allowed_uids = 0;
	c->log_level = LOG_LVL_INFO;
	c->n_donors = 0;
	c->donor_key_file[0] = '\0';
	snprintf(c->client_id, sizeof(c->client_id), "uffd-pager");
	c->donor_timeout_ms = 2000;
}

bool policy_donor_url_valid(const char *url)
{
	const char *h, *colon, *end;
	char *pe;
	unsigned long port;

	if (!url || strlen(url) >= POLICY_URL_MAX)
		return false;
	if (strncmp(url, "tcp://", 6) == 0)
		h = url + 6;
	else if (strncmp(url, "rdma://", 7) == 0)
		h = url + 7;
	else
		return false;
	if (*h == '[') {
		end = strchr(h, ']');
		if (!end || end == h + 1 || end[1] != ':')
			return false;
		colon = end + 1;
	} else {
		colon = strrchr(h, ':');
		if (!colon || colon == h)
			return false;
		for (const char *c = h; c < colon; c++)
			if (!((*c >= 'a' && *c <= 'z') || (*c >= 'A' && *c <= 'Z') || (*c >= '0' && *c <= '9') ||
			      *c == '.' || *c == '-'))
				return false;
	}
	if (colon[1] < '0' || colon[1] > '9')
		return false;
	errno = 0;
	port = strtoul(colon + 1, &pe, 10);
	return !errno && *pe == '\0' && port >= 1 && port <= 65535;
}

bool policy_client_id_valid(const char *id)
{
	size_t n;

	if (!id)
		return false;
	for (n = 0; id[n]; n++) {
		char c = id[n];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' ||
		      c == '_' || c == ':' || c == '@' || c == '-'))
			return false;
	}
	return n >= 1 && n <= 64;
}

static int cfg_donors(struct pctx *x, json_t *v, struct policy_pager_config *c)
{
	static const char allowed[] = "an array of at most 16 URLs \"tcp://HOST:PORT\" or \"rdma://HOST:PORT\"";
	struct fpath fp = path_key(NULL, "donors");
	size_t i;
	json_t *e;

	if (!json_is_array(v))
		return fail(x, &fp, false, allowed, "expected an array, got %s", type_name(v));
	json_array_foreach(v, i, e) {
		struct fpath ep = path_idx(&fp, i);

		if (i >= POLICY_MAX_DONORS)
			return fail(x, &ep, false, allowed, "too many donors (%zu)", json_array_size(v));
		if (!json_is_string(e))
			return fail(x, &ep, false, allowed, "expected a string, got %s", type_name(e));
		if (!policy_donor_url_valid(json_string_value(e)))
			return fail(x, &ep, false, allowed, "\"%.64s\" is not a donor URL", json_string_value(e));
		for (size_t k = 0; k < i; k++)
			if (strcmp(c->donors[k], json_string_value(e)) == 0)
				return fail(x, &ep, false, allowed, "\"%.64s\" is listed twice",
					    json_string_value(e));
		snprintf(c->donors[i], sizeof(c->donors[i]), "%s", json_string_value(e));
	}
	c->n_donors = (unsigned)json_array_size(v);
	return 0;
}

/*
 * True if dir (absolute) lies under a directory that is tmpfs on every
 * mainstream distribution. Compared lexically after dropping empty and "."
 * components and resolving "..", so "//run/./x" cannot slip through.
 */
static bool path_on_tmpfs_dir(const char *dir, const char **ret_which)
{
	static const char *const bad[] = { "/run", "/var/run", "/dev/shm" };
	char norm[256];
	size_t n = 0;
	const char *s = dir;

	norm[0] = '\0';
	while (*s) {
		const char *e;
		size_t clen;

		while (*s == '/')
			s++;
		e = strchrnul(s, '/');
		clen = (size_t)(e - s);
		if (clen == 0 || (clen == 1 && s[0] == '.')) {
			/* nothing */
		} else if (clen == 2 && s[0] == '.' && s[1] == '.') {
			while (n > 0 && norm[n - 1] != '/')
				n--;
			if (n > 0)
				n--;
		} else if (n + clen + 2 < sizeof(norm)) {
			norm[n++] = '/';
			memcpy(norm + n, s, clen);
			n += clen;
		}
		norm[n] = '\0';
		s = e;
	}
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		size_t bl = strlen(bad[i]);

		if (strncmp(norm, bad[i], bl) == 0 && (norm[bl] == '\0' || norm[bl] == '/')) {
			*ret_which = bad[i];
			return true;
		}
	}
	return false;
}

int policy_check_state_dir_fstype(const char *dir, char *err, size_t len)
{
	struct statfs st;

	if (statfs(dir, &st) < 0) {
		int r = -errno;

		if (err && len)
			snprintf(err, len, "state_dir %s: %s", dir, strerror(-r));
		return r;
	}
	if ((unsigned long)st.f_type == (unsigned long)TMPFS_MAGIC ||
	    (unsigned long)st.f_type == (unsigned long)RAMFS_MAGIC) {
		if (err && len)
			snprintf(err, len,
				 "state_dir %s is on %s: spill files there would use RAM, "
				 "choose a directory on disk",
				 dir, (unsigned long)st.f_type == (unsigned long)TMPFS_MAGIC ? "tmpfs"
											      : "ramfs");
		return -EINVAL;
	}
	return 0;
}

static int cfg_uids(struct pctx *x, json_t *v, struct policy_pager_config *c)
{
	static const char allowed[] = "an array of at most 16 integer uids 0..4294967294";
	struct fpath fp = path_key(NULL, "allowed_uids");
	size_t i;
	json_t *e;

	if (!json_is_array(v))
		return fail(x, &fp, false, allowed, "expected an array, got %s", type_name(v));
	json_array_foreach(v, i, e) {
		struct fpath ep = path_idx(&fp, i);

		if (i >= ARRAY_SIZE(c->allowed_uids))
			return fail(x, &ep, false, allowed, "too many uids (%zu)", json_array_size(v));
		if (!json_is_integer(e))
			return fail(x, &ep, false, allowed, "expected an integer uid, got %s",
				    type_name(e));
		/* (uid_t)-1 means "no change" to chown() and friends: never a real user. */
		if (json_integer_value(e) < 0 || json_integer_value(e) >= (json_int_t)UINT32_MAX)
			return fail(x, &ep, false, allowed, "%" JSON_INTEGER_FORMAT " is not a uid",
				    json_integer_value(e));
		c->allowed_uids[i] = (uid_t)json_integer_value(e);
	}
	c->n_allowed_uids = (unsigned)json_array_size(v);
	return 0;
}

int policy_config_parse(const char *text, size_t len, const char *source,
			struct policy_pager_config *ret, struct policy_error *err)
{
	static const char *const keys[] = { "budget", "max_guest_memory", "state_dir", "socket",
					    "control", "allowed_uids", "log_level", "donors",
					    "donor_key_file", "client_id", "donor_timeout_ms", NULL };
	static const char *const levels[] = { "error", "warn", "info", "debug" };
	struct policy_error dummy;
	struct pctx x = { .text = text, .len = len, .source = source ? source : "<config>",
			  .err = err ? err : &dummy };
	struct policy_pager_config c;
	struct fpath fp;
	json_t *root, *v;
	int r, e;

	root = load_object(&x, keys);
	if (!root)
		return -EINVAL;
	policy_config_init(&c);
	if ((v = json_object_get(root, "budget"))) {
		fp = path_key(NULL, "budget");
		r = get_size(&x, v, &fp, SIZE_FORMS, &c.budget);
		if (r < 0)
			goto out;
	}
	if ((v = json_object_get(root, "max_guest_memory"))) {
		static const char allowed[] = "a size from 1M to 16T - 8K (2^32 - 2 pages of 4 KiB)";

		fp = path_key(NULL, "max_guest_memory");
		r = get_size(&x, v, &fp, allowed, &c.max_guest_memory);
		if (r < 0)
			goto out;
		/* Victim selection indexes pages with 32 bits, two values reserved. */
		if (c.max_guest_memory < MIN_LOCAL_MEMORY ||
		    c.max_guest_memory > POLICY_MAX_GUEST_PAGES * PAGE_SIZE_4K) {
			char human[32];

			r = fail(&x, &fp, false, allowed, "%" PRIu64 " bytes (%s) is out of range",
				 c.max_guest_memory, format_size(c.max_guest_memory, human, sizeof(human)));
			goto out;
		}
	}
	if ((v = json_object_get(root, "state_dir"))) {
		const char *which;

		fp = path_key(NULL, "state_dir");
		r = get_abs_path(&x, v, &fp, c.state_dir, sizeof(c.state_dir));
		if (r < 0)
			goto out;
		if (path_on_tmpfs_dir(c.state_dir, &which)) {
			r = fail(&x, &fp, false, "an absolute path on a disk file system",
				 "\"%.64s\" is under %s, which is tmpfs (RAM): spill files must be "
				 "on disk",
				 c.state_dir, which);
			goto out;
		}
	}
	if ((v = json_object_get(root, "socket"))) {
		fp = path_key(NULL, "socket");
		r = get_abs_path(&x, v, &fp, c.socket_path, sizeof(c.socket_path));
		if (r < 0)
			goto out;
	}
	if ((v = json_object_get(root, "control"))) {
		fp = path_key(NULL, "control");
		r = get_abs_path(&x, v, &fp, c.control_path, sizeof(c.control_path));
		if (r < 0)
			goto out;
	}
	if ((v = json_object_get(root, "allowed_uids")) && (r = cfg_uids(&x, v, &c)) < 0)
		goto out;
	if ((v = json_object_get(root, "log_level"))) {
		fp = path_key(NULL, "log_level");
		r = get_enum(&x, v, &fp, levels, ARRAY_SIZE(levels), &e);
		if (r < 0)
			goto out;
		_Static_assert(LOG_LVL_ERR == 0 && LOG_LVL_DEBUG == 3, "levels[] order");
		c.log_level = e;
	}
	if ((v = json_object_get(root, "donors")) && (r = cfg_donors(&x, v, &c)) < 0)
		goto out;
	if ((v = json_object_get(root, "donor_key_file"))) {
		fp = path_key(NULL, "donor_key_file");
		r = get_abs_path(&x, v, &fp, c.donor_key_file, sizeof(c.donor_key_file));
		if (r < 0)
			goto out;
	}
	if ((v = json_object_get(root, "client_id"))) {
		static const char allowed[] = "1..64 characters from A-Z a-z 0-9 . _ : @ -";

		fp = path_key(NULL, "client_id");
		if (!json_is_string(v)) {
			r = fail(&x, &fp, false, allowed, "expected a string, got %s", type_name(v));
			goto out;
		}
		if (!policy_client_id_valid(json_string_value(v))) {
			r = fail(&x, &fp, false, allowed, "invalid client id \"%.64s\"", json_string_value(v));
			goto out;
		}
		snprintf(c.client_id, sizeof(c.client_id), "%s", json_string_value(v));
	}
	if ((v = json_object_get(root, "donor_timeout_ms"))) {
		json_int_t ms;

		fp = path_key(NULL, "donor_timeout_ms");
		r = get_int(&x, v, &fp, 100, 60000, "an integer 100..60000 (milliseconds)", &ms);
		if (r < 0)
			goto out;
		c.donor_timeout_ms = (unsigned)ms;
	}
	*ret = c;
	r = 0;
out:
	json_decref(root);
	return r;
}

int policy_config_load(const char *path, struct policy_pager_config *ret, struct policy_error *err)
{
	_cleanup_free_ char *buf = NULL;
	struct policy_error dummy;
	size_t len;
	int r;

	if (!err)
		err = &dummy;
	memset(err, 0, sizeof(*err));
	r = read_file(path, &buf, &len, err);
	if (r < 0)
		return r;
	return policy_config_parse(buf, len, path, ret, err);
}
