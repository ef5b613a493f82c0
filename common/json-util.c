/* SPDX-License-Identifier: MIT */
/*
 * JSON message helpers (see json-util.h). true and false are both "a
 * boolean": the name is the JSON type, as for every other kind of value, so
 * "expected a boolean, got a string" and "expected a string, got a boolean"
 * read alike.
 */
#include "json-util.h"

const char *json_type_name(const json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT: return "an object";
	case JSON_ARRAY: return "an array";
	case JSON_STRING: return "a string";
	case JSON_INTEGER: return "an integer";
	case JSON_REAL: return "a real number";
	case JSON_TRUE:
	case JSON_FALSE: return "a boolean";
	case JSON_NULL: return "null";
	}
	return "an unknown JSON type";
}
