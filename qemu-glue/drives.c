/* SPDX-License-Identifier: MIT */
/* The disk cache's drive rewriting for uffd-qemu (drives.h). */
#include "drives.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "util.h"

/* Keys of a local file that only matter to QEMU opening it itself; nbdkit opens it now. */
static const char *const file_only_keys[] = { "aio", "locking", "aio-max-batch", "drop-cache",
					      "x-check-cache-dropped", "pr-manager", NULL };
/* Generic block-node keys that mean the same on an NBD node. */
static const char *const blockdev_keep_keys[] = { "node-name", "read-only", "auto-read-only", "discard",
						  "detect-zeroes", "cache.direct", "cache.no-flush", "force-share",
						  NULL };

struct kv {
	char *key, *val;
};

struct glue_drives {
	char **argv;
	int argc;
	char **image; /* per name */
	size_t n;
	char *err;
	size_t err_len;
};

static bool in_list(const char *const *list, const char *s)
{
	for (; *list; list++)
		if (strcmp(*list, s) == 0)
			return true;
	return false;
}

static void __attribute__((format(printf, 2, 3))) refuse(struct glue_drives *d, const char *fmt, ...)
{
	char line[512];
	va_list ap;
	size_t k;
	char *e;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	k = strlen(line);
	e = realloc(d->err, d->err_len + k + 2);
	if (!e)
		return; /* the first message, if any, still says why */
	memcpy(e + d->err_len, line, k);
	e[d->err_len + k] = '\n';
	e[d->err_len + k + 1] = '\0';
	d->err = e;
	d->err_len += k + 1;
}

static void kv_free(struct kv *kv, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(kv[i].key);
		free(kv[i].val);
	}
	free(kv);
}

/* Splits QEMU's key=value,key=value (",," is a literal comma). Returns the count, -EINVAL (an item without '=') or -ENOMEM. */
static int kv_split(const char *s, struct kv **ret)
{
	size_t cap = 8, n = 0, len = strlen(s);
	struct kv *kv = calloc(cap, sizeof(*kv));
	char *buf = malloc(len + 1);
	int r = 0;

	if (!kv || !buf) {
		r = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i <= len && r == 0;) {
		size_t b = 0;
		char *eq;

		while (i < len && !(s[i] == ',' && s[i + 1] != ',')) {
			if (s[i] == ',')
				i++; /* ",," */
			buf[b++] = s[i++];
		}
		buf[b] = '\0';
		i++;
		eq = strchr(buf, '=');
		if (!eq) {
			r = -EINVAL;
			break;
		}
		if (n == cap) {
			struct kv *k2 = realloc(kv, 2 * cap * sizeof(*kv));

			if (!k2) {
				r = -ENOMEM;
				break;
			}
			kv = k2;
			cap *= 2;
		}
		*eq = '\0';
		kv[n].key = strdup(buf);
		kv[n].val = strdup(eq + 1);
		if (!kv[n].key || !kv[n].val)
			r = -ENOMEM;
		n++;
	}
out:
	free(buf);
	if (r < 0) {
		kv_free(kv, n);
		return r;
	}
	*ret = kv;
	return (int)n;
}

static const char *kv_get(const struct kv *kv, size_t n, const char *key)
{
	const char *v = NULL;

	for (size_t i = 0; i < n; i++)
		if (strcmp(kv[i].key, key) == 0)
			v = kv[i].val; /* QEMU: the last one wins */
	return v;
}

/* Appends "key=value" with commas doubled. Returns 0 or -ENOMEM. */
static int kv_put(char **out, size_t *len, const char *key, const char *val)
{
	size_t need = strlen(key) + 2 * strlen(val) + 3;
	char *o = realloc(*out, *len + need), *p;

	if (!o)
		return -ENOMEM;
	*out = o;
	p = o + *len;
	if (*len)
		*p++ = ',';
	p += sprintf(p, "%s=", key);
	for (const char *v = val; *v; v++) {
		if (*v == ',')
			*p++ = ',';
		*p++ = *v;
	}
	*p = '\0';
	*len = (size_t)(p - o);
	return 0;
}

static int name_index(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 0; s && i < n; i++)
		if (strcmp(names[i], s) == 0)
			return (int)i;
	return -1;
}

/* A plain file name, not a protocol QEMU would parse (nbd:, json:, http://, ...). */
static bool plain_file(const char *f)
{
	const char *colon = strchr(f, ':'), *slash = strchr(f, '/');

	return *f && (!colon || (slash && slash < colon));
}

