/* SPDX-License-Identifier: MIT */
/*
 * Helpers for JSON values: a cleanup attribute, and the type names that the
 * control protocol and the policy parsers both use in their messages.
 */
#pragma once

#include <jansson.h>

#include "util.h"

/* A json_t * released at scope exit (jansson's json_decrefp is NULL-safe). */
#define _cleanup_json_ _cleanup_(json_decrefp)

/*
 * The type of v with its article, for "expected X, got ...": "an object",
 * "an array", "a string", "an integer", "a real number", "a boolean", "null".
 */
const char *json_type_name(const json_t *v);
