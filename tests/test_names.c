// SPDX-License-Identifier: (LGPL-2.1 OR BSD-2-Clause)
/* Every value of every enum the reports name has a name and a label, and no two names of an enum are alike. */
#include <string.h>
#include "helpers.h"
#include "names.h"

int main(void)
{
	for (size_t t = 0; t < n_name_tables; t++) {
		const struct name_table *nt = &name_tables[t];

		for (size_t v = 0; v < nt->n; v++) {
			CHECK(nt->names[v] && nt->names[v][0], "%s: value %zu has no name", nt->what, v);
			CHECK(nt->labels[v] && nt->labels[v][0], "%s: value %zu has no label", nt->what, v);
			for (size_t u = 0; u < v && nt->names[v]; u++)
				CHECK(!nt->names[u] || strcmp(nt->names[u], nt->names[v]), "%s: values %zu and %zu "
				      "are both named %s", nt->what, u, v, nt->names[v]);
			/* names go into JSON keys and folded stacks: no spaces, no ';' */
			CHECK(!nt->names[v] || !strpbrk(nt->names[v], " ;\""), "%s: name '%s' has a space, ';' or '\"'",
			      nt->what, nt->names[v]);
		}
	}
	/* the tables are as long as their enums (a table of the wrong enum would not be) */
	CHECK(ARRAY_SIZE(span_names) == SPAN_MAX, "span_names");
	CHECK(ARRAY_SIZE(comp_labels) == COMP_MAX, "comp_labels");
	CHECK(!strcmp(NAME(span_names, SPAN_MAX + 3), "?"), "a value out of range is '?'");
	CHECK(!strcmp(NAME(span_names, SPAN_IOWQ), "request"), "SPAN_IOWQ is named");
	return t_result("test_names");
}