/* -drive: file=PATH becomes the NBD URI; everything else stays. Returns the new value, NULL (refused or ENOMEM). */
static char *rewrite_drive(struct glue_drives *d, const struct kv *kv, size_t n, const char *name,
			   const char *uri, char **ret_image, int *err)
{
	const char *file = kv_get(kv, n, "file");
	char *out = NULL;
	size_t len = 0;

	if (!file) {
		refuse(d, "-drive id=%s: no file= (an empty drive cannot be cached)", name);
		return NULL;
	}
	if (!plain_file(file) || strchr(file, ',')) {
		refuse(d, "-drive id=%s: file=%s is not a plain image file name (protocols and names with commas "
			  "cannot be cached)", name, file);
		return NULL;
	}
	for (size_t i = 0; i < n; i++) {
		if (in_list(file_only_keys, kv[i].key))
			continue;
		if (strncmp(kv[i].key, "file.", 5) == 0 || strcmp(kv[i].key, "driver") == 0) {
			refuse(d, "-drive id=%s: %s= cannot be cached (allowed: file=PATH with format=, if=, "
				  "media=, readonly=, cache=, discard=, snapshot= and device options)", name, kv[i].key);
			free(out);
			return NULL;
		}
		if (kv_put(&out, &len, kv[i].key, strcmp(kv[i].key, "file") == 0 ? uri : kv[i].val) < 0) {
			*err = -ENOMEM;
			free(out);
			return NULL;
		}
	}
	if (!(*ret_image = strdup(file))) {
		*err = -ENOMEM;
		free(out);
		return NULL;
	}
	return out;
}

/* The generic keys kept on the NBD node, or a refusal naming what cannot be. Returns 0, 1 (refused) or -ENOMEM. */
static int blockdev_check(struct glue_drives *d, const char *name, const char *driver, const char *filename,
			  const char *const *keys, size_t n)
{
	if (!driver || (strcmp(driver, "file") != 0 && strcmp(driver, "host_device") != 0)) {
		refuse(d, "-blockdev node-name=%s: driver=%s cannot be cached (allowed: driver=file or host_device, "
			  "the protocol node of a local image)", name, driver ? driver : "(none)");
		return 1;
	}
	if (!filename || !*filename || strchr(filename, ',')) {
		refuse(d, "-blockdev node-name=%s: filename=%s is not a plain image file name", name,
		       filename ? filename : "(none)");
		return 1;
	}
	for (size_t i = 0; i < n; i++)
		if (strcmp(keys[i], "driver") && strcmp(keys[i], "filename") && strcmp(keys[i], "cache") &&
		    !in_list(blockdev_keep_keys, keys[i]) &&
		    !in_list(file_only_keys, keys[i])) {
			refuse(d, "-blockdev node-name=%s: %s cannot be cached (allowed: driver, filename, node-name, "
				  "read-only, auto-read-only, discard, detect-zeroes, cache.*, force-share, aio, locking)",
			       name, keys[i]);
			return 1;
		}
	return 0;
}

static char *rewrite_blockdev_kv(struct glue_drives *d, const struct kv *kv, size_t n, const char *name,
				 const char *sock, char **ret_image, int *err)
{
	const char *keys[64];
	char *out = NULL;
	size_t len = 0;
	int r;

	if (n > 64) {
		refuse(d, "-blockdev node-name=%s: too many options", name);
		return NULL;
	}
	for (size_t i = 0; i < n; i++)
		keys[i] = kv[i].key;
	if (blockdev_check(d, name, kv_get(kv, n, "driver"), kv_get(kv, n, "filename"), keys, n))
		return NULL;
	r = kv_put(&out, &len, "driver", "nbd");
	r = r ?: kv_put(&out, &len, "server.type", "unix");
	r = r ?: kv_put(&out, &len, "server.path", sock);
	r = r ?: kv_put(&out, &len, "export", name);
	for (size_t i = 0; i < n && r == 0; i++)
		if (in_list(blockdev_keep_keys, kv[i].key))
			r = kv_put(&out, &len, kv[i].key, kv[i].val);
	if (r == 0 && !(*ret_image = strdup(kv_get(kv, n, "filename"))))
		r = -ENOMEM;
	if (r < 0) {
		*err = r;
		free(out);
		return NULL;
	}
	return out;
}

static char *rewrite_blockdev_json(struct glue_drives *d, json_t *j, const char *name, const char *sock,
				   char **ret_image, int *err)
{
	const char *keys[64], *k;
	json_t *v, *o = NULL;
	size_t n = 0;
	char *out = NULL;

	json_object_foreach(j, k, v) {
		if (n == 64 || (json_is_object(v) && strcmp(k, "cache") != 0) || json_is_array(v)) {
			refuse(d, "-blockdev node-name=%s: %s cannot be cached", name, k);
			return NULL;
		}
		keys[n++] = k;
	}
	if (blockdev_check(d, name, json_string_value(json_object_get(j, "driver")),
			   json_string_value(json_object_get(j, "filename")), keys, n))
		return NULL;
	o = json_pack("{s:s, s:{s:s, s:s}, s:s}", "driver", "nbd", "server", "type", "unix", "path", sock, "export",
		      name);
	for (size_t i = 0; o && i < n; i++)
		if (in_list(blockdev_keep_keys, keys[i]) || strcmp(keys[i], "cache") == 0)
			json_object_set(o, keys[i], json_object_get(j, keys[i]));
	if (o)
		out = json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER);
	if (out && !(*ret_image = strdup(json_string_value(json_object_get(j, "filename"))))) {
		free(out);
		out = NULL;
	}
	if (!out)
		*err = -ENOMEM;
	json_decref(o);
	return out;
}

