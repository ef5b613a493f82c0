/* SPDX-License-Identifier: MIT */
/*
 * Helpers for messages about JSON input, shared by the control protocol and
 * the policy parsers so that both name a wrong value's type the same way.
 */
#pragma once

#include <jansson.h>

/*
 * The type of v with its article, for "expected X, got ...": "an object",
 * "an array", "a string", "an integer", "a real number", "a boolean", "null".
 */
const char *json_type_name(const json_t *v);
