/* SPDX-License-Identifier: MIT */
/*
 * The time-budget multiplier scripts/test exports as UFFDVM_BUDGET_X
 * (sanitizer builds run the same work several times slower): C tests scale
 * their deadlines and connection timeouts by it, as the suites' budgets are.
 */
#pragma once

#include <stdlib.h>

static inline unsigned test_budget_x(void)
{
	const char *s = getenv("UFFDVM_BUDGET_X");
	unsigned long x = s ? strtoul(s, NULL, 10) : 1;

	return x >= 1 && x <= 100 ? (unsigned)x : 1;
}