/* Characters that would end or change the socket= parameter of an NBD URI. */
static bool uri_safe(const char *s)
{
	for (; *s; s++)
		if (!((*s >= 'a' && *s <= 'z') || (*s >= 'A' && *s <= 'Z') || (*s >= '0' && *s <= '9') ||
		      strchr("/._-+~", *s)))
			return false;
	return true;
}

int glue_drives_rewrite(int argc, char *const *argv, const char *const *names, size_t n, const char *sock,
			struct glue_drives **ret)
{
	struct glue_drives *d;
	int err = 0;

	if (!uri_safe(sock))
		return -EINVAL;
	d = calloc(1, sizeof(*d));
	if (!d)
		return -ENOMEM;
	d->n = n;
	d->argc = argc;
	d->argv = calloc((size_t)argc + 1, sizeof(char *));
	d->image = calloc(n ? n : 1, sizeof(char *));
	if (!d->argv || !d->image) {
		glue_drives_free(d);
		return -ENOMEM;
	}
	for (int i = 0; i < argc && !err; i++) {
		const char *opt = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
		bool drive = !strcmp(opt, "-drive") || !strcmp(opt, "--drive");
		bool blockdev = !strcmp(opt, "-blockdev") || !strcmp(opt, "--blockdev");
		struct kv *kv = NULL;
		char *nv = NULL, *image = NULL;
		json_t *j = NULL;
		int k = -1, cnt = 0;

		d->argv[i] = strdup(opt);
		if (!d->argv[i]) {
			err = -ENOMEM;
			break;
		}
		if ((!drive && !blockdev) || !val)
			continue;
		if (blockdev && val[0] == '{') {
			j = json_loads(val, 0, NULL);
			k = j ? name_index(names, n, json_string_value(json_object_get(j, "node-name"))) : -1;
			if (k >= 0)
				nv = rewrite_blockdev_json(d, j, names[k], sock, &image, &err);
			json_decref(j);
		} else {
			cnt = kv_split(val, &kv);
			if (cnt == -ENOMEM) {
				err = cnt;
				break;
			}
			if (cnt > 0) {
				k = name_index(names, n, kv_get(kv, (size_t)cnt, drive ? "id" : "node-name"));
				if (k >= 0 && drive) {
					char uri[256];

					snprintf(uri, sizeof(uri), "nbd+unix:///%s?socket=%s", names[k], sock);
					nv = rewrite_drive(d, kv, (size_t)cnt, names[k], uri, &image, &err);
				} else if (k >= 0) {
					nv = rewrite_blockdev_kv(d, kv, (size_t)cnt, names[k], sock, &image, &err);
				}
			}
			kv_free(kv, cnt > 0 ? (size_t)cnt : 0);
		}
		if (k < 0)
			continue;
		if (d->image[k]) {
			refuse(d, "drive '%s' is defined twice on the command line", names[k]);
			free(nv);
			free(image);
			continue;
		}
		i++;
		d->argv[i] = nv ? nv : strdup(val);
		d->image[k] = image;
		if (!d->argv[i])
			err = -ENOMEM;
		if (!nv && !err && !image && !d->err)
			refuse(d, "drive '%s' cannot be cached", names[k]);
	}
	for (size_t k = 0; k < n && !err; k++)
		if (!d->image[k] && !(d->err && strstr(d->err, names[k])))
			refuse(d, "drive '%s' (policy disk_cache.drives) is not on the command line: no -drive id=%s "
				  "or -blockdev node-name=%s", names[k], names[k], names[k]);
	if (err) {
		glue_drives_free(d);
		return err;
	}
	*ret = d;
	return 0;
}

void glue_drives_free(struct glue_drives *d)
{
	if (!d)
		return;
	for (int i = 0; d->argv && i < d->argc; i++)
		free(d->argv[i]);
	for (size_t k = 0; d->image && k < d->n; k++)
		free(d->image[k]);
	free(d->argv);
	free(d->image);
	free(d->err);
	free(d);
}

const char *glue_drives_error(const struct glue_drives *d) { return d->err; }
char *const *glue_drives_argv(const struct glue_drives *d) { return d->argv; }
int glue_drives_argc(const struct glue_drives *d) { return d->argc; }
const char *glue_drives_image(const struct glue_drives *d, size_t i) { return i < d->n ? d->image[i] : NULL; }
